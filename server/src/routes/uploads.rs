//! Artifact uploads from workers, resumable: a worker declares the artifact's sha256 and size,
//! asks how much the server already holds (`GET /api/v1/runs/{id}/uploads/{name}`), and sends
//! the rest in pieces (`PUT /api/v1/runs/{id}/artifacts/{name}?offset=…`). The pieces grow a
//! partial file beside the store; the artifact appears under its name only once the whole file
//! hashes to the declared sha256, so a cut 150 MB upload resumes where it stopped and nothing
//! half-written is ever served. Routed without the JSON routes' body limit; the artifact limit
//! is applied here.

use crate::content::{PARTIAL_UPLOAD_PREFIX, WHOLE_UPLOAD_PREFIX};
use crate::db;
use crate::error::ApiError;
use crate::queue;
use crate::state::AppState;
use crate::worker_auth::CallingWorker;
use aligndet_common::artifacts::check_artifact_name;
use aligndet_common::content::{Blob, Hasher, check_sha256};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

#[derive(Deserialize)]
pub struct UploadQuery {
    attempt: i32,
    /// The whole artifact's sha256 and size: a resumable upload, sent in pieces. Without them
    /// the body is the whole artifact (hashed on the way in).
    sha256: Option<String>,
    bytes: Option<u64>,
    /// Where this piece starts; must be what the server already holds.
    #[serde(default)]
    offset: u64,
}

/// `GET /api/v1/runs/{id}/uploads/{name}?attempt=A&sha256=S&bytes=N`: `{received, complete}`.
/// Refuses an artifact over the limit here, before any byte is sent.
pub async fn received(
    State(s): State<AppState>,
    CallingWorker(worker_id): CallingWorker,
    Path((id, name)): Path<(i64, String)>,
    Query(q): Query<UploadQuery>,
) -> Result<Json<Value>, ApiError> {
    let declared = checked(&s, worker_id, id, &name, &q).await?;
    let Some(declared) = declared else {
        return Err(ApiError::bad_request("say the upload's sha256 and bytes"));
    };
    let stored = db::content::artifact_sha256(&s.worker_pool, id, &name).await?;
    if stored.as_deref() == Some(declared.sha256.as_str()) {
        return Ok(Json(
            json!({ "received": declared.bytes, "complete": true }),
        ));
    }
    let received = partial_len(&partial_path(&s, id, &name, &declared)).await;
    Ok(Json(json!({ "received": received, "complete": false })))
}

/// `PUT /api/v1/runs/{id}/artifacts/{name}?attempt=A[&sha256=S&bytes=N&offset=K]`.
pub async fn upload(
    State(s): State<AppState>,
    CallingWorker(worker_id): CallingWorker,
    Path((id, name)): Path<(i64, String)>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let declared = checked(&s, worker_id, id, &name, &q).await?;
    let dir = s.artifacts_dir(id);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(ApiError::internal)?;
    let limit = s.cfg.artifact_limit_mib << 20;
    let Some(declared) = declared else {
        // One piece, the whole artifact: written aside, moved into place when complete.
        let tmp = dir.join(format!(
            "{WHOLE_UPLOAD_PREFIX}{}",
            crate::secrets::random_token()
        ));
        let written = append(&tmp, body, limit, || too_large(&s)).await;
        let result = match written {
            Ok((bytes, hasher)) => {
                store(
                    &s,
                    worker_id,
                    id,
                    &name,
                    q.attempt,
                    &tmp,
                    Blob {
                        sha256: hasher.finish(),
                        bytes,
                    },
                )
                .await
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        return result
            .map(|bytes| Json(json!({ "bytes": bytes, "received": bytes, "complete": true })));
    };
    let partial = partial_path(&s, id, &name, &declared);
    let held = partial_len(&partial).await;
    if q.offset != held {
        return Err(ApiError::bad_request(format!(
            "this piece starts at byte {} but the server holds {held} bytes of the upload",
            q.offset
        )));
    }
    // A cut body keeps what arrived: TCP delivers a prefix, and the hash is checked at the end.
    let room = declared.bytes - held;
    let (added, _) = append(&partial, body, room, || {
        ApiError::bad_request(format!(
            "the piece holds more than the {room} bytes left of the declared {}",
            declared.bytes
        ))
    })
    .await?;
    let received = held + added;
    if received < declared.bytes {
        return Ok(Json(json!({ "received": received, "complete": false })));
    }
    // The attempt may have ended while the body arrived; its pieces are then gone or going.
    queue::check_current(&s.worker_pool, id, worker_id, q.attempt).await?;
    let path = partial.clone();
    let found = tokio::task::spawn_blocking(move || Blob::of_file(&path))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    if found != declared {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the uploaded {name:?} has sha256 {} ({} bytes), not the declared {} ({} bytes); \
                 the partial upload was discarded",
                found.sha256, found.bytes, declared.sha256, declared.bytes
            ),
        ));
    }
    let stored = store(&s, worker_id, id, &name, q.attempt, &partial, found).await;
    if stored.is_err() {
        // A complete upload that cannot be stored (its attempt ended meanwhile) is never resumed.
        let _ = tokio::fs::remove_file(&partial).await;
    }
    Ok(Json(json!({ "received": stored?, "complete": true })))
}

