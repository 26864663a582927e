//! Typed HTTP client for the server's `/api/v1/` worker API.

use aligndet_common::api::*;
use aligndet_common::artifacts::check_artifact_name;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::RwLock;
use std::time::Duration;

/// How a call failed, which decides what the worker does next.
#[derive(Debug, thiserror::Error)]
pub enum ApiCallError {
    /// Network trouble or a 5xx: keep the data and try again later.
    #[error("server unreachable or failing: {0}")]
    Transient(String),
    /// 409: this attempt is no longer the run's current one (lease expired, job re-queued).
    #[error("the server says this attempt is no longer current: {0}")]
    Conflict(String),
    /// Any other refusal (bad token, bad request): retrying will not help.
    #[error("the server refused the request: {0}")]
    Refused(String),
    /// The connection broke while an upload's body was being sent. A server that refuses a body
    /// part-way (413, over its size limit) closes it too, and reqwest's blocking client then drops
    /// the server's answer; the outbox retries a few times before taking it as a refusal.
    #[error("the connection was closed part-way through the upload: {0}")]
    CutOff(String),
}

pub struct ApiClient {
    base: String,
    token: String,
    /// The key `register` got back; sent on every later call (the server refuses them without).
    worker_key: RwLock<Option<String>>,
    http: reqwest::blocking::Client,
}

