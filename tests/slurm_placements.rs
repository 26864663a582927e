//! The server's rules for Slurm placements, against a real Postgres and server, with the test
//! speaking the agent's calls itself (as `ApiWorker` speaks a worker's; `tests/slurm.rs` runs
//! the real agent against a real Slurm): the agent sees only runs its profile meets; one run
//! never gets two live placements; a placed run is claimed only by a claim naming it; Slurm's
//! terminal states end the attempt (a preemption not counted, the last attempt failing the run,
//! a cancel request ending it cancelled); a job that ended before its worker claimed fails the
//! run naming the job; and an agent cannot report on another agent's placement.

use aligndet_studio::*;
use serde_json::{Value, json};

fn benchmark() -> Value {
    json!({"kind": "benchmark", "steps": 1})
}

fn cpu(threads: u32) -> Option<Value> {
    Some(json!({"device": "cpu", "cpu_threads": threads}))
}

/// The agent reserves `run`'s placement and records `job` as submitted; the placement id.
fn place(agent: &ApiWorker, run: i64, job: i64) -> i64 {
    let r = agent.post("slurm/placements", &json!({"run_id": run}));
    assert_eq!(r.status(), 200, "reserve run {run}");
    let id = r.json::<Value>().unwrap()["placement_id"].as_i64().unwrap();
    let path = format!("slurm/placements/{id}/submitted");
    let r = agent.post(&path, &json!({"slurm_job_id": job}));
    assert_eq!(r.status(), 200, "submitted");
    id
}

fn report(agent: &ApiWorker, placement: i64, state: &str) -> reqwest::blocking::Response {
    agent.post(
        &format!("slurm/placements/{placement}/state"),
        &json!({"state": state, "node": "n1", "reason": "None"}),
    )
}

/// `GET slurm/placements` as the agent.
fn live_placements(server: &Server, agent: &ApiWorker) -> Value {
    server
        .http
        .get(format!("{}/api/v1/slurm/placements", server.url))
        .bearer_auth(&server.token)
        .header(aligndet_common::api::WORKER_KEY_HEADER, &agent.key)
        .send()
        .expect("live placements")
        .json()
        .expect("json")
}

/// The worker inside the Slurm job claims `run` by id; its attempt.
fn claim_by_id(worker: &ApiWorker, run: i64) -> i64 {
    let r = worker.post(
        "jobs/claim",
        &json!({"worker_id": worker.worker_id, "run_id": run}),
    );
    assert_eq!(r.status(), 200, "claim run {run} by id");
    r.json::<Value>().unwrap()["attempt"].as_i64().unwrap()
}

