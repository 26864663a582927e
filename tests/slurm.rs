//! Slurm as the scale-out engine, against a real single-node Slurm (munged, slurmctld and slurmd
//! started by `support::slurm` from a generated `slurm.conf`) and a real `trainer slurm-agent`:
//! a partition Slurm does not have, or an account its partition does not allow, fails the run
//! with sbatch's words; a fine-tune goes through sbatch and its worker
//! (`trainer worker --once --run ID`) inside the job; a second run pends in Slurm behind it and a
//! cancel in the UI becomes `scancel`; the agent killed and restarted mid-job submits nothing
//! twice; `scancel` of the running job ends the attempt, and the run is placed again and resumes
//! from its checkpoint; a cancel in the UI while a job's worker runs ends the run cancelled.

use aligndet_studio::slurm::{Agent, SlurmCluster};
use aligndet_studio::*;
use serde_json::{Value, json};
use std::time::Duration;

fn finetune(dataset: i64, steps: u32) -> Value {
    json!({
        "kind": "finetune", "dataset_id": dataset, "detector": "fcos", "backbone": "resnet18",
        "init": {"from": "scratch"}, "eval_every": 1000, "final_eval_max_images": 2,
        "optim": {
            "steps": steps, "batch_size": 2, "warmup_steps": 2, "lr": 0.005,
            "checkpoint_every": 2, "loader_threads": 1, "seed": 3,
            "schedule": {"kind": "cosine", "min_factor": 0.1}
        },
        "augment": {"min_sizes": [96], "max_size": 96, "hflip": true, "color_jitter": 0.1}
    })
}