/// The checks every call makes: the name, the attempt, the declared content and its size limit.
async fn checked(
    s: &AppState,
    worker_id: i64,
    run_id: i64,
    name: &str,
    q: &UploadQuery,
) -> Result<Option<Blob>, ApiError> {
    check_artifact_name(name).map_err(ApiError::bad_request)?;
    queue::check_current(&s.worker_pool, run_id, worker_id, q.attempt).await?;
    let (Some(sha256), Some(bytes)) = (&q.sha256, q.bytes) else {
        if q.offset != 0 {
            return Err(ApiError::bad_request(
                "a piece at an offset needs sha256 and bytes",
            ));
        }
        return Ok(None);
    };
    check_sha256(sha256).map_err(ApiError::bad_request)?;
    if bytes > s.cfg.artifact_limit_mib << 20 {
        return Err(too_large(s));
    }
    Ok(Some(Blob {
        sha256: sha256.clone(),
        bytes,
    }))
}

fn too_large(s: &AppState) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("artifact larger than {} MiB", s.cfg.artifact_limit_mib),
    )
}

/// One partial file per (run, name, content): a retry of the same upload continues it.
fn partial_path(s: &AppState, run_id: i64, name: &str, blob: &Blob) -> PathBuf {
    s.artifacts_dir(run_id)
        .join(format!("{PARTIAL_UPLOAD_PREFIX}{}-{name}", blob.sha256))
}

async fn partial_len(path: &std::path::Path) -> u64 {
    tokio::fs::metadata(path).await.map_or(0, |m| m.len())
}

/// Append the body to `path`, at most `room` bytes; answers the bytes written and their hash.
async fn append(
    path: &std::path::Path,
    body: Body,
    room: u64,
    over_room: impl Fn() -> ApiError,
) -> Result<(u64, Hasher), ApiError> {
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(ApiError::internal)?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    let mut hasher = Hasher::default();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            // Keep what arrived (flushed below) for the next try; the caller answers nothing.
            file.flush().await.map_err(ApiError::internal)?;
            return Err(ApiError::bad_request("upload interrupted"));
        };
        total += chunk.len() as u64;
        if total > room {
            return Err(over_room());
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    file.flush().await.map_err(ApiError::internal)?;
    Ok((total, hasher))
}

/// Move a complete upload into place and record it, if the uploading attempt is still the run's
/// current one (checked again here: a large upload outlives the check made at its start).
///
/// Once begun, this runs to its end in its own task even if the worker hangs up: axum drops a
/// handler whose client is gone, and a handler dropped between the rename and the commit left the
/// file replaced under its old hash (a re-claimed attempt then fetched a checkpoint that no
/// longer matched the hash it was handed).
async fn store(
    s: &AppState,
    worker_id: i64,
    run_id: i64,
    name: &str,
    attempt: i32,
    from: &std::path::Path,
    blob: Blob,
) -> Result<u64, ApiError> {
    let (s, name, from) = (s.clone(), name.to_string(), from.to_path_buf());
    tokio::spawn(async move {
        let mut tx = s.worker_pool.begin().await?;
        queue::lock_current(&mut tx, &s.worker_pool, run_id, worker_id, attempt).await?;
        // Recorded first, moved into place second, committed last: a failure before the
        // commit leaves the old file and its row as they were.
        db::runs::upsert_artifact_in(
            &mut tx,
            run_id,
            &name,
            blob.bytes as i64,
            &blob.sha256,
            attempt,
        )
        .await?;
        tokio::fs::rename(&from, s.artifacts_dir(run_id).join(&name))
            .await
            .map_err(ApiError::internal)?;
        tx.commit().await?;
        Ok(blob.bytes)
    })
    .await
    .map_err(ApiError::internal)?
}
