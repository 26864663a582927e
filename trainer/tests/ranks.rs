//! Data-parallel ranks over real c10d Gloo process groups, through the `trainer` binary (rank 0
//! spawns `trainer rank` processes): two ranks with half the batch each give, step by step, the
//! losses of one process with the whole batch, for a FCOS fine-tune and for box-domain
//! pre-training; MoCo trains over two ranks with its keys shuffled across them and resumes from
//! its checkpoint; and what cannot run is refused by name.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{
    assert_repeats, hand_over_checkpoint, local_spec, metric_series, synthetic_dataset,
    write_pseudo_boxes,
};

const PROPOSALS_RUN_ID: i64 = 4;

/// The steps compared (the acceptance's 20).
const STEPS: u32 = 20;

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aligndet-ranks-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Intra-op threads of each of two CPU ranks on this machine (`jobs::ranks` splits the cores).
/// The one-process runs use as many: reductions over a different thread count round
/// differently, and at these early, chaotic steps (gradient norms near 900, clipped to 10) a
/// rounding difference of 1e-7 grows to 10% in 15 steps. With equal threads the runs agree to
/// float rounding of the reported means (about 5e-8).
fn threads_per_rank() -> usize {
    (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1)
}

/// `trainer run SPEC --out OUT --inputs INPUTS`; returns whether it succeeded and its events.
fn trainer_run(dir: &Path, name: &str, spec: &Value, inputs: &Path) -> (bool, Vec<Value>) {
    let spec_path = dir.join(format!("{name}.json"));
    std::fs::write(&spec_path, serde_json::to_vec_pretty(spec).unwrap()).unwrap();
    let out = dir.join(name);
    let status = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .env("OMP_NUM_THREADS", threads_per_rank().to_string())
        .arg("run")
        .arg(&spec_path)
        .arg("--out")
        .arg(&out)
        .arg("--inputs")
        .arg(inputs)
        .status()
        .expect("start trainer run");
    let events = std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (status.success(), events)
}

