//! The small things that tell a person the studio is finished, in Chromium against the real
//! server and Postgres: no Cancel button on a run that ended (and a confirmation before
//! cancelling), why a run has no artifacts, error pages inside the layout with the right
//! status, counts in the singular, the workers page's environment table and current run, and
//! no sideways scrolling of the page at 400 px.

use aligndet_studio::*;
use fantoccini::Locator;
use serde_json::json;

/// Server first so it stops before the database and folders go.
struct Fixture {
    server: Server,
    db: TestDb,
    _data: TempDir,
}

fn fixture(tag: &str) -> Fixture {
    let db = TestDb::create();
    let data = TempDir::new(&format!("{tag}-data"));
    let server = Server::start(&ServerOptions::new(&db, data.path()));
    Fixture {
        server,
        db,
        _data: data,
    }
}

/// The page's text as Chromium renders it.
async fn body_text(c: &fantoccini::Client) -> String {
    c.find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[test]
fn error_pages_come_inside_the_layout_with_their_status() {
    let f = fixture("finish-errors");
    let cases = [
        ("/datasets/abc", 404, "ids in addresses are whole numbers"),
        (
            "/runs/abc/predictions",
            404,
            "ids in addresses are whole numbers",
        ),
        ("/nope", 404, "There is no page at /nope"),
        ("/runs/999999", 404, "run 999999 not found"),
        ("/experiments/999999", 404, "999999"),
        ("/datasets/999999", 404, "999999"),
    ];
    for (path, status, text) in cases {
        let r = f.server.get(path);
        assert_eq!(r.status().as_u16(), status, "{path}");
        let body = r.text().unwrap();
        assert!(
            body.contains("<nav class=\"top\">"),
            "{path}: nav bar: {body}"
        );
        assert!(body.contains(text), "{path}: {body}");
        assert!(
            !body.contains("Cannot parse"),
            "{path}: axum's wording: {body}"
        );
    }
    // A form's target fetched with GET: a 405 page, also in the layout.
    let r = f.server.get("/runs/1/cancel");
    assert_eq!(r.status(), 405);
    assert!(r.text().unwrap().contains("<nav class=\"top\">"));
    // Under /api/ an unknown address answers JSON.
    let r = f
        .server
        .http
        .get(format!("{}/api/v1/nope", f.server.url))
        .bearer_auth(&f.server.token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let e: serde_json::Value = r.json().unwrap();
    assert!(e["error"].as_str().is_some(), "{e}");

    let driver = ChromeDriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let c = driver.client_for(&f.server).await;
        for (path, _, text) in cases {
            c.goto(&format!("{}{path}", f.server.url)).await.unwrap();
            let nav = c.find(Locator::Css("nav.top")).await.unwrap();
            let nav_text = nav.text().await.unwrap();
            assert!(
                nav_text.contains("Runs") && nav_text.contains("Workers"),
                "{path}: {nav_text}"
            );
            let h1 = c.find(Locator::Css("h1")).await.unwrap();
            assert_eq!(h1.text().await.unwrap(), "404 Not Found", "{path}");
            assert!(body_text(&c).await.contains(text), "{path}");
        }
        c.close().await.unwrap();
    });
}

