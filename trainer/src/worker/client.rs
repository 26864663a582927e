//! Typed HTTP client for the server's `/api/v1/` worker API.

use super::cache::FetchError;
use aligndet_common::api::*;
use aligndet_common::content::{Blob, PackRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{Read, Seek};
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
    /// the server's answer. `artifact` resends pieces while they make progress, and answers
    /// this only after several cut-offs in a row without any.
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
        let message = refusal_message(status, body);
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
        stamp: &TrainerStamp,
    ) -> Result<Option<JobSpec>, ApiCallError> {
        let req = ClaimRequest {
            worker_id,
            run_id,
            stamp: Some(stamp.clone()),
        };
        self.post("jobs/claim", &req)
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

    /// Upload a staged artifact resumably: ask how much of it the server holds, send the rest
    /// in pieces. A cut connection costs at most one piece; the server keeps the artifact only
    /// once the whole file hashes to the sha256 declared here.
    pub fn artifact(
        &self,
        run_id: i64,
        attempt: i32,
        name: &str,
        file: &Path,
    ) -> Result<(), ApiCallError> {
        let staged = |e: std::io::Error| {
            ApiCallError::Refused(format!("reading staged {}: {e}", file.display()))
        };
        let blob = Blob::of_file(file).map_err(staged)?;
        let declared = format!(
            "attempt={attempt}&sha256={}&bytes={}",
            blob.sha256, blob.bytes
        );
        let mut cut_offs = 0;
        let mut held_before = None;
        loop {
            let resp = self
                .authorized(
                    self.http
                        .get(self.url(&format!("runs/{run_id}/uploads/{name}?{declared}"))),
                )
                .send();
            let held: UploadProgress = Self::handle(resp)?
                .ok_or_else(|| ApiCallError::Refused("empty reply about an upload".into()))?;
            if held.complete {
                return Ok(());
            }
            if held_before.is_some_and(|before| held.received > before) {
                cut_offs = 0;
            }
            held_before = Some(held.received);
            let piece = (blob.bytes - held.received.min(blob.bytes)).min(UPLOAD_PIECE);
            let mut reader = std::fs::File::open(file).map_err(staged)?;
            reader
                .seek(std::io::SeekFrom::Start(held.received))
                .map_err(staged)?;
            let url = self.url(&format!(
                "runs/{run_id}/artifacts/{name}?{declared}&offset={}",
                held.received
            ));
            let sent = self
                .authorized(self.http.put(url))
                // Large pieces take longer than the 60 s meant for JSON calls.
                .timeout(transfer_timeout(piece))
                .body(reqwest::blocking::Body::sized(reader.take(piece), piece))
                .send();
            match sent {
                Err(e) if e.is_body() => {
                    std::thread::sleep(Duration::from_millis(100));
                    cut_offs += 1;
                    if cut_offs >= MAX_CUT_OFFS {
                        return Err(ApiCallError::CutOff(format!(
                            "{cut_offs} pieces in a row, with no progress between ({} of {} bytes \
                             held): {}",
                            held.received,
                            blob.bytes,
                            with_sources(&e)
                        )));
                    }
                }
                other => {
                    Self::handle::<serde_json::Value>(other)?;
                }
            }
        }
    }
}

/// Bytes per upload request: a cut connection resends at most this much.
const UPLOAD_PIECE: u64 = 16 << 20;

/// Pieces cut off this many times in a row without progress: taken as the server refusing the
/// body part-way (over its size limit), whose answer the client cannot read.
const MAX_CUT_OFFS: u32 = 3;

#[derive(serde::Deserialize)]
struct UploadProgress {
    received: u64,
    complete: bool,
}

/// 60 s plus one second per 10 MiB (a slow 10 MiB/s link), so big transfers are not cut off.
fn transfer_timeout(bytes: u64) -> Duration {
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

impl super::cache::BlobSource for ApiClient {
    fn open_blob(
        &self,
        blob: &Blob,
        offset: u64,
    ) -> Result<(u64, Box<dyn std::io::Read>), FetchError> {
        let mut request = self
            .authorized(self.http.get(self.url(&format!("blobs/{}", blob.sha256))))
            .timeout(transfer_timeout(blob.bytes));
        if offset > 0 {
            // If-Range: bytes of another version would be spliced onto ours; then send it all.
            request = request
                .header(reqwest::header::RANGE, format!("bytes={offset}-"))
                .header(reqwest::header::IF_RANGE, format!("\"{}\"", blob.sha256));
        }
        let resp = opened(request.send())?;
        let start = if resp.status() == reqwest::StatusCode::PARTIAL_CONTENT {
            offset
        } else {
            0
        };
        Ok((start, Box::new(resp)))
    }

    fn open_pack(&self, blobs: &[Blob]) -> Result<Box<dyn std::io::Read>, FetchError> {
        let body = PackRequest {
            sha256: blobs.iter().map(|b| b.sha256.clone()).collect(),
        };
        let bytes: u64 = blobs.iter().map(|b| b.bytes).sum();
        let request = self
            .authorized(self.http.post(self.url("blobs/pack")))
            .timeout(transfer_timeout(bytes))
            .json(&body);
        Ok(Box::new(opened(request.send())?))
    }
}

/// The status and the server's reason: the `error` of its JSON body, or the body as it came.
fn refusal_message(status: reqwest::StatusCode, body: String) -> String {
    let reason = serde_json::from_str::<ApiError>(&body)
        .map(|e| e.error)
        .unwrap_or(body);
    format!("{status}: {reason}")
}

/// A download's response when it succeeded; the server's reason when not (a 404 or 410 names the
/// input that is gone, and retrying will not bring it back).
fn opened(
    resp: reqwest::Result<reqwest::blocking::Response>,
) -> Result<reqwest::blocking::Response, FetchError> {
    let resp = resp.map_err(|e| FetchError::Transient(with_sources(&e)))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let message = refusal_message(status, resp.text().unwrap_or_default());
    Err(if status.is_server_error() {
        FetchError::Transient(message)
    } else {
        FetchError::Refused(message)
    })
}
