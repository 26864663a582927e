//! What the trainer's integration tests share: the setup's Python venv and running the
//! repository's reference scripts with it (parity tests), and tiny synthetic datasets run through
//! `trainer run`'s entry point (job tests). Each test binary uses only some of it.
#![allow(dead_code)]

pub mod detections;
pub mod parity;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

/// The setup's cache folder (`ALIGNDET_CACHE`, default ~/.cache/aligndet-studio).
pub fn cache() -> PathBuf {
    std::env::var_os("ALIGNDET_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME is set"))
                .join(".cache/aligndet-studio")
        })
}

/// Run scripts/`script` with the setup's venv; it must succeed.
pub fn run_script(script: &str, args: &[&OsStr]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(script);
    let status = Command::new(cache().join("venv/bin/python"))
        .arg(&path)
        .args(args)
        .status()
        .expect("run a Python script (scripts/setup.sh installs its venv)");
    assert!(status.success(), "{script} failed");
}

/// Run scripts/`script` with `args` and `--out DIR` (a fresh temp folder named by `tag`);
/// returns the folder the reference wrote.
pub fn reference(script: &str, tag: &str, args: &[&str]) -> PathBuf {
    let out = std::env::temp_dir().join(format!("aligndet-{tag}-{}", std::process::id()));
    let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    all.push(OsStr::new("--out"));
    all.push(out.as_os_str());
    run_script(script, &all);
    out
}

/// A tiny synthetic dataset (`train` + `val` images of `size` px) written under `dir/data`;
/// returns its folder and its `splits.json` content.
pub fn synthetic_dataset(
    dir: &std::path::Path,
    train: u32,
    val: u32,
    size: u32,
    seed: u64,
) -> (PathBuf, serde_json::Value) {
    use aligndet_trainer::data::synthetic::{self, SynthArgs};
    let data = dir.join("data");
    synthetic::main(SynthArgs {
        out: data.clone(),
        train,
        val,
        size,
        seed,
    })
    .unwrap();
    let splits = serde_json::from_slice(&std::fs::read(data.join("splits.json")).unwrap()).unwrap();
    (data, splits)
}

/// A job spec for `trainer run` over the synthetic dataset at `data`.
pub fn local_spec(
    run_id: i64,
    data: &std::path::Path,
    splits: &serde_json::Value,
    config: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "run_id": run_id,
        "attempt": 1,
        "name": "local-test",
        "lease_seconds": 0.0,
        "dataset": {
            "dataset_id": 1,
            "name": "synthetic",
            "annotations_path": data.join("annotations.json"),
            "image_root": data.join("images"),
            "splits": splits,
        },
        "config": config,
    })
}

/// Run a spec as `trainer run SPEC --out OUT [--inputs INPUTS]` does; it must succeed.
pub fn run_local_job(spec: &std::path::Path, out: PathBuf, inputs: Option<PathBuf>) {
    aligndet_trainer::jobs::run_local(aligndet_trainer::jobs::RunArgs {
        spec: spec.to_path_buf(),
        out,
        device: "cpu".into(),
        inputs,
        gpus: None,
    })
    .expect("the job runs");
}

/// Metric `key` by step from a local run's `events.jsonl`.
pub fn metric_series(out: &std::path::Path, key: &str) -> std::collections::BTreeMap<i64, f64> {
    let text = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    let mut map = std::collections::BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(points) = v.get("points").and_then(|p| p.as_array()) {
            for p in points {
                if p["key"] == key {
                    map.insert(p["step"].as_i64().unwrap(), p["value"].as_f64().unwrap());
                }
            }
        }
    }
    map
}

/// The first attempt's `checkpoint.safetensors` (in `first_out`'s artifacts) becomes run
/// `run_id`'s own input under `inputs`, where a re-claimed attempt finds it.
pub fn hand_over_checkpoint(first_out: &std::path::Path, inputs: &std::path::Path, run_id: i64) {
    let own = inputs.join(run_id.to_string());
    std::fs::create_dir_all(&own).unwrap();
    std::fs::copy(
        first_out.join("artifacts/checkpoint.safetensors"),
        own.join("checkpoint.safetensors"),
    )
    .unwrap();
}

/// A re-claimed attempt: [`hand_over_checkpoint`], then the spec runs again into `resumed_out`.
pub fn rerun_from_checkpoint(
    spec: &std::path::Path,
    run_id: i64,
    first_out: &std::path::Path,
    inputs: &std::path::Path,
    resumed_out: PathBuf,
) {
    hand_over_checkpoint(first_out, inputs, run_id);
    run_local_job(spec, resumed_out, Some(inputs.to_path_buf()));
}

/// The resumed attempt logged exactly `steps`, each equal to the first attempt's value within
/// `rel_tol` (relative to max(|value|, 1)).
pub fn assert_repeats(
    first: &std::collections::BTreeMap<i64, f64>,
    resumed: &std::collections::BTreeMap<i64, f64>,
    steps: std::ops::RangeInclusive<i64>,
    rel_tol: f64,
    what: &str,
) {
    assert_eq!(
        resumed.keys().copied().collect::<Vec<_>>(),
        steps.collect::<Vec<_>>(),
        "{what}"
    );
    for (step, l) in resumed {
        let a = first[step];
        assert!(
            (a - l).abs() <= rel_tol * a.abs().max(1.0),
            "{what} step {step}: {a} first, {l} resumed"
        );
    }
}

/// The synthetic ground-truth boxes as the `pseudo_boxes.json` of proposals run
/// `proposals_run_id` under `inputs` (box-domain pre-training never reads labels, so any boxes
/// will do).
pub fn write_pseudo_boxes(data: &std::path::Path, inputs: &std::path::Path, proposals_run_id: i64) {
    let coco: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("annotations.json")).unwrap()).unwrap();
    let mut by_image: std::collections::BTreeMap<i64, Vec<serde_json::Value>> =
        std::collections::BTreeMap::new();
    for img in coco["images"].as_array().unwrap() {
        by_image.entry(img["id"].as_i64().unwrap()).or_default();
    }
    for a in coco["annotations"].as_array().unwrap() {
        by_image
            .get_mut(&a["image_id"].as_i64().unwrap())
            .unwrap()
            .push(a["bbox"].clone());
    }
    let images: Vec<serde_json::Value> = by_image
        .into_iter()
        .map(|(id, boxes)| serde_json::json!({"image_id": id, "boxes": boxes}))
        .collect();
    let dir = inputs.join(proposals_run_id.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pseudo_boxes.json"),
        serde_json::to_vec(&serde_json::json!({"strategy": "test", "images": images})).unwrap(),
    )
    .unwrap();
}
