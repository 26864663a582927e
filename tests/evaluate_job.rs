//! The `evaluate` job through the platform: a results file uploaded with the form, scored by a
//! worker, the statistics and tables on the run page.

use aligndet_studio::*;
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{Value, json};
use std::time::Duration;

#[test]
fn an_uploaded_results_file_is_evaluated_and_shown() {
    let db = TestDb::create();
    let data = TempDir::new("eval");
    let imports = TempDir::new("eval-imports");
    let (ann, images) = write_small_coco(imports.path(), 6);
    let mut opts = ServerOptions::new(&db, data.path());
    opts.import_roots = vec![imports.path().to_path_buf()];
    let server = Server::start(&opts);
    let ui = server.browser_session();
    let r = ui.post_form(
        "/datasets/import",
        &[
            ("name", "small"),
            ("format", "coco"),
            ("annotations", ann.to_str().unwrap()),
            ("images", images.to_str().unwrap()),
        ],
    );
    assert!(r.status().is_success());
    let dataset: i64 = db.query("SELECT id FROM datasets").parse().unwrap();

    // Detections: every GT box found with a high score, plus one false positive per image.
    let gt: Value = serde_json::from_slice(&std::fs::read(&ann).unwrap()).unwrap();
    let mut dets = vec![];
    for a in gt["annotations"].as_array().unwrap() {
        dets.push(json!({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}));
        dets.push(json!({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [40, 30, 10, 10], "score": 0.1}));
    }
    let form = Form::new()
        .text("name", "perfect detector")
        .text("dataset_id", dataset.to_string())
        .text("split", "")
        .part(
            "detections",
            Part::bytes(serde_json::to_vec(&dets).unwrap()).file_name("dets.json"),
        );
    let r = ui.post_multipart("/runs/evaluate", form);
    assert!(r.status().is_success(), "{}", r.status());
    let run: i64 = r
        .url()
        .path()
        .trim_start_matches("/runs/")
        .parse()
        .expect("redirected to the run page");

    let _w = Worker::start(&server, "evaluator");
    let r = server.wait_run(run, Duration::from_secs(120), "finished", |r| {
        r["status"] == "succeeded" || r["status"] == "failed"
    });
    assert_eq!(r["status"], "succeeded", "{r}");
    // The true positives outrank the false positives, so AP is exactly 1.
    assert_eq!(
        db.query(&format!(
            "SELECT value FROM metrics WHERE run_id = {run} AND key = 'eval/AP'"
        )),
        "1"
    );
    let page = server.get(&format!("/runs/{run}")).text().unwrap();
    assert!(
        page.contains("id=\"coco-stats\"") && page.contains("1.000"),
        "stats table"
    );
    assert!(
        page.contains("id=\"per-class\"") && page.contains("red box"),
        "per-class table"
    );
    assert!(page.contains("id=\"per-size\""), "per-size table");
    assert!(page.contains("Precision-recall"), "PR curves");

    // A results file that is not JSON is refused at the form.
    let form = Form::new().text("dataset_id", dataset.to_string()).part(
        "detections",
        Part::bytes(b"[{\"image_id\": 1,".to_vec()).file_name("bad.json"),
    );
    let r = ui.post_multipart("/runs/evaluate", form);
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("not valid JSON"));
    // Detections on an unknown image fail the run with a message naming it.
    let form = Form::new().text("dataset_id", dataset.to_string()).part(
        "detections",
        Part::bytes(
            br#"[{"image_id": 999, "category_id": 1, "bbox": [1,1,5,5], "score": 0.5}]"#.to_vec(),
        )
        .file_name("d.json"),
    );
    let r = ui.post_multipart("/runs/evaluate", form);
    let bad: i64 = r.url().path().trim_start_matches("/runs/").parse().unwrap();
    let r = server.wait_run(bad, Duration::from_secs(120), "failed", |r| {
        r["status"] == "failed"
    });
    assert!(r["error"].as_str().unwrap().contains("999"), "{r}");
}

