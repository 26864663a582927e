//! README command 1's platform: DATABASE_URL unset → the server's own Postgres cluster, the demo
//! datasets from the setup cache, a local worker; data kept across a restart.

use aligndet_studio::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn demo_cache() -> PathBuf {
    std::env::var_os("ALIGNDET_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/aligndet-studio")
        })
}

#[test]
fn embedded_postgres_demo_datasets_worker_and_restart() {
    let cache = demo_cache();
    assert!(
        cache.join("demo/neon/annotations.json").exists()
            && cache.join("demo/synthetic/annotations.json").exists(),
        "demo data missing in {}: run scripts/setup.sh",
        cache.display()
    );
    let data = TempDir::new("embedded");
    // No TestDb: the server must bring its own cluster.
    let opts = ServerOptions {
        demo_cache: Some(cache),
        ..ServerOptions::embedded(data.path())
    };
    let server = Server::start(&opts);
    assert!(
        data.path().join("postgres/PG_VERSION").exists(),
        "cluster initialised in the data dir"
    );
    let _worker = Worker::start(&server, "local-worker");

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let home = server.get("/").text().unwrap();
        let listed = home.contains("NEON tree crowns") && home.contains("Synthetic shapes");
        let connected = home.contains("id=\"workers-connected\">1<");
        if listed && connected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "home page never listed both demo datasets and a connected worker"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let run = server.create_run(
        "before restart",
        serde_json::json!({"kind": "benchmark", "steps": 2, "resolution": 64}),
    );
    server.wait_run(run, Duration::from_secs(120), "succeeded", |r| {
        r["status"] == "succeeded"
    });

    // Pseudo-boxes over (the first images of) the synthetic demo dataset, browsable with recall.
    let home = server.get("/datasets").text().unwrap();
    let synthetic_id = home
        .split("<a href=\"/datasets/")
        .filter_map(|chunk| chunk.split_once("\">"))
        .find(|(_, rest)| rest.starts_with("Synthetic shapes"))
        .and_then(|(id, _)| id.parse::<i64>().ok())
        .expect("synthetic dataset id on the datasets page");
    let proposals = server.create_run(
        "synthetic pseudo-boxes",
        serde_json::json!({"kind": "proposals", "dataset_id": synthetic_id, "strategy": "fast", "max_images": 12}),
    );
    let r = server.wait_run(proposals, Duration::from_secs(300), "finished", |r| {
        r["status"] == "succeeded" || r["status"] == "failed"
    });
    assert_eq!(r["status"], "succeeded", "{r}");
    let page = server
        .get(&format!("/runs/{proposals}/proposals"))
        .text()
        .unwrap();
    assert!(page.contains("class=\"pbox") && page.contains("id=\"recall-chart\""));
    server.stop();

    // Same data dir again: the cluster restarts with everything in it, and the demo is not re-imported.
    let server = Server::start(&opts);
    let r = server.run(run);
    assert_eq!(r["status"], "succeeded");
    assert!(r["metric_points"].as_i64().unwrap() > 0);
    let datasets = server.get("/datasets").text().unwrap();
    assert_eq!(
        datasets.matches("NEON tree crowns").count(),
        1,
        "demo imported once"
    );
    assert_eq!(
        datasets.matches("Synthetic shapes").count(),
        1,
        "demo imported once"
    );
    server.stop();
}
