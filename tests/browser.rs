//! Browser tests in a real headless Chromium (Debian's chromium + chromium-driver).

use aligndet_studio::*;
use fantoccini::Locator;
use std::time::{Duration, Instant};

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The server, worker and database handles use blocking HTTP, so they live outside the async
/// runtime that drives the browser.
#[test]
fn import_browse_boxes_then_benchmark_with_live_curve() {
    let db = TestDb::create();
    let dir = TempDir::new("browser");
    let imports = TempDir::new("browser-imports");
    let (ann, images) = write_small_coco(imports.path(), 6);
    let mut opts = ServerOptions::new(&db, dir.path());
    opts.import_roots = vec![imports.path().to_path_buf()];
    let server = Server::start(&opts);
    let _worker = Worker::start(&server, "browser-worker");
    let driver = ChromeDriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(drive_browser(&driver, &server, &ann, &images));
}

async fn drive_browser(
    driver: &ChromeDriver,
    server: &Server,
    ann: &std::path::Path,
    images: &std::path::Path,
) {
    let c = driver.client_for(server).await;
    let url = server.url.as_str();

    // Import a dataset through the form.
    c.goto(&format!("{}/datasets", url)).await.unwrap();
    c.find(Locator::Css(
        "form[action='/datasets/import'] input[name=name]",
    ))
    .await
    .unwrap()
    .send_keys("browser set")
    .await
    .unwrap();
    c.find(Locator::Css(
        "form[action='/datasets/import'] input[name=annotations]",
    ))
    .await
    .unwrap()
    .send_keys(&ann.display().to_string())
    .await
    .unwrap();
    c.find(Locator::Css(
        "form[action='/datasets/import'] input[name=images]",
    ))
    .await
    .unwrap()
    .send_keys(&images.display().to_string())
    .await
    .unwrap();
    click(&c, Locator::Css("form[action='/datasets/import'] button")).await;

    // The dataset page: one SVG overlay per image with its boxes; class toggles hide them.
    wait_for("the dataset page", Duration::from_secs(30), || async {
        c.current_url()
            .await
            .map(|u| u.path().starts_with("/datasets/") && u.path() != "/datasets/import")
            .unwrap_or(false)
    })
    .await;
    let boxes = c
        .find_all(Locator::Css("#image-grid svg.overlay rect.box"))
        .await
        .unwrap();
    assert_eq!(boxes.len(), 6, "one box per image drawn");
    let overlays = c
        .find_all(Locator::Css("#image-grid svg.overlay"))
        .await
        .unwrap();
    assert_eq!(overlays.len(), 6);
    // The hostile category name is shown as text, not markup.
    let table = c
        .find(Locator::Css("#class-counts"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(table.contains("<b>bold</b> & co"), "{table}");
    click(&c, Locator::Css(".class-toggle[data-cat='1']")).await;
    let hidden = c.find_all(Locator::Css("rect.box.hide-box")).await.unwrap();
    assert_eq!(hidden.len(), 3, "class 1 boxes hidden");

    // Start a worker benchmark from the UI and watch its curve appear live.
    c.goto(&format!("{}/runs/new", url)).await.unwrap();
    let steps = c
        .find(Locator::Css("#benchmark-form input[name=steps]"))
        .await
        .unwrap();
    steps.clear().await.unwrap();
    steps.send_keys("6").await.unwrap();
    let res = c
        .find(Locator::Css("#benchmark-form input[name=resolution]"))
        .await
        .unwrap();
    res.clear().await.unwrap();
    res.send_keys("64").await.unwrap();
    click(&c, Locator::Id("start-benchmark")).await;
    wait_for("the run page", Duration::from_secs(30), || async {
        c.current_url()
            .await
            .map(|u| u.path().starts_with("/runs/") && u.path() != "/runs/new")
            .unwrap_or(false)
    })
    .await;
    wait_for(
        "a live curve and success",
        Duration::from_secs(180),
        || async {
            let charts = c
                .find_all(Locator::Css("#charts .chart svg"))
                .await
                .map(|v| v.len())
                .unwrap_or(0);
            let status = match c.find(Locator::Id("run-status")).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            charts >= 1 && status == "succeeded"
        },
    )
    .await;
    let key = c
        .find(Locator::Css("#charts .chart"))
        .await
        .unwrap()
        .attr("data-key")
        .await
        .unwrap();
    assert!(key.is_some());
    c.close().await.unwrap();
}