/// Uploads `dets` for an evaluation of `dataset` and waits for the run to finish; its id and
/// state.
fn evaluate_upload(server: &Server, dataset: i64, dets: &[Value]) -> (i64, Value) {
    let form = Form::new()
        .text("name", "masks")
        .text("dataset_id", dataset.to_string())
        .text("split", "")
        .part(
            "detections",
            Part::bytes(serde_json::to_vec(dets).unwrap()).file_name("dets.json"),
        );
    let r = server
        .browser_session()
        .post_multipart("/runs/evaluate", form);
    assert!(r.status().is_success(), "{}", r.status());
    let run: i64 = r.url().path().trim_start_matches("/runs/").parse().unwrap();
    let r = server.wait_run(run, Duration::from_secs(120), "finished", |r| {
        r["status"] == "succeeded" || r["status"] == "failed"
    });
    (run, r)
}

/// Each ground-truth annotation found, with its mask as a polygon (its own segmentation, or its
/// box), plus one low-scored false positive per annotation.
fn mask_results(ann: &std::path::Path) -> Vec<Value> {
    let gt: Value = serde_json::from_slice(&std::fs::read(ann).unwrap()).unwrap();
    let mut dets = vec![];
    for a in gt["annotations"].as_array().unwrap() {
        let b: Vec<f64> = serde_json::from_value(a["bbox"].clone()).unwrap();
        let polygon = a["segmentation"].clone();
        let polygon = if polygon.is_null() {
            json!([[
                b[0],
                b[1],
                b[0] + b[2],
                b[1],
                b[0] + b[2],
                b[1] + b[3],
                b[0],
                b[1] + b[3]
            ]])
        } else {
            polygon
        };
        dets.push(
            json!({"image_id": a["image_id"], "category_id": a["category_id"],
            "bbox": a["bbox"], "score": 0.9, "segmentation": polygon}),
        );
        dets.push(
            json!({"image_id": a["image_id"], "category_id": a["category_id"],
            "bbox": [70, 70, 10, 10], "score": 0.1,
            "segmentation": [[70, 70, 80, 70, 80, 80, 70, 80]]}),
        );
    }
    dets
}

#[test]
fn mask_results_are_scored_beside_boxes_and_refused_on_a_dataset_without_masks() {
    let db = TestDb::create();
    let data = TempDir::new("eval-masks");
    let imports = TempDir::new("eval-masks-imports");
    let (rects, rect_images) = write_rect_dataset(&imports.path().join("rects"), 6, 96);
    let (boxes, box_images) = write_small_coco(&imports.path().join("boxes"), 4);
    let mut opts = ServerOptions::new(&db, data.path());
    opts.import_roots = vec![imports.path().to_path_buf()];
    let server = Server::start(&opts);
    let with_masks = import_dataset(&server, "rects", &rects, &rect_images);
    let box_only = import_dataset(&server, "boxes", &boxes, &box_images);
    let _w = Worker::start(&server, "evaluator");

    let (run, r) = evaluate_upload(&server, with_masks, &mask_results(&rects));
    assert_eq!(r["status"], "succeeded", "{r}");
    // the true positives' masks are the ground truth's, ranked above the false positives
    for key in ["eval/AP", "eval/segm_AP"] {
        let v = db.query(&format!(
            "SELECT value FROM metrics WHERE run_id = {run} AND key = '{key}'"
        ));
        assert_eq!(v, "1", "{key}");
    }
    let report: Value = server
        .get(&format!("/runs/{run}/artifacts/eval.json"))
        .json()
        .unwrap();
    assert_eq!(report["segm"]["stats"][0], 1.0, "{report}");
    assert_eq!(report["segm"]["per_class"].as_array().unwrap().len(), 2);

    // Masks on a dataset whose annotations have none: the run fails naming the annotation,
    // and stores no statistics and no report (the worker's data-fetch metrics stay).
    let (run, r) = evaluate_upload(&server, box_only, &mask_results(&boxes));
    assert_eq!(r["status"], "failed", "{r}");
    let error = r["error"].as_str().unwrap();
    assert!(
        error.contains("carry masks")
            && error.contains("annotation")
            && error.contains("segmentation"),
        "{error}"
    );
    assert_eq!(
        db.query(&format!(
            "SELECT count(*) FROM metrics WHERE run_id = {run} AND key LIKE 'eval/%'"
        )),
        "0"
    );
    assert_eq!(
        db.query(&format!(
            "SELECT count(*) FROM artifacts WHERE run_id = {run} AND name = 'eval.json'"
        )),
        "0"
    );
}
