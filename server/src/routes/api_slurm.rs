//! `/api/v1/slurm/`: the Slurm agent's calls (`aligndet_common::slurm`). The agent is a
//! registered worker (worker token and worker key); its placements are kept by `queue::slurm`.

use crate::error::{ApiError, ApiJson};
use crate::queue::slurm;
use crate::state::AppState;
use crate::worker_auth::CallingWorker;
use aligndet_common::slurm::{
    LivePlacement, PlaceableRequest, PlaceableRun, Rejected, ReserveRequest, Reserved, StateReport,
    Submitted, check_state,
};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

/// At most this many runs per answer, whatever the agent asks for.
const MAX_PLACEABLE: u32 = 100;
/// sbatch's stderr and Slurm's reasons are kept to this many characters.
const MAX_TEXT: usize = 2000;

pub async fn placeable(
    State(s): State<AppState>,
    CallingWorker(agent): CallingWorker,
    ApiJson(req): ApiJson<PlaceableRequest>,
) -> Result<Json<Vec<PlaceableRun>>, ApiError> {
    let limit = req.limit.min(MAX_PLACEABLE) as i64;
    Ok(Json(slurm::placeable(&s.worker_pool, agent, limit).await?))
}

pub async fn reserve(
    State(s): State<AppState>,
    CallingWorker(agent): CallingWorker,
    ApiJson(req): ApiJson<ReserveRequest>,
) -> Result<Json<Reserved>, ApiError> {
    match slurm::reserve(&s.worker_pool, agent, req.run_id).await? {
        Some(placement_id) => Ok(Json(Reserved { placement_id })),
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "run {} is not queued, or already has a live Slurm job",
                req.run_id
            ),
        )),
    }
}

pub async fn live(
    State(s): State<AppState>,
    CallingWorker(agent): CallingWorker,
) -> Result<Json<Vec<LivePlacement>>, ApiError> {
    Ok(Json(slurm::live(&s.worker_pool, agent).await?))
}

pub async fn submitted(
    State(s): State<AppState>,
    CallingWorker(agent): CallingWorker,
    Path(id): Path<i64>,
    ApiJson(req): ApiJson<Submitted>,
) -> Result<Json<Value>, ApiError> {
    if req.slurm_job_id <= 0 {
        return Err(ApiError::bad_request("a Slurm job id is a positive number"));
    }
    let known = slurm::submitted(&s.worker_pool, agent, id, req.slurm_job_id).await?;
    tracing::info!("placement #{id}: Slurm job {}", req.slurm_job_id);
    answer(known, id)
}

pub async fn rejected(
    State(s): State<AppState>,
    CallingWorker(agent): CallingWorker,
    Path(id): Path<i64>,
    ApiJson(req): ApiJson<Rejected>,
) -> Result<Json<Value>, ApiError> {
    let error = clip(req.error.trim());
    let known = slurm::rejected(&s.worker_pool, agent, id, &error).await?;
    tracing::info!("placement #{id}: sbatch refused the job: {error}");
    answer(known, id)
}

pub async fn state(
    State(s): State<AppState>,
    CallingWorker(agent): CallingWorker,
    Path(id): Path<i64>,
    ApiJson(mut report): ApiJson<StateReport>,
) -> Result<Json<Value>, ApiError> {
    check_state(&report.state).map_err(ApiError::bad_request)?;
    for text in [&mut report.reason, &mut report.node, &mut report.exit_code] {
        *text = text.as_deref().map(clip);
    }
    let known = slurm::report(&s.worker_pool, agent, id, &report).await?;
    answer(known, id)
}

fn answer(known: bool, placement: i64) -> Result<Json<Value>, ApiError> {
    if known {
        Ok(Json(json!({ "ok": true })))
    } else {
        Err(ApiError::not_found(format!(
            "placement {placement} is not a live placement of this agent"
        )))
    }
}

/// At most [`MAX_TEXT`] characters, control characters but newlines replaced.
fn clip(text: &str) -> String {
    text.chars()
        .take(MAX_TEXT)
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect()
}
