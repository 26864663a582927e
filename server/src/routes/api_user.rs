//! `/api/v1/` for people's scripts: create, read and cancel runs, create and read experiments.
//! Each route needs a personal API token of a user with the route's role (the gate is
//! `accounts::gate::require_api_role`, layered per group in `routes::router`); the worker token
//! is refused here.

use crate::accounts::CurrentUser;
use crate::db;
use crate::error::{ApiError, ApiJson};
use crate::experiments;
use crate::state::AppState;
use crate::submit;
use aligndet_common::jobs::JobConfig;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;

/// `POST /api/v1/runs`: queue a run from a config (what the UI form does, for scripts).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    pub name: String,
    pub config: serde_json::Value,
    #[serde(default)]
    pub max_attempts: Option<i32>,
    #[serde(default)]
    pub parents: Vec<i64>,
    /// Runs this one waits for: it is claimable once all have succeeded, and fails when one
    /// fails or is cancelled.
    #[serde(default)]
    pub depends_on: Vec<i64>,
    /// What the worker must have (device, GPU memory, devices, labels); by default what the
    /// config needs.
    #[serde(default)]
    pub requirements: Option<aligndet_common::capabilities::Requirements>,
    /// Higher is claimed first (−100..=100).
    #[serde(default)]
    pub priority: i32,
}

/// The same checks as the page forms ([`crate::submit`]); a refusal names the field.
pub async fn create_run(
    State(s): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ApiJson(req): ApiJson<CreateRun>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let config = JobConfig::from_written(req.config)
        .map_err(|e| ApiError::bad_request(format!("invalid config: {e}")))?;
    let run = submit::NewRun {
        name: req.name,
        config,
        max_attempts: req.max_attempts,
        parents: req.parents,
        depends_on: req.depends_on,
        aligned_rule: false,
        requirements: req.requirements,
        priority: req.priority,
        created_by: Some(user.id),
    };
    match submit::submit(&s, run).await {
        Ok(id) => Ok(Json(serde_json::json!({ "id": id }))),
        Err(e @ submit::SubmitError::Field(_)) => Err(ApiError::bad_request(e.to_string())),
        Err(submit::SubmitError::Internal(e)) => Err(ApiError::internal(e)),
    }
}

pub async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match db::runs::request_cancel(&s.pool, id).await? {
        Some(status) => Ok(Json(serde_json::json!({ "status": status }))),
        None => Err(ApiError::not_found(format!("run {id} not found"))),
    }
}

/// Run state for scripts and tests.
pub async fn run_summary(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let run = db::runs::get(&s.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id} not found")))?;
    let attempts = db::runs::attempts(&s.pool, id).await?;
    let metric_points = db::runs::metric_count(&s.pool, id).await?;
    let keys = db::runs::metric_keys(&s.pool, id).await?;
    let depends_on: Vec<i64> = db::runs::dependencies(&s.pool, &[id])
        .await?
        .into_iter()
        .map(|d| d.parent_id)
        .collect();
    let waiting_for = db::runs::waiting_for(&s.pool, id).await?;
    let (requirements, priority) = db::runs::requirements(&s.pool, id)
        .await?
        .unwrap_or_default();
    let slurm = crate::queue::slurm::latest_for_run(&s.pool, id).await?;
    let waiting_for_worker = if run.status == aligndet_common::jobs::RunStatus::Queued {
        crate::queue::matching::waiting_reason(&s.pool, id).await?
    } else {
        None
    };
    Ok(Json(serde_json::json!({
        "requirements": requirements,
        "priority": priority,
        "waiting_for_worker": waiting_for_worker,
        "slurm": slurm,
        "depends_on": depends_on,
        "waiting_for": waiting_for,
        "id": run.id,
        "created_by": db::users::name_of(&s.pool, run.created_by).await?,
        "kind": run.kind,
        "name": run.name,
        "status": run.status,
        "attempts": run.attempts,
        "worker_id": run.worker_id,
        "error": run.error,
        "cancel_requested": run.cancel_requested,
        "metric_points": metric_points,
        "metric_keys": keys.into_iter().map(|(k, n)| serde_json::json!({"key": k, "points": n})).collect::<Vec<_>>(),
        "attempt_history": attempts.into_iter().map(|a| serde_json::json!({
            "attempt": a.attempt, "worker_id": a.worker_id, "outcome": a.outcome, "note": a.note,
        })).collect::<Vec<_>>(),
    })))
}

/// `POST /api/v1/experiments`: an experiment spec (as the form's fields, in JSON) → the
/// experiment and its runs, `{id, runs: [{id, role, seed, fraction}]}`.
pub async fn create_experiment(
    State(s): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ApiJson(spec): ApiJson<experiments::ExperimentSpec>,
) -> Result<Json<experiments::CreatedExperiment>, ApiError> {
    match experiments::create(&s, &spec, Some(user.id)).await? {
        Ok(created) => Ok(Json(created)),
        Err(e) => Err(ApiError::bad_request(e)),
    }
}

/// `GET /api/v1/experiments/{id}`: the spec and every run with role, status, what it waits
/// for, progress and, for succeeded fine-tunes, the final COCO statistics.
pub async fn experiment_summary(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match experiments::summary_json(&s, id)
        .await
        .map_err(ApiError::internal)?
    {
        Some(v) => Ok(Json(v)),
        None => Err(ApiError::not_found(format!("experiment {id} not found"))),
    }
}
