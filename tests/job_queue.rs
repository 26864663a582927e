//! The job pipe end to end: real Postgres, real server and worker processes.

use aligndet_studio::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

fn bench(steps: u32) -> Value {
    json!({"kind": "benchmark", "backbone": "resnet18", "batch_size": 2, "resolution": 64, "steps": steps, "warmup_steps": 0})
}

fn status(r: &Value) -> &str {
    r["status"].as_str().unwrap_or("")
}

#[test]
fn benchmark_job_is_claimed_run_and_its_metrics_stored() {
    let db = TestDb::create();
    let dir = TempDir::new("bench");
    let server = Server::start(&ServerOptions::new(&db, dir.path()));
    let run = server.create_run("bench", bench(4));
    assert_eq!(status(&server.run(run)), "queued");
    let _w = Worker::start(&server, "w1");
    let r = server.wait_run(run, Duration::from_secs(120), "succeeded", |r| {
        status(r) == "succeeded"
    });
    assert_eq!(r["attempts"], 1);
    let keys: HashSet<String> = r["metric_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap().to_string())
        .collect();
    for k in ["step_time_s", "images_per_s", "median_step_time_s"] {
        assert!(keys.contains(k), "missing metric {k}: {keys:?}");
    }
    // 3 per-step series of 4 points + 2 summaries, each stored once.
    assert_eq!(r["metric_points"], 3 * 4 + 2);
    assert_eq!(
        db.query(&format!(
            "SELECT count(*) FROM metrics WHERE run_id = {run} AND key = 'step_time_s'"
        )),
        "4"
    );
    // The run page draws its curves.
    let page = server.get(&format!("/runs/{run}")).text().unwrap();
    assert!(
        page.contains("<svg") && page.contains("step_time_s"),
        "no curve on the run page"
    );
}

#[test]
fn bad_configs_and_missing_tokens_are_refused() {
    let db = TestDb::create();
    let dir = TempDir::new("refuse");
    let server = Server::start(&ServerOptions::new(&db, dir.path()));
    let r = server.api_post(
        "runs",
        &json!({"name": "x", "config": {"kind": "benchmark", "resolution": 100}}),
    );
    assert_eq!(r.status(), 400);
    assert!(
        r.text().unwrap().contains("resolution"),
        "error names the field"
    );
    let r = server.api_post(
        "runs",
        &json!({"name": "x", "config": {"kind": "no_such_kind"}}),
    );
    assert_eq!(r.status(), 400);
    let r = server
        .http
        .post(format!("{}/api/v1/jobs/claim", server.url))
        .json(&json!({"worker_id": 1}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = server
        .http
        .post(format!("{}/api/v1/jobs/claim", server.url))
        .bearer_auth("wrong-token-xxxxx")
        .json(&json!({"worker_id": 1}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(db.query("SELECT count(*) FROM runs"), "0");
}

/// Speak the worker protocol directly (as a worker process would) to send one batch twice.
#[test]
fn a_metrics_batch_sent_twice_is_stored_once() {
    let db = TestDb::create();
    let dir = TempDir::new("idem");
    let server = Server::start(&ServerOptions::new(&db, dir.path()));
    let run = server.create_run("idem", bench(1));
    let worker = ApiWorker::register(&server, "proto");
    let spec = worker.claim().expect("the run");
    assert_eq!(spec["run_id"], run);
    let attempt = spec["attempt"].as_i64().unwrap();
    let batch = json!({"attempt": attempt, "points": [
        {"key": "loss", "step": 0, "value": 1.5, "wall_time": 1.0},
        {"key": "loss", "step": 1, "value": 1.25, "wall_time": 2.0},
        {"key": "lr", "step": 0, "value": 0.01, "wall_time": 1.0},
    ]});
    for _ in 0..2 {
        let r = worker.post(&format!("runs/{run}/metrics"), &batch);
        assert!(r.status().is_success(), "{}", r.status());
    }
    assert_eq!(
        db.query(&format!(
            "SELECT count(*) FROM metrics WHERE run_id = {run}"
        )),
        "3"
    );
    // A stale attempt is fenced off.
    let stale = json!({"attempt": attempt + 1, "points": [{"key": "loss", "step": 9, "value": 1.0, "wall_time": 3.0}]});
    assert_eq!(
        worker.post(&format!("runs/{run}/metrics"), &stale).status(),
        409
    );
    assert_eq!(
        db.query(&format!(
            "SELECT count(*) FROM metrics WHERE run_id = {run}"
        )),
        "3"
    );
}

#[test]
fn two_workers_never_run_the_same_job() {
    let db = TestDb::create();
    let dir = TempDir::new("two");
    let server = Server::start(&ServerOptions::new(&db, dir.path()));
    // Racing claims over the protocol: every run is handed out once.
    let n_runs = 30;
    let runs: Vec<i64> = (0..n_runs)
        .map(|i| server.create_run(&format!("r{i}"), bench(1)))
        .collect();
    let workers: Vec<ApiWorker> = (0..2)
        .map(|i| ApiWorker::register(&server, &format!("racer{i}")))
        .collect();
    let claimed: Vec<i64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let worker = &workers[t % 2];
                s.spawn(move || {
                    let mut mine = vec![];
                    while let Some(spec) = worker.claim() {
                        mine.push(spec["run_id"].as_i64().unwrap());
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let unique: HashSet<i64> = claimed.iter().copied().collect();
    assert_eq!(
        claimed.len(),
        n_runs,
        "each run claimed exactly once: {claimed:?}"
    );
    assert_eq!(unique, runs.iter().copied().collect());

    // And real worker processes: every run executed by exactly one worker, once.
    let more: Vec<i64> = (0..4)
        .map(|i| server.create_run(&format!("p{i}"), bench(2)))
        .collect();
    let _a = Worker::start(&server, "a");
    let _b = Worker::start(&server, "b");
    for id in &more {
        let r = server.wait_run(*id, Duration::from_secs(180), "succeeded", |r| {
            status(r) == "succeeded"
        });
        assert_eq!(r["attempts"], 1, "run {id} ran more than once: {r}");
    }
    let dup = db.query("SELECT count(*) FROM (SELECT run_id FROM run_attempts GROUP BY run_id HAVING count(*) > 1) d");
    assert_eq!(dup, "0");
}

#[test]
fn a_killed_workers_job_is_rerun_by_another_after_its_lease_expires() {
    let db = TestDb::create();
    let dir = TempDir::new("lease");
    let mut opts = ServerOptions::new(&db, dir.path());
    opts.lease_seconds = 3.0;
    opts.heartbeat_seconds = 0.5;
    let server = Server::start(&opts);
    let run = server.create_run("survivor", bench(60));
    let mut first = Worker::start(&server, "doomed");
    server.wait_run(run, Duration::from_secs(120), "running with metrics", |r| {
        status(r) == "running" && r["metric_points"].as_i64().unwrap_or(0) >= 6
    });
    first.kill_hard();
    // The lease expires and the run goes back to the queue with the reason recorded.
    let r = server.wait_run(run, Duration::from_secs(30), "re-queued", |r| {
        status(r) == "queued"
    });
    let note = r["attempt_history"][0]["note"].as_str().unwrap_or("");
    assert_eq!(r["attempt_history"][0]["outcome"], "lease_expired");
    assert!(note.contains("lease expired"), "{note}");
    let _second = Worker::start(&server, "rescuer");
    let r = server.wait_run(run, Duration::from_secs(180), "succeeded", |r| {
        status(r) == "succeeded"
    });
    assert_eq!(r["attempts"], 2);
    assert_eq!(r["attempt_history"][1]["outcome"], "succeeded");
    assert_ne!(
        r["attempt_history"][0]["worker_id"],
        r["attempt_history"][1]["worker_id"]
    );
    // Steps re-logged by the second attempt replaced the first attempt's points.
    assert_eq!(
        db.query(&format!(
            "SELECT count(*) FROM metrics WHERE run_id = {run} AND key = 'step_time_s'"
        )),
        "60"
    );
}

#[test]
fn cancel_stops_a_running_job_and_the_worker_carries_on() {
    let db = TestDb::create();
    let dir = TempDir::new("cancel");
    let mut opts = ServerOptions::new(&db, dir.path());
    opts.heartbeat_seconds = 0.3;
    let server = Server::start(&opts);
    let run = server.create_run("long", bench(100_000));
    let _w = Worker::start(&server, "w");
    server.wait_run(run, Duration::from_secs(120), "running", |r| {
        status(r) == "running" && r["metric_points"].as_i64().unwrap_or(0) > 3
    });
    let r = server.api_post(&format!("runs/{run}/cancel"), &json!({}));
    assert!(r.status().is_success());
    let r = server.wait_run(run, Duration::from_secs(30), "cancelled", |r| {
        status(r) == "cancelled"
    });
    assert_eq!(r["attempt_history"][0]["outcome"], "cancelled");
    // Cancelling a queued run needs no worker, and the same worker takes the next job.
    let next = server.create_run("after", bench(2));
    server.wait_run(next, Duration::from_secs(120), "succeeded", |r| {
        status(r) == "succeeded"
    });
    let _blocker = server.create_run("blocker", bench(100_000));
    let queued = server.create_run("queued", bench(1));
    server.api_post(&format!("runs/{queued}/cancel"), &json!({}));
    assert_eq!(status(&server.run(queued)), "cancelled");
}

#[test]
fn the_worker_buffers_while_the_server_is_down_and_loses_nothing() {
    let db = TestDb::create();
    let dir = TempDir::new("outage");
    let mut opts = ServerOptions::new(&db, dir.path());
    opts.bind = format!("127.0.0.1:{}", free_port());
    opts.heartbeat_seconds = 0.5;
    let server = Server::start(&opts);
    let steps = 80;
    let run = server.create_run("outage", bench(steps));
    let _w = Worker::start(&server, "patient");
    server.wait_run(run, Duration::from_secs(120), "running", |r| {
        status(r) == "running" && r["metric_points"].as_i64().unwrap_or(0) > 3
    });
    server.stop();
    // The job keeps computing while its events queue up in the worker.
    std::thread::sleep(Duration::from_secs(3));
    let server = Server::start(&opts);
    let r = server.wait_run(run, Duration::from_secs(180), "succeeded", |r| {
        status(r) == "succeeded"
    });
    assert_eq!(r["attempts"], 1, "the outage did not cost the attempt: {r}");
    let n = db.query(&format!(
        "SELECT count(*) FROM metrics WHERE run_id = {run} AND key = 'step_time_s'"
    ));
    assert_eq!(n, steps.to_string(), "every step's point arrived");
    let artifacts = db.query(&format!("SELECT name FROM artifacts WHERE run_id = {run}"));
    assert_eq!(artifacts, "benchmark.json");
    let body = server
        .get(&format!("/runs/{run}/artifacts/benchmark.json"))
        .text()
        .unwrap();
    let summary: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(summary["steps"], steps);
    // Artifact names cannot escape the store.
    assert_eq!(
        server
            .get(&format!("/runs/{run}/artifacts/..%2Fworker-token"))
            .status(),
        400
    );
}

#[test]
fn trainer_run_writes_the_same_events_to_files() {
    let out = TempDir::new("local-run");
    let spec = out.path().join("spec.json");
    std::fs::write(&spec, bench(3).to_string()).unwrap();
    let status_code = std::process::Command::new(bin("trainer"))
        .arg("run")
        .arg(&spec)
        .arg("--out")
        .arg(out.path().join("out"))
        .status()
        .unwrap();
    assert!(status_code.success());
    let events = std::fs::read_to_string(out.path().join("out/events.jsonl")).unwrap();
    let parsed: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let metric_points: usize = parsed
        .iter()
        .filter(|e| e["event"] == "metrics")
        .map(|e| e["points"].as_array().unwrap().len())
        .sum();
    assert_eq!(metric_points, 3 * 3 + 2);
    assert_eq!(parsed.last().unwrap()["event"], "status");
    assert_eq!(parsed.last().unwrap()["status"], "succeeded");
    assert!(out.path().join("out/artifacts/benchmark.json").exists());
    // A bad config is refused with the field named.
    std::fs::write(&spec, r#"{"kind":"benchmark","batch_size":0}"#).unwrap();
    let o = std::process::Command::new(bin("trainer"))
        .arg("run")
        .arg(&spec)
        .arg("--out")
        .arg(out.path().join("o2"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("batch_size"));
}
