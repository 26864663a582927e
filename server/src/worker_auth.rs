//! Which worker is calling: the secret it was given at registration, in
//! [`WORKER_KEY_HEADER`]. The shared worker token (checked by
//! `security::require_worker_token`) only says "a worker of this platform"; this says which one,
//! so the queue can refuse a report for an attempt the caller does not hold.

use crate::error::{ApiError, ApiJson};
use crate::state::AppState;
use aligndet_common::api::{LogBatch, MetricsBatch, ProposalsBatch, WORKER_KEY_HEADER};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// A new worker secret and the digest stored for it.
pub fn new_worker_key() -> (String, String) {
    let key = crate::secrets::random_token();
    let digest = key_digest(&key);
    (key, digest)
}

pub fn key_digest(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The registered worker making this call.
#[derive(Debug, Clone, Copy)]
pub struct CallingWorker(pub i64);

impl FromRequestParts<AppState> for CallingWorker {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let key = parts
            .headers
            .get(WORKER_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    format!(
                        "missing {WORKER_KEY_HEADER}: register first and send the worker_key you were given"
                    ),
                )
            })?;
        match crate::db::workers::identify(&s.worker_pool, &key_digest(key)).await? {
            Some(id) => Ok(CallingWorker(id)),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("unknown {WORKER_KEY_HEADER}: register again"),
            )),
        }
    }
}

/// A batch of one attempt's output (metrics, logs, pseudo-boxes) as a worker reports it.
pub trait AttemptReport {
    /// The attempt the batch belongs to.
    fn attempt(&self) -> i32;
}

impl AttemptReport for MetricsBatch {
    fn attempt(&self) -> i32 {
        self.attempt
    }
}

impl AttemptReport for LogBatch {
    fn attempt(&self) -> i32 {
        self.attempt
    }
}

impl AttemptReport for ProposalsBatch {
    fn attempt(&self) -> i32 {
        self.attempt
    }
}

/// A report on run `run` (the path's `{id}`), accepted only from the worker that holds the
/// attempt it names ([`crate::queue::check_current`]): what every output-storing worker call
/// checks before it writes. Refusals are those of the calls it stands for (unknown worker, bad
/// path or JSON, a stale attempt).
pub struct CurrentReport<T> {
    pub run: i64,
    pub batch: T,
}

impl<T> FromRequest<AppState> for CurrentReport<T>
where
    T: AttemptReport + serde::de::DeserializeOwned + Send,
{
    type Rejection = Response;

    async fn from_request(req: Request, s: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let CallingWorker(worker) = CallingWorker::from_request_parts(&mut parts, s)
            .await
            .map_err(IntoResponse::into_response)?;
        let Path(run) = Path::<i64>::from_request_parts(&mut parts, s)
            .await
            .map_err(IntoResponse::into_response)?;
        let ApiJson(batch) = ApiJson::<T>::from_request(Request::from_parts(parts, body), s)
            .await
            .map_err(IntoResponse::into_response)?;
        crate::queue::check_current(&s.worker_pool, run, worker, batch.attempt())
            .await
            .map_err(|e| ApiError::from(e).into_response())?;
        Ok(CurrentReport { run, batch })
    }
}
