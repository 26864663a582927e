//! `/api/v1/`: the worker protocol (see `aligndet_common::api`). Every route here requires the
//! worker token (see `security::require_worker_token`); what people's scripts call is in
//! `api_user`.

use crate::db;
use crate::error::{ApiError, ApiJson};
use crate::queue;
use crate::state::AppState;
use crate::worker_auth::{CallingWorker, CurrentReport, new_worker_key};
use aligndet_common::api::*;
use aligndet_common::capabilities::Capabilities;
use aligndet_common::jobs::{JobConfig, RunStatus};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

const MAX_WORKER_INFO_BYTES: usize = 64 * 1024;

pub async fn register(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<RegisterWorker>,
) -> Result<Json<WorkerRegistered>, ApiError> {
    if req.protocol_version != PROTOCOL_VERSION {
        return Err(ApiError::bad_request(format!(
            "protocol version {} not supported; this server speaks {PROTOCOL_VERSION}",
            req.protocol_version
        )));
    }
    aligndet_common::names::check_display_name(&req.name, "the worker name", 200)
        .map_err(ApiError::bad_request)?;
    aligndet_common::names::check_display_name(&req.device, "the worker device", 100)
        .map_err(ApiError::bad_request)?;
    // The facts are shown on the workers page: a few KiB is plenty, megabytes are an attack.
    let info_bytes = serde_json::to_string(&req.info).map_or(usize::MAX, |t| t.len());
    if info_bytes > MAX_WORKER_INFO_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "worker info is {info_bytes} bytes of JSON; at most {MAX_WORKER_INFO_BYTES} are kept"
            ),
        ));
    }
    let capabilities = match req.capabilities {
        Some(c) => {
            c.validate()
                .map_err(|m| ApiError::bad_request(format!("capabilities: {m}")))?;
            c
        }
        None => Capabilities::assumed_for_device(&req.device),
    };
    let capabilities = serde_json::to_value(&capabilities).map_err(ApiError::internal)?;
    let (worker_key, digest) = new_worker_key();
    let id = db::workers::register(
        &s.worker_pool,
        &req.name,
        &req.device,
        &req.info,
        &capabilities,
        &digest,
    )
    .await?;
    tracing::info!("worker #{id} {:?} registered ({})", req.name, req.device);
    Ok(Json(WorkerRegistered {
        worker_id: id,
        heartbeat_interval_s: s.cfg.heartbeat_seconds,
        worker_key,
    }))
}

pub async fn claim(
    State(s): State<AppState>,
    CallingWorker(worker_id): CallingWorker,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> Result<Response, ApiError> {
    if req.worker_id != worker_id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this worker key belongs to worker #{worker_id}, not #{}",
                req.worker_id
            ),
        ));
    }
    let Some(run) =
        queue::claim(&s.worker_pool, worker_id, req.run_id, s.cfg.lease_seconds).await?
    else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let config: JobConfig = run.config.typed.clone().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("run {} has an unreadable config: {e}", run.id),
        )
    })?;
    let (dataset_content, inputs) = match job_inputs(&s, run.id, run.dataset_id).await {
        Ok(found) => found,
        Err(e) => {
            // The job could never start: its run fails, saying which input, and the worker
            // goes on to the next.
            let error = format!("the job's inputs are not available: {e:#}");
            tracing::warn!("run #{}: {error}", run.id);
            queue::finish(
                &s.worker_pool,
                run.id,
                worker_id,
                run.attempts,
                RunStatus::Failed,
                Some(&error),
                false,
            )
            .await?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    };
    let stamp = crate::manage::stamp::Stamp::new(
        run.attempts,
        req.stamp.clone(),
        dataset_content.as_ref(),
        &inputs,
    );
    let stamp = serde_json::to_value(&stamp).map_err(ApiError::internal)?;
    db::run_manage::set_stamp(&s.worker_pool, run.id, &stamp).await?;
    let spec = JobSpec {
        run_id: run.id,
        attempt: run.attempts,
        name: run.name,
        config,
        dataset: None,
        dataset_content,
        inputs,
        lease_seconds: s.cfg.lease_seconds,
        image_limits: s.cfg.image_limits(),
        artifact_limit_bytes: Some(s.cfg.artifact_limit_mib << 20),
    };
    tracing::info!(
        "run #{} attempt {} claimed by worker #{}",
        spec.run_id,
        spec.attempt,
        worker_id
    );
    Ok(Json(spec).into_response())
}

/// A job's dataset and readable artifacts by content (hashed on first use).
async fn job_inputs(
    s: &AppState,
    run_id: i64,
    dataset_id: Option<i64>,
) -> anyhow::Result<(
    Option<aligndet_common::content::DatasetContent>,
    Vec<aligndet_common::content::ArtifactInput>,
)> {
    let dataset = match dataset_id {
        Some(id) => match db::datasets::get(&s.worker_pool, id).await? {
            Some(d) => Some(crate::content::dataset_content(s, &d).await?),
            None => anyhow::bail!("dataset {id} no longer exists"),
        },
        None => None,
    };
    Ok((dataset, crate::content::artifact_inputs(s, run_id).await?))
}

