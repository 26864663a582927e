//! A data-parallel run through the platform: the worker runs a fine-tune as two real Gloo ranks
//! (itself and a `trainer rank` process it spawned). Killing the second rank mid-run ends the
//! attempt for both; the worker reports it as retryable, the server re-queues the run, and the
//! re-claimed attempt resumes from its checkpoint with exactly one metric point per step.

use aligndet_studio::*;
use serde_json::json;
use std::time::Duration;

/// The `trainer rank` processes whose parent is `parent`.
fn rank_children(parent: u32) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // field 4 of /proc/PID/stat, after the parenthesised command name
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && args.iter().any(|a| a == "rank") {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn a_killed_rank_ends_the_attempt_and_the_run_resumes_from_its_checkpoint() {
    let f = RectDataset::start("ranks", 12, 96, |o| o.heartbeat_seconds = 0.5);
    let (server, db, dataset) = (&f.server, &f.db, f.dataset);
    // enough steps after the first checkpoint that rank 1 is still alive when the test kills it
    let steps = 24;
    let run = server.create_run(
        "two ranks",
        json!({
            "kind": "finetune", "dataset_id": dataset, "detector": "fcos", "backbone": "resnet18",
            "init": {"from": "scratch"}, "eval_every": 100, "final_eval_max_images": 2,
            "optim": {
                "steps": steps, "batch_size": 2, "world_size": 2, "warmup_steps": 2, "lr": 0.005,
                "checkpoint_every": 2, "loader_threads": 1, "seed": 3,
                "schedule": {"kind": "cosine", "min_factor": 0.1}
            },
            "augment": {"min_sizes": [96], "max_size": 96, "hflip": true, "color_jitter": 0.1}
        }),
    );
    let worker = Worker::start(server, "two-rank worker");
    let checkpoint_stored = || {
        db.query(&format!(
            "SELECT count(*) FROM artifacts WHERE run_id = {run} AND name = 'checkpoint.safetensors'"
        )) == "1"
    };
    server.wait_run(run, Duration::from_secs(600), "a checkpoint", |r| {
        r["status"] == "failed" || checkpoint_stored()
    });
    let ranks = rank_children(worker.child.id());
    assert_eq!(
        ranks.len(),
        1,
        "one `trainer rank` beside the worker: {ranks:?}"
    );
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &ranks[0].to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());

    let r = server.wait_run(run, Duration::from_secs(900), "finished", |r| {
        r["status"] == "succeeded" || r["status"] == "failed"
    });
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["attempts"], 2, "{r}");
    let note = db.query(&format!(
        "SELECT note FROM run_attempts WHERE run_id = {run} AND attempt = 1"
    ));
    assert!(
        note.contains("rank 1") && note.contains("re-queued"),
        "the first attempt says which rank ended it: {note}"
    );
    let at = resumed_at(db, run, 2);
    assert!(at >= 2 && at < steps, "resumed at {at}");
    assert_eq!(
        db.query(&format!(
            "SELECT count(*) FROM metrics WHERE run_id = {run} AND key = 'loss/total'"
        )),
        steps.to_string(),
        "one point per step"
    );
    assert_eq!(
        db.query(&format!(
            "SELECT count(*) FROM metrics WHERE run_id = {run} AND key = 'loss/total' AND step > {at} AND attempt = 2"
        )),
        (steps - at).to_string(),
        "the steps after the checkpoint were logged by the second attempt"
    );
    assert!(
        rank_children(worker.child.id()).is_empty(),
        "no rank outlives its job"
    );
    // The workers page shows what the worker has and its recent training throughput.
    let page = server.get("/workers").text().unwrap();
    assert!(
        page.contains("cpu, ") && page.contains(" threads"),
        "capabilities shown"
    );
    assert!(
        page.contains("images/s <span class=\"hint\">(median of "),
        "throughput shown"
    );
}
