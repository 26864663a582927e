//! Test harness for the integration tests in `tests/`: real Postgres databases, real server and
//! worker processes (the binaries cargo built), a real headless Chromium through chromedriver.
//!
//! Postgres: `ALIGNDET_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/postgres`) is used to
//! create one fresh database per test, dropped afterwards.

pub mod accounts;
pub mod slurm;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Folder holding the built binaries (`target/debug`), found from the test executable's path.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> → target/debug
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace` first",
        p.display()
    );
    p
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A unique temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "aligndet-test-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p.canonicalize().expect("canonical temp dir"))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn admin_url() -> String {
    std::env::var("ALIGNDET_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-tAc", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A fresh database on the test Postgres, dropped on drop.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn create() -> TestDb {
        // The clock as well as pid and counter: a database left by a killed earlier process with
        // the same pid must not collide.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "aligndet_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        psql(&admin_url(), &format!("CREATE DATABASE {name}")).expect("create test database");
        let base = admin_url();
        let url = match base.rfind('/') {
            Some(i) => format!("{}/{name}", &base[..i]),
            None => panic!("bad ALIGNDET_TEST_PG"),
        };
        TestDb { name, url }
    }

    /// Run one SQL statement and return its text output.
    pub fn query(&self, sql: &str) -> String {
        psql(&self.url, sql).expect("query")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = psql(
            &admin_url(),
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Server options for a test.
pub struct ServerOptions {
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    pub lease_seconds: f64,
    pub heartbeat_seconds: f64,
    pub max_attempts: i32,
    pub upload_limit_mib: u64,
    pub import_roots: Vec<PathBuf>,
    pub demo_cache: Option<PathBuf>,
    pub token: String,
    /// Fixed address (to restart a server where its workers expect it); default a free port.
    pub bind: String,
}

impl ServerOptions {
    pub fn new(db: &TestDb, data_dir: &Path) -> ServerOptions {
        ServerOptions {
            database_url: Some(db.url.clone()),
            data_dir: data_dir.to_path_buf(),
            lease_seconds: 30.0,
            heartbeat_seconds: 1.0,
            max_attempts: 3,
            upload_limit_mib: 64,
            import_roots: vec![],
            demo_cache: None,
            token: "test-token-0123456789".into(),
            bind: "127.0.0.1:0".into(),
        }
    }
}

/// A running `aligndet-server`, killed on drop, with the first admin signed in: `http` sends
/// that session's cookie (pages), `user_token` is the admin's personal API token (the user API:
/// `api_post`, `api_get`), and `token` is the worker token (worker calls: `worker_post`,
/// [`ApiWorker`], [`Worker`]).
pub struct Server {
    child: Child,
    pub url: String,
    /// The worker token.
    pub token: String,
    /// A personal API token of the first admin.
    pub user_token: String,
    /// The admin's browser session (`cookies` holds the CSRF and session cookies).
    pub login: accounts::Login,
    pub admin_password: String,
    pub http: reqwest::blocking::Client,
}

impl Server {
    pub fn start(opts: &ServerOptions) -> Server {
        Self::start_with_args(opts, &[])
    }

    /// [`Server::start`] with more server arguments, e.g. `["--artifact-limit-mib", "1"]`
    /// (a field in `ServerOptions` would break the tests that spell out the struct).
    pub fn start_with_args(opts: &ServerOptions, extra_args: &[&str]) -> Server {
        let mut cmd = Command::new(bin("aligndet-server"));
        cmd.arg("--bind")
            .arg(&opts.bind)
            .arg("--data-dir")
            .arg(&opts.data_dir)
            .arg("--lease-seconds")
            .arg(opts.lease_seconds.to_string())
            .arg("--heartbeat-seconds")
            .arg(opts.heartbeat_seconds.to_string())
            .arg("--max-attempts")
            .arg(opts.max_attempts.to_string())
            .arg("--upload-limit-mib")
            .arg(opts.upload_limit_mib.to_string())
            .env_remove("DATABASE_URL")
            // Not on the command line: every local user can read that in `ps`.
            .env("ALIGNDET_WORKER_TOKEN", &opts.token)
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(url) = &opts.database_url {
            cmd.arg("--database-url").arg(url);
        }
        cmd.args(extra_args);
        for r in &opts.import_roots {
            cmd.arg("--import-root").arg(r);
        }
        match &opts.demo_cache {
            Some(c) => {
                cmd.arg("--demo").arg("--cache-dir").arg(c);
            }
            None => {
                cmd.arg("--cache-dir").arg(opts.data_dir.join("no-cache"));
            }
        }
        let mut child = cmd.spawn().expect("start server");
        let stdout = child.stdout.take().expect("server stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(120);
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(u) = line.strip_prefix("listening on ") {
                        break u.trim().to_string();
                    }
                }
                _ => panic!("server exited before listening"),
            }
            assert!(Instant::now() < deadline, "server did not start");
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let admin_password =
            accounts::first_admin_password(&opts.data_dir).expect("first admin password");
        let login = accounts::login(&url, "admin", &admin_password).expect("sign in as admin");
        let user_token =
            accounts::create_api_token(&url, &login, "tests").expect("admin API token");
        let mut cookie = reqwest::header::HeaderMap::new();
        cookie.insert(
            reqwest::header::COOKIE,
            login.session.parse().expect("cookie header"),
        );
        Server {
            child,
            url,
            token: opts.token.clone(),
            user_token,
            login,
            admin_password,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .default_headers(cookie)
                .build()
                .expect("http client"),
        }
    }

    /// The server process id (for signals and `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop with SIGTERM (graceful) and wait.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// POST to the user API with the admin's personal token.
    pub fn api_post(&self, path: &str, body: &Value) -> reqwest::blocking::Response {
        self.http
            .post(format!("{}/api/v1/{path}", self.url))
            .bearer_auth(&self.user_token)
            .json(body)
            .send()
            .expect("api request")
    }

    /// POST a worker call with the worker token (no worker key).
    pub fn worker_post(&self, path: &str, body: &Value) -> reqwest::blocking::Response {
        self.http
            .post(format!("{}/api/v1/{path}", self.url))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .expect("api request")
    }

    /// GET from the user API with the admin's personal token.
    pub fn api_get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/api/v1/{path}", self.url))
            .bearer_auth(&self.user_token)
            .send()
            .expect("api request");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().expect("json")
    }

    pub fn create_run(&self, name: &str, config: Value) -> i64 {
        self.create_run_with(name, config, json!({}))
    }

    /// [`Server::create_run`] with more fields of `POST /api/v1/runs` (`requirements`,
    /// `priority`, `depends_on`, …) from the object `extra`.
    pub fn create_run_with(&self, name: &str, config: Value, extra: Value) -> i64 {
        let mut body = json!({ "name": name, "config": config });
        for (k, v) in extra.as_object().expect("extra fields as an object") {
            body[k] = v.clone();
        }
        let r = self.api_post("runs", &body);
        let status = r.status();
        let body: Value = r.json().expect("json");
        assert!(status.is_success(), "create run: {status} {body}");
        body["id"].as_i64().expect("run id")
    }

    pub fn run(&self, id: i64) -> Value {
        self.api_get(&format!("runs/{id}"))
    }

    /// Poll until `pred` holds for the run, or panic after `timeout`.
    pub fn wait_run(
        &self,
        id: i64,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.run(id);
            if pred(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for run {id} to be {what}: {r}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .expect("GET")
    }

    /// A browser-like session of the signed-in admin: a fresh CSRF cookie and token from a
    /// page, with the session cookie, then same-origin posts.
    pub fn browser_session(&self) -> UiSession<'_> {
        let resp = self.get("/datasets");
        let csrf = accounts::set_cookie(&resp, "aligndet_csrf").expect("csrf cookie");
        let token = csrf.trim_start_matches("aligndet_csrf=").to_string();
        UiSession {
            server: self,
            cookie: format!("{csrf}; {}", self.login.session),
            token,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct UiSession<'a> {
    server: &'a Server,
    pub cookie: String,
    pub token: String,
}

impl UiSession<'_> {
    /// POST a url-encoded form as our own page would (cookie, token field, Origin).
    pub fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::blocking::Response {
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        all.push(("csrf_token", &self.token));
        self.server
            .http
            .post(format!("{}{path}", self.server.url))
            .header("cookie", &self.cookie)
            .header("origin", &self.server.url)
            .form(&all)
            .send()
            .expect("POST form")
    }

    /// POST a multipart form as our own page would (token in the query string).
    pub fn post_multipart(
        &self,
        path: &str,
        form: reqwest::blocking::multipart::Form,
    ) -> reqwest::blocking::Response {
        self.server
            .http
            .post(format!(
                "{}{path}?csrf_token={}",
                self.server.url, self.token
            ))
            .header("cookie", &self.cookie)
            .header("origin", &self.server.url)
            .multipart(form)
            .send()
            .expect("POST multipart")
    }

    pub fn upload_zip(
        &self,
        name: &str,
        file_name: &str,
        bytes: Vec<u8>,
    ) -> reqwest::blocking::Response {
        self.try_upload_zip(name, file_name, bytes).expect("upload")
    }

    /// Like `upload_zip`, but a server that refuses an oversized body may close the connection
    /// before the client has sent it all: that comes back as an error here.
    pub fn try_upload_zip(
        &self,
        name: &str,
        file_name: &str,
        bytes: Vec<u8>,
    ) -> reqwest::Result<reqwest::blocking::Response> {
        let form = reqwest::blocking::multipart::Form::new()
            .text("name", name.to_string())
            .part(
                "file",
                reqwest::blocking::multipart::Part::bytes(bytes).file_name(file_name.to_string()),
            );
        self.server
            .http
            .post(format!(
                "{}/datasets/upload?csrf_token={}",
                self.server.url, self.token
            ))
            .header("cookie", &self.cookie)
            .header("origin", &self.server.url)
            .multipart(form)
            .send()
    }
}

