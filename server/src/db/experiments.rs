//! Experiments: a named spec and the chain of runs made from it (`runs.experiment_id`, with the
//! run's place in the chain in `runs.experiment_role`).

use super::creator_column;
use super::runs::RunRow;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExperimentRow {
    pub id: i64,
    pub name: String,
    pub spec: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// The name of the user who created it (`None`: before accounts).
    pub creator: Option<String>,
}

/// An experiment with counts of its runs by state, for the list.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExperimentSummary {
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub creator: Option<String>,
    pub runs: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub active: i64,
}

pub async fn create_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    name: &str,
    spec: &serde_json::Value,
    created_by: Option<i64>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO experiments (name, spec, created_by) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(name)
    .bind(spec)
    .bind(created_by)
    .fetch_one(&mut **tx)
    .await
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<ExperimentSummary>> {
    sqlx::query_as(concat!(
        "SELECT e.id, e.name, e.created_at, ",
        creator_column!("e"),
        ", COUNT(r.id) AS runs,
                COUNT(r.id) FILTER (WHERE r.status = 'succeeded') AS succeeded,
                COUNT(r.id) FILTER (WHERE r.status IN ('failed', 'cancelled')) AS failed,
                COUNT(r.id) FILTER (WHERE r.status IN ('queued', 'running')) AS active
         FROM experiments e LEFT JOIN runs r ON r.experiment_id = e.id
         GROUP BY e.id ORDER BY e.id DESC LIMIT 500"
    ))
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<ExperimentRow>> {
    let sql = concat!(
        "SELECT id, name, spec, created_at, ",
        creator_column!("experiments"),
        " FROM experiments WHERE id = $1"
    );
    super::row_by(pool, sql, id).await
}

/// The runs of an experiment, each with its role ([`RunRow::experiment_role`]).
pub async fn runs(pool: &PgPool, experiment_id: i64) -> sqlx::Result<Vec<RunRow>> {
    super::rows_by(
        pool,
        "SELECT * FROM runs WHERE experiment_id = $1 ORDER BY id",
        experiment_id,
    )
    .await
}

/// The last step each run reported a metric at (runs without metrics are absent).
pub async fn last_steps(pool: &PgPool, run_ids: &[i64]) -> sqlx::Result<Vec<(i64, i64)>> {
    super::rows_by(
        pool,
        "SELECT run_id, MAX(step) FROM metrics WHERE run_id = ANY($1) GROUP BY run_id",
        run_ids,
    )
    .await
}

/// The latest value of every `eval/*` metric of a run: (key without `eval/`, value).
pub async fn final_eval_metrics(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<(String, f64)>> {
    super::rows_by(
        pool,
        "SELECT DISTINCT ON (key) substr(key, 6), value FROM metrics
         WHERE run_id = $1 AND key LIKE 'eval/%' ORDER BY key, step DESC",
        run_id,
    )
    .await
}
