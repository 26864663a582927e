//! A running `aligndet-server` for a test: its options, the process with the first admin
//! signed in, and the page sessions of other users.

use crate::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    /// A server on the test database `db`.
    pub fn new(db: &TestDb, data_dir: &Path) -> ServerOptions {
        ServerOptions {
            database_url: Some(db.url.clone()),
            ..ServerOptions::embedded(data_dir)
        }
    }

    /// A server without a database URL: it brings its own Postgres cluster in `data_dir`.
    pub fn embedded(data_dir: &Path) -> ServerOptions {
        ServerOptions {
            database_url: None,
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

/// The text of a page's form error box (`id="form-error"`), as the page escapes it.
pub fn form_error(body: &str) -> Option<&str> {
    body.split("id=\"form-error\">")
        .nth(1)
        .and_then(|rest| rest.split("</div>").next())
}

/// The id of the run a form post created, from the run page it redirected to.
pub fn run_id_of(r: reqwest::blocking::Response) -> i64 {
    let url = r.url().clone();
    let status = r.status();
    let body = r.text().unwrap();
    url.path()
        .strip_prefix("/runs/")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| {
            // A refused form: its error box says why; anything else, the whole body.
            let error = form_error(&body).unwrap_or(&body);
            panic!("not redirected to a run page ({status}): {error}")
        })
}

/// A refused form: 422, the form re-rendered, and the error box naming the problem.
pub fn refused(
    r: reqwest::blocking::Response,
    form_id: &str,
    expected: &str,
    what: &str,
) -> String {
    assert_eq!(r.status(), 422, "{what}");
    let body = r.text().unwrap();
    let error = form_error(&body)
        .unwrap_or_else(|| panic!("no error box for {what}"))
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#35;", "#");
    assert!(
        error.contains(expected),
        "{what}: error {error:?} should contain {expected:?}"
    );
    assert!(
        body.contains(&format!("id=\"{form_id}\"")),
        "{what}: form re-rendered"
    );
    body
}
