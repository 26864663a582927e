//! Training health through the platform: a real worker trains three fine-tunes on the same data;
//! the one whose learning rate is all but zero is flagged as stalled, the one whose warm-up lasts
//! the whole run as never leaving warm-up, and the healthy one shows no warning, on the run page
//! and in the runs list. (OptimConfig refuses lr 0 itself; 1e-10 stalls the same way.)

use aligndet_studio::*;
use serde_json::{Value, json};
use std::time::Duration;

fn config(dataset: i64, steps: u32, lr: f64, warmup_steps: u32) -> Value {
    json!({
        "kind": "finetune", "dataset_id": dataset, "detector": "fcos", "backbone": "resnet18",
        "init": {"from": "scratch"}, "eval_every": 1000, "final_eval_max_images": 2,
        "optim": {
            "steps": steps, "batch_size": 2, "warmup_steps": warmup_steps, "lr": lr,
            "checkpoint_every": 100, "loader_threads": 1, "seed": 3,
            "schedule": {"kind": "cosine", "min_factor": 0.5}
        },
        "augment": {"min_sizes": [96], "max_size": 96}
    })
}

/// The run page's warnings, as (code, text) pairs.
fn warnings_on_page(server: &Server, run: i64) -> Vec<(String, String)> {
    let html = server.get(&format!("/runs/{run}")).text().unwrap();
    let Some(start) = html.find(r#"id="run-health""#) else {
        return Vec::new();
    };
    let block = &html[start..start + html[start..].find("</div>").unwrap()];
    block
        .split(r#"<li data-code=""#)
        .skip(1)
        .map(|li| {
            let (code, rest) = li.split_once('"').unwrap();
            let text = rest.trim_start_matches('>').split("</li>").next().unwrap();
            (code.to_string(), text.to_string())
        })
        .collect()
}

#[test]
fn a_stalled_run_and_an_endless_warm_up_are_flagged_and_a_healthy_run_is_not() {
    let f = RectDataset::start("health", 12, 96, |_| {});
    let server = &f.server;
    let stalled = server.create_run("stalled", config(f.dataset, 14, 1e-10, 2));
    let warm = server.create_run("warm-up only", config(f.dataset, 4, 0.005, 4));
    let healthy = server.create_run("healthy", config(f.dataset, 14, 0.005, 2));
    let _worker = Worker::start(server, "w");
    for run in [stalled, warm, healthy] {
        let r = server.wait_run(run, Duration::from_secs(900), "finished", |r| {
            r["status"] == "succeeded" || r["status"] == "failed"
        });
        assert_eq!(r["status"], "succeeded", "{r}");
    }

    let codes = |run| -> Vec<String> {
        warnings_on_page(server, run)
            .into_iter()
            .map(|(c, _)| c)
            .collect()
    };
    let found = warnings_on_page(server, stalled);
    assert_eq!(codes(stalled), vec!["stalled"], "{found:?}");
    assert!(
        found[0].1.contains("training has stalled"),
        "the warning says what happened: {found:?}"
    );
    assert_eq!(codes(warm), vec!["lr_warmup"]);
    assert_eq!(codes(healthy), Vec::<String>::new());
    // the update ratio behind the verdict is charted: ~1e-13 stalled, ~1e-4 healthy
    let ratio = |run: i64| -> f64 {
        f.db.query(&format!(
            "SELECT max(value) FROM metrics WHERE run_id = {run} AND key = 'train/update_ratio'"
        ))
        .trim()
        .parse()
        .unwrap()
    };
    assert!(ratio(stalled) < 1e-9, "{}", ratio(stalled));
    assert!(ratio(healthy) > 1e-6, "{}", ratio(healthy));

    // the runs list marks the two flagged runs, with the warnings as hover text
    let html = server.get("/runs").text().unwrap();
    let row = |run: i64| -> &str {
        let start = html
            .find(&format!(r#"data-run="{run}""#))
            .unwrap_or_else(|| panic!("run {run} in the list"));
        &html[start..start + html[start..].find("</tr>").unwrap()]
    };
    assert!(
        row(stalled).contains("health-badge") && row(stalled).contains("1 warning"),
        "{}",
        row(stalled)
    );
    assert!(row(stalled).contains("training has stalled"));
    assert!(row(warm).contains("health-badge"));
    assert!(!row(healthy).contains("health-badge"), "{}", row(healthy));

    // evaluation reports its progress and speed
    let progress = f.db.query(&format!(
        "SELECT value FROM metrics WHERE run_id = {healthy} AND key = 'evaluation/progress' AND step = 14"
    ));
    assert_eq!(progress.trim(), "1");
    let speed = f.db.query(&format!(
        "SELECT count(*) FROM metrics WHERE run_id = {healthy} AND key = 'evaluation/images_per_s'"
    ));
    assert_eq!(speed.trim(), "1");
}

/// In Chromium: an evaluation under way shows its progress in the run's status, live (the page
/// refreshes its live part on the run's change events); a warning reported by the worker appears
/// in the health box, and the runs list's badge carries it as hover text.
#[test]
fn evaluation_progress_and_warnings_show_in_the_browser() {
    use fantoccini::Locator;
    let db = TestDb::create();
    let data = TempDir::new("health-ui-data");
    let server = Server::start(&ServerOptions::new(&db, data.path()));
    let worker = ApiWorker::register(&server, "w");
    let run = server.create_run("bench", json!({"kind": "benchmark"}));
    let spec = worker.claim().expect("the worker claims the run");
    assert_eq!(spec["run_id"], run);
    let post = |path: &str, body: Value| {
        let r = worker.post(&format!("runs/{run}/{path}"), &body);
        assert!(r.status().is_success(), "{path}: {}", r.status());
    };
    post(
        "metrics",
        json!({"attempt": 1, "points": [
            {"key": "evaluation/progress", "step": 10, "value": 0.4, "wall_time": 1.0e9}
        ]}),
    );

    let driver = ChromeDriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let c = driver.client_for(&server).await;
        c.goto(&format!("{}/runs/{run}", server.url)).await.unwrap();
        let status = c.find(Locator::Id("run-evaluating")).await.unwrap();
        assert_eq!(
            status.text().await.unwrap(),
            "Evaluating at step 10: 40 % of the images"
        );
        assert!(c.find(Locator::Id("run-health")).await.is_err());

        // the worker reports a warning; the open page shows it without a reload (reqwest's
        // blocking client may not run inside this runtime: another thread posts)
        std::thread::scope(|s| {
            s.spawn(|| {
                post(
                    "logs",
                    json!({"attempt": 1, "lines": [
                        {"seq": 0, "wall_time": 1.0e9, "level": "warning", "code": "stalled",
                         "text": "training has stalled: at step 12 …"}
                    ]}),
                )
            });
        });
        let health = c
            .wait()
            .at_most(std::time::Duration::from_secs(20))
            .for_element(Locator::Id("run-health"))
            .await
            .expect("the health box appears live");
        let text = health.text().await.unwrap();
        assert!(
            text.contains("Training health: 1 warning") && text.contains("training has stalled"),
            "{text}"
        );

        c.goto(&format!("{}/runs", server.url)).await.unwrap();
        let badge = c
            .find(Locator::Css(&format!(
                r#"tr[data-run="{run}"] .health-badge"#
            )))
            .await
            .unwrap();
        assert_eq!(badge.text().await.unwrap(), "⚠ 1 warning");
        let title = badge.attr("title").await.unwrap().unwrap_or_default();
        assert!(title.contains("training has stalled"), "{title}");
        c.close().await.unwrap();
    });
}