/// A worker that is only the test: registers and speaks the worker protocol directly, with
/// its worker key on every call (as `trainer worker` does).
pub struct ApiWorker<'a> {
    pub server: &'a Server,
    pub worker_id: i64,
    pub key: String,
}

impl<'a> ApiWorker<'a> {
    pub fn register(server: &'a Server, name: &str) -> ApiWorker<'a> {
        ApiWorker::register_with(server, name, "cpu", None)
    }

    /// Register with a device name and, when given, capabilities (JSON of
    /// `aligndet_common::capabilities::Capabilities`).
    pub fn register_with(
        server: &'a Server,
        name: &str,
        device: &str,
        capabilities: Option<Value>,
    ) -> ApiWorker<'a> {
        let r = server.worker_post(
            "workers/register",
            &json!({"name": name, "device": device, "info": {},
                    "protocol_version": aligndet_common::api::PROTOCOL_VERSION,
                    "capabilities": capabilities}),
        );
        assert!(r.status().is_success(), "register: {}", r.status());
        let v: Value = r.json().expect("register reply");
        ApiWorker {
            server,
            worker_id: v["worker_id"].as_i64().expect("worker id"),
            key: v["worker_key"].as_str().expect("worker key").to_string(),
        }
    }

    pub fn post(&self, path: &str, body: &Value) -> reqwest::blocking::Response {
        self.server
            .http
            .post(format!("{}/api/v1/{path}", self.server.url))
            .bearer_auth(&self.server.token)
            .header(aligndet_common::api::WORKER_KEY_HEADER, &self.key)
            .json(body)
            .send()
            .expect("api request")
    }