/// A run's placements as `job:state`, oldest first.
fn placements(db: &TestDb, run: i64) -> Vec<String> {
    let text = db.query(&format!(
        "SELECT string_agg(coalesce(slurm_job_id, 0) || ':' || state, ',' ORDER BY id)
         FROM slurm_jobs WHERE run_id = {run}"
    ));
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn live_text(server: &Server, run: i64) -> String {
    server
        .get(&format!("/runs/{run}/live"))
        .text()
        .expect("live fragment")
}

#[test]
fn runs_go_through_sbatch_and_slurm_states_reach_them() {
    let cluster = SlurmCluster::start();
    let f = RectDataset::start("slurm", 12, 96, |o| o.heartbeat_seconds = 0.5);
    let (server, db, dataset) = (&f.server, &f.db, f.dataset);

    // A partition Slurm does not have: sbatch refuses, and the run fails with its words, once.
    let bad = server.create_run("bad partition", finetune(dataset, 4));
    let mut bad_agent = Agent::start(server, &cluster, "misconfigured", "nosuch", &[]);
    let r = server.wait_run(bad, Duration::from_secs(60), "failed", |r| {
        r["status"] != "queued"
    });
    assert_eq!(r["status"], "failed", "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("sbatch refused") && error.contains("Invalid partition"),
        "{error}"
    );
    bad_agent.kill_hard();
    assert_eq!(placements(db, bad), ["0:REJECTED"]);
    assert!(live_text(server, bad).contains("Invalid partition"));

    // An account the partition does not allow (`AllowAccounts=physics`): sbatch refuses with
    // Slurm's words, named on the run page.
    let bad = server.create_run("bad account", finetune(dataset, 4));
    let mut bad_agent = Agent::start(
        server,
        &cluster,
        "no-account",
        "lab",
        &["--account", "nosuch"],
    );
    let r = server.wait_run(bad, Duration::from_secs(60), "failed", |r| {
        r["status"] != "queued"
    });
    assert_eq!(r["status"], "failed", "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("sbatch refused") && error.contains("Invalid account"),
        "{error}"
    );
    bad_agent.kill_hard();
    assert_eq!(placements(db, bad), ["0:REJECTED"]);
    assert!(live_text(server, bad).contains("Invalid account"));

    // Each job takes every CPU of the node: A runs, B pends behind it.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpus = cpus.to_string();
    let agent_args = ["--cpus-per-task", cpus.as_str(), "--max-jobs", "4"];
    let steps = 60;
    let a = server.create_run("through slurm", finetune(dataset, steps));
    let b = server.create_run("waits in slurm", finetune(dataset, 4));
    let mut agent = Agent::start(server, &cluster, "lab", "test", &agent_args);
    let r = server.wait_run(a, Duration::from_secs(120), "running", |r| {
        r["status"] == "running" && r["slurm"]["state"] == "RUNNING"
    });
    let job_a = r["slurm"]["slurm_job_id"].as_i64().expect("A's Slurm job");
    assert_eq!(r["slurm"]["node"], "localhost", "{r}");
    let r = server.wait_run(b, Duration::from_secs(60), "pending in Slurm", |r| {
        r["slurm"]["state"] == "PENDING"
    });
    assert_eq!(r["status"], "queued", "{r}");
    let job_b = r["slurm"]["slurm_job_id"].as_i64().expect("B's Slurm job");
    let page = live_text(server, a);
    assert!(
        page.contains(&format!("<span id=\"slurm-job\">{job_a}</span>"))
            && page.contains("RUNNING")
            && page.contains("<span id=\"slurm-node\">localhost</span>"),
        "{page}"
    );
    assert!(live_text(server, b).contains("pending for"));
    // the worker token is in no batch script (sbatch passes it in the job's environment)
    let script = cluster.tool(
        "scontrol",
        &["write", "batch_script", &job_a.to_string(), "-"],
    );
    assert!(
        script.contains(&format!("worker --once --run {a}")),
        "{script}"
    );
    assert!(!script.contains(&server.token), "{script}");

    // Cancel in the UI while B's job pends: the agent scancels it.
    let ui = server.browser_session();
    assert!(
        ui.post_form(&format!("/runs/{b}/cancel"), &[])
            .status()
            .is_success()
    );
    let r = server.wait_run(b, Duration::from_secs(30), "its job cancelled", |r| {
        r["slurm"]["state"] == "CANCELLED"
    });
    assert_eq!(r["status"], "cancelled", "{r}");
    let squeued = cluster.jobs_named(&format!("aligndet-run-{b}"));
    assert_eq!(squeued.len(), 1, "{squeued:?}");
    assert_eq!(squeued[0]["job_state"], "CANCELLED");

    // The agent killed and restarted mid-job finds A's job again and submits nothing twice.
    let checkpoint = || {
        db.query(&format!(
            "SELECT count(*) FROM artifacts WHERE run_id = {a} AND name = 'checkpoint.safetensors'"
        )) == "1"
    };
    server.wait_run(a, Duration::from_secs(300), "a checkpoint", |r| {
        r["status"] != "running" || checkpoint()
    });
    agent.kill_hard();
    let _agent = Agent::start(server, &cluster, "lab", "test", &agent_args);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(placements(db, a), [format!("{job_a}:RUNNING")]);
    assert_eq!(cluster.jobs_named(&format!("aligndet-run-{a}")).len(), 1);
    assert_eq!(placements(db, b).len(), 1);
    assert_eq!(
        server.run(a)["status"],
        "running",
        "A ended before the scancel"
    );

    // scancel of A's job ends attempt 1; the run is placed again and resumes.
    cluster.scancel(job_a);
    let r = server.wait_run(a, Duration::from_secs(600), "finished", |r| {
        r["status"] == "succeeded" || r["status"] == "failed"
    });
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["attempts"], 2, "{r}");
    let note = r["attempt_history"][0]["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with(&format!(
            "Slurm job {job_a} ended CANCELLED on node localhost"
        )) && note.ends_with("run re-queued"),
        "{note}"
    );
    let at = resumed_at(db, a, 2);
    assert!(at >= 2 && at < steps, "resumed at {at}");
    // the second job ends COMPLETED once its worker, having reported, exits 0
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let placed = loop {
        let placed = placements(db, a);
        if placed.len() != 2 || placed[1].ends_with(":COMPLETED") {
            break placed;
        }
        assert!(std::time::Instant::now() < deadline, "{placed:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(placed.len(), 2, "{placed:?}");
    assert_eq!(placed[0], format!("{job_a}:CANCELLED"));
    assert!(placed[1].ends_with(":COMPLETED"), "{placed:?}");
    assert_eq!(cluster.jobs_named(&format!("aligndet-run-{a}")).len(), 2);
    let n = db.query(&format!(
        "SELECT count(*) FROM metrics WHERE run_id = {a} AND key = 'loss/total'"
    ));
    assert_eq!(n, steps.to_string(), "one loss point per step");
    assert_eq!(placements(db, b), [format!("{job_b}:CANCELLED")]);

    // Cancel in the UI while the job's worker runs: the worker hears it in its heartbeat, the
    // agent scancels the job; whichever comes first, the run ends cancelled.
    let c = server.create_run("cancelled while running", finetune(dataset, 400));
    server.wait_run(c, Duration::from_secs(120), "running", |r| {
        r["status"] == "running" && r["slurm"]["state"] == "RUNNING"
    });
    assert!(
        ui.post_form(&format!("/runs/{c}/cancel"), &[])
            .status()
            .is_success()
    );
    let r = server.wait_run(
        c,
        Duration::from_secs(60),
        "cancelled, its job ended",
        |r| r["status"] != "running" && !r["slurm"]["ended_at"].is_null(),
    );
    assert_eq!(r["status"], "cancelled", "{r}");
    assert_eq!(r["attempt_history"][0]["outcome"], "cancelled", "{r}");
    assert_eq!(placements(db, c).len(), 1);
}
