//! The `pretrain_image` job end to end through `trainer run`'s entry point, on a tiny synthetic
//! dataset: artifacts, finite loss, resumption from its own checkpoint, and a
//! `backbone.safetensors` that loads into a fresh body with no body tensor missing.

use aligndet_trainer::data::synthetic::{self, SynthArgs};
use aligndet_trainer::jobs::{RunArgs, run_local};
use aligndet_trainer::models::backbone::{BodyKind, build_body};
use aligndet_trainer::models::norm::NormKind;
use aligndet_trainer::models::weights::load_safetensors;
use aligndet_trainer::train::checkpoint::read_metadata;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const RUN_ID: i64 = 7;

fn losses(out: &Path) -> BTreeMap<i64, f64> {
    let text = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(points) = v.get("points").and_then(|p| p.as_array()) {
            for p in points {
                if p["key"] == "loss/contrastive" {
                    map.insert(p["step"].as_i64().unwrap(), p["value"].as_f64().unwrap());
                }
            }
        }
    }
    map
}

fn run(spec: &Path, out: PathBuf, inputs: Option<PathBuf>) {
    run_local(RunArgs {
        spec: spec.to_path_buf(),
        out,
        device: "cpu".into(),
        inputs,
    })
    .expect("the pretrain_image job runs");
}

#[test]
fn pretrain_image_runs_resumes_and_exports_a_loadable_backbone() {
    let dir = std::env::temp_dir().join(format!("aligndet-pretrain-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    synthetic::main(SynthArgs {
        out: data.clone(),
        train: 6,
        val: 2,
        size: 96,
        seed: 1,
    })
    .unwrap();
    let splits: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("splits.json")).unwrap()).unwrap();
    let steps = 20;
    let spec = serde_json::json!({
        "run_id": RUN_ID,
        "attempt": 1,
        "name": "pretrain-image-test",
        "lease_seconds": 0.0,
        "dataset": {
            "dataset_id": 1,
            "name": "synthetic",
            "annotations_path": data.join("annotations.json"),
            "image_root": data.join("images"),
            "splits": splits,
        },
        "config": {
            "kind": "pretrain_image",
            "dataset_id": 1,
            "split": "train",
            "backbone": "efficientnet_lite0",
            "init": {"from": "scratch"},
            "crop_size": 64,
            "queue_size": 16,
            "embedding_dim": 32,
            "hidden_dim": 64,
            "batch_size": 4,
            "steps": steps,
            "lr": 0.03,
            "checkpoint_every": 10,
            "loader_threads": 1,
        },
    });
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();

    let out = dir.join("first");
    run(&spec_path, out.clone(), None);
    let artifacts = out.join("artifacts");
    for name in [
        "load_report.json",
        "checkpoint.safetensors",
        "backbone.safetensors",
    ] {
        assert!(artifacts.join(name).is_file(), "{name} missing");
    }
    let first = losses(&out);
    assert_eq!(first.len(), steps as usize);
    assert!(first.values().all(|l| l.is_finite()), "{first:?}");

    // the exported backbone: body tensors only, loading into a fresh body with nothing missing
    let backbone = artifacts.join("backbone.safetensors");
    let meta = read_metadata(&backbone).unwrap();
    assert_eq!(meta["format"], "aligndet-backbone");
    assert_eq!(meta["backbone"], "efficientnet_lite0");
    assert_eq!(meta["step"], steps.to_string());
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _body = build_body(
        &(vs.root() / "backbone" / "body"),
        BodyKind::EfficientnetLite0,
        NormKind::FrozenBn,
    );
    let report = load_safetensors(&mut vs, &backbone, None).unwrap();
    assert!(report.missing.is_empty(), "missing {:?}", report.missing);
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    assert!(
        report.shape_mismatch.is_empty(),
        "{:?}",
        report.shape_mismatch
    );
    assert_eq!(report.loaded.len(), vs.variables().len());

    // a re-claimed attempt resumes from the checkpoint at step 10 and repeats steps 11..=20
    let inputs = dir.join("inputs");
    std::fs::create_dir_all(inputs.join(RUN_ID.to_string())).unwrap();
    std::fs::copy(
        artifacts.join("checkpoint.safetensors"),
        inputs
            .join(RUN_ID.to_string())
            .join("checkpoint.safetensors"),
    )
    .unwrap();
    let out2 = dir.join("resumed");
    run(&spec_path, out2.clone(), Some(inputs));
    let resumed = losses(&out2);
    assert_eq!(
        resumed.keys().copied().collect::<Vec<_>>(),
        (11..=20).collect::<Vec<_>>()
    );
    for (step, l) in &resumed {
        let a = first[step];
        assert!(
            (a - l).abs() <= 1e-3 * a.abs().max(1.0),
            "step {step}: {a} first, {l} resumed"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