    /// The next claimed job's spec, or `None` when nothing is claimable.
    pub fn claim(&self) -> Option<Value> {
        let r = self.post("jobs/claim", &json!({"worker_id": self.worker_id}));
        if r.status() == 204 {
            return None;
        }
        assert_eq!(r.status(), 200, "claim");
        Some(r.json().expect("job spec"))
    }

    pub fn put_artifact(
        &self,
        run: i64,
        attempt: i64,
        name: &str,
        bytes: Vec<u8>,
    ) -> reqwest::blocking::Response {
        self.server
            .http
            .put(format!(
                "{}/api/v1/runs/{run}/artifacts/{name}?attempt={attempt}",
                self.server.url
            ))
            .bearer_auth(&self.server.token)
            .header(aligndet_common::api::WORKER_KEY_HEADER, &self.key)
            .body(bytes)
            .send()
            .expect("upload")
    }
}

/// A free local port, for a server that must come back at the same address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `trainer worker`, killed on drop.
pub struct Worker {
    pub child: Child,
    /// Holds the 0600 token file: the token never goes on the command line (`ps` shows it).
    _token_dir: TempDir,
    /// This worker's own input cache.
    pub cache: TempDir,
}

impl Worker {
    pub fn start(server: &Server, name: &str) -> Worker {
        Worker::spawn(server, name, None)
    }

    /// A worker as on another machine: in a mount namespace of its own where each `hidden`
    /// folder (the server's data dir, its import folders) is an empty tmpfs, with its own HOME.
    /// It can reach the server only through its URL and token.
    pub fn start_remote(server: &Server, name: &str, hidden: &[&Path]) -> Worker {
        Worker::spawn(server, name, Some(hidden))
    }

