//! Run management (issue 17, parts 2 and 3) in a real Chromium against a real server and
//! Postgres, where a person would click: a viewer sees no buttons it cannot use and is refused
//! (403 page) when it posts anyway; an editor clones a run with one field changed (the new run's
//! config differs in exactly that field), tags a run, searches by a config value and a metric
//! (parse errors and unknown metrics said so), downloads the runs CSV (parsed back: the rows are
//! the runs found); delete is refused while a dependent run is queued and allowed once it ended,
//! and the run's files are gone; the JSON editor refuses with the form's field error; a clone of
//! a run whose dataset was deleted says which; the reproducibility stamp is on the run page.

use aligndet_studio::accounts::*;
use aligndet_studio::*;
use fantoccini::{Client, Locator};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn finetune(dataset: i64, lr: f64) -> Value {
    json!({"kind": "finetune", "dataset_id": dataset, "train_split": "train", "val_split": "val",
           "optim": {"lr": lr, "steps": 20, "batch_size": 2}})
}

/// A JSON value's leaves by dotted path.
fn leaves(v: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(c, &p, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

fn config_of(db: &TestDb, run: i64) -> Value {
    serde_json::from_str(&db.query(&format!("SELECT config::text FROM runs WHERE id = {run}")))
        .expect("stored config")
}

async fn wait_path(c: &Client, pred: impl Fn(&str) -> bool, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let here = c.current_url().await.expect("url");
        if pred(here.path()) {
            return here.path().to_string();
        }
        if Instant::now() > deadline {
            let page = c.source().await.unwrap_or_default();
            panic!("never reached {what} (at {here}): {page}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("text")
}

async fn exists(c: &Client, css: &str) -> bool {
    !c.find_all(Locator::Css(css))
        .await
        .expect("find")
        .is_empty()
}

/// Type `text` into the search box and search; the run ids listed.
async fn search(c: &Client, url: &str, text: &str) -> Vec<i64> {
    c.goto(&format!("{url}/runs")).await.expect("runs page");
    let q = c.find(Locator::Css("#runs-q")).await.expect("search box");
    q.clear().await.expect("clear");
    q.send_keys(text).await.expect("type");
    click(c, Locator::Css("#runs-apply")).await;
    // The search is in the URL once the results page is there (a GET form).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let here = c.current_url().await.expect("url");
        if here.query_pairs().any(|(k, v)| k == "q" && v == text) {
            break;
        }
        assert!(Instant::now() < deadline, "the search never ran: {here}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.wait()
        .for_element(Locator::Css("#runs-found, #search-error"))
        .await
        .expect("the results");
    // One script reads every row: no element goes stale between reads.
    let ids = c
        .execute(
            "return [...document.querySelectorAll('tr.run-row')].map(r => Number(r.dataset.run));",
            vec![],
        )
        .await
        .expect("rows");
    let mut ids: Vec<i64> = serde_json::from_value(ids).expect("ids");
    ids.sort();
    ids
}

async fn logout(c: &Client) {
    click(c, Locator::Css("#logout")).await;
    wait_path(c, |p| p == "/login" || p == "/", "signed out").await;
}

#[test]
fn run_management_in_chromium() {
    let splits = json!({"train": [1, 2, 3, 4], "val": [5, 6]});
    let f = SmallDataset::start("runmgmt", 6, &splits);
    let s = &f.server;
    let url = s.url.clone();
    viewer(s);
    add_user(&url, &s.login, "eddie", "editor", VIEWER_PASSWORD).expect("add editor");

    // Three fine-tunes by the admin: alpha (lr 0.01) finishes with metrics and a file.
    let alpha = s.create_run("alpha", finetune(f.dataset, 0.01));
    let beta = s.create_run("beta", finetune(f.dataset, 0.001));
    let worker = ApiWorker::register(s, "w1");
    let r = worker.post(
        "jobs/claim",
        &json!({"worker_id": worker.worker_id, "stamp": {"version": "9.9.9",
               "git_commit": "abc123def", "git_dirty": true,
               "libtorch_version": "2.11.0 (test)", "device": "cpu"}}),
    );
    assert_eq!(r.status(), 200, "claim");
    let spec: Value = r.json().expect("spec");
    assert_eq!(spec["run_id"], alpha);
    let attempt = spec["attempt"].as_i64().unwrap();
    let mut points = vec![];
    for (step, ap, loss) in [
        (5, 0.2, 2.0),
        (10, 0.45, 1.0),
        (15, 0.4, 0.7),
        (20, 0.42, 0.9),
    ] {
        points.push(
            json!({"key": "eval/AP", "step": step, "value": ap, "wall_time": 1.0e9 + step as f64}),
        );
        points.push(json!({"key": "loss/total", "step": step, "value": loss, "wall_time": 1.0e9 + step as f64}));
    }
    let r = worker.post(
        &format!("runs/{alpha}/metrics"),
        &json!({"attempt": attempt, "points": points}),
    );
    assert!(r.status().is_success(), "metrics: {}", r.status());
    let r = worker.put_artifact(alpha, attempt, "model.safetensors", vec![7u8; 1000]);
    assert!(r.status().is_success(), "artifact: {}", r.status());
    let r = worker.post(
        &format!("runs/{alpha}/status"),
        &json!({"attempt": attempt, "status": "succeeded"}),
    );
    assert!(r.status().is_success(), "status: {}", r.status());
    let alpha_files = f.data.path().join("artifacts").join(alpha.to_string());
    assert!(alpha_files.join("model.safetensors").exists());

    let driver = ChromeDriver::with_window(1280, 1600);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (c, clone) = runtime.block_on(async {
        let c = driver.client().await;
        // A viewer: no buttons it cannot use, and a post made anyway gets the 403 page.
        browser_sign_in(&c, &url, "vera", VIEWER_PASSWORD).await;
        c.goto(&format!("{url}/runs/{alpha}")).await.expect("run page");
        for css in ["#clone-run", "#archive-run", "#delete-run", "#tags-form", "#cancel-run", "#nav-new-run"] {
            assert!(!exists(&c, css).await, "a viewer sees {css}");
        }
        assert!(exists(&c, "#metrics-csv").await, "exports are for viewers too");
        // The reproducibility stamp: the trainer's side as claimed, the server's hashes.
        let stamp = text_of(&c, "#stamp").await;
        assert!(stamp.contains("abc123def (dirty"), "{stamp}");
        assert!(stamp.contains("2.11.0 (test)"), "{stamp}");
        assert!(stamp.contains("annotations sha256"), "{stamp}");
        c.execute(
            "const f = document.createElement('form'); f.method = 'post';
             f.action = '/runs/' + arguments[0] + '/archive';
             for (const [n, v] of [['archive', '1'], ['csrf_token', document.querySelector('input[name=csrf_token]').value]]) {
               const i = document.createElement('input'); i.name = n; i.value = v; f.appendChild(i); }
             document.body.appendChild(f); f.submit();",
            vec![json!(alpha)],
        )
        .await
        .expect("post as the viewer");
        wait_path(&c, |p| p.ends_with("/archive"), "the refusal").await;
        let body = text_of(&c, "main").await;
        assert!(body.contains("needs the editor role; you are signed in as vera"), "{body}");
        logout(&c).await;

        // An editor clones alpha with one field changed.
        browser_sign_in(&c, &url, "eddie", VIEWER_PASSWORD).await;
        c.goto(&format!("{url}/runs/{alpha}")).await.expect("run page");
        click(&c, Locator::Css("#clone-run")).await;
        wait_path(&c, |p| p.ends_with("/clone"), "the clone page").await;
        assert!(text_of(&c, "#clone-notice").await.contains(&format!("run #{alpha}")));
        let lr = c
            .find(Locator::Css("#finetune-form input[name=lr]"))
            .await
            .expect("lr field");
        assert_eq!(lr.prop("value").await.unwrap().as_deref(), Some("0.01"));
        lr.clear().await.expect("clear");
        lr.send_keys("0.02").await.expect("type");
        click(&c, Locator::Css("#finetune-form button[type=submit]")).await;
        let path = wait_path(
            &c,
            |p| p.starts_with("/runs/") && p[6..].parse::<i64>().is_ok(),
            "the new run's page",
        )
        .await;
        let clone: i64 = path[6..].parse().unwrap();

        // The editor tags alpha.
        c.goto(&format!("{url}/runs/{alpha}")).await.expect("run page");
        click(&c, Locator::Css("#tags-editor summary")).await;
        let tags = c.find(Locator::Css("#tags-input")).await.expect("tags");
        tags.send_keys("sweep keep").await.expect("type");
        c.find(Locator::Css("#note-input"))
            .await
            .expect("note")
            .send_keys("the \"good\" one, with a comma")
            .await
            .expect("type");
        click(&c, Locator::Css("#tags-save")).await;
        // The post redirects back to the same page: wait for the tags to be on it.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let tags = c
                .execute("const t = document.querySelector('#run-tags'); return t ? t.textContent : '';", vec![])
                .await
                .expect("tags");
            if tags.as_str().is_some_and(|t| t.contains("sweep") && t.contains("keep")) {
                break;
            }
            assert!(Instant::now() < deadline, "the tags never showed: {tags}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(text_of(&c, "#run-note").await.contains("with a comma"));
        (c, clone)
    });
    assert_ne!(clone, alpha);
    let (a, b) = (config_of(&f.db, alpha), config_of(&f.db, clone));
    let (mut la, mut lb) = (BTreeMap::new(), BTreeMap::new());
    leaves(&a, "", &mut la);
    leaves(&b, "", &mut lb);
    let differing: Vec<&String> = la
        .keys()
        .chain(lb.keys())
        .filter(|k| la.get(*k) != lb.get(*k))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(differing, vec!["optim.lr"], "{a}\n{b}");
    assert_eq!(lb["optim.lr"], json!(0.02));

    let csv_href = runtime.block_on(async {
        // Searches by a config value, a tag and a metric; errors said so.
        assert_eq!(search(&c, &url, "lr > 0.005").await, vec![alpha, clone]);
        assert_eq!(search(&c, &url, "optim.lr <= 0.005").await, vec![beta]);
        assert_eq!(
            search(&c, &url, "tag:sweep AND lr > 0.005").await,
            vec![alpha]
        );
        assert_eq!(search(&c, &url, "eval/AP > 0.41").await, vec![alpha]);
        assert_eq!(search(&c, &url, "eval/AP > 0.43").await, Vec::<i64>::new());
        assert_eq!(search(&c, &url, "lr >").await, Vec::<i64>::new());
        let e = text_of(&c, "#search-error").await;
        assert_eq!(e, "at column 4: expected a value after `>`");
        search(&c, &url, "eval/APx > 0.3").await;
        let e = text_of(&c, "#search-error").await;
        assert!(
            e.contains("unknown metric `eval/APx`; known: eval/AP, loss/total"),
            "{e}"
        );
        // The best-value column: AP's max 0.45 at step 10 (its last value is 0.42).
        c.goto(&format!(
            "{url}/runs?q=lr+%3E+0.005&best=eval%2FAP&sort=best"
        ))
        .await
        .expect("runs page");
        let row = format!("tr[data-run='{alpha}']");
        assert_eq!(text_of(&c, &format!("{row} .best-value")).await, "0.45");
        assert_eq!(text_of(&c, &format!("{row} .best-step")).await, "10");
        let csv_href = c
            .find(Locator::Css("#runs-csv"))
            .await
            .expect("csv link")
            .attr("href")
            .await
            .expect("href")
            .expect("an href");
        // Sorting by a config value, from the column's URL.
        c.goto(&format!("{url}/runs?sort=config%3Alr&dir=asc"))
            .await
            .expect("runs page");
        let order = c
            .execute(
                "return [...document.querySelectorAll('tr.run-row')].map(r => Number(r.dataset.run));",
                vec![],
            )
            .await
            .expect("rows");
        assert_eq!(order, json!([beta, alpha, clone]), "by lr, ascending");
        csv_href
    });
    // The CSV of that view, parsed back: the runs found, with the note's quotes and comma.
    let r = s.get(&csv_href);
    assert_eq!(r.status(), 200);
    let text = r.text().expect("csv");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().expect("header").clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("record")).collect();
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    let ids: Vec<i64> = rows.iter().map(|r| r[col("id")].parse().unwrap()).collect();
    assert_eq!(
        ids,
        vec![alpha, clone],
        "sorted by the best AP, runs without it last"
    );
    assert_eq!(&rows[0][col("note")], "the \"good\" one, with a comma");
    assert_eq!(&rows[0][col("eval/AP (max value)")], "0.45");
    // A run's metrics in long form.
    let m = s.get(&format!("/runs/{alpha}/metrics.csv")).text().unwrap();
    let mut reader = csv::Reader::from_reader(m.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["run_id", "key", "step", "value", "wall_time", "attempt"]
    );
    assert_eq!(reader.records().count(), 8);
    let j: Value = s
        .get(&format!("/runs/{alpha}/metrics.json"))
        .json()
        .unwrap();
    assert_eq!(j["metrics"].as_array().unwrap().len(), 8);

    // The JSON editor refuses with the field error the form gives.
    let ui = s.browser_session();
    let mut bad = a.clone();
    bad["optim"]["lr"] = json!(-1.0);
    let r = ui.post_form(
        "/runs/json",
        &[("name", "bad"), ("config", &bad.to_string())],
    );
    assert_eq!(r.status(), 422);
    let page = r.text().unwrap();
    assert!(page.contains("optim.lr: "), "{page}");

    // A dependent run waits for alpha: delete is refused, naming it.
    let dependent = s.create_run_with(
        "needs alpha",
        finetune(f.dataset, 0.01),
        json!({"depends_on": [alpha]}),
    );
    let r = ui.post_form(&format!("/runs/{alpha}/delete"), &[]);
    assert_eq!(r.status(), 409);
    let page = r.text().unwrap();
    assert!(
        page.contains(&format!("#{dependent} needs alpha (queued)")),
        "{page}"
    );
    assert!(alpha_files.exists(), "nothing removed on refusal");
    runtime.block_on(async {
        // The editor did not create alpha: no delete for it.
        c.goto(&format!("{url}/runs/{alpha}"))
            .await
            .expect("run page");
        assert!(!exists(&c, "#delete-run").await);
        logout(&c).await;
        browser_sign_in(&c, &url, "admin", &s.admin_password).await;
        c.goto(&format!("{url}/runs/{alpha}"))
            .await
            .expect("run page");
        click(&c, Locator::Css("#delete-run")).await;
        wait_path(&c, |p| p.ends_with("/delete"), "the confirmation").await;
        let blocked = text_of(&c, "#delete-blocked").await;
        assert!(blocked.contains(&format!("#{dependent}")), "{blocked}");
        assert!(!exists(&c, "#delete-confirm").await);
    });
    let r = ui.post_form(&format!("/runs/{dependent}/cancel"), &[]);
    assert!(r.status().is_success());
    runtime.block_on(async {
        c.goto(&format!("{url}/runs/{alpha}/delete"))
            .await
            .expect("confirmation");
        assert!(
            text_of(&c, "#delete-what")
                .await
                .contains("8 metric points")
        );
        click(&c, Locator::Css("#delete-confirm")).await;
        wait_path(&c, |p| p == "/runs", "the runs page").await;
        c.close().await.expect("close");
    });
    assert!(!alpha_files.exists(), "the artifact files are gone");
    let leftovers = list_dir(&f.data.path().join("artifacts"));
    assert!(
        !leftovers.iter().any(|n| n.starts_with(".deleting")),
        "{leftovers:?}"
    );
    let counts = f.db.query(&format!(
        "SELECT (SELECT count(*) FROM runs WHERE id = {alpha}) + (SELECT count(*) FROM metrics WHERE run_id = {alpha}) + (SELECT count(*) FROM artifacts WHERE run_id = {alpha})"
    ));
    assert_eq!(counts.trim(), "0");

    // A clone of a run whose dataset was deleted says which.
    let (ann, images) = (
        f.imports.path().join("annotations.json"),
        f.imports.path().join("images"),
    );
    let other = import_dataset(s, "other", &ann, &images);
    let orphan = s.create_run("orphan", finetune(other, 0.01));
    f.db.query(&format!("DELETE FROM datasets WHERE id = {other}"));
    let page = s.get(&format!("/runs/{orphan}/clone")).text().unwrap();
    assert!(
        page.contains(&format!(
            "run #{orphan} used dataset #{other}, which was deleted"
        )),
        "{page}"
    );
}

/// The real trainer reports its side of the stamp when it claims: the git commit it was built
/// from (this checkout is a git one), whether that had uncommitted changes, its libtorch and
/// its device; the run page shows them.
#[test]
fn a_real_workers_claim_stamps_the_run() {
    let db = TestDb::create();
    let dir = TempDir::new("stamp");
    let server = Server::start(&ServerOptions::new(&db, dir.path()));
    let run = server.create_run(
        "stamped",
        json!({"kind": "benchmark", "backbone": "resnet18", "batch_size": 1, "resolution": 64,
               "steps": 1, "warmup_steps": 0}),
    );
    let _w = Worker::start(&server, "w1");
    server.wait_run(run, Duration::from_secs(120), "succeeded", |r| {
        r["status"] == "succeeded"
    });
    let stamp: Value =
        serde_json::from_str(&db.query(&format!("SELECT stamp::text FROM runs WHERE id = {run}")))
            .expect("a stamp");
    let t = &stamp["trainer"];
    let commit = t["git_commit"].as_str().unwrap();
    assert!(
        commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{stamp}"
    );
    assert!(t["git_dirty"].is_boolean(), "{stamp}");
    assert!(
        t["libtorch_version"].as_str().unwrap().starts_with("2."),
        "{stamp}"
    );
    assert_eq!(t["device"], "cpu");
    assert_eq!(t["version"], env!("CARGO_PKG_VERSION"));
    let page = server.get(&format!("/runs/{run}")).text().unwrap();
    assert!(page.contains(commit), "the run page shows the commit");
}
