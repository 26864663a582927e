//! The `pretrain_image` job end to end through `trainer run`'s entry point, on a tiny synthetic
//! dataset: artifacts, finite loss, resumption from its own checkpoint, and a
//! `backbone.safetensors` that loads into a fresh body with no body tensor missing.

mod support;

use aligndet_trainer::models::backbone::{BodyKind, build_body};
use aligndet_trainer::models::norm::NormKind;
use aligndet_trainer::models::weights::load_safetensors;
use aligndet_trainer::train::checkpoint::read_metadata;
use support::{
    assert_repeats, local_spec, metric_series, rerun_from_checkpoint, run_local_job,
    synthetic_dataset,
};

const RUN_ID: i64 = 7;

#[test]
fn pretrain_image_runs_resumes_and_exports_a_loadable_backbone() {
    let dir = std::env::temp_dir().join(format!("aligndet-pretrain-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (data, splits) = synthetic_dataset(&dir, 6, 2, 96, 1);
    let steps = 20;
    let config = serde_json::json!({
        "kind": "pretrain_image",
        "dataset_id": 1,
        "split": "train",
        "backbone": "efficientnet_lite0",
        "init": {"from": "scratch"},
        "crop_size": 64,
        "queue_size": 16,
        "embedding_dim": 32,
        "hidden_dim": 64,
        "optim": {
            "batch_size": 4,
            "steps": steps,
            "lr": 0.03,
            "checkpoint_every": 10,
            "loader_threads": 1,
        },
    });
    let spec = local_spec(RUN_ID, &data, &splits, config);
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();

    let out = dir.join("first");
    run_local_job(&spec_path, out.clone(), None);
    let artifacts = out.join("artifacts");
    for name in [
        "load_report.json",
        "checkpoint.safetensors",
        "backbone.safetensors",
    ] {
        assert!(artifacts.join(name).is_file(), "{name} missing");
    }
    let first = metric_series(&out, "loss/contrastive");
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
    let out2 = dir.join("resumed");
    rerun_from_checkpoint(&spec_path, RUN_ID, &out, &dir.join("inputs"), out2.clone());
    let resumed = metric_series(&out2, "loss/contrastive");
    assert_repeats(&first, &resumed, 11..=20, 1e-3, "loss/contrastive");
    let _ = std::fs::remove_dir_all(&dir);
}