    fn spawn(server: &Server, name: &str, hidden: Option<&[&Path]>) -> Worker {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let token_dir = TempDir::new("worker-token");
        let token_file = token_dir.path().join("worker-token");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&token_file)
            .and_then(|mut f| f.write_all(server.token.as_bytes()))
            .expect("write worker token file");
        let cache = TempDir::new("worker-cache");
        let mut cmd = match hidden {
            None => Command::new(bin("trainer")),
            Some(hidden) => {
                let mut cmd = Command::new("unshare");
                let mounts: Vec<String> = hidden
                    .iter()
                    .map(|d| format!("mount -t tmpfs tmpfs '{}' && ", d.display()))
                    .collect();
                cmd.args(["-m", "--", "sh", "-c"])
                    .arg(format!("{} exec \"$@\"", mounts.concat()))
                    .arg("sh")
                    .arg(bin("trainer"))
                    .env("HOME", token_dir.path());
                cmd
            }
        };
        let child = cmd
            .args(["worker", "--server", &server.url, "--name", name])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--cache")
            .arg(cache.path())
            .args(["--poll-interval", "0.2"])
            .env_remove("ALIGNDET_WORKER_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start worker");
        Worker {
            child,
            _token_dir: token_dir,
            cache,
        }
    }

    /// SIGKILL: the worker gets no chance to say goodbye (a crash or a pulled plug).
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// Write a small valid COCO dataset (PNG images with coloured rectangles) into `dir`;
/// returns (annotations.json path, images dir).
pub fn write_small_coco(dir: &Path, n_images: u32) -> (PathBuf, PathBuf) {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).expect("mkdir images");
    let mut imgs = vec![];
    let mut anns = vec![];
    for i in 0..n_images {
        let (w, h) = (64u32, 48u32);
        let mut img = image::RgbImage::from_pixel(w, h, image::Rgb([30, 30, 30]));
        for y in 10..30 {
            for x in (5 + i)..(25 + i) {
                img.put_pixel(x, y, image::Rgb([200, 40, 40]));
            }
        }
        let file = format!("img_{i}.png");
        img.save(images.join(&file)).expect("save png");
        imgs.push(serde_json::json!({"id": i + 1, "file_name": file, "width": w, "height": h}));
        anns.push(
            serde_json::json!({"id": i + 1, "image_id": i + 1, "category_id": 1 + (i % 2),
            "bbox": [5 + i, 10, 20, 20], "area": 400, "iscrowd": 0}),
        );
    }
    let coco = serde_json::json!({
        "images": imgs,
        "annotations": anns,
        "categories": [{"id": 1, "name": "red box"}, {"id": 2, "name": "<b>bold</b> & co"}],
    });
    let ann = dir.join("annotations.json");
    std::fs::write(&ann, serde_json::to_vec_pretty(&coco).expect("json")).expect("write json");
    (ann, images)
}

/// Zip a folder (entries relative to it).
pub fn zip_dir(dir: &Path) -> Vec<u8> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read dir").flatten() {
                let p = e.path();
                let rel = p
                    .strip_prefix(dir)
                    .expect("rel")
                    .to_string_lossy()
                    .into_owned();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    z.start_file(rel, opts).expect("zip entry");
                    z.write_all(&std::fs::read(&p).expect("read"))
                        .expect("zip write");
                }
            }
        }
        z.finish().expect("zip finish");
    }
    buf.into_inner()
}