#[test]
fn placements_follow_slurm_states_and_keep_runs_from_other_workers() {
    let db = TestDb::create();
    let data = TempDir::new("placements");
    let server = Server::start(&ServerOptions::new(&db, data.path()));
    let agent = ApiWorker::register_with(&server, "agent", "cpu", cpu(2));
    let other_agent = ApiWorker::register_with(&server, "other agent", "cpu", cpu(2));
    let cuda = server.create_run_with(
        "needs cuda",
        benchmark(),
        json!({"requirements": {"device": "cuda", "devices": 1}}),
    );
    let run = server.create_run_with("placed", benchmark(), json!({}));

    // The agent is offered only what its profile meets.
    let offered: Value = agent
        .post("slurm/placeable", &json!({"limit": 10}))
        .json()
        .unwrap();
    let offered: Vec<i64> = offered
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        offered,
        [run],
        "the cuda run #{cuda} is not for a cpu agent"
    );

    // One live placement per run, whoever asks.
    let placement = place(&agent, run, 101);
    for who in [&agent, &other_agent] {
        let again = who.post("slurm/placements", &json!({"run_id": run}));
        assert_eq!(again.status(), 409);
    }
    // Another agent cannot report on it.
    assert_eq!(report(&other_agent, placement, "RUNNING").status(), 404);
    assert_eq!(report(&agent, placement, "running; drop").status(), 400);

    // An ordinary worker does not take the placed run; the job's worker does, by id.
    let worker = ApiWorker::register_with(&server, "ordinary", "cpu", cpu(4));
    assert!(worker.claim().is_none());
    let inside = ApiWorker::register_with(&server, "slurm-job-101", "cpu", cpu(4));
    assert_eq!(claim_by_id(&inside, run), 1);
    assert_eq!(report(&agent, placement, "RUNNING").status(), 200);

    // Preempted: the attempt ends, the run is re-queued, and the preemption does not count.
    assert_eq!(report(&agent, placement, "PREEMPTED").status(), 200);
    let r = server.run(run);
    assert_eq!(
        (r["status"].as_str(), r["attempts"].as_i64()),
        (Some("queued"), Some(1))
    );
    let note = r["attempt_history"][0]["note"].as_str().unwrap();
    assert!(
        note.starts_with("Slurm job 101 ended PREEMPTED on node n1")
            && note.contains("does not count"),
        "{note}"
    );
    let max = db.query(&format!("SELECT max_attempts FROM runs WHERE id = {run}"));
    assert_eq!(max, "4", "3 attempts plus the preempted one");
    // A report after the end changes nothing (reports are idempotent).
    assert_eq!(report(&agent, placement, "RUNNING").status(), 200);

    // Attempts 2, 3 and 4 each end TIMEOUT: the last one fails the run, naming job and node.
    for (attempt, job) in [(2, 102), (3, 103), (4, 104)] {
        let p = place(&agent, run, job);
        assert_eq!(claim_by_id(&inside, run), attempt);
        assert_eq!(report(&agent, p, "TIMEOUT").status(), 200);
    }
    let r = server.run(run);
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(
        r["error"],
        "Slurm job 104 ended TIMEOUT on node n1 on attempt 4 of 4; no attempts left"
    );
    assert_eq!(
        r["attempt_history"][1]["note"],
        "Slurm job 102 ended TIMEOUT on node n1; run re-queued"
    );

    // A job that fails before its worker claims fails the run with the cause.
    let early = server.create_run_with("fails in Slurm", benchmark(), json!({}));
    let p = place(&agent, early, 200);
    let r = agent.post(
        &format!("slurm/placements/{p}/state"),
        &json!({"state": "FAILED", "reason": "NonZeroExitCode", "exit_code": "1:0"}),
    );
    assert_eq!(r.status(), 200);
    let r = server.run(early);
    assert_eq!(r["status"], "failed");
    assert_eq!(
        r["error"],
        "Slurm job 200 ended FAILED (NonZeroExitCode, exit code 1:0) before its worker claimed the run"
    );

    // A cancel asked while the job's worker runs: the job is wanted no more, and its end
    // (the agent's scancel) ends the run cancelled.
    let cancelled = server.create_run_with("cancelled", benchmark(), json!({}));
    let p = place(&agent, cancelled, 300);
    claim_by_id(&inside, cancelled);
    assert!(
        server
            .api_post(&format!("runs/{cancelled}/cancel"), &json!({}))
            .status()
            .is_success()
    );
    let live = live_placements(&server, &agent);
    let mine: Vec<&Value> = live
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["run_id"] == cancelled)
        .collect();
    assert_eq!(mine.len(), 1, "{live}");
    assert_eq!(mine[0]["cancel"], true);
    assert_eq!(report(&agent, p, "CANCELLED").status(), 200);
    let r = server.run(cancelled);
    assert_eq!(r["status"], "cancelled", "{r}");
    assert_eq!(r["attempt_history"][0]["outcome"], "cancelled");

    // sbatch refused: the run fails with sbatch's words.
    let refused = server.create_run_with("refused", benchmark(), json!({}));
    let r = agent.post("slurm/placements", &json!({"run_id": refused}));
    let p = r.json::<Value>().unwrap()["placement_id"].as_i64().unwrap();
    let error = "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified";
    let r = agent.post(
        &format!("slurm/placements/{p}/rejected"),
        &json!({"error": error}),
    );
    assert_eq!(r.status(), 200);
    let r = server.run(refused);
    assert_eq!(r["status"], "failed");
    assert_eq!(
        r["error"],
        format!("sbatch refused the Slurm job for this run: {error}")
    );
    assert_eq!(r["slurm"]["state"], "REJECTED");
}