pub async fn heartbeat(
    State(s): State<AppState>,
    CallingWorker(worker_id): CallingWorker,
    Path(id): Path<i64>,
    ApiJson(hb): ApiJson<Heartbeat>,
) -> Result<Json<HeartbeatReply>, ApiError> {
    let cancel = queue::heartbeat(
        &s.worker_pool,
        id,
        worker_id,
        hb.attempt,
        s.cfg.lease_seconds,
    )
    .await?;
    Ok(Json(HeartbeatReply {
        cancel_requested: cancel,
        lease_seconds: s.cfg.lease_seconds,
    }))
}

pub async fn metrics(
    State(s): State<AppState>,
    CurrentReport { run: id, batch }: CurrentReport<MetricsBatch>,
) -> Result<Json<serde_json::Value>, ApiError> {
    for p in &batch.points {
        let safe = p
            .key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'));
        if p.key.is_empty() || p.key.len() > 200 || !safe {
            return Err(ApiError::bad_request(format!(
                "metric key {:?}: use 1 to 200 of A-Z a-z 0-9 _ . / -",
                p.key
            )));
        }
    }
    // JSON cannot carry NaN/inf, so every value here is finite.
    db::runs::insert_metrics(&s.pool, id, batch.attempt, &batch.points).await?;
    crate::serving::live_series::note_write(&s, id);
    Ok(Json(serde_json::json!({ "stored": batch.points.len() })))
}

pub async fn logs(
    State(s): State<AppState>,
    CurrentReport { run: id, batch }: CurrentReport<LogBatch>,
) -> Result<Json<serde_json::Value>, ApiError> {
    db::logs::insert(&s.pool, id, batch.attempt, &batch.lines).await?;
    Ok(Json(serde_json::json!({ "stored": batch.lines.len() })))
}

pub async fn proposals(
    State(s): State<AppState>,
    CurrentReport { run: id, batch }: CurrentReport<ProposalsBatch>,
) -> Result<Json<serde_json::Value>, ApiError> {
    for img in &batch.images {
        if img.boxes.len() != img.removed_by.len() {
            return Err(ApiError::bad_request(format!(
                "image {}: {} boxes but {} filter verdicts",
                img.image_id,
                img.boxes.len(),
                img.removed_by.len()
            )));
        }
    }
    db::proposals::upsert(&s.pool, id, batch.attempt, &batch.images).await?;
    Ok(Json(serde_json::json!({ "stored": batch.images.len() })))
}

#[derive(Deserialize)]
pub struct DoneQuery {
    #[serde(default)]
    full: Option<u8>,
}

pub async fn proposals_done(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<DoneQuery>,
) -> Result<Json<ProposalsDone>, ApiError> {
    let image_ids = db::proposals::done_image_ids(&s.pool, id).await?;
    let images = if q.full.unwrap_or(0) != 0 {
        db::proposals::all(&s.pool, id)
            .await?
            .into_iter()
            .map(|row| {
                let (boxes, removed_by) = row.boxes().into_iter().unzip();
                ImageProposals {
                    image_id: row.image_id,
                    boxes,
                    removed_by,
                    seconds: row.seconds,
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Json(ProposalsDone { image_ids, images }))
}

pub async fn status(
    State(s): State<AppState>,
    CallingWorker(worker_id): CallingWorker,
    Path(id): Path<i64>,
    ApiJson(update): ApiJson<StatusUpdate>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !update.status.is_terminal() {
        return Err(ApiError::bad_request(
            "a worker reports only succeeded, failed or cancelled",
        ));
    }
    queue::finish(
        &s.worker_pool,
        id,
        worker_id,
        update.attempt,
        update.status,
        update.error.as_deref(),
        update.retryable,
    )
    .await?;
    crate::content::discard_partial_uploads(&s, id).await;
    tracing::info!("run #{id} attempt {}: {}", update.attempt, update.status);
    Ok(Json(serde_json::json!({ "ok": true })))
}

/// Workers fetch job inputs (e.g. an evaluate job's detections) from the artifact store:
/// streamed from the file with Range and ETag, on the worker pool so page viewers cannot
/// starve it of connections.
pub async fn download_artifact(
    State(s): State<AppState>,
    Path((id, name)): Path<(i64, String)>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    use crate::serving::artifacts::serve;
    use crate::state::ArtifactFile;
    match s
        .locate_artifact(&s.worker_pool, id, &name)
        .await
        .map_err(internal)?
    {
        ArtifactFile::BadName(why) => Err(ApiError::bad_request(why)),
        ArtifactFile::Missing(msg) => Err(ApiError::not_found(msg)),
        ArtifactFile::Found(path) => serve(path, req, None).await.map_err(internal),
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e)
}
