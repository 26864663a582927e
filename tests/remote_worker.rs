//! A worker that shares no folder with the server (its own mount namespace hides the server's data
//! and import folders, its own HOME and cache) runs jobs from the URL and the token alone: inputs
//! come by content into its cache, a warm cache fetches nothing, a corrupt cache file and a cut
//! download are caught by their hash, and a file that changed or vanished on the server fails
//! the run with an error that names it.

use aligndet_studio::*;
use serde_json::{Value, json};
use std::time::Duration;

fn finetune(dataset: i64, init: Value) -> Value {
    json!({
        "kind": "finetune", "dataset_id": dataset, "detector": "fcos", "backbone": "resnet18",
        "init": init, "eval_every": 2, "eval_max_images": 2,
        "optim": {"steps": 2, "batch_size": 2, "warmup_steps": 1, "lr": 0.005,
                  "checkpoint_every": 2, "loader_threads": 1, "seed": 3},
        "augment": {"min_sizes": [96], "max_size": 96}
    })
}

fn from_model(run: i64) -> Value {
    json!({"from": "checkpoint", "artifact": {"run_id": run, "name": "model.safetensors"}})
}

fn finished(r: &Value) -> bool {
    matches!(
        r["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

fn run_to_end(f: &RectDataset, name: &str, config: Value) -> (i64, Value) {
    let run = f.server.create_run(name, config);
    let r = f
        .server
        .wait_run(run, Duration::from_secs(600), "finished", finished);
    (run, r)
}

fn log_of(db: &TestDb, run: i64) -> String {
    db.query(&format!(
        "SELECT string_agg(text, E'\\n' ORDER BY attempt, seq) FROM run_logs WHERE run_id = {run}"
    ))
}

fn artifact_sha256(db: &TestDb, run: i64, name: &str) -> String {
    db.query(&format!(
        "SELECT sha256 FROM artifacts WHERE run_id = {run} AND name = '{name}'"
    ))
}

#[test]
fn a_worker_without_the_servers_folders_runs_jobs_from_inputs_fetched_by_content() {
    let f = RectDataset::start("remote", 10, 96, |_| {});
    let (server, db) = (&f.server, &f.db);
    let worker = Worker::start_remote(server, "far", &[f.data.path(), f.imports.path()]);
    let cache = worker.cache.path().to_path_buf();

    // Cold cache: the dataset (10 images and the annotation file) comes over the API.
    let (boxes, r) = run_to_end(
        &f,
        "boxes",
        json!({"kind": "proposals", "dataset_id": f.dataset, "strategy": "fast"}),
    );
    assert_eq!(r["status"], "succeeded", "{r}");
    let log = log_of(db, boxes);
    assert!(
        log.contains("dataset inputs: 11 files, 0 from the cache, 11 fetched"),
        "{log}"
    );

    // Warm cache: a fine-tune downloads nothing.
    let (first, r) = run_to_end(&f, "ft1", finetune(f.dataset, json!({"from": "scratch"})));
    assert_eq!(r["status"], "succeeded", "{r}");
    let log = log_of(db, first);
    assert!(
        log.contains("dataset inputs: 11 files, 11 from the cache, 0 fetched (0.0 MB"),
        "{log}"
    );

    // A download cut in the middle: the first half of the model is already in the cache's
    // partial folder, so only the rest is fetched, and the whole is checked by its hash.
    let model_sha = artifact_sha256(db, first, "model.safetensors");
    let model = std::fs::read(
        f.data
            .path()
            .join(format!("artifacts/{first}/model.safetensors")),
    )
    .expect("read the stored model");
    let partial = cache.join(format!("partial/{model_sha}.part"));
    std::fs::write(&partial, &model[..model.len() / 2]).expect("seed a cut download");
    let (second, r) = run_to_end(&f, "ft2", finetune(f.dataset, from_model(first)));
    assert_eq!(r["status"], "succeeded", "{r}");
    let log = log_of(db, second);
    let rest = model.len() - model.len() / 2;
    assert!(
        log.contains(&format!(
            "input \"model.safetensors\" of run {first}: fetched ({rest} bytes, resuming a cut download)"
        )),
        "{log}"
    );

    // A cut download whose bytes are wrong, and a corrupt cached image: both are caught by
    // their hash and fetched again.
    let cached_model = cache.join(format!("blobs/{}/{model_sha}", &model_sha[..2]));
    std::fs::remove_file(&cached_model).expect("drop the cached model");
    std::fs::write(&partial, vec![7u8; model.len() / 2]).expect("seed a wrong partial");
    let image_sha = db.query(&format!(
        "SELECT sha256 FROM dataset_files WHERE dataset_id = {} AND file_name = 'r2.png'",
        f.dataset
    ));
    let cached_image = cache.join(format!("blobs/{}/{image_sha}", &image_sha[..2]));
    std::fs::write(&cached_image, b"not the image").expect("corrupt a cached image");
    let (third, r) = run_to_end(&f, "ft3", finetune(f.dataset, from_model(first)));
    assert_eq!(r["status"], "succeeded", "{r}");
    let log = log_of(db, third);
    assert!(log.contains("1 corrupt cache files replaced"), "{log}");
    assert!(
        log.contains("again after a download failed its hash check"),
        "{log}"
    );
    assert_eq!(std::fs::read(&cached_model).expect("model cached"), model);

    // Gone on the server: a changed image (the worker's copy evicted) and a deleted artifact
    // each fail their run with an error naming them.
    // Evicted as the cache does it: the blob, its record and the layouts that link it.
    std::fs::remove_file(&cached_image).expect("evict the image");
    std::fs::remove_dir_all(cache.join("views")).expect("drop the layouts");
    let original = std::fs::read(f.images.join("r2.png")).expect("read the image");
    std::fs::write(f.images.join("r2.png"), b"short").expect("change the image");
    let (_, r) = run_to_end(
        &f,
        "changed",
        finetune(f.dataset, json!({"from": "scratch"})),
    );
    assert_eq!(r["status"], "failed", "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("image \"r2.png\" of dataset")
            && error.contains("changed on the server since it was hashed"),
        "{error}"
    );
    std::fs::write(f.images.join("r2.png"), original).expect("restore the image");
    std::fs::remove_file(
        f.data
            .path()
            .join(format!("artifacts/{second}/model.safetensors")),
    )
    .expect("delete a stored model");
    let (_, r) = run_to_end(&f, "gone", finetune(f.dataset, from_model(second)));
    assert_eq!(r["status"], "failed", "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "artifact \"model.safetensors\" of run {second} is gone from the server"
        )),
        "{error}"
    );
    // No server path ever reached the worker: the claims named inputs by content only.
    drop(worker);

    // Without the token, nothing; with it, a hash the server does not hold is a clear 404.
    let url = format!("{}/api/v1/blobs/{image_sha}", server.url);
    let anonymous = server.http.get(&url).send().expect("get");
    assert_eq!(anonymous.status(), 401);
    let wrong = server
        .http
        .get(&url)
        .bearer_auth("not-the-token")
        .send()
        .expect("get");
    assert_eq!(wrong.status(), 401);
    let pack = server
        .http
        .post(format!("{}/api/v1/blobs/pack", server.url))
        .json(&json!({"sha256": [image_sha]}))
        .send()
        .expect("post");
    assert_eq!(pack.status(), 401);
    let unknown = server
        .http
        .get(format!("{}/api/v1/blobs/{}", server.url, "0".repeat(64)))
        .bearer_auth(&server.token)
        .send()
        .expect("get");
    assert_eq!(unknown.status(), 404);
    let hostile = server
        .http
        .get(format!(
            "{}/api/v1/blobs/..%2F..%2Fworker-token",
            server.url
        ))
        .bearer_auth(&server.token)
        .send()
        .expect("get");
    assert_eq!(hostile.status(), 400);
    let served = server
        .http
        .get(&url)
        .bearer_auth(&server.token)
        .header("range", "bytes=0-3")
        .send()
        .expect("get");
    assert_eq!(served.status(), 206);
    assert_eq!(
        served.headers()["etag"].to_str().unwrap(),
        format!("\"{image_sha}\"")
    );
    assert_eq!(served.bytes().unwrap().as_ref(), b"\x89PNG");
}
