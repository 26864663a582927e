//! Run dependencies against the real server and Postgres, without training: the tests speak the
//! worker protocol themselves (register, claim, upload, report a status).
//!
//! - a run that waits for others is not claimed before they succeed, and is claimed after;
//! - a failed or cancelled dependency fails its queued dependents (transitively), with a message;
//! - a real worker runs a chain in order.

use aligndet_studio::experiments::*;
use aligndet_studio::*;
use serde_json::{Value, json};

fn bench() -> Value {
    json!({"kind": "benchmark", "backbone": "resnet18", "batch_size": 1, "resolution": 64, "steps": 1, "warmup_steps": 0})
}

fn create_after(server: &Server, name: &str, depends_on: &[i64]) -> i64 {
    let r = server.api_post(
        "runs",
        &json!({"name": name, "config": bench(), "depends_on": depends_on}),
    );
    let status = r.status();
    let body: Value = r.json().unwrap();
    assert!(status.is_success(), "create: {status} {body}");
    body["id"].as_i64().unwrap()
}

#[test]
fn dependents_wait_for_success_and_fail_with_their_dependency() {
    let db = TestDb::create();
    let dir = TempDir::new("deps");
    let server = Server::start(&ServerOptions::new(&db, dir.path()));
    let a = create_after(&server, "a", &[]);
    let b = create_after(&server, "b waits for a", &[a]);
    let c = create_after(&server, "c waits for b", &[b]);
    let d = create_after(&server, "d independent", &[]);
    assert_eq!(server.run(b)["waiting_for"], json!([a]));
    assert_eq!(server.run(c)["depends_on"], json!([b]));

    let w = Proto::register(&server);
    let (first, attempt_a, _) = w.claim().unwrap();
    assert_eq!(first, a, "FIFO: the oldest run first");
    // b and c wait (a is running, not succeeded): the next claim skips them.
    let (second, attempt_d, _) = w.claim().unwrap();
    assert_eq!(
        second, d,
        "a dependent is not claimed before its dependency succeeds"
    );
    assert!(w.claim().is_none(), "nothing else is claimable");
    w.finish(d, attempt_d, "succeeded");
    assert!(w.claim().is_none(), "b still waits for the running a");

    w.finish(a, attempt_a, "succeeded");
    assert_eq!(server.run(b)["waiting_for"], json!([]));
    let (third, attempt_b, _) = w.claim().unwrap();
    assert_eq!(third, b, "claimed once its dependency succeeded");
    assert!(w.claim().is_none(), "c waits for the running b");

    // b fails: c, which waits for it, fails too and says why.
    w.finish(b, attempt_b, "failed");
    assert_eq!(
        status(&server, c),
        ("failed".into(), format!("waits for run {b}, which failed"))
    );
    assert!(w.claim().is_none());

    // Cancelling a queued run fails its waiting chain transitively.
    let e = create_after(&server, "e", &[]);
    let f = create_after(&server, "f waits for e", &[e]);
    let g = create_after(&server, "g waits for f", &[f]);
    let h = create_after(&server, "h waits for g and d", &[g, d]);
    let r = server.api_post(&format!("runs/{e}/cancel"), &json!({}));
    assert!(r.status().is_success());
    assert_eq!(
        status(&server, f),
        (
            "failed".into(),
            format!("waits for run {e}, which was cancelled")
        )
    );
    assert_eq!(
        status(&server, g),
        ("failed".into(), format!("waits for run {f}, which failed"))
    );
    assert_eq!(
        status(&server, h),
        ("failed".into(), format!("waits for run {g}, which failed"))
    );
    assert!(w.claim().is_none(), "nothing is left waiting in the queue");

    // depends_on is checked: runs that do not exist or can never succeed are refused.
    for (deps, needle) in [
        (vec![999_999], "run 999999 not found".to_string()),
        (vec![b], format!("run {b} is failed")),
    ] {
        let r = server.api_post(
            "runs",
            &json!({"name": "x", "config": bench(), "depends_on": deps}),
        );
        assert_eq!(r.status(), 400);
        let text = r.text().unwrap();
        assert!(
            text.contains("depends_on") && text.contains(&needle),
            "{text}"
        );
    }
    let before = db.query("SELECT count(*) FROM runs");
    assert_eq!(before, "8", "refused runs were not stored");
    // Plain lineage (`parents`) does not make a run wait.
    let r = server.api_post(
        "runs",
        &json!({"name": "child", "config": bench(), "parents": [b]}),
    );
    assert!(r.status().is_success());
    let child: Value = r.json().unwrap();
    let (claimed, _, _) = w.claim().unwrap();
    assert_eq!(claimed, child["id"].as_i64().unwrap());
}

/// A real worker process runs a waiting run only after its dependency succeeded.
#[test]
fn a_real_worker_runs_a_chain_in_order() {
    let db = TestDb::create();
    let dir = TempDir::new("deps-worker");
    let server = Server::start(&ServerOptions::new(&db, dir.path()));
    let a = create_after(&server, "first", &[]);
    let b = create_after(&server, "second", &[a]);
    let c = create_after(&server, "third", &[b]);
    let _w = Worker::start(&server, "chain");
    server.wait_run(c, std::time::Duration::from_secs(180), "succeeded", |r| {
        r["status"] == "succeeded"
    });
    for (before, after) in [(a, b), (b, c)] {
        assert_eq!(
            db.query(&format!(
                "SELECT (SELECT started_at FROM runs WHERE id = {after}) >= (SELECT finished_at FROM runs WHERE id = {before})"
            )),
            "t",
            "run {after} started before run {before} finished"
        );
    }
}
