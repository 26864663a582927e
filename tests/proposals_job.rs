//! The `proposals` job through the platform: pseudo-boxes stored per image, recall logged, the
//! browser page and the COCO export; a re-claimed job does not recompute finished images.

use aligndet_studio::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// A COCO dataset of `n` images (`size`×`size`) with a few flat rectangles each.
fn write_rect_dataset(dir: &Path, n: u32, size: u32) -> (std::path::PathBuf, std::path::PathBuf) {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut imgs = vec![];
    let mut anns = vec![];
    for i in 0..n {
        let mut img = image::RgbImage::from_pixel(size, size, image::Rgb([40, 40, 40]));
        let rects = [
            (8 + i % 7, 10, 60, 50, [220, 30, 30]),
            (80, 70 + i % 5, 40, 45, [30, 200, 40]),
        ];
        for (k, (x, y, w, h, c)) in rects.iter().enumerate() {
            for yy in *y..(*y + *h).min(size) {
                for xx in *x..(*x + *w).min(size) {
                    img.put_pixel(xx, yy, image::Rgb(*c));
                }
            }
            anns.push(
                json!({"id": i * 10 + k as u32 + 1, "image_id": i + 1, "category_id": 1,
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}),
            );
        }
        let name = format!("r{i}.png");
        img.save(images.join(&name)).unwrap();
        imgs.push(json!({"id": i + 1, "file_name": name, "width": size, "height": size}));
    }
    let ann = dir.join("annotations.json");
    let coco =
        json!({"images": imgs, "annotations": anns, "categories": [{"id": 1, "name": "rect"}]});
    std::fs::write(&ann, coco.to_string()).unwrap();
    (ann, images)
}

#[test]
fn a_proposals_run_stores_boxes_recall_and_is_browsable() {
    let db = TestDb::create();
    let data = TempDir::new("prop");
    let imports = TempDir::new("prop-imports");
    let (ann, images) = write_rect_dataset(imports.path(), 4, 160);
    let mut opts = ServerOptions::new(&db, data.path());
    opts.import_roots = vec![imports.path().to_path_buf()];
    let server = Server::start(&opts);
    let dataset = import_dataset(&server, "rects", &ann, &images);
    let run = server.create_run(
        "pseudo",
        json!({"kind": "proposals", "dataset_id": dataset, "strategy": "fast"}),
    );
    let _w = Worker::start(&server, "ss");
    let r = server.wait_run(run, Duration::from_secs(240), "succeeded", |r| {
        r["status"] == "succeeded" || r["status"] == "failed"
    });
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(
        db.query(&format!(
            "SELECT count(*) FROM proposal_images WHERE run_id = {run}"
        )),
        "4"
    );
    let boxes: i64 = db
        .query(&format!(
            "SELECT sum(cardinality(removed_by)) FROM proposal_images WHERE run_id = {run}"
        ))
        .parse()
        .unwrap();
    assert!(
        boxes > 8,
        "selective search produced {boxes} boxes for 4 images"
    );
    // Flat rectangles come back exactly, so recall at IoU 0.7 with all boxes is perfect.
    let keys: Vec<String> = r["metric_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap().to_string())
        .collect();
    assert!(keys.iter().any(|k| k == "recall/iou50"), "{keys:?}");
    let best = db.query(&format!(
        "SELECT max(value) FROM metrics WHERE run_id = {run} AND key = 'recall_all/iou70'"
    ));
    assert_eq!(
        best.parse::<f64>().unwrap(),
        1.0,
        "all GT rectangles recovered"
    );

    let page = server
        .get(&format!("/runs/{run}/proposals"))
        .text()
        .unwrap();
    assert!(
        page.contains("id=\"proposal-overlay\"") && page.contains("class=\"pbox"),
        "pseudo-boxes drawn"
    );
    assert!(page.contains("id=\"gt-overlay\""), "ground truth beside");
    assert!(page.contains("id=\"recall-chart\""), "recall curve shown");
    let export: Value = server
        .get(&format!("/runs/{run}/proposals.json"))
        .json()
        .unwrap();
    assert_eq!(export["categories"][0]["name"], "selective_search");
    assert_eq!(export["images"].as_array().unwrap().len(), 4);
}

#[test]
fn a_reclaimed_proposals_job_skips_finished_images() {
    let db = TestDb::create();
    let data = TempDir::new("prop-resume");
    let imports = TempDir::new("prop-resume-imports");
    let (ann, images) = write_rect_dataset(imports.path(), 40, 192);
    let mut opts = ServerOptions::new(&db, data.path());
    opts.import_roots = vec![imports.path().to_path_buf()];
    opts.lease_seconds = 3.0;
    opts.heartbeat_seconds = 0.5;
    let server = Server::start(&opts);
    let dataset = import_dataset(&server, "rects", &ann, &images);
    let run = server.create_run(
        "resumable",
        json!({"kind": "proposals", "dataset_id": dataset, "strategy": "quality", "chunk_size": 2}),
    );
    let mut first = Worker::start(&server, "first");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let n: i64 = db
            .query(&format!(
                "SELECT count(*) FROM proposal_images WHERE run_id = {run}"
            ))
            .parse()
            .unwrap();
        if n >= 4 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(100));
    }
    first.kill_hard();
    let done_by_first: i64 = db
        .query(&format!(
            "SELECT count(*) FROM proposal_images WHERE run_id = {run}"
        ))
        .parse()
        .unwrap();
    assert!(
        done_by_first < 40,
        "the first worker finished everything before the kill; make the job longer"
    );
    let _second = Worker::start(&server, "second");
    let r = server.wait_run(run, Duration::from_secs(300), "succeeded", |r| {
        r["status"] == "succeeded"
    });
    assert_eq!(r["attempts"], 2);
    assert_eq!(
        db.query(&format!(
            "SELECT count(*) FROM proposal_images WHERE run_id = {run}"
        )),
        "40"
    );
    // Images the first attempt stored were not recomputed by the second.
    let kept_first: i64 = db
        .query(&format!(
            "SELECT count(*) FROM proposal_images WHERE run_id = {run} AND attempt = 1"
        ))
        .parse()
        .unwrap();
    assert_eq!(kept_first, done_by_first);
}
