//! Run dependencies and experiments against the real server and Postgres, without training: the
//! tests speak the worker protocol themselves (register, claim, upload, report a status).
//!
//! - a run that waits for others is not claimed before they succeed, and is claimed after;
//! - a failed or cancelled dependency fails its queued dependents (transitively), with a message;
//! - the experiment form makes the whole chain with the right configs, inits and dependencies,
//!   and a bad field comes back named;
//! - `POST /api/v1/experiments` (reusing a proposals run) and `GET /api/v1/experiments/{id}`
//!   with the final evaluation of a finished fine-tune.

use aligndet_studio::*;
use serde_json::{Value, json};

fn bench() -> Value {
    json!({"kind": "benchmark", "backbone": "resnet18", "batch_size": 1, "resolution": 64, "steps": 1, "warmup_steps": 0})
}

/// A worker that is only this test: claims and reports over the API.
struct Proto<'a>(ApiWorker<'a>);

impl<'a> Proto<'a> {
    fn register(server: &'a Server) -> Proto<'a> {
        Proto(ApiWorker::register(server, "protocol"))
    }

    /// The next claimed job's (run id, attempt, spec), or `None` when nothing is claimable.
    fn claim(&self) -> Option<(i64, i64, Value)> {
        let spec = self.0.claim()?;
        Some((
            spec["run_id"].as_i64().unwrap(),
            spec["attempt"].as_i64().unwrap(),
            spec,
        ))
    }

    fn finish(&self, run: i64, attempt: i64, status: &str) {
        let error = (status == "failed").then_some("boom");
        let r = self.0.post(
            &format!("runs/{run}/status"),
            &json!({"attempt": attempt, "status": status, "error": error}),
        );
        assert!(r.status().is_success(), "status: {}", r.status());
    }

    fn upload(&self, run: i64, attempt: i64, name: &str, bytes: Vec<u8>) {
        let r = self.0.put_artifact(run, attempt, name, bytes);
        assert!(r.status().is_success(), "upload {name}: {}", r.status());
    }
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

fn status(server: &Server, run: i64) -> (String, String) {
    let r = server.run(run);
    (
        r["status"].as_str().unwrap_or("").to_string(),
        r["error"].as_str().unwrap_or("").to_string(),
    )
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

/// Server first so it stops before the database and folders go.
struct Fixture {
    server: Server,
    db: TestDb,
    dataset: i64,
    _data: TempDir,
    _imports: TempDir,
}

/// Ten images: train 1–8, val 9–10, labeled subsets 5pct/10pct × seeds 1–3.
fn fixture(tag: &str) -> Fixture {
    let mut labeled = serde_json::Map::new();
    for p in [5, 10] {
        for s in 1..=3i64 {
            labeled.insert(format!("{p}pct_seed{s}"), json!([s, s + 3]));
        }
    }
    let splits = json!({"train": [1, 2, 3, 4, 5, 6, 7, 8], "val": [9, 10], "labeled": labeled});
    let SmallDataset {
        server,
        db,
        dataset,
        data,
        imports,
    } = SmallDataset::start(tag, 10, &splits);
    Fixture {
        server,
        db,
        dataset,
        _data: data,
        _imports: imports,
    }
}

fn post_experiment(f: &Fixture, changes: &[(&'static str, &str)]) -> reqwest::blocking::Response {
    let dataset = f.dataset.to_string();
    let mut fields: Vec<(&str, String)> = [
        ("name", "exp <b>one</b>"),
        ("dataset_id", dataset.as_str()),
        ("detector", "fcos"),
        ("backbone", "efficientnet_lite0"),
        ("proposals", "new"),
        ("proposals_max_images", ""),
        ("pretrain_steps", "40"),
        ("pretrain_batch_size", "2"),
        ("pretrain_lr", ""),
        ("finetune_steps", "30"),
        ("finetune_batch_size", "2"),
        ("finetune_lr", "0.02"),
        ("finetune_weight_decay", "0.0002"),
        ("lr_multiplier", "1.5"),
        ("wd_multiplier", "0.5"),
        ("seeds", "1, 2, 3"),
        ("fractions", "5, 10"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    for (k, v) in changes {
        match fields.iter_mut().find(|(n, _)| n == k) {
            Some(f) => f.1 = v.to_string(),
            None => fields.push((k, v.to_string())),
        }
    }
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    f.server.browser_session().post_form("/experiments", &pairs)
}

/// Every run of an experiment: (id, role, config), by id.
fn experiment_runs(f: &Fixture, exp: i64) -> Vec<(i64, String, Value)> {
    let out = f.db.query(&format!(
        "SELECT json_agg(json_build_array(id, experiment_role, config) ORDER BY id) FROM runs WHERE experiment_id = {exp}"
    ));
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    rows.into_iter()
        .map(|r| {
            (
                r[0].as_i64().unwrap(),
                r[1].as_str().unwrap().to_string(),
                r[2].clone(),
            )
        })
        .collect()
}

/// Which runs a run waits for.
fn waits_for(f: &Fixture, run: i64) -> Vec<i64> {
    let out = f.db.query(&format!(
        "SELECT coalesce(json_agg(parent_id ORDER BY parent_id), '[]') FROM run_parents WHERE run_id = {run} AND waits"
    ));
    serde_json::from_str(&out).unwrap()
}

#[test]
fn the_form_creates_the_whole_chain_with_paired_arms() {
    let f = fixture("exp-form");
    let page = f.server.get("/experiments/new").text().unwrap();
    assert!(
        page.contains("id=\"experiment-form\""),
        "the form is served"
    );
    let r = post_experiment(&f, &[]);
    let url = r.url().clone();
    let body = r.text().unwrap();
    let exp: i64 = url
        .path()
        .strip_prefix("/experiments/")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not redirected to the experiment: {body}"));

    let runs = experiment_runs(&f, exp);
    let of = |role: &str| -> Vec<&(i64, String, Value)> {
        runs.iter().filter(|r| r.1 == role).collect()
    };
    assert_eq!(
        of("pretrain_image").len(),
        0,
        "ImageNet backbone by default"
    );
    assert_eq!(of("proposals").len(), 1);
    assert_eq!(of("pretrain_box").len(), 1);
    assert_eq!(of("aligndet").len(), 6);
    assert_eq!(of("baseline").len(), 6);
    let proposals = of("proposals")[0];
    assert_eq!(proposals.2["kind"], "proposals");
    assert_eq!(proposals.2["strategy"], "aligndet");
    let pb = of("pretrain_box")[0];
    assert_eq!(pb.2["kind"], "pretrain_box");
    assert_eq!(pb.2["proposals_run_id"], proposals.0);
    assert_eq!(pb.2["backbone_init"], json!({"from": "imagenet_backbone"}));
    assert_eq!(pb.2["optim"]["steps"], 40);
    assert_eq!(pb.2["optim"]["batch_size"], 2);
    assert_eq!(pb.2["detector"], "fcos");
    assert_eq!(waits_for(&f, pb.0), vec![proposals.0]);

    let mut pairs = Vec::new();
    for a in of("aligndet") {
        let c = &a.2;
        let split = c["train_split"].as_str().unwrap();
        let b = of("baseline")
            .into_iter()
            .find(|b| b.2["train_split"] == c["train_split"])
            .unwrap_or_else(|| panic!("no baseline on {split}"));
        pairs.push((c["optim"]["seed"].as_u64().unwrap(), split.to_string()));
        assert!(
            split.ends_with(&format!("pct_seed{}", c["optim"]["seed"])),
            "split {split} matches seed {}",
            c["optim"]["seed"]
        );
        for key in ["augment", "val_split", "detector", "backbone"] {
            assert_eq!(
                c[key], b.2[key],
                "{key} differs between the arms on {split}"
            );
        }
        for key in [
            "seed",
            "steps",
            "batch_size",
            "schedule",
            "warmup_steps",
            "optimizer",
        ] {
            assert_eq!(
                c["optim"][key], b.2["optim"][key],
                "optim.{key} differs between the arms on {split}"
            );
        }
        assert_eq!(c["val_split"], "val");
        assert_eq!(c["optim"]["steps"], 30);
        assert!(
            (c["optim"]["lr"].as_f64().unwrap() - 0.03).abs() < 1e-12,
            "{}",
            c["optim"]["lr"]
        );
        assert!((c["optim"]["weight_decay"].as_f64().unwrap() - 0.0001).abs() < 1e-15);
        assert!((b.2["optim"]["lr"].as_f64().unwrap() - 0.02).abs() < 1e-12);
        assert!((b.2["optim"]["weight_decay"].as_f64().unwrap() - 0.0002).abs() < 1e-15);
        assert_eq!(
            c["init"],
            json!({"from": "checkpoint", "artifact": {"run_id": pb.0, "name": "pretrained.safetensors"}})
        );
        assert_eq!(b.2["init"], json!({"from": "imagenet_backbone"}));
        assert_eq!(waits_for(&f, a.0), vec![pb.0]);
        assert_eq!(waits_for(&f, b.0), Vec::<i64>::new());
    }
    pairs.sort();
    assert_eq!(
        pairs,
        vec![
            (1, "10pct_seed1".into()),
            (1, "5pct_seed1".into()),
            (2, "10pct_seed2".into()),
            (2, "5pct_seed2".into()),
            (3, "10pct_seed3".into()),
            (3, "5pct_seed3".into()),
        ]
    );

    // The page: runs by role, what they wait for, the compare link, the name escaped.
    let page = f.server.get(&format!("/experiments/{exp}")).text().unwrap();
    assert!(
        page.contains("exp &#60;b&#62;one&#60;/b&#62;")
            || page.contains("exp &lt;b&gt;one&lt;/b&gt;")
    );
    assert!(!page.contains("<b>one</b>"));
    assert!(page.contains(&format!("waiting for run {}", pb.0)));
    let finetunes: Vec<String> = runs
        .iter()
        .filter(|r| r.2["kind"] == "finetune")
        .map(|r| r.0.to_string())
        .collect();
    assert!(page.contains(&format!("/compare?runs={}", finetunes.join(","))));
    let list = f.server.get("/experiments").text().unwrap();
    assert!(list.contains(&format!("href=\"/experiments/{exp}\"")));

    // The queue runs the chain in order: first the inputs and the baselines (nothing to wait
    // for), never an AlignDet fine-tune before the pre-training succeeded.
    let w = Proto::register(&f.server);
    let mut claimed = Vec::new();
    while let Some((id, _, spec)) = w.claim() {
        claimed.push((id, spec["config"]["kind"].as_str().unwrap().to_string()));
    }
    let ids: Vec<i64> = claimed.iter().map(|c| c.0).collect();
    assert!(ids.contains(&proposals.0));
    assert!(
        !ids.contains(&pb.0),
        "pre-training waits for the pseudo-boxes"
    );
    assert!(of("aligndet").iter().all(|a| !ids.contains(&a.0)));
    assert_eq!(ids.len(), 1 + 6, "the proposals run and the six baselines");
}

#[test]
fn a_label_free_experiment_starts_both_arms_from_the_image_pretraining() {
    let f = fixture("exp-free");
    let r = post_experiment(
        &f,
        &[
            ("label_free", "on"),
            ("backbone", "resnet18"),
            ("image_steps", "20"),
            ("image_batch_size", "4"),
            ("seeds", "2"),
            ("fractions", "10"),
        ],
    );
    assert!(
        r.url().path().starts_with("/experiments/"),
        "{}",
        r.text().unwrap()
    );
    let exp: i64 =
        f.db.query("SELECT max(id) FROM experiments")
            .parse()
            .unwrap();
    let runs = experiment_runs(&f, exp);
    let roles: Vec<&str> = runs.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        roles,
        [
            "pretrain_image",
            "proposals",
            "pretrain_box",
            "aligndet",
            "baseline"
        ]
    );
    let (img, _, ic) = &runs[0];
    assert_eq!(ic["kind"], "pretrain_image");
    assert_eq!(ic["init"], json!({"from": "scratch"}));
    assert_eq!(ic["optim"]["steps"], 20);
    assert_eq!(ic["backbone"], "resnet18");
    let backbone =
        json!({"from": "checkpoint", "artifact": {"run_id": img, "name": "backbone.safetensors"}});
    let (pb, _, pc) = &runs[2];
    assert_eq!(pc["backbone_init"], backbone);
    assert_eq!(waits_for(&f, *pb), vec![*img, runs[1].0]);
    let (base, _, bc) = &runs[4];
    assert_eq!(bc["init"], backbone);
    assert_eq!(bc["train_split"], "10pct_seed2");
    assert_eq!(waits_for(&f, *base), vec![*img]);
    assert_eq!(waits_for(&f, runs[3].0), vec![*pb]);
}

#[test]
fn bad_form_fields_come_back_named() {
    let f = fixture("exp-bad");
    for (changes, needle) in [
        (
            vec![("seeds", "1, x")],
            "seeds: \"x\" is not a whole number",
        ),
        (
            vec![("fractions", "7")],
            "fractions: dataset \"small\" has no split \"7pct_seed1\"",
        ),
        (vec![("backbone", "resnet50")], "backbone: ImageNet weights"),
        (vec![("finetune_steps", "0")], "finetune_steps: must be"),
        (
            vec![("finetune_lr", "-1")],
            "finetune_lr: must be a positive number",
        ),
        (
            vec![("proposals", "12345")],
            "proposals_run_id: run 12345 not found",
        ),
        (vec![("name", "")], "name: must be"),
    ] {
        let r = post_experiment(&f, &changes);
        assert_eq!(r.status(), 422, "{changes:?}");
        let body = r.text().unwrap();
        let err = body
            .split("id=\"form-error\">")
            .nth(1)
            .and_then(|s| s.split("</div>").next())
            .unwrap_or_else(|| panic!("no error box for {changes:?}"));
        // The error box is HTML-escaped text: compare with the quotes escaped.
        let escaped = needle.replace('"', "&#34;");
        assert!(
            err.contains(needle)
                || err.contains(&escaped)
                || err.contains(&needle.replace('"', "&quot;")),
            "{changes:?}: {err}"
        );
    }
    // A hostile name comes back escaped with the form.
    let r = post_experiment(&f, &[("name", "<script>x</script>"), ("seeds", "")]);
    assert_eq!(r.status(), 422);
    let body = r.text().unwrap();
    assert!(!body.contains("<script>x</script>"));
    assert!(body.contains("seeds: give at least one seed"));
    assert_eq!(
        f.db.query("SELECT count(*) FROM runs"),
        "0",
        "nothing was queued"
    );
    assert_eq!(f.db.query("SELECT count(*) FROM experiments"), "0");
}

#[test]
fn the_json_api_reuses_pseudo_boxes_and_reports_final_evaluations() {
    let f = fixture("exp-api");
    let s = &f.server;
    // A succeeded proposals run to reuse.
    let proposals = s.create_run(
        "boxes",
        json!({"kind": "proposals", "dataset_id": f.dataset, "strategy": "aligndet"}),
    );
    let w = Proto::register(s);
    let (id, attempt, _) = w.claim().unwrap();
    assert_eq!(id, proposals);
    w.finish(id, attempt, "succeeded");
    let spec = json!({"name": "x", "dataset_id": f.dataset, "proposals_run_id": proposals});
    let r = s.api_post("experiments", &spec);
    assert_eq!(r.status(), 400);
    assert!(
        r.text().unwrap().contains("has no pseudo_boxes.json"),
        "pre-training reads the proposals run's pseudo_boxes.json"
    );
    // A proposals run that left its pseudo-boxes (what the real job uploads before succeeding).
    let proposals = s.create_run(
        "boxes",
        json!({"kind": "proposals", "dataset_id": f.dataset, "strategy": "aligndet"}),
    );
    let (id, attempt, _) = w.claim().unwrap();
    assert_eq!(id, proposals);
    w.upload(
        id,
        attempt,
        "pseudo_boxes.json",
        br#"{"strategy": "aligndet", "images": []}"#.to_vec(),
    );
    w.finish(id, attempt, "succeeded");

    let spec = json!({
        "name": "api exp", "dataset_id": f.dataset, "detector": "retinanet",
        "proposals_run_id": proposals, "pretrain_steps": 10, "finetune_steps": 20,
        "finetune_batch_size": 2, "seeds": [1, 2, 3], "fractions": [5],
    });
    // The worker token is required.
    let r = s
        .http
        .post(format!("{}/api/v1/experiments", s.url))
        .json(&spec)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s.api_post("experiments", &spec);
    assert_eq!(r.status(), 200);
    let created: Value = r.json().unwrap();
    let exp = created["id"].as_i64().unwrap();
    let runs = created["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1 + 3 * 2, "no new proposals run: {created}");
    assert_eq!(runs[0]["role"], "pretrain_box");
    let pb = runs[0]["id"].as_i64().unwrap();
    let mut seeds: Vec<(String, i64, i64)> = runs[1..]
        .iter()
        .map(|r| {
            (
                r["role"].as_str().unwrap().to_string(),
                r["seed"].as_i64().unwrap(),
                r["fraction"].as_i64().unwrap(),
            )
        })
        .collect();
    seeds.sort();
    assert_eq!(
        seeds,
        vec![
            ("aligndet".into(), 1, 5),
            ("aligndet".into(), 2, 5),
            ("aligndet".into(), 3, 5),
            ("baseline".into(), 1, 5),
            ("baseline".into(), 2, 5),
            ("baseline".into(), 3, 5),
        ]
    );
    let pc: Value = serde_json::from_str(
        &f.db
            .query(&format!("SELECT config FROM runs WHERE id = {pb}")),
    )
    .unwrap();
    assert_eq!(pc["proposals_run_id"], proposals);
    assert_eq!(
        pc["max_boxes_per_image"], 50,
        "RetinaNet's reference setting"
    );

    // Bad specs are refused with the field named.
    for (bad, needle) in [
        (
            json!({"name": "x", "dataset_id": f.dataset, "seeds": []}),
            "seeds",
        ),
        (
            json!({"name": "x", "dataset_id": 999}),
            "dataset_id: dataset 999 not found",
        ),
        (
            json!({"name": "x", "dataset_id": f.dataset, "proposals_run_id": pb}),
            "proposals_run_id: run",
        ),
    ] {
        let r = s.api_post("experiments", &bad);
        assert_eq!(r.status(), 400, "{bad}");
        let text = r.text().unwrap();
        assert!(text.contains(needle), "{text}");
    }

    // Pre-training and the baselines are claimable; the pre-training succeeds.
    let mut claimed = Vec::new();
    while let Some(c) = w.claim() {
        claimed.push(c);
    }
    assert_eq!(claimed.len(), 1 + 3, "pre-training and three baselines");
    let (_, pb_attempt, pb_spec) = claimed.iter().find(|c| c.0 == pb).unwrap();
    assert_eq!(pb_spec["config"]["kind"], "pretrain_box");
    w.finish(pb, *pb_attempt, "succeeded");
    // A baseline finishes with its evaluation; another fails (it stands alone).
    let baselines: Vec<&(i64, i64, Value)> = claimed.iter().filter(|c| c.0 != pb).collect();
    let (b1, b1_attempt, _) = baselines[0];
    let eval = json!({
        "stats": [0.25, 0.5, 0.2, -1.0, 0.3, -1.0, 0.4, 0.5, 0.5, -1.0, 0.5, -1.0],
        "per_class": [], "per_size": [], "pr_curves": [],
        "num_images": 2, "num_detections": 4, "seconds": 0.01,
        "segm": {"stats": [0.2, 0.4, 0.1, -1.0, 0.2, -1.0, 0.3, 0.4, 0.4, -1.0, 0.4, -1.0],
                 "per_class": [], "per_size": []}
    });
    w.upload(
        *b1,
        *b1_attempt,
        "eval.json",
        serde_json::to_vec(&eval).unwrap(),
    );
    w.finish(*b1, *b1_attempt, "succeeded");
    let (b2, b2_attempt, _) = baselines[1];
    w.finish(*b2, *b2_attempt, "failed");

    let v = s.api_get(&format!("experiments/{exp}"));
    assert_eq!(v["id"], exp);
    assert_eq!(v["done"], false);
    assert_eq!(v["spec"]["proposals_run_id"], proposals);
    let run = |id: i64| {
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(run(pb)["status"], "succeeded");
    assert_eq!(run(*b1)["status"], "succeeded");
    assert_eq!(run(*b1)["eval"]["AP"], 0.25);
    assert_eq!(run(*b1)["eval"]["AP50"], 0.5);
    assert_eq!(run(*b1)["eval"]["segm_AP"], 0.2, "mask AP beside box AP");
    assert_eq!(
        run(*b1)["eval"]["APs"],
        Value::Null,
        "undefined (-1) left out"
    );
    // The page shows mask AP beside box AP, in the summary and per run.
    let page = s.get(&format!("/experiments/{exp}")).text().unwrap();
    assert!(
        page.contains("<th>baseline mask AP</th>"),
        "summary mask columns"
    );
    assert!(page.contains("20.0 ± — (n=1)"), "the baseline's mask AP");
    assert!(
        page.contains("<td class=\"mask-ap\">20.0</td>"),
        "its run row"
    );
    assert_eq!(run(*b2)["status"], "failed");
    assert_eq!(run(*b2)["eval"], Value::Null);
    let aligned: Vec<Value> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["role"] == "aligndet")
        .cloned()
        .collect();
    assert_eq!(aligned.len(), 3);
    for a in &aligned {
        assert_eq!(a["status"], "queued");
        assert_eq!(a["waiting_for"], json!([]), "the pre-training succeeded");
    }
    // Now the AlignDet fine-tunes are claimable.
    let mut more = Vec::new();
    while let Some(c) = w.claim() {
        more.push(c.0);
    }
    more.sort();
    let mut expected: Vec<i64> = aligned.iter().map(|a| a["id"].as_i64().unwrap()).collect();
    expected.sort();
    assert_eq!(more, expected);

    // A queued proposals run can be shared: the new experiment's pre-training waits for it.
    let pending = s.create_run(
        "shared boxes",
        json!({"kind": "proposals", "dataset_id": f.dataset, "strategy": "aligndet"}),
    );
    let r = s.api_post(
        "experiments",
        &json!({"name": "shares", "dataset_id": f.dataset, "proposals_run_id": pending,
                "seeds": [1, 2, 3], "fractions": [5]}),
    );
    assert_eq!(r.status(), 200);
    let shared: Value = r.json().unwrap();
    let shared_pb = shared["runs"][0]["id"].as_i64().unwrap();
    assert_eq!(shared["runs"][0]["role"], "pretrain_box");
    let v = s.api_get(&format!("experiments/{}", shared["id"]));
    let pb_row = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == shared_pb)
        .cloned()
        .unwrap();
    assert_ne!(
        pb_row["waiting_for"],
        json!([]),
        "waits for the pending proposals"
    );
    let mut claimed_now = Vec::new();
    while let Some(c) = w.claim() {
        claimed_now.push(c.0);
    }
    assert!(claimed_now.contains(&pending));
    assert!(!claimed_now.contains(&shared_pb), "pre-training waits");

    // A second experiment whose pre-training fails: its AlignDet arm fails, baselines do not.
    let r = s.api_post(
        "experiments",
        &json!({"name": "doomed", "dataset_id": f.dataset, "proposals_run_id": proposals,
                "seeds": [1], "fractions": [10], "finetune_steps": 10, "pretrain_steps": 10}),
    );
    assert_eq!(r.status(), 200);
    let created: Value = r.json().unwrap();
    let exp2 = created["id"].as_i64().unwrap();
    let id_of = |role: &str| {
        created["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["role"] == role)
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let (pb2, aligned2, base2) = (id_of("pretrain_box"), id_of("aligndet"), id_of("baseline"));
    let (claimed_pb2, attempt, _) = w.claim().unwrap();
    assert_eq!(claimed_pb2, pb2);
    w.finish(pb2, attempt, "failed");
    let v = s.api_get(&format!("experiments/{exp2}"));
    let find = |id: i64| {
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(find(aligned2)["status"], "failed");
    assert_eq!(
        find(aligned2)["error"],
        format!("waits for run {pb2}, which failed")
    );
    assert_eq!(find(base2)["status"], "queued");
    let page = s.get(&format!("/experiments/{exp2}")).text().unwrap();
    assert!(page.contains(&format!("waits for run {pb2}, which failed")));

    // A fine-tuning ablation on an existing pre-training: only the fine-tunes are made; the
    // AlignDet arm waits for the (still queued) pre-training, the baseline for nothing.
    let r = s.api_post(
        "experiments",
        &json!({"name": "ablation", "dataset_id": f.dataset, "pretrained_run_id": shared_pb,
                "seeds": [1, 2], "fractions": [5], "lr_multiplier": 1.0, "wd_multiplier": 1.0}),
    );
    assert_eq!(r.status(), 200);
    let ablation: Value = r.json().unwrap();
    let v = s.api_get(&format!("experiments/{}", ablation["id"]));
    let rows = v["runs"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for row in rows {
        match row["role"].as_str().unwrap() {
            "aligndet" => assert_eq!(row["waiting_for"], json!([shared_pb])),
            "baseline" => assert_eq!(row["waiting_for"], json!([])),
            other => panic!("unexpected role {other}"),
        }
    }
    assert_eq!(v["spec"]["pretrained_run_id"], shared_pb);
    assert_eq!(v["spec"]["pretrain_steps"], Value::Null);
    let page = s
        .get(&format!("/experiments/{}", ablation["id"]))
        .text()
        .unwrap();
    assert!(page.contains(&format!(
        "pre-trained detector reused from <a href=\"/runs/{shared_pb}\">"
    )));
    let form = s.get("/experiments/new").text().unwrap();
    assert!(
        form.contains(&format!("<option value=\"{shared_pb}\">reuse #{shared_pb}")),
        "the form offers it"
    );
    for (bad, needle) in [
        (
            json!({"pretrained_run_id": pb2}),
            format!("pretrained_run_id: run {pb2} is failed"),
        ),
        (
            json!({"pretrained_run_id": proposals}),
            format!("pretrained_run_id: run {proposals} is a proposals run"),
        ),
        (
            json!({"pretrained_run_id": shared_pb, "detector": "retinanet"}),
            format!("pretrained_run_id: run {shared_pb} pre-trained fcos, not retinanet"),
        ),
        (
            json!({"pretrained_run_id": shared_pb, "pretrain_steps": 5}),
            format!("pretrain_steps: the pre-training run {shared_pb} is reused"),
        ),
        (
            json!({"pretrained_run_id": 999_999}),
            "pretrained_run_id: run 999999 not found".to_string(),
        ),
    ] {
        let mut body =
            json!({"name": "bad reuse", "dataset_id": f.dataset, "seeds": [1], "fractions": [5]});
        for (k, v) in bad.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = s.api_post("experiments", &body);
        assert_eq!(r.status(), 400, "{bad}");
        let text = r.text().unwrap();
        assert!(text.contains(&needle), "{text}");
    }

    // The table script reads the same API (stdlib Python; skipped where there is no python3).
    let token = TempDir::new("exp-token");
    let token_file = token.path().join("token");
    std::fs::write(&token_file, format!("{}\n", s.user_token)).unwrap();
    let out = std::process::Command::new("python3")
        .arg(workspace_root().join("scripts/semi_table.py"))
        .args(["--url", &s.url, "--token-file"])
        .arg(&token_file)
        .args(["--experiments", &exp.to_string()])
        .output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // One row: the dataset, the detector, 5 %, the one finished baseline (AP 0.25 → 25.0).
        let row = text
            .lines()
            .find(|l| l.starts_with("small") && l.contains("retinanet"))
            .unwrap_or_else(|| panic!("no table row: {text}"));
        assert!(row.contains("5%") && row.contains("25.0 ± 0.0"), "{row}");
        assert!(row.contains("0/3"), "no paired seed yet: {row}");
        // Its eval.json has mask AP (0.2 → 20.0): the mask columns follow.
        assert!(text.contains("baseline mask AP"), "{text}");
        assert!(row.contains("20.0 ± 0.0"), "{row}");
    }
}