impl ApiClient {
    pub fn new(base: &str, token: &str) -> anyhow::Result<ApiClient> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            worker_key: RwLock::new(None),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1/{}", self.base, path)
    }

    /// Both credentials: the shared worker token and, once registered, this worker's key.
    fn authorized(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        let request = request.bearer_auth(&self.token);
        let key = self.worker_key.read().unwrap_or_else(|p| p.into_inner());
        match key.as_deref() {
            Some(key) => request.header(WORKER_KEY_HEADER, key),
            None => request,
        }
    }

    fn handle<R: DeserializeOwned>(
        resp: reqwest::Result<reqwest::blocking::Response>,
    ) -> Result<Option<R>, ApiCallError> {
        let resp = resp.map_err(|e| ApiCallError::Transient(with_sources(&e)))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let body = resp
            .text()
            .map_err(|e| ApiCallError::Transient(format!("{status}, then {}", with_sources(&e))))?;
        if status.is_success() {
            return serde_json::from_str(&body)
                .map(Some)
                .map_err(|e| ApiCallError::Refused(format!("unexpected reply {body:?}: {e}")));
        }
        let message = serde_json::from_str::<ApiError>(&body)
            .map(|e| e.error)
            .unwrap_or(body);
        let message = format!("{status}: {message}");
        Err(if status == reqwest::StatusCode::CONFLICT {
            ApiCallError::Conflict(message)
        } else if status.is_server_error() {
            ApiCallError::Transient(message)
        } else {
            ApiCallError::Refused(message)
        })
    }

    /// POST JSON to `/api/v1/{path}` with both credentials; `None` for 204.
    pub fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Option<R>, ApiCallError> {
        Self::handle(
            self.authorized(self.http.post(self.url(path)))
                .json(body)
                .send(),
        )
    }

    /// GET JSON from `/api/v1/{path}` with both credentials; `None` for 204.
    pub fn get<R: DeserializeOwned>(&self, path: &str) -> Result<Option<R>, ApiCallError> {
        Self::handle(self.authorized(self.http.get(self.url(path))).send())
    }

    /// Register, and keep the worker key the server answers with for every later call.
    pub fn register(&self, req: &RegisterWorker) -> Result<WorkerRegistered, ApiCallError> {
        let registered: WorkerRegistered = self
            .post("workers/register", req)?
            .ok_or_else(|| ApiCallError::Refused("empty reply to register".into()))?;
        *self.worker_key.write().unwrap_or_else(|p| p.into_inner()) =
            Some(registered.worker_key.clone());
        Ok(registered)
    }

    /// `None` when no job is waiting (or `run_id`, when given, cannot be claimed).
    pub fn claim(
        &self,
        worker_id: i64,
        run_id: Option<i64>,
    ) -> Result<Option<JobSpec>, ApiCallError> {
        self.post("jobs/claim", &ClaimRequest { worker_id, run_id })
    }

    pub fn heartbeat(&self, run_id: i64, hb: &Heartbeat) -> Result<HeartbeatReply, ApiCallError> {
        self.post(&format!("runs/{run_id}/heartbeat"), hb)?
            .ok_or_else(|| ApiCallError::Refused("empty reply to heartbeat".into()))
    }

    pub fn metrics(&self, run_id: i64, batch: &MetricsBatch) -> Result<(), ApiCallError> {
        self.post::<_, serde_json::Value>(&format!("runs/{run_id}/metrics"), batch)
            .map(|_| ())
    }

    pub fn logs(&self, run_id: i64, batch: &LogBatch) -> Result<(), ApiCallError> {
        self.post::<_, serde_json::Value>(&format!("runs/{run_id}/logs"), batch)
            .map(|_| ())
    }

    pub fn proposals(&self, run_id: i64, batch: &ProposalsBatch) -> Result<(), ApiCallError> {
        self.post::<_, serde_json::Value>(&format!("runs/{run_id}/proposals"), batch)
            .map(|_| ())
    }

    /// Images whose pseudo-boxes an earlier attempt already stored, with their boxes.
    pub fn proposals_done(&self, run_id: i64) -> Result<Vec<ImageProposals>, ApiCallError> {
        let resp = self
            .authorized(
                self.http
                    .get(self.url(&format!("runs/{run_id}/proposals/done?full=1"))),
            )
            .send();
        Self::handle::<ProposalsDone>(resp).map(|r| r.map(|d| d.images).unwrap_or_default())
    }

    pub fn status(&self, run_id: i64, update: &StatusUpdate) -> Result<(), ApiCallError> {
        self.post::<_, serde_json::Value>(&format!("runs/{run_id}/status"), update)
            .map(|_| ())
    }

    pub fn artifact(
        &self,
        run_id: i64,
        attempt: i32,
        name: &str,
        file: &Path,
    ) -> Result<(), ApiCallError> {
        // Streamed from disk: a multi-GiB checkpoint never sits in memory whole.
        let opened = std::fs::File::open(file).and_then(|f| Ok((f.metadata()?.len(), f)));
        let (len, reader) = opened.map_err(|e| {
            ApiCallError::Refused(format!("reading staged {}: {e}", file.display()))
        })?;
        let url = self.url(&format!("runs/{run_id}/artifacts/{name}?attempt={attempt}"));
        let sent = self
            .authorized(self.http.put(url))
            // Large uploads take longer than the 60 s meant for JSON calls.
            .timeout(upload_timeout(len))
            .body(reqwest::blocking::Body::sized(reader, len))
            .send();
        match sent {
            Err(e) if e.is_body() => Err(ApiCallError::CutOff(format!(
                "{len} bytes to send: {}",
                with_sources(&e)
            ))),
            other => Self::handle::<serde_json::Value>(other).map(|_| ()),
        }
    }
}

impl crate::jobs::ArtifactSource for ApiClient {
    fn fetch_optional(&self, run_id: i64, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
        check_artifact_name(name).map_err(|e| anyhow::anyhow!(e))?;
        let resp = self
            .authorized(
                self.http
                    .get(self.url(&format!("runs/{run_id}/artifacts/{name}"))),
            )
            .timeout(Duration::from_secs(3600))
            .send()?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            anyhow::bail!(
                "artifact {name:?} of run {run_id}: {status}: {}",
                resp.text().unwrap_or_default()
            );
        }
        Ok(Some(resp.bytes()?.to_vec()))
    }
}

/// 60 s plus one second per 10 MiB (a slow 10 MiB/s link), so big artifacts are not cut off.
fn upload_timeout(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / (10 << 20))
}

/// An error with its causes: reqwest's own message ("error sending request") hides the reason.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
