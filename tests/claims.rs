//! Capability-matched claims against a real Postgres and server: a run's requirements
//! (device, GPU memory, devices, labels) are met or it is not claimed; priorities go first; two
//! workers never hold one run; a queued run no connected worker can take says so; a drained
//! worker claims nothing.

use aligndet_studio::*;
use serde_json::{Value, json};

fn benchmark() -> Value {
    json!({"kind": "benchmark", "steps": 1})
}

fn cpu_caps(threads: u32) -> Value {
    json!({"device": "cpu", "cpu_threads": threads, "libtorch_version": "2.11.0"})
}

fn gpu_caps(count: u32, memory_gb: u64, labels: &[&str]) -> Value {
    json!({"device": "cuda", "gpu_model": "NVIDIA H100", "gpu_memory_mb": memory_gb * 1024,
           "gpu_count": count, "cpu_threads": 16, "labels": labels})
}

fn claimed_id(spec: Option<Value>) -> Option<i64> {
    spec.map(|s| s["run_id"].as_i64().unwrap())
}

#[test]
fn runs_go_to_the_workers_that_meet_their_requirements_highest_priority_first() {
    let db = TestDb::create();
    let data = TempDir::new("claims");
    let server = Server::start(&ServerOptions::new(&db, data.path()));
    let cuda40 = server.create_run_with(
        "needs cuda",
        benchmark(),
        json!({"requirements": {"device": "cuda", "min_gpu_memory_mb": 40960, "devices": 1}}),
    );
    let labelled = server.create_run_with(
        "needs a100",
        benchmark(),
        json!({"requirements": {"device": "cuda", "labels": ["a100"], "devices": 1}}),
    );
    let low = server.create_run_with("low", benchmark(), json!({"priority": -5}));
    let high = server.create_run_with("high", benchmark(), json!({"priority": 7}));
    let plain = server.create_run_with("plain", benchmark(), json!({}));

    // The CUDA run waits, and says for what.
    let waiting = server.run(cuda40)["waiting_for_worker"].clone();
    assert_eq!(
        waiting, "waits for a worker with cuda, ≥ 40 GB; connected: none",
        "{waiting}"
    );
    let cpu = ApiWorker::register_with(&server, "cpu", "cpu", Some(cpu_caps(4)));
    let page = server.get(&format!("/runs/{cuda40}")).text().unwrap();
    assert!(
        page.contains("waits for a worker with cuda, ≥ 40 GB; connected: 1 cpu worker"),
        "the run page says what it waits for"
    );

    // A CPU worker takes the CPU-able runs, highest priority first, then oldest; never a CUDA run.
    let order: Vec<i64> = std::iter::from_fn(|| claimed_id(cpu.claim())).collect();
    assert_eq!(order, vec![high, plain, low], "priority, then age");
    assert!(!order.contains(&cuda40) && !order.contains(&labelled));

    // A small GPU without the label takes neither; the right one takes each.
    let small =
        ApiWorker::register_with(&server, "small gpu", "cuda:0", Some(gpu_caps(1, 16, &[])));
    assert_eq!(claimed_id(small.claim()), None);
    let big = ApiWorker::register_with(
        &server,
        "big gpu",
        "cuda:0",
        Some(gpu_caps(1, 80, &["a100"])),
    );
    let got: Vec<i64> = std::iter::from_fn(|| claimed_id(big.claim())).collect();
    assert_eq!(got, vec![cuda40, labelled]);
    assert_eq!(server.run(cuda40)["waiting_for_worker"], Value::Null);

    // A run needing 2 devices waits for a worker with 2 GPUs (or 2 cores).
    let two = server.create_run_with(
        "two ranks",
        benchmark(),
        json!({"requirements": {"device": "cuda", "devices": 2}}),
    );
    assert_eq!(claimed_id(big.claim()), None);
    let pair = ApiWorker::register_with(&server, "2 gpus", "cuda:0", Some(gpu_caps(2, 80, &[])));
    assert_eq!(claimed_id(pair.claim()), Some(two));

    // Requirements that contradict the config, or are not names, are refused by field.
    let r = server.api_post(
        "runs",
        &json!({"name": "bad", "config": benchmark(), "requirements": {"labels": ["a b"]}}),
    );
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("requirements.labels"));
    let r = server.api_post(
        "runs",
        &json!({"name": "bad", "config": benchmark(), "requirements": {"gpus": 2}}),
    );
    assert_eq!(r.status(), 400, "unknown requirement keys are refused");
    assert!(r.text().unwrap().contains("unknown field `gpus`"));
}

#[test]
fn two_workers_never_hold_one_run_and_a_drained_worker_claims_nothing() {
    let db = TestDb::create();
    let data = TempDir::new("claims-race");
    let server = Server::start(&ServerOptions::new(&db, data.path()));
    let runs: Vec<i64> = (0..20)
        .map(|i| server.create_run_with(&format!("r{i}"), benchmark(), json!({})))
        .collect();
    let a = ApiWorker::register_with(&server, "a", "cpu", Some(cpu_caps(2)));
    let b = ApiWorker::register_with(&server, "b", "cpu", Some(cpu_caps(2)));
    let (got_a, got_b) = std::thread::scope(|scope| {
        let ta = scope.spawn(|| std::iter::from_fn(|| claimed_id(a.claim())).collect::<Vec<_>>());
        let tb = scope.spawn(|| std::iter::from_fn(|| claimed_id(b.claim())).collect::<Vec<_>>());
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let mut all: Vec<i64> = got_a.iter().chain(&got_b).copied().collect();
    all.sort();
    assert_eq!(all, runs, "every run claimed exactly once");
    assert_eq!(
        db.query("SELECT count(*) FROM run_attempts"),
        "20",
        "one attempt per run"
    );

    // Draining: the page's button stops claims; undoing it lets them go on.
    let later = server.create_run_with("later", benchmark(), json!({}));
    let ui = server.browser_session();
    let drained = ui.post_form(
        &format!("/workers/{}/drain", a.worker_id),
        &[("drain", "1")],
    );
    assert!(
        drained.status().is_success() || drained.status().is_redirection(),
        "{}",
        drained.status()
    );
    assert_eq!(
        claimed_id(a.claim()),
        None,
        "a drained worker claims nothing"
    );
    let workers = server.get("/workers").text().unwrap();
    assert!(workers.contains("draining") && workers.contains("cpu, 2 threads"));
    // A switch that is neither 1 nor 0 is refused on a page naming it, not read as "undrain".
    let garbled = ui.post_form(
        &format!("/workers/{}/drain", a.worker_id),
        &[("drain", "yes")],
    );
    assert_eq!(garbled.status().as_u16(), 422);
    let page = garbled.text().unwrap();
    assert!(
        page.contains("</nav>")
            && page.contains("drain: a switch is 1 (on) or 0 (off), not &#34;yes&#34;"),
        "{page}"
    );
    assert_eq!(claimed_id(a.claim()), None, "still draining");
    ui.post_form(
        &format!("/workers/{}/drain", a.worker_id),
        &[("drain", "0")],
    );
    assert_eq!(claimed_id(a.claim()), Some(later));
}
