//! The attack suite: each case found by attacking a fresh instance, replayed against a real
//! server and Postgres. Every case must be refused with the problem named and nothing stored,
//! or survived with nothing lost. The test prints its tally (`attacks: tried N, handled N`).
//! (Import attacks are in tests/import_attacks.rs, worker faults in tests/worker_faults.rs,
//! server faults in tests/faults.rs.)

use aligndet_studio::*;
use serde_json::{Value, json};

fn bench() -> Value {
    json!({"kind": "benchmark", "backbone": "resnet18", "batch_size": 1, "resolution": 64, "steps": 1, "warmup_steps": 0})
}

fn finetune(dataset: i64) -> Value {
    json!({
        "kind": "finetune", "dataset_id": dataset, "detector": "fcos", "backbone": "resnet18",
        "init": {"from": "scratch"}, "optim": {"steps": 2, "batch_size": 1, "warmup_steps": 0},
        "train_split": "train", "val_split": "val",
        "augment": {"min_sizes": [64], "max_size": 64}
    })
}

struct Ctx<'a> {
    server: &'a Server,
    db: &'a TestDb,
    dataset: i64,
    /// A benchmark run that succeeded and left no artifact.
    bare_run: i64,
}

type Outcome = Result<(), String>;

/// A named attack and its replay.
type Case = (&'static str, fn(&Ctx) -> Outcome);

fn runs_count(db: &TestDb) -> i64 {
    db.query("SELECT count(*) FROM runs").parse().unwrap_or(-1)
}

/// POST /api/v1/runs must refuse `body` with 400 and a message containing `expect`, storing
/// nothing.
fn api_refuses(c: &Ctx, body: Value, expect: &str) -> Outcome {
    let before = runs_count(c.db);
    let r = c.server.api_post("runs", &body);
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    if status != 400 {
        return Err(format!("answered {status}: {text}"));
    }
    if !text.contains(expect) {
        return Err(format!("message does not name {expect:?}: {text}"));
    }
    if text.contains("violates") || text.contains("constraint") || text.contains("database") {
        return Err(format!("database text reached the client: {text}"));
    }
    if runs_count(c.db) != before {
        return Err("a run was stored".into());
    }
    Ok(())
}

fn dns_rebinding_gets_no_cookie_and_no_run(c: &Ctx) -> Outcome {
    let evil = "rebind.evil.example:8091";
    let r = c
        .server
        .http
        .get(format!("{}/datasets", c.server.url))
        .header("host", evil)
        .send()
        .map_err(|e| e.to_string())?;
    if r.status() != 421 || r.headers().get("set-cookie").is_some() {
        return Err(format!(
            "GET with a foreign Host: {} (cookie set: {})",
            r.status(),
            r.headers().get("set-cookie").is_some()
        ));
    }
    let text = r.text().unwrap_or_default();
    if !text.contains("rebind.evil.example") || !text.contains("--public-url") {
        return Err(format!("the refusal does not say why: {text}"));
    }
    // Even with a real cookie and token (as if stolen), a foreign Host posts nothing.
    let ui = c.server.browser_session();
    let before = runs_count(c.db);
    let r = c
        .server
        .http
        .post(format!("{}/runs", c.server.url))
        .header("host", evil)
        .header("origin", format!("http://{evil}"))
        .header("cookie", &ui.cookie)
        .form(&[
            ("kind", "benchmark"),
            ("name", "rebound"),
            ("csrf_token", &ui.token),
        ])
        .send()
        .map_err(|e| e.to_string())?;
    if r.status() != 421 || runs_count(c.db) != before {
        return Err(format!("POST with a foreign Host: {}", r.status()));
    }
    Ok(())
}

fn a_worker_cannot_report_for_another_workers_attempt(c: &Ctx) -> Outcome {
    let run = c.server.create_run("held", bench());
    let holder = ApiWorker::register(c.server, "holder");
    let intruder = ApiWorker::register(c.server, "intruder");
    let spec = holder.claim().ok_or("nothing to claim")?;
    if spec["run_id"] != run {
        return Err(format!("claimed {spec}"));
    }
    let attempt = spec["attempt"].as_i64().unwrap_or(0);
    let r = intruder.post(
        &format!("runs/{run}/status"),
        &json!({"attempt": attempt, "status": "succeeded"}),
    );
    if r.status() != 409 {
        return Err(format!("intruder's status answered {}", r.status()));
    }
    let r = intruder.post(
        &format!("runs/{run}/metrics"),
        &json!({"attempt": attempt, "points": [{"key": "loss", "step": 1, "value": 1.0, "wall_time": 1.0}]}),
    );
    if r.status() != 409 {
        return Err(format!("intruder's metrics answered {}", r.status()));
    }
    let r = intruder.put_artifact(run, attempt, "model.safetensors", b"x".to_vec());
    if r.status() != 409 {
        return Err(format!("intruder's artifact answered {}", r.status()));
    }
    // Without any worker key, only the shared token: refused, naming the header.
    let r = c.server.worker_post(
        &format!("runs/{run}/heartbeat"),
        &json!({"worker_id": holder.worker_id, "attempt": attempt}),
    );
    let text = r.text().unwrap_or_default();
    if !text.contains("x-aligndet-worker-key") {
        return Err(format!("keyless heartbeat: {text}"));
    }
    // Claiming as another worker id with one's own key is refused too.
    let r = intruder.post("jobs/claim", &json!({"worker_id": holder.worker_id}));
    if r.status() != 403 {
        return Err(format!("claim as another worker answered {}", r.status()));
    }
    let state = c.server.run(run);
    if state["status"] != "running" || state["metric_points"] != 0 {
        return Err(format!("the run changed: {state}"));
    }
    let r = holder.post(
        &format!("runs/{run}/status"),
        &json!({"attempt": attempt, "status": "succeeded"}),
    );
    if !r.status().is_success() {
        return Err(format!("the holder's own status answered {}", r.status()));
    }
    Ok(())
}

fn bidi_override_names_are_refused(c: &Ctx) -> Outcome {
    api_refuses(
        c,
        json!({"name": "report\u{202E}fdp.exe", "config": bench()}),
        "U+202E",
    )?;
    api_refuses(c, json!({"name": "", "config": bench()}), "name")?;
    api_refuses(
        c,
        json!({"name": format!("{}\u{7}", "x".repeat(5000)), "config": bench()}),
        "name",
    )
}

fn api_refuses_what_the_form_refuses(c: &Ctx) -> Outcome {
    let mut nope = finetune(c.dataset);
    nope["train_split"] = json!("nope");
    api_refuses(c, json!({"name": "n", "config": nope}), "train_split")?;
    let mut ghost = finetune(c.dataset);
    ghost["init"] =
        json!({"from": "checkpoint", "artifact": {"run_id": 999999, "name": "model.safetensors"}});
    api_refuses(
        c,
        json!({"name": "n", "config": ghost}),
        "run 999999 not found",
    )?;
    let mut missing = finetune(c.dataset);
    missing["init"] = json!({"from": "checkpoint", "artifact": {"run_id": c.bare_run, "name": "model.safetensors"}});
    api_refuses(
        c,
        json!({"name": "n", "config": missing}),
        "has no artifact",
    )?;
    api_refuses(
        c,
        json!({"name": "n", "config": finetune(99999)}),
        "dataset 99999 not found",
    )?;
    // Mask R-CNN on a dataset whose objects have no masks: refused at submit, naming one.
    let mut masks = finetune(c.dataset);
    masks["detector"] = json!("mask_rcnn");
    api_refuses(
        c,
        json!({"name": "n", "config": masks}),
        "Mask R-CNN needs a mask (`segmentation`) on every object",
    )?;
    api_refuses(
        c,
        json!({"name": "n", "config": bench(), "parents": [999999]}),
        "parents: run 999999 not found",
    )?;
    api_refuses(
        c,
        json!({"name": "n", "config": bench(), "depends_on": [999999]}),
        "run 999999 not found",
    )?;
    api_refuses(
        c,
        json!({"name": "n", "config": {"kind": "evaluate", "dataset_id": c.dataset,
               "detections": {"run_id": 999999, "name": "detections.json"}}}),
        "detections.run_id",
    )?;
    api_refuses(
        c,
        json!({"name": "n", "config": bench(), "priority_boost": 9}),
        "unknown field",
    )?;
    // The page refuses the same run with the same field error.
    let ui = c.server.browser_session();
    let dataset = c.dataset.to_string();
    let form = [
        ("kind", "finetune"),
        ("name", "n"),
        ("dataset_id", dataset.as_str()),
        ("train_split", "nope"),
        ("val_split", "val"),
        ("detector", "fcos"),
        ("backbone", "resnet18"),
        ("init", "scratch"),
        ("optimizer", "sgd"),
        ("schedule", "step"),
    ];
    let r = ui.post_form("/runs", &form);
    let page = r.text().unwrap_or_default();
    let mut api_body = finetune(c.dataset);
    api_body["train_split"] = json!("nope");
    let api_text = c
        .server
        .api_post("runs", &json!({"name": "n", "config": api_body}))
        .text()
        .unwrap_or_default();
    let api_error: Value = serde_json::from_str(&api_text).map_err(|e| e.to_string())?;
    let message = api_error["error"].as_str().unwrap_or("");
    // The page shows it HTML-escaped in the form's error box.
    let shown = form_error(&page)
        .unwrap_or("")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    if shown != message {
        return Err(format!("the page says {shown:?}, the API {message:?}"));
    }
    Ok(())
}

fn non_finite_form_numbers_are_refused_by_name(c: &Ctx) -> Outcome {
    let ui = c.server.browser_session();
    for (field, value) in [
        ("nms_iou", "NaN"),
        ("max_aspect", "inf"),
        ("min_side", "-inf"),
    ] {
        let before = runs_count(c.db);
        let dataset = c.dataset.to_string();
        let r = ui.post_form(
            "/runs",
            &[
                ("kind", "proposals"),
                ("name", "p"),
                ("dataset_id", &dataset),
                (field, value),
            ],
        );
        let status = r.status();
        let page = r.text().unwrap_or_default();
        if status != 422 || !page.contains(field) || runs_count(c.db) != before {
            return Err(format!("{field}={value}: {status}"));
        }
    }
    Ok(())
}

fn overlapping_metric_resends_never_error(c: &Ctx) -> Outcome {
    let run = c.server.create_run("metrics", bench());
    let worker = ApiWorker::register(c.server, "metrics");
    let spec = worker.claim().ok_or("nothing to claim")?;
    if spec["run_id"] != run {
        return Err(format!("claimed {spec}"));
    }
    let attempt = spec["attempt"].as_i64().unwrap_or(0);
    // Three overlapping batches (shared keys and steps, different orders), each re-sent by
    // several threads at once: what a worker retrying through a slow server does.
    let batch = |offset: i64, reverse: bool| {
        let mut points: Vec<Value> = (0..400)
            .flat_map(|step| {
                ["loss/a", "loss/b", "lr"].into_iter().map(move |key| {
                    json!({"key": key, "step": step + offset, "value": step as f64, "wall_time": 1.0})
                })
            })
            .collect();
        if reverse {
            points.reverse();
        }
        json!({"attempt": attempt, "points": points})
    };
    let batches = [batch(0, false), batch(200, true), batch(100, false)];
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..30)
            .map(|i| {
                let (worker, body) = (&worker, &batches[i % 3]);
                s.spawn(move || {
                    worker
                        .post(&format!("runs/{run}/metrics"), body)
                        .status()
                        .as_u16()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    });
    let failed: Vec<&u16> = statuses.iter().filter(|s| **s != 200).collect();
    if !failed.is_empty() {
        return Err(format!(
            "{} of 30 re-sends failed: {failed:?}",
            failed.len()
        ));
    }
    let stored = c.db.query(&format!(
        "SELECT count(*) FROM metrics WHERE run_id = {run}"
    ));
    if stored != (600 * 3).to_string() {
        return Err(format!("stored {stored} points, sent 1800 distinct"));
    }
    Ok(())
}

fn huge_worker_info_is_refused(c: &Ctx) -> Outcome {
    let info = json!({"blob": "x".repeat(10 << 20)});
    let r = c.server.worker_post(
        "workers/register",
        &json!({"name": "bloated", "device": "cpu", "info": info,
                "protocol_version": aligndet_common::api::PROTOCOL_VERSION}),
    );
    let status = r.status();
    let text = r.text().unwrap_or_default();
    if status != 413 || !text.contains("worker info") {
        return Err(format!("{status}: {}", &text[..text.len().min(200)]));
    }
    if c.db
        .query("SELECT count(*) FROM workers WHERE name = 'bloated'")
        != "0"
    {
        return Err("the worker was stored".into());
    }
    Ok(())
}

fn the_worker_token_is_not_on_the_servers_command_line(c: &Ctx) -> Outcome {
    let cmdline =
        std::fs::read(format!("/proc/{}/cmdline", c.server.pid())).map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&cmdline).contains(&c.server.token) {
        return Err("the token is visible in ps".into());
    }
    Ok(())
}

fn unknown_pages_give_no_internal_text(c: &Ctx) -> Outcome {
    let r = c.server.get("/runs/999999");
    let text = r.text().unwrap_or_default();
    if text.contains("sqlx") || text.contains("SELECT") || text.contains("violates") {
        return Err(format!("internal text: {text}"));
    }
    Ok(())
}

#[test]
fn every_attack_is_refused_or_survived() {
    let db = TestDb::create();
    let data = TempDir::new("attacks");
    let imports = TempDir::new("attacks-imports");
    let (ann, images) = write_small_coco(imports.path(), 6);
    let mut opts = ServerOptions::new(&db, data.path());
    opts.import_roots = vec![imports.path().to_path_buf()];
    let server = Server::start(&opts);
    let dataset = import_dataset(&server, "attack data", &ann, &images);
    let bare_run = server.create_run("bare", bench());
    let w = ApiWorker::register(&server, "bare");
    let spec = w.claim().expect("the bare run");
    let r = w.post(
        &format!("runs/{bare_run}/status"),
        &json!({"attempt": spec["attempt"], "status": "succeeded"}),
    );
    assert!(r.status().is_success());
    let c = Ctx {
        server: &server,
        db: &db,
        dataset,
        bare_run,
    };
    let cases: &[Case] = &[
        ("DNS rebinding", dns_rebinding_gets_no_cookie_and_no_run),
        (
            "another worker's attempt",
            a_worker_cannot_report_for_another_workers_attempt,
        ),
        ("bidi and control names", bidi_override_names_are_refused),
        (
            "API accepts what the form refuses",
            api_refuses_what_the_form_refuses,
        ),
        (
            "NaN / infinity in forms",
            non_finite_form_numbers_are_refused_by_name,
        ),
        (
            "overlapping metric re-sends",
            overlapping_metric_resends_never_error,
        ),
        ("10 MiB worker info", huge_worker_info_is_refused),
        (
            "token in ps",
            the_worker_token_is_not_on_the_servers_command_line,
        ),
        ("internal error text", unknown_pages_give_no_internal_text),
    ];
    let mut failures = Vec::new();
    for (name, case) in cases {
        match case(&c) {
            Ok(()) => println!("handled: {name}"),
            Err(why) => {
                println!("NOT handled: {name}: {why}");
                failures.push(format!("{name}: {why}"));
            }
        }
    }
    println!(
        "attacks: tried {}, handled {}",
        cases.len(),
        cases.len() - failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
