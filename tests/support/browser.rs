//! A real headless Chromium through chromedriver, signed in as a server's users.

use crate::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A chromedriver process on a free port with its own Chromium profile, killed on drop.
pub struct ChromeDriver {
    child: std::process::Child,
    port: u16,
    profile: TempDir,
    window: (u32, u32),
    /// An emulated viewport (Chromium's device metrics), for widths below the window's minimum.
    viewport: Option<(u32, u32)>,
}

impl ChromeDriver {
    /// A 1280×900 window.
    pub fn start() -> ChromeDriver {
        Self::with_window(1280, 900)
    }

    /// A window of `width`×`height` (a tall one keeps long pages in view without scrolling).
    pub fn with_window(width: u32, height: u32) -> ChromeDriver {
        let port = free_port();
        let child = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium-driver)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        ChromeDriver {
            child,
            port,
            profile: TempDir::new("chrome"),
            window: (width, height),
            viewport: None,
        }
    }

    /// A viewport of `width`×`height` CSS pixels, emulated (headless Chromium's windows are at
    /// least 500 px wide): what a phone of that width lays out.
    pub fn with_viewport(width: u32, height: u32) -> ChromeDriver {
        let mut d = Self::with_window(1024, height);
        d.viewport = Some((width, height));
        d
    }

    /// A Chromium session signed in as the server's first admin (through the login form).
    pub async fn client_for(&self, server: &Server) -> fantoccini::Client {
        let c = self.client().await;
        accounts::browser_sign_in(&c, &server.url, "admin", &server.admin_password).await;
        c
    }

    /// Drive `session` in a Chromium session signed in as `server`'s first admin, closed after.
    /// The harness's handles use blocking HTTP, so the browser gets a runtime of its own.
    pub fn signed_in(&self, server: &Server, session: impl AsyncFnOnce(&fantoccini::Client)) {
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        runtime.block_on(async {
            let c = self.client_for(server).await;
            session(&c).await;
            c.close().await.unwrap();
        });
    }

    /// A Chromium session signed in as nobody.
    pub async fn client(&self) -> fantoccini::Client {
        let caps = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                         format!("--window-size={},{}", self.window.0, self.window.1),
                         format!("--user-data-dir={}", self.profile.path().display())]
            }
        });
        let Value::Object(mut caps) = caps else {
            unreachable!("a JSON object")
        };
        if let Some((w, h)) = self.viewport {
            caps["goog:chromeOptions"]["mobileEmulation"] = json!({
                "deviceMetrics": {"width": w, "height": h, "pixelRatio": 1.0, "touch": false}
            });
        }
        fantoccini::ClientBuilder::native()
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("connect to chromedriver")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Click the element `at`, which must be on the page.
pub async fn click(c: &fantoccini::Client, at: fantoccini::Locator<'_>) {
    let element = c
        .find(at)
        .await
        .unwrap_or_else(|e| panic!("{at:?} is not on the page: {e}"));
    element.click().await.unwrap();
}

/// Wait up to 20 s until the page's URL passes `arrived` (a form's navigation, a redirect);
/// returns that URL, or fails naming the URL the page stayed at.
pub async fn wait_for_url(
    c: &fantoccini::Client,
    arrived: impl Fn(&reqwest::Url) -> bool,
) -> reqwest::Url {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let here = c.current_url().await.unwrap();
        if arrived(&here) {
            return here;
        }
        assert!(Instant::now() < deadline, "the page stayed at {here}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`wait_for_url`] until the query string holds `part` (e.g. `"threshold=0.6"`).
pub async fn wait_for_query(c: &fantoccini::Client, part: &str) -> reqwest::Url {
    wait_for_url(c, |u| u.query().is_some_and(|q| q.contains(part))).await
}
