//! Which worker is calling: the secret it was given at registration, in
//! [`WORKER_KEY_HEADER`]. The shared worker token (checked by
//! `security::require_worker_token`) only says "a worker of this platform"; this says which one,
//! so the queue can refuse a report for an attempt the caller does not hold.

use crate::error::ApiError;
use crate::state::AppState;
use aligndet_common::api::WORKER_KEY_HEADER;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
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