#[test]
fn runs_that_ended_offer_no_cancel_and_say_why_they_have_no_artifacts() {
    let f = fixture("finish-cancel");
    let worker = ApiWorker::register(&f.server, "gpu-box-1");
    f.db.query(&format!(
        "UPDATE workers SET info = $j${}$j$::jsonb WHERE id = {}",
        json!({"torch": "2.5.1", "cuda": {"available": false}, "cpus": 16}),
        worker.worker_id
    ));
    let running = f
        .server
        .create_run("bench running", json!({"kind": "benchmark"}));
    let spec = worker.claim().expect("the worker claims the run");
    assert_eq!(spec["run_id"], running, "{spec}");
    let queued = f
        .server
        .create_run("bench queued", json!({"kind": "benchmark"}));
    let failed = f
        .server
        .create_run("bench failed", json!({"kind": "benchmark"}));
    f.db.query(&format!(
        "UPDATE runs SET status = 'failed', error = 'x', finished_at = now() WHERE id = {failed}"
    ));

    let driver = ChromeDriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let c = driver.client_for(&f.server).await;
        let url = |p: &str| format!("{}{p}", f.server.url);
        // A running run: Cancel offered, no files yet and why.
        c.goto(&url(&format!("/runs/{running}"))).await.unwrap();
        c.find(Locator::Id("cancel-run")).await.unwrap();
        let none = c.find(Locator::Id("no-artifacts")).await.unwrap();
        assert_eq!(
            none.text().await.unwrap(),
            "none yet: running (files appear as the job writes them)"
        );

        // A queued run: the confirmation can be declined (nothing happens) …
        c.goto(&url(&format!("/runs/{queued}"))).await.unwrap();
        click(&c, Locator::Id("cancel-run")).await;
        let question = c.get_alert_text().await.unwrap();
        assert!(
            question.contains(&format!("Cancel run #{queued}?")),
            "{question}"
        );
        c.dismiss_alert().await.unwrap();
        let status = || {
            f.db.query(&format!("SELECT status FROM runs WHERE id = {queued}"))
        };
        assert_eq!(status(), "queued", "declined");
        // … or accepted: the run is cancelled, the button gone, the artifacts line says why.
        click(&c, Locator::Id("cancel-run")).await;
        c.accept_alert().await.unwrap();
        c.wait()
            .for_element(Locator::Css("#run-status"))
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while status() != "cancelled" {
            assert!(std::time::Instant::now() < deadline, "not cancelled");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        c.goto(&url(&format!("/runs/{queued}"))).await.unwrap();
        assert!(
            c.find_all(Locator::Id("cancel-run"))
                .await
                .unwrap()
                .is_empty(),
            "no Cancel button on a cancelled run"
        );
        let none = c.find(Locator::Id("no-artifacts")).await.unwrap();
        assert_eq!(
            none.text().await.unwrap(),
            "none: the run was cancelled before its first checkpoint"
        );
        c.goto(&url(&format!("/runs/{failed}"))).await.unwrap();
        assert!(
            c.find_all(Locator::Id("cancel-run"))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            body_text(&c)
                .await
                .contains("none: the run failed before writing any")
        );

        // One worker: the singular, on the home page and the workers page.
        c.goto(&url("/")).await.unwrap();
        let card = c.find(Locator::Id("workers-card")).await.unwrap();
        assert_eq!(
            card.text().await.unwrap().replace('\n', " "),
            "1 worker connected"
        );
        assert!(!body_text(&c).await.contains("1 workers"));
        c.goto(&url("/workers")).await.unwrap();
        let summary = c.find(Locator::Id("workers-summary")).await.unwrap();
        assert_eq!(
            summary.text().await.unwrap(),
            "1 worker connected of 1 known."
        );
        // The environment as a key / value table, the current run as a link.
        let row = c
            .find(Locator::Css(&format!("#worker-{}", worker.worker_id)))
            .await
            .unwrap();
        let env = row.find(Locator::Css("table.env")).await.unwrap();
        let env_text = env.text().await.unwrap();
        for want in [
            "Key Value",
            "torch 2.5.1",
            "cuda.available false",
            "cpus 16",
        ] {
            assert!(
                env_text.replace('\n', " ").contains(want),
                "{want}: {env_text}"
            );
        }
        assert!(!body_text(&c).await.contains("{\"cpus\""), "no raw JSON");
        let link = row.find(Locator::Css(".worker-run a")).await.unwrap();
        assert_eq!(
            link.attr("href").await.unwrap().as_deref(),
            Some(format!("/runs/{running}").as_str())
        );
        assert_eq!(
            link.text().await.unwrap(),
            format!("#{running} bench running")
        );
        c.close().await.unwrap();
    });
}

#[test]
fn no_page_scrolls_sideways_at_400_px() {
    let f = fixture("finish-narrow");
    let worker = ApiWorker::register(
        &f.server,
        "a-worker-with-a-rather-long-name-for-a-narrow-screen",
    );
    f.db.query(&format!(
        "UPDATE workers SET info = $j${}$j$::jsonb WHERE id = {}",
        json!({"torch": "2.5.1", "python": "3.11.9 (main, Apr 2 2024) [GCC 12.2.0]",
               "cuda": {"available": true, "devices": ["NVIDIA H100 80GB HBM3"]}}),
        worker.worker_id
    ));
    let run = f
        .server
        .create_run("a benchmark run", json!({"kind": "benchmark"}));
    // Chromium's headless window is at least 500 px wide: the 400 px viewport is emulated.
    let driver = ChromeDriver::with_viewport(400, 900);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let c = driver.client_for(&f.server).await;
        for path in [
            "/".to_string(),
            "/workers".into(),
            "/runs".into(),
            format!("/runs/{run}"),
            "/runs/new".into(),
            "/datasets".into(),
            "/experiments".into(),
            "/experiments/new".into(),
            "/datasets/abc".into(),
            format!("/compare?runs={run}"),
        ] {
            c.goto(&format!("{}{path}", f.server.url)).await.unwrap();
            let (width, inner) = match c
                .execute(
                    "return [document.documentElement.scrollWidth, window.innerWidth];",
                    vec![],
                )
                .await
                .unwrap()
            {
                serde_json::Value::Array(v) => (v[0].as_u64().unwrap(), v[1].as_u64().unwrap()),
                other => panic!("{other}"),
            };
            // An emulated phone widens its layout viewport to fit a page that overflows (and
            // zooms out), so both numbers stay at 400 only for a page that fits.
            assert!(
                width <= 400 && inner <= 400,
                "{path} scrolls sideways at 400 px: scrollWidth {width}, innerWidth {inner}"
            );
        }
        c.close().await.unwrap();
    });
}
