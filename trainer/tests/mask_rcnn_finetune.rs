//! Mask R-CNN through the fine-tune job on the synthetic dataset (polygon masks): the loader
//! decodes the masks, `loss_mask` is logged with the other terms, and the predictions carry RLE
//! masks; a bad mask fails the job naming its annotation, before anything is stored.

use aligndet_trainer::eval::coco::mask::rle::Rle;
use aligndet_trainer::jobs::{RunArgs, run_local};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

mod support;

use support::{local_spec, metric_series, synthetic_dataset};

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aligndet-mask-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config() -> Value {
    json!({
        "kind": "finetune", "dataset_id": 1, "detector": "mask_rcnn",
        "backbone": "resnet18", "init": {"from": "scratch"},
        "eval_every": 1000, "final_eval_max_images": 2,
        "optim": {"steps": 4, "batch_size": 2, "warmup_steps": 1, "lr": 0.002,
                  "checkpoint_every": 1000, "loader_threads": 1, "seed": 3},
        "augment": {"min_sizes": [96], "max_size": 96, "hflip": true, "color_jitter": 0.0}
    })
}

fn run(dir: &Path, name: &str, spec: &Value) -> (anyhow::Result<()>, PathBuf) {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(spec).unwrap()).unwrap();
    let out = dir.join(name);
    let result = run_local(RunArgs {
        spec: path,
        out: out.clone(),
        device: "cpu".into(),
        inputs: None,
        gpus: None,
    });
    (result, out)
}

#[test]
fn mask_rcnn_fine_tunes_and_predicts_rle_masks() {
    let dir = temp("ok");
    let (data, splits) = synthetic_dataset(&dir, 6, 2, 96, 4);
    let (result, out) = run(&dir, "run", &local_spec(1, &data, &splits, config()));
    result.expect("the Mask R-CNN fine-tune succeeds");
    let segm_ap = metric_series(&out, "eval/segm_AP");
    assert_eq!(segm_ap.len(), 1, "the final evaluation reports mask AP");
    assert!(
        segm_ap.values().all(|v| (0.0..=1.0).contains(v)),
        "{segm_ap:?}"
    );
    let loss = metric_series(&out, "loss/loss_mask");
    assert_eq!(loss.len(), 4, "loss_mask at every step: {loss:?}");
    assert!(loss.values().all(|v| v.is_finite() && *v > 0.0), "{loss:?}");
    let predictions: Value =
        serde_json::from_slice(&std::fs::read(out.join("artifacts/predictions.json")).unwrap())
            .unwrap();
    let items = predictions.as_array().expect("a results list");
    assert!(
        !items.is_empty(),
        "an untrained model still detects at score 0.05"
    );
    for p in items {
        let seg = &p["segmentation"];
        let size: Vec<u32> = serde_json::from_value(seg["size"].clone()).unwrap();
        assert_eq!(size, vec![96, 96], "masks have the image's size");
        Rle::from_compressed(seg["counts"].as_str().unwrap(), size[0], size[1])
            .expect("counts are pycocotools' compressed string");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_polygon_with_two_points_fails_the_job_naming_the_annotation() {
    let dir = temp("bad");
    let (data, splits) = synthetic_dataset(&dir, 4, 1, 64, 4);
    let path = data.join("annotations.json");
    let mut coco: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let train: Vec<i64> = serde_json::from_value(splits["train"].clone()).unwrap();
    let ann = coco["annotations"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|a| train.contains(&a["image_id"].as_i64().unwrap()))
        .expect("a training annotation");
    ann["segmentation"] = json!([[1, 1, 10, 10]]);
    let (id, image) = (
        ann["id"].as_i64().unwrap(),
        ann["image_id"].as_i64().unwrap(),
    );
    std::fs::write(&path, serde_json::to_vec(&coco).unwrap()).unwrap();
    let (result, out) = run(&dir, "run", &local_spec(1, &data, &splits, config()));
    let e = format!("{:#}", result.expect_err("a bad mask fails the job"));
    assert!(
        e.contains(&format!("image {image}, annotation {id}")) && e.contains("3 points"),
        "{e}"
    );
    assert!(
        !out.join("artifacts/checkpoint.safetensors").exists()
            && !out.join("artifacts/model.safetensors").exists(),
        "nothing is stored"
    );
    let _ = std::fs::remove_dir_all(dir);
}
