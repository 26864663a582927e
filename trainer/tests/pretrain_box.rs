//! The `pretrain_box` job end to end through `trainer run`'s entry point, on a tiny synthetic
//! dataset, for FCOS and Faster R-CNN (whose RoI sampler draws from torch's generator): finite
//! losses, the exported detector, and a re-claimed attempt that resumes from the checkpoint and
//! repeats the unsaved steps — online detector, momentum detector, optimizer state and the
//! samplers' draws all restored.

mod support;

use aligndet_trainer::train::checkpoint::read_metadata;
use std::path::Path;
use support::{
    assert_repeats, local_spec, metric_series as series, rerun_from_checkpoint, run_local_job,
    synthetic_dataset, write_pseudo_boxes,
};

const RUN_ID: i64 = 9;
const PROPOSALS_RUN_ID: i64 = 4;

#[test]
fn pretrain_box_runs_resumes_exactly_and_exports_the_detector() {
    let dir = std::env::temp_dir().join(format!("aligndet-pretrain-box-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (data, splits) = synthetic_dataset(&dir, 6, 2, 96, 2);

    for detector in ["fcos", "faster_rcnn"] {
        let case = dir.join(detector);
        let inputs = case.join("inputs");
        write_pseudo_boxes(&data, &inputs, PROPOSALS_RUN_ID);
        let steps = 6;
        let config = serde_json::json!({
            "kind": "pretrain_box",
            "dataset_id": 1,
            "proposals_run_id": PROPOSALS_RUN_ID,
            "split": "train",
            "detector": detector,
            "backbone": "efficientnet_lite0",
            "backbone_init": {"from": "imagenet_backbone"},
            "views": {"min_sizes": [64, 80], "max_size": 96, "hflip": true, "color_ops": true},
            "samples": 128,
            "embedding_dim": 32,
            "optim": {
                "batch_size": 2,
                "steps": steps,
                "lr": 0.01,
                "warmup_steps": 1,
                "schedule": {"kind": "step", "milestones": [5], "gamma": 0.1},
                "checkpoint_every": 3,
                "loader_threads": 1,
            },
        });
        let spec = local_spec(RUN_ID, &data, &splits, config);
        let spec_path = case.join("spec.json");
        std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();

        let out = case.join("first");
        run_local_job(&spec_path, out.clone(), Some(inputs.clone()));
        let artifacts = out.join("artifacts");
        for name in [
            "backbone_load_report.json",
            "checkpoint.safetensors",
            "pretrained.safetensors",
        ] {
            assert!(artifacts.join(name).is_file(), "{detector}: {name} missing");
        }
        let first = series(&out, "loss/total");
        assert_eq!(first.len(), steps as usize, "{detector}");
        assert!(
            first.values().all(|l| l.is_finite()),
            "{detector}: {first:?}"
        );
        let contrastive = series(&out, "loss/contrastive");
        assert!(contrastive.values().all(|l| l.is_finite() && *l > 0.0));

        let meta = read_metadata(&artifacts.join("pretrained.safetensors")).unwrap();
        assert_eq!(meta["step"], steps.to_string(), "{detector}");
        let exported = safetensor_names(&artifacts.join("pretrained.safetensors"));
        assert!(
            exported.iter().any(|n| n.starts_with("backbone.fpn.")),
            "{detector}: the neck is exported"
        );
        assert!(
            !exported.iter().any(|n| n.contains("projector")
                || n.contains("pretrain_")
                || n.starts_with("momentum.")),
            "{detector}: pre-training-only modules are not exported: {exported:?}"
        );

        // The checkpoint artifact is the one saved at step 3: a re-claimed attempt resumes there
        // and repeats steps 4..=6 exactly (same batches, same sampler draws, same momentum
        // detector).
        let out2 = case.join("resumed");
        rerun_from_checkpoint(&spec_path, RUN_ID, &out, &inputs, out2.clone());
        let resumed = series(&out2, "loss/total");
        assert_repeats(
            &first,
            &resumed,
            4..=6,
            1e-4,
            &format!("{detector} loss/total"),
        );
        // How far the transferable weights moved is measured from the initialisation on every
        // attempt, not from where the resumed attempt started.
        let moved = series(&out, "pretrain/weight_change");
        let moved_resumed = series(&out2, "pretrain/weight_change");
        assert!(
            moved[&1] > 0.0 && moved[&6] > moved[&1],
            "{detector}: {moved:?}"
        );
        for (step, m) in &moved_resumed {
            assert!(
                (moved[step] - m).abs() <= 1e-4 * moved[step],
                "{detector} step {step}: weight change {} first, {m} resumed",
                moved[step]
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Tensor names of a safetensors file (its JSON header).
fn safetensor_names(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect()
}
