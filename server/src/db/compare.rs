//! The metrics the comparison page (`/compare`) reads of several runs at once.

use sqlx::PgPool;
use std::collections::HashMap;

/// Every `eval/*` point and every point of `keys` of the runs `ids`, with its wall time:
/// (run id, key, step, value, wall time), ordered by run, key and step.
pub async fn eval_and_chart_points(
    pool: &PgPool,
    ids: &[i64],
    keys: &[String],
) -> sqlx::Result<Vec<(i64, String, i64, f64, f64)>> {
    sqlx::query_as(
        "SELECT run_id, key, step, value, wall_time FROM metrics
         WHERE run_id = ANY($1) AND (key LIKE 'eval/%' OR key = ANY($2))
         ORDER BY run_id, key, step",
    )
    .bind(ids)
    .bind(keys)
    .fetch_all(pool)
    .await
}

/// The wall time of each run's first metric (runs without metrics are absent).
pub async fn first_wall_times(pool: &PgPool, ids: &[i64]) -> sqlx::Result<HashMap<i64, f64>> {
    Ok(sqlx::query_as::<_, (i64, f64)>(
        "SELECT run_id, MIN(wall_time) FROM metrics WHERE run_id = ANY($1) GROUP BY run_id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect())
}

/// Seconds since the run's first metric at each of `steps` (the earliest write of that step):
/// the run page's time axis. Steps absent from the run are absent.
pub async fn seconds_at_steps(
    pool: &PgPool,
    run_id: i64,
    steps: &[i64],
) -> sqlx::Result<HashMap<i64, f64>> {
    Ok(sqlx::query_as::<_, (i64, f64)>(
        "WITH t0 AS (SELECT MIN(wall_time) AS t FROM metrics WHERE run_id = $1)
         SELECT step, MIN(wall_time) - (SELECT t FROM t0) FROM metrics
         WHERE run_id = $1 AND step = ANY($2) GROUP BY step",
    )
    .bind(run_id)
    .bind(steps)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect())
}