/// Every `loss/*` point as (step, key) → value.
fn losses(events: &[Value]) -> std::collections::BTreeMap<(i64, String), f64> {
    events
        .iter()
        .filter(|e| e["event"] == "metrics")
        .flat_map(|e| e["points"].as_array().unwrap().iter())
        .filter(|p| p["key"].as_str().unwrap().starts_with("loss/"))
        .map(|p| {
            (
                (
                    p["step"].as_i64().unwrap(),
                    p["key"].as_str().unwrap().to_string(),
                ),
                p["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn logs(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["event"] == "log")
        .map(|e| e["line"]["text"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The run's final error, if it failed.
fn error(events: &[Value]) -> String {
    events
        .iter()
        .find(|e| e["event"] == "status")
        .and_then(|e| e["error"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// One process and two ranks trained the same: every loss term at every step within 1e-4
/// relative.
fn assert_same_losses(one: &[Value], two: &[Value], what: &str) {
    let (a, b) = (losses(one), losses(two));
    let steps: std::collections::BTreeSet<i64> = a.keys().map(|k| k.0).collect();
    assert_eq!(steps.len(), STEPS as usize, "{what}: one point per step");
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: the same points"
    );
    let mut worst = 0.0f64;
    for (k, x) in &a {
        let y = b[k];
        let rel = (x - y).abs() / x.abs().max(1e-6);
        worst = worst.max(rel);
        assert!(rel <= 1e-4, "{what} {k:?}: one process {x}, two ranks {y}");
    }
    eprintln!(
        "{what}: worst relative difference over {} points {worst:.2e}",
        a.len()
    );
    assert!(
        logs(two).contains("2 data-parallel ranks"),
        "{what}: ran as two ranks"
    );
    assert!(
        logs(two).contains(&format!("step {STEPS}: the 2 ranks hold the same weights")),
        "{what}: the ranks' weights were compared at the end"
    );
}

/// A FCOS fine-tune from the ImageNet EfficientNet-Lite0 (frozen BN: batch statistics per rank
/// would differ from the whole batch's, as in DistributedDataParallel without SyncBatchNorm).
/// One batch of 4 and two of 2 run convolutions of different shapes, which round differently;
/// at lr 0.002 that stays under 1e-5 over 20 steps (at 0.01 it grows past 1e-4 by step 12).
fn finetune(world_size: u32, precision: &str) -> Value {
    json!({
        "kind": "finetune", "dataset_id": 1, "detector": "fcos",
        "backbone": "efficientnet_lite0", "init": {"from": "imagenet_backbone"},
        "eval_every": 1000, "final_eval_max_images": 1,
        "optim": {
            "steps": STEPS, "batch_size": 4, "warmup_steps": 2, "lr": 0.002,
            "checkpoint_every": 1000, "loader_threads": 1, "seed": 5,
            "world_size": world_size, "precision": precision,
        },
        "augment": {"min_sizes": [96], "max_size": 96, "hflip": true, "color_jitter": 0.1}
    })
}

#[test]
fn two_gloo_ranks_fine_tune_fcos_as_one_process_with_the_whole_batch() {
    let dir = temp("finetune");
    let (data, splits) = synthetic_dataset(&dir, 16, 2, 96, 3);
    let inputs = dir.join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    let (ok1, one) = trainer_run(
        &dir,
        "one",
        &local_spec(1, &data, &splits, finetune(1, "fp32")),
        &inputs,
    );
    assert!(ok1, "{}", error(&one));
    let (ok2, two) = trainer_run(
        &dir,
        "two",
        &local_spec(1, &data, &splits, finetune(2, "fp32")),
        &inputs,
    );
    assert!(ok2, "{}", error(&two));
    assert_same_losses(&one, &two, "fcos fine-tune");
}

#[test]
fn two_gloo_ranks_pretrain_box_as_one_process_with_the_whole_batch() {
    let dir = temp("pretrain-box");
    let (data, splits) = synthetic_dataset(&dir, 16, 2, 96, 4);
    let inputs = dir.join("inputs");
    write_pseudo_boxes(&data, &inputs, PROPOSALS_RUN_ID);
    let config = |world_size: u32| {
        json!({
            "kind": "pretrain_box", "dataset_id": 1, "proposals_run_id": PROPOSALS_RUN_ID,
            "detector": "fcos", "backbone": "efficientnet_lite0",
            "backbone_init": {"from": "imagenet_backbone"},
            "views": {"min_sizes": [64, 80], "max_size": 96},
            "samples": 128, "embedding_dim": 32, "group_size": 2,
            "optim": {
                "batch_size": 4, "steps": STEPS, "warmup_steps": 2,
                "checkpoint_every": 1000, "loader_threads": 1, "world_size": world_size,
            },
        })
    };
    let (ok1, one) = trainer_run(
        &dir,
        "one",
        &local_spec(2, &data, &splits, config(1)),
        &inputs,
    );
    assert!(ok1, "{}", error(&one));
    let (ok2, two) = trainer_run(
        &dir,
        "two",
        &local_spec(2, &data, &splits, config(2)),
        &inputs,
    );
    assert!(ok2, "{}", error(&two));
    assert_same_losses(&one, &two, "pretrain_box");
}

/// MoCo over two ranks (shuffle-BN: the keys' batch statistics come from sub-batches mixed across
/// the ranks, so no exact one-process counterpart exists). The queue takes the keys of the whole
/// global batch each step, so its pointer in the checkpoint counts both ranks' images; a
/// re-claimed attempt resumes from that checkpoint and repeats the steps after it.
#[test]
fn two_gloo_ranks_pretrain_image_with_keys_shuffled_across_ranks() {
    const RUN_ID: i64 = 3;
    let dir = temp("pretrain-image");
    let (data, splits) = synthetic_dataset(&dir, 8, 2, 64, 6);
    let inputs = dir.join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    let spec = local_spec(
        RUN_ID,
        &data,
        &splits,
        json!({
            "kind": "pretrain_image", "dataset_id": 1, "split": "train",
            "backbone": "efficientnet_lite0", "init": {"from": "scratch"},
            "crop_size": 64, "queue_size": 16, "embedding_dim": 32, "hidden_dim": 64,
            "optim": {
                "batch_size": 4, "steps": 6, "lr": 0.03, "checkpoint_every": 3,
                "loader_threads": 1, "world_size": 2,
            },
        }),
    );
    let (ok, first) = trainer_run(&dir, "first", &spec, &inputs);
    assert!(ok, "{}", error(&first));
    // the key encoder and the queue, besides the query encoder, are the same on both ranks
    for step in [3, 6] {
        let agreed = format!("step {step}: the 2 ranks hold the same weights");
        assert!(logs(&first).contains(&agreed), "{}", logs(&first));
    }
    let losses = metric_series(&dir.join("first"), "loss/contrastive");
    assert_eq!(
        losses.keys().copied().collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    assert!(losses.values().all(|l| l.is_finite()), "{losses:?}");

    // after 3 steps of 2 × 2 keys the pointer is at 12 (6 had each rank kept its own)
    let checkpoint = dir.join("first/artifacts/checkpoint.safetensors");
    let meta = aligndet_trainer::train::checkpoint::read_metadata(&checkpoint).unwrap();
    assert_eq!(
        (meta["step"].as_str(), meta["queue_ptr"].as_str()),
        ("3", "12")
    );

    hand_over_checkpoint(&dir.join("first"), &inputs, RUN_ID);
    let (ok, resumed) = trainer_run(&dir, "resumed", &spec, &inputs);
    assert!(ok, "{}", error(&resumed));
    assert!(logs(&resumed).contains("resumed from the checkpoint at step 3"));
    let again = metric_series(&dir.join("resumed"), "loss/contrastive");
    assert_repeats(&losses, &again, 4..=6, 1e-4, "loss/contrastive");
}

#[test]
fn what_cannot_run_is_refused_by_name() {
    let dir = temp("refused");
    let (data, splits) = synthetic_dataset(&dir, 4, 1, 64, 5);
    let inputs = dir.join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();

    // fp16 needs CUDA
    let (ok, events) = trainer_run(
        &dir,
        "fp16",
        &local_spec(1, &data, &splits, finetune(1, "fp16")),
        &inputs,
    );
    assert!(!ok);
    assert!(
        error(&events).contains("fp16 needs a CUDA device"),
        "{}",
        error(&events)
    );

    // more CPU ranks than cores
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    if cores < 64 {
        let mut config = finetune(cores + 1, "fp32");
        config["optim"]["batch_size"] = json!(cores + 1);
        let (ok, events) = trainer_run(
            &dir,
            "ranks",
            &local_spec(1, &data, &splits, config),
            &inputs,
        );
        assert!(!ok);
        let e = error(&events);
        assert!(
            e.contains(&format!("world_size {}", cores + 1)) && e.contains("cores"),
            "{e}"
        );
    }

    // a batch that does not split over the ranks: refused before anything runs
    let mut config = finetune(2, "fp32");
    config["optim"]["batch_size"] = json!(3);
    let spec_path = dir.join("odd.json");
    std::fs::write(
        &spec_path,
        local_spec(1, &data, &splits, config).to_string(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .arg("run")
        .arg(&spec_path)
        .arg("--out")
        .arg(dir.join("odd"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("optim.batch_size") && stderr.contains("2 ranks"),
        "{stderr}"
    );
}
