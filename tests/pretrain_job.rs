//! Box-domain pre-training through the platform, for each detector: a `proposals` run makes the
//! pseudo-boxes, a `pretrain_box` run trains neck and heads on them against the momentum
//! detector, and a `finetune` run started from its `pretrained.safetensors` loads every module
//! except the task predictors. Mask R-CNN fine-tunes from the Faster R-CNN pre-training (the
//! reference pre-trains no mask branch): only its box predictor and mask head start fresh.

use aligndet_studio::*;
use serde_json::{Value, json};
use std::time::Duration;

fn pretrain_config(dataset: i64, proposals: i64, detector: &str, steps: u32) -> Value {
    json!({
        "kind": "pretrain_box", "dataset_id": dataset, "proposals_run_id": proposals,
        "detector": detector, "backbone": "efficientnet_lite0",
        "backbone_init": {"from": "imagenet_backbone"},
        "views": {"min_sizes": [96, 112], "max_size": 128, "hflip": true, "color_ops": true},
        "samples": 256,
        "optim": {
            "batch_size": 2, "steps": steps, "warmup_steps": 2, "lr": 0.01,
            "schedule": {"kind": "cosine", "min_factor": 0.1},
            "checkpoint_every": 3, "loader_threads": 1, "seed": 5
        }
    })
}

fn finetune_config(dataset: i64, detector: &str, pretrain_run: i64) -> Value {
    json!({
        "kind": "finetune", "dataset_id": dataset, "detector": detector,
        "backbone": "efficientnet_lite0",
        "init": {"from": "checkpoint", "artifact": {"run_id": pretrain_run, "name": "pretrained.safetensors"}},
        "optim": {"steps": 1, "batch_size": 2, "warmup_steps": 0, "loader_threads": 1},
        "eval_every": 1, "eval_max_images": 2, "augment": {"min_sizes": [96], "max_size": 128}
    })
}

/// The task modules a fine-tuning detector has and its pre-training form does not.
fn is_task_module(detector: &str, name: &str) -> bool {
    let mask = ["roi_heads.mask_head.", "roi_heads.mask_predictor."];
    ["cls_logits", "bbox_reg", "bbox_ctrness", "box_predictor"]
        .iter()
        .any(|p| name.contains(p))
        || (detector == "mask_rcnn" && mask.iter().any(|p| name.starts_with(p)))
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn pretraining_of_each_detector_transfers_every_module_but_the_predictors() {
    let db = TestDb::create();
    let data = TempDir::new("pt");
    let imports = TempDir::new("pt-imports");
    let (ann, images) = write_rect_dataset(imports.path(), 10, 96);
    let mut opts = ServerOptions::new(&db, data.path());
    opts.import_roots = vec![imports.path().to_path_buf()];
    let server = Server::start(&opts);
    let dataset = import_dataset(&server, "rects", &ann, &images);
    let _worker = Worker::start(&server, "w");
    let done = |r: &Value| r["status"] == "succeeded" || r["status"] == "failed";

    let proposals = server.create_run(
        "boxes",
        json!({"kind": "proposals", "dataset_id": dataset, "strategy": "fast",
               "filter": {"min_side": 8.0}}),
    );
    let r = server.wait_run(proposals, Duration::from_secs(300), "proposals", done);
    assert_eq!(r["status"], "succeeded", "{r}");

    for detector in ["fcos", "retinanet", "faster_rcnn"] {
        let steps = 6;
        let run = server.create_run(
            &format!("pt-{detector}"),
            pretrain_config(dataset, proposals, detector, steps),
        );
        let r = server.wait_run(run, Duration::from_secs(600), "pre-training", done);
        assert_eq!(r["status"], "succeeded", "{detector}: {r}");
        for key in [
            "loss/contrastive",
            "loss/regression",
            "train/ema_momentum",
            "pretrain/instances",
        ] {
            let n = db.query(&format!(
                "SELECT count(DISTINCT step) FROM metrics WHERE run_id = {run} AND key = '{key}'"
            ));
            assert_eq!(n, steps.to_string(), "{detector}: {key}");
        }
        let finite = db.query(&format!(
            "SELECT bool_and(value = value AND value < 1e30) FROM metrics WHERE run_id = {run} AND key LIKE 'loss/%'"
        ));
        assert_eq!(finite, "t", "{detector}: a loss is not finite");
        // the momentum schedule rises from m0 towards 1
        let m: Vec<f64> = db
            .query(&format!(
                "SELECT string_agg(value::text, ',' ORDER BY step) FROM metrics WHERE run_id = {run} AND key = 'train/ema_momentum'"
            ))
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect();
        assert!(
            (m[0] - 0.996).abs() < 1e-9 && m.windows(2).all(|w| w[1] > w[0]),
            "{m:?}"
        );

        let fine_tunes: &[&str] = match detector {
            "faster_rcnn" => &["faster_rcnn", "mask_rcnn"],
            _ => &[detector],
        };
        for &fine_tune in fine_tunes {
            check_fine_tune_loads(&server, dataset, run, fine_tune);
        }
    }
}

/// A fine-tune of `detector` from pre-training run `pretrain` succeeds and loads every module
/// but the task ones (`is_task_module`), each of which starts fresh.
fn check_fine_tune_loads(server: &Server, dataset: i64, pretrain: i64, detector: &str) {
    let done = |r: &Value| r["status"] == "succeeded" || r["status"] == "failed";
    let ft = server.create_run(
        &format!("ft-{detector}"),
        finetune_config(dataset, detector, pretrain),
    );
    let r = server.wait_run(ft, Duration::from_secs(600), "fine-tuning", done);
    assert_eq!(r["status"], "succeeded", "{detector}: {r}");
    let report: Value = server
        .get(&format!("/runs/{ft}/artifacts/load_report.json"))
        .json()
        .unwrap();
    let (loaded, missing) = (names(&report["loaded"]), names(&report["missing"]));
    assert!(
        names(&report["unexpected"]).is_empty(),
        "{detector}: {report}"
    );
    assert_eq!(report["shape_mismatch"], json!([]), "{detector}: {report}");
    assert!(
        missing.iter().all(|n| is_task_module(detector, n)) && !missing.is_empty(),
        "{detector}: missing {missing:?}"
    );
    let mut modules = vec!["backbone.body.", "backbone.fpn."];
    modules.extend(match detector {
        "faster_rcnn" | "mask_rcnn" => ["rpn.head.", "roi_heads.box_head."],
        _ => [
            "head.classification_head.conv.",
            "head.regression_head.conv.",
        ],
    });
    if detector == "mask_rcnn" {
        // the mask branch is all there and all fresh
        for module in ["roi_heads.mask_head.", "roi_heads.mask_predictor."] {
            assert!(
                missing.iter().any(|n| n.starts_with(module)),
                "{detector}: {module}"
            );
        }
    }
    for module in modules {
        assert!(
            loaded.iter().any(|n| n.starts_with(module)),
            "{detector}: {module}"
        );
    }
}