/// Names of the entries in a folder (to check nothing half-written is left).
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `n` images of `size`² with two flat rectangles of two classes, and a splits.json (last 4 are
/// val) beside the annotations, as the synthetic generator writes it.
pub fn write_rect_dataset(dir: &Path, n: u32, size: u32) -> (PathBuf, PathBuf) {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let (mut imgs, mut anns) = (vec![], vec![]);
    for i in 0..n {
        let mut img = image::RgbImage::from_pixel(size, size, image::Rgb([40, 40, 40]));
        let rects = [
            (4 + i % 9, 8, 30, 26, [220, 30, 30], 1),
            (48, 40 + i % 7, 22, 30, [30, 200, 40], 2),
        ];
        for (k, (x, y, w, h, c, cat)) in rects.iter().enumerate() {
            for yy in *y..(*y + *h).min(size) {
                for xx in *x..(*x + *w).min(size) {
                    img.put_pixel(xx, yy, image::Rgb(*c));
                }
            }
            anns.push(
                json!({"id": i * 10 + k as u32 + 1, "image_id": i + 1, "category_id": cat,
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}),
            );
        }
        let name = format!("r{i}.png");
        img.save(images.join(&name)).unwrap();
        imgs.push(json!({"id": i + 1, "file_name": name, "width": size, "height": size}));
    }
    let ann = dir.join("annotations.json");
    let coco = json!({"images": imgs, "annotations": anns,
        "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]});
    std::fs::write(&ann, coco.to_string()).unwrap();
    let train: Vec<u32> = (1..=n - 4).collect();
    let val: Vec<u32> = (n - 3..=n).collect();
    let splits = json!({"train": train, "val": val, "labeled": {"50pct_seed0": (1..=(n - 4) / 2).collect::<Vec<_>>()}});
    std::fs::write(dir.join("splits.json"), splits.to_string()).unwrap();
    (ann, images)
}

/// Import a COCO dataset from the server's import roots through the UI form; its id.
pub fn import_dataset(server: &Server, name: &str, ann: &Path, images: &Path) -> i64 {
    let ui = server.browser_session();
    let r = ui.post_form(
        "/datasets/import",
        &[
            ("name", name),
            ("format", "coco"),
            ("annotations", ann.to_str().unwrap()),
            ("images", images.to_str().unwrap()),
        ],
    );
    let url = r.url().clone();
    let body = r.text().unwrap();
    url.path()
        .strip_prefix("/datasets/")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("import failed: {body}"))
}

/// The step attempt `attempt` of `run` resumed from, read from its log line "resumed from the
/// checkpoint at step N" (the training engine's); panics when there is no such line.
pub fn resumed_at(db: &TestDb, run: i64, attempt: i32) -> u32 {
    let resumed = db.query(&format!(
        "SELECT text FROM run_logs WHERE run_id = {run} AND attempt = {attempt} AND text LIKE 'resumed from the checkpoint at step %'"
    ));
    resumed
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resume line in attempt {attempt}'s log: {resumed:?}"))
}

/// A server with the rectangles dataset (`write_rect_dataset`: `images` of `size` px) imported:
/// what the job tests start from. `options` adjusts the server (lease, heartbeat) before it
/// starts. The server is declared first so it stops before the database and folders go.
pub struct RectDataset {
    pub server: Server,
    pub db: TestDb,
    pub dataset: i64,
    pub data: TempDir,
    /// The COCO file and the image folder as imported.
    pub ann: PathBuf,
    pub images: PathBuf,
    pub imports: TempDir,
}

impl RectDataset {
    pub fn start(
        tag: &str,
        images: u32,
        size: u32,
        options: impl FnOnce(&mut ServerOptions),
    ) -> RectDataset {
        let db = TestDb::create();
        let data = TempDir::new(tag);
        let imports = TempDir::new(&format!("{tag}-imports"));
        let (ann, image_dir) = write_rect_dataset(imports.path(), images, size);
        let mut opts = ServerOptions::new(&db, data.path());
        opts.import_roots = vec![imports.path().to_path_buf()];
        options(&mut opts);
        let server = Server::start(&opts);
        let dataset = import_dataset(&server, "rects", &ann, &image_dir);
        RectDataset {
            server,
            db,
            dataset,
            data,
            ann,
            images: image_dir,
            imports,
        }
    }
}

/// A server with one small COCO dataset (`write_small_coco`) imported through the datasets page
/// with `splits` as its splits.json: what the page tests start from. The server is declared
/// first so it stops before the database and folders go.
pub struct SmallDataset {
    pub server: Server,
    pub db: TestDb,
    pub dataset: i64,
    pub data: TempDir,
    /// Holds `annotations.json`, `images/` and `splits.json` as imported.
    pub imports: TempDir,
}

impl SmallDataset {
    pub fn start(tag: &str, images: u32, splits: &serde_json::Value) -> SmallDataset {
        let db = TestDb::create();
        let data = TempDir::new(&format!("{tag}-data"));
        let imports = TempDir::new(&format!("{tag}-imports"));
        let (ann, image_dir) = write_small_coco(imports.path(), images);
        std::fs::write(imports.path().join("splits.json"), splits.to_string())
            .expect("write splits.json");
        let mut opts = ServerOptions::new(&db, data.path());
        opts.import_roots = vec![imports.path().to_path_buf()];
        let server = Server::start(&opts);
        let dataset = import_dataset(&server, "small", &ann, &image_dir);
        SmallDataset {
            server,
            db,
            dataset,
            data,
            imports,
        }
    }
}

/// The id of the run a form post created, from the run page it redirected to.
pub fn run_id_of(r: reqwest::blocking::Response) -> i64 {
    let url = r.url().clone();
    let status = r.status();
    let body = r.text().unwrap();
    url.path()
        .strip_prefix("/runs/")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not redirected to a run page ({status}): {body}"))
}

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
