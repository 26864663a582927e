//! Workers for a test: one that is only the test speaking the worker protocol ([`ApiWorker`]),
//! and a real `trainer worker` process ([`Worker`]).

use crate::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};

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
