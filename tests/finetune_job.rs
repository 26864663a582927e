//! The `finetune` job through the platform: a worker trains a detector, the run gets its loss and
//! mAP curves, model, predictions and evaluation; a worker killed mid-run is replaced by another
//! that resumes from the last checkpoint without recomputing or duplicating metric points; and
//! `trainer predict` runs the stored model.

use aligndet_studio::*;
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

fn config(dataset: i64, steps: u32) -> Value {
    json!({
        "kind": "finetune", "dataset_id": dataset, "detector": "fcos", "backbone": "resnet18",
        "init": {"from": "scratch"}, "eval_every": 4, "eval_max_images": 2,
        "optim": {
            "steps": steps, "batch_size": 2, "warmup_steps": 2, "lr": 0.005,
            "checkpoint_every": 2, "loader_threads": 1, "seed": 3,
            "schedule": {"kind": "cosine", "min_factor": 0.1}
        },
        "augment": {"min_sizes": [96], "max_size": 96, "hflip": true, "color_jitter": 0.1}
    })
}

#[test]
fn a_killed_finetune_resumes_from_its_checkpoint_and_predict_uses_the_model() {
    let f = RectDataset::start("ft", 12, 96, |o| {
        o.lease_seconds = 4.0;
        o.heartbeat_seconds = 0.5;
    });
    let (server, db, dataset, data) = (&f.server, &f.db, f.dataset, &f.data);
    let (ann, images) = (&f.ann, &f.images);
    let steps = 10;
    let run = server.create_run("ft", config(dataset, steps));

    let mut first = Worker::start(server, "doomed");
    let checkpoint_stored = || {
        db.query(&format!(
            "SELECT count(*) FROM artifacts WHERE run_id = {run} AND name = 'checkpoint.safetensors'"
        )) == "1"
    };
    server.wait_run(run, Duration::from_secs(600), "a checkpoint", |r| {
        r["status"] == "failed" || checkpoint_stored()
    });
    first.kill_hard();
    let r = server.wait_run(run, Duration::from_secs(60), "re-queued", |r| {
        r["status"] == "queued" || r["status"] == "failed"
    });
    assert_eq!(r["status"], "queued", "{r}");
    let steps_before = db.query(&format!(
        "SELECT coalesce(max(step), 0) FROM metrics WHERE run_id = {run} AND key = 'loss/total'"
    ));
    let _second = Worker::start(server, "rescuer");
    let r = server.wait_run(run, Duration::from_secs(900), "finished", |r| {
        r["status"] == "succeeded" || r["status"] == "failed"
    });
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["attempts"], 2);

    // the second attempt resumed at the stored checkpoint's step …
    let at = resumed_at(db, run, 2);
    assert!(
        at >= 2 && at.is_multiple_of(2) && at < steps,
        "resumed at {at}"
    );
    let before: u32 = steps_before.trim().parse().unwrap();
    assert!(
        at <= before,
        "checkpoint {at} is past the first attempt's last step {before}"
    );
    // … so steps up to it were not recomputed, later ones were logged once, by attempt 2
    let count = |cond: &str| {
        db.query(&format!(
            "SELECT count(*) FROM metrics WHERE run_id = {run} AND key = 'loss/total' AND {cond}"
        ))
    };
    assert_eq!(count("true"), steps.to_string(), "one point per step");
    assert_eq!(
        count(&format!("step <= {at} AND attempt = 1")),
        at.to_string()
    );
    assert_eq!(
        count(&format!("step > {at} AND attempt = 2")),
        (steps - at).to_string()
    );
    for key in [
        "loss/classification",
        "loss/bbox_regression",
        "loss/bbox_ctrness",
        "train/lr",
    ] {
        let n = db.query(&format!(
            "SELECT count(*) FROM metrics WHERE run_id = {run} AND key = '{key}'"
        ));
        assert_eq!(n, steps.to_string(), "{key}");
    }
    // periodic evaluations at steps 4 and 8 and the final one
    let evals = db.query(&format!(
        "SELECT string_agg(step::text, ',' ORDER BY step) FROM metrics WHERE run_id = {run} AND key = 'eval/AP'"
    ));
    assert_eq!(evals, "4,8,10");
    for name in [
        "model.safetensors",
        "eval.json",
        "predictions.json",
        "load_report.json",
    ] {
        let resp = server.get(&format!("/runs/{run}/artifacts/{name}"));
        assert!(resp.status().is_success(), "{name}: {}", resp.status());
    }
    let eval: Value = server
        .get(&format!("/runs/{run}/artifacts/eval.json"))
        .json()
        .unwrap();
    assert_eq!(eval["num_images"], 4);
    assert_eq!(eval["stats"].as_array().map(|a| a.len()), Some(12));

    // trainer predict with the stored model (its config and categories come from the file)
    let model = data.path().join("model.safetensors");
    let bytes = server
        .get(&format!("/runs/{run}/artifacts/model.safetensors"))
        .bytes()
        .unwrap();
    std::fs::write(&model, &bytes).unwrap();
    let out = data.path().join("dets.json");
    let status = Command::new(bin("trainer"))
        .args(["predict", "--weights"])
        .arg(&model)
        .arg("--images")
        .arg(images)
        .arg("--dataset")
        .arg(ann)
        .arg("--out")
        .arg(&out)
        .arg("--score-threshold")
        .arg("0.0")
        .status()
        .unwrap();
    assert!(status.success());
    let dets: Vec<Value> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert!(!dets.is_empty());
    for d in &dets {
        let id = d["image_id"].as_i64().unwrap();
        assert!((1..=12).contains(&id), "{d}");
        assert!(matches!(d["category_id"].as_i64(), Some(1 | 2)), "{d}");
        assert_eq!(d["bbox"].as_array().map(|b| b.len()), Some(4));
    }
    // a weights file that is not a model of ours is refused with a clear message
    let junk = data.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file").unwrap();
    let o = Command::new(bin("trainer"))
        .args(["predict", "--weights"])
        .arg(&junk)
        .arg("--images")
        .arg(images)
        .arg("--out")
        .arg(data.path().join("x.json"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("junk.safetensors"), "{err}");
    assert!(!data.path().join("x.json").exists());
}
