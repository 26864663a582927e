use super::select_with_creator;
use aligndet_common::api::MetricPoint;
use aligndet_common::capabilities::Requirements;
use aligndet_common::jobs::{RunKind, RunStatus};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: i64,
    #[sqlx(try_from = "String")]
    pub kind: RunKind,
    pub name: String,
    pub config: super::stored_config::StoredConfig,
    #[sqlx(try_from = "String")]
    pub status: RunStatus,
    pub dataset_id: Option<i64>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub worker_id: Option<i64>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Its place in the chain of the experiment that made it, if one did.
    pub experiment_role: Option<String>,
    /// The user who created it (`None`: made before accounts, or the user was deleted).
    #[sqlx(default)]
    pub created_by: Option<i64>,
    /// That user's name, where the query joins it (lists and the run page).
    #[sqlx(default)]
    pub creator: Option<String>,
    /// Labels people gave it (`tag:x` finds it).
    #[sqlx(default)]
    pub tags: Vec<String>,
    /// A free-text note.
    #[sqlx(default)]
    pub note: String,
    /// When it was archived (hidden from lists unless asked for).
    #[sqlx(default)]
    pub archived_at: Option<DateTime<Utc>>,
    /// The reproducibility stamp recorded at its last claim (`db::run_manage::Stamp`).
    #[sqlx(default)]
    pub stamp: Option<serde_json::Value>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub attempt: i32,
    pub worker_id: Option<i64>,
    pub worker_name: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ArtifactRow {
    pub name: String,
    pub bytes: i64,
    pub attempt: i32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ParentRow {
    pub parent_id: i64,
    pub role: String,
    pub name: String,
}

pub struct NewRun<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub config: serde_json::Value,
    pub dataset_id: Option<i64>,
    pub max_attempts: i32,
    /// (parent run id, role), e.g. a fine-tune's pre-training.
    pub parents: Vec<(i64, String)>,
    /// (experiment id, role) of a run an experiment makes.
    pub experiment: Option<(i64, &'a str)>,
    /// What its worker must have (the claim matches it against the worker's capabilities).
    pub requirements: &'a Requirements,
    /// Higher is claimed first.
    pub priority: i32,
    /// The user creating it.
    pub created_by: Option<i64>,
}

/// A run's requirements (JSON) and priority.
pub async fn requirements(
    pool: &PgPool,
    run_id: i64,
) -> sqlx::Result<Option<(serde_json::Value, i32)>> {
    sqlx::query_as("SELECT requirements, priority FROM runs WHERE id = $1")
        .bind(run_id)
        .fetch_optional(pool)
        .await
}

/// Store a run and enqueue it in one transaction.
pub async fn create(pool: &PgPool, new: &NewRun<'_>) -> sqlx::Result<i64> {
    let mut tx = pool.begin().await?;
    let id = create_in(&mut tx, new).await?;
    tx.commit().await?;
    Ok(id)
}

/// Insert a queued run inside the caller's transaction: workers cannot claim it before the
/// caller commits (e.g. after storing the run's input artifact).
pub async fn create_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    new: &NewRun<'_>,
) -> sqlx::Result<i64> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO runs (kind, name, config, status, dataset_id, max_attempts,
                           experiment_id, experiment_role, requirements, priority, created_by)
         VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(new.kind)
    .bind(new.name)
    .bind(&new.config)
    .bind(new.dataset_id)
    .bind(new.max_attempts)
    .bind(new.experiment.map(|e| e.0))
    .bind(new.experiment.map(|e| e.1))
    .bind(sqlx::types::Json(new.requirements))
    .bind(new.priority)
    .bind(new.created_by)
    .fetch_one(&mut **tx)
    .await?;
    for (parent, role) in &new.parents {
        sqlx::query("INSERT INTO run_parents (run_id, parent_id, role) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(parent)
            .bind(role)
            .execute(&mut **tx)
            .await?;
    }
    super::notify_run_changed(&mut **tx, id).await?;
    Ok(id)
}

/// Make a new run wait for other runs (run id, role): it becomes claimable only once each has
/// succeeded, and fails when one fails or is cancelled. Call it in the transaction that created
/// the run. The dependencies are locked (`FOR SHARE`) before they are checked, so one cannot end
/// unseen between this check and the commit. The inner error names a dependency that does not
/// exist or has already failed or been cancelled (the run would never start).
pub async fn add_dependencies_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    run_id: i64,
    deps: &[(i64, String)],
) -> sqlx::Result<Result<(), String>> {
    if deps.is_empty() {
        return Ok(Ok(()));
    }
    let ids: Vec<i64> = deps.iter().map(|d| d.0).collect();
    let found: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, status FROM runs WHERE id = ANY($1) ORDER BY id FOR SHARE")
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await?;
    for (dep, _) in deps {
        match found.iter().find(|(id, _)| id == dep) {
            None => return Ok(Err(format!("run {dep} not found"))),
            Some((_, status)) if status == "failed" || status == "cancelled" => {
                return Ok(Err(format!(
                    "run {dep} is {status}: a run waiting for it would never start"
                )));
            }
            Some(_) if *dep == run_id => {
                return Ok(Err(format!("run {dep} cannot wait for itself")));
            }
            Some(_) => {}
        }
    }
    for (dep, role) in deps {
        sqlx::query(
            "INSERT INTO run_parents (run_id, parent_id, role, waits) VALUES ($1, $2, $3, true)
             ON CONFLICT (run_id, parent_id) DO UPDATE SET waits = true",
        )
        .bind(run_id)
        .bind(dep)
        .bind(role)
        .execute(&mut **tx)
        .await?;
    }
    Ok(Ok(()))
}

/// A run that `run_id` waits for, with its status.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DependencyRow {
    pub run_id: i64,
    pub parent_id: i64,
    pub role: String,
    pub status: String,
}

/// The dependencies of these runs (every one, met or not), by run then dependency.
pub async fn dependencies(pool: &PgPool, run_ids: &[i64]) -> sqlx::Result<Vec<DependencyRow>> {
    super::rows_by(
        pool,
        "SELECT p.run_id, p.parent_id, p.role, r.status FROM run_parents p
         JOIN runs r ON r.id = p.parent_id
         WHERE p.run_id = ANY($1) AND p.waits ORDER BY p.run_id, p.parent_id",
        run_ids,
    )
    .await
}

/// The dependencies of a run that have not succeeded yet (what it waits for).
pub async fn waiting_for(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<i64>> {
    super::values_by(
        pool,
        "SELECT p.parent_id FROM run_parents p JOIN runs r ON r.id = p.parent_id
         WHERE p.run_id = $1 AND p.waits AND r.status <> 'succeeded' ORDER BY p.parent_id",
        run_id,
    )
    .await
}

/// A run ended `failed` or `cancelled`: every queued run waiting for it, directly or through
/// other waiting runs, fails with an error naming the run it waited for. Call it in the
/// transaction that ended the run. Returns the runs failed.
pub async fn fail_dependents_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    run_id: i64,
) -> sqlx::Result<Vec<i64>> {
    let mut failed = Vec::new();
    let mut frontier = vec![run_id];
    while !frontier.is_empty() {
        // Each level sees the previous level's new status, so the message says why.
        let next: Vec<i64> = sqlx::query_scalar(
            "UPDATE runs r SET status = 'failed', finished_at = now(), updated_at = now(),
                    lease_expires_at = NULL,
                    error = 'waits for run ' || d.id || ', which '
                            || CASE WHEN d.status = 'cancelled' THEN 'was cancelled' ELSE d.status END
             FROM run_parents p JOIN runs d ON d.id = p.parent_id
             WHERE p.run_id = r.id AND p.waits AND p.parent_id = ANY($1)
               AND d.status IN ('failed', 'cancelled') AND r.status = 'queued'
             RETURNING r.id",
        )
        .bind(&frontier)
        .fetch_all(&mut **tx)
        .await?;
        for id in &next {
            super::notify_run_changed(&mut **tx, *id).await?;
        }
        failed.extend_from_slice(&next);
        frontier = next;
    }
    Ok(failed)
}

pub async fn set_config(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    run_id: i64,
    config: &serde_json::Value,
) -> sqlx::Result<()> {
    super::write_by(
        &mut **tx,
        "UPDATE runs SET config = $2 WHERE id = $1",
        run_id,
        config,
    )
    .await?;
    Ok(())
}

/// Record an artifact inside the caller's transaction.
pub async fn insert_artifact_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    run_id: i64,
    name: &str,
    bytes: i64,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO artifacts (run_id, name, bytes, attempt) VALUES ($1, $2, $3, 0)")
        .bind(run_id)
        .bind(name)
        .bind(bytes)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub use super::run_search::{RunFilter, RunSort, list};

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<RunRow>> {
    super::row_by(pool, select_with_creator!("runs", "WHERE id = $1"), id).await
}

pub async fn attempts(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<AttemptRow>> {
    super::rows_by(
        pool,
        "SELECT a.attempt, a.worker_id, w.name AS worker_name, a.started_at, a.ended_at, a.outcome, a.note
         FROM run_attempts a LEFT JOIN workers w ON w.id = a.worker_id
         WHERE a.run_id = $1 ORDER BY a.attempt",
        run_id,
    )
    .await
}

pub async fn parents(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<ParentRow>> {
    super::rows_by(
        pool,
        "SELECT p.parent_id, p.role, r.name FROM run_parents p JOIN runs r ON r.id = p.parent_id
         WHERE p.run_id = $1 ORDER BY p.parent_id",
        run_id,
    )
    .await
}

/// Cancel: a queued run is cancelled at once; a running one is flagged and its worker, told on
/// its next heartbeat, stops and reports `cancelled`. Returns the run's new status.
pub async fn request_cancel(pool: &PgPool, run_id: i64) -> sqlx::Result<Option<String>> {
    let mut tx = pool.begin().await?;
    let status: Option<String> = sqlx::query_scalar(
        "UPDATE runs SET
            status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
            finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END,
            cancel_requested = (status = 'running') OR cancel_requested,
            updated_at = now()
         WHERE id = $1 RETURNING status",
    )
    .bind(run_id)
    .fetch_optional(&mut *tx)
    .await?;
    if status.is_some() {
        super::notify_run_changed(&mut *tx, run_id).await?;
    }
    if status.as_deref() == Some("cancelled") {
        fail_dependents_in(&mut tx, run_id).await?;
    }
    tx.commit().await?;
    Ok(status)
}

/// Store metric points; a point sent twice is stored once, and a re-sent step takes the new value.
pub async fn insert_metrics(
    pool: &PgPool,
    run_id: i64,
    attempt: i32,
    points: &[MetricPoint],
) -> sqlx::Result<()> {
    // Within one statement a key may appear only once for ON CONFLICT DO UPDATE: keep the last.
    // Rows go in (key, step) order so that overlapping re-sends of one batch lock the same rows
    // in the same order and wait for each other instead of deadlocking.
    let mut dedup: std::collections::BTreeMap<(&str, i64), &MetricPoint> = Default::default();
    for p in points {
        dedup.insert((p.key.as_str(), p.step), p);
    }
    let keys: Vec<&str> = dedup.values().map(|p| p.key.as_str()).collect();
    let steps: Vec<i64> = dedup.values().map(|p| p.step).collect();
    let values: Vec<f64> = dedup.values().map(|p| p.value).collect();
    let walls: Vec<f64> = dedup.values().map(|p| p.wall_time).collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO metrics (run_id, key, step, value, wall_time, attempt)
         SELECT $1, k, s, v, w, $6 FROM UNNEST($2::TEXT[], $3::BIGINT[], $4::FLOAT8[], $5::FLOAT8[]) AS t(k, s, v, w)
         ON CONFLICT (run_id, key, step) DO UPDATE
           SET value = EXCLUDED.value, wall_time = EXCLUDED.wall_time, attempt = EXCLUDED.attempt",
    )
    .bind(run_id)
    .bind(&keys)
    .bind(&steps)
    .bind(&values)
    .bind(&walls)
    .bind(attempt)
    .execute(&mut *tx)
    .await?;
    super::notify_run_changed(&mut *tx, run_id).await?;
    tx.commit().await
}

pub async fn metric_keys(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<(String, i64)>> {
    super::rows_by(
        pool,
        "SELECT key, COUNT(*) FROM metrics WHERE run_id = $1 GROUP BY key ORDER BY key",
        run_id,
    )
    .await
}

/// (step, value) pairs of one series in step order.
pub async fn metric_series(pool: &PgPool, run_id: i64, key: &str) -> sqlx::Result<Vec<(i64, f64)>> {
    sqlx::query_as("SELECT step, value FROM metrics WHERE run_id = $1 AND key = $2 ORDER BY step")
        .bind(run_id)
        .bind(key)
        .fetch_all(pool)
        .await
}

/// Per key, in key order: how many points (finite or not), the last step, and the smallest
/// value (a one-point series' value, NaN included, without reading any series twice).
pub async fn metric_key_ends<'e>(
    db: impl sqlx::PgExecutor<'e>,
    run_id: i64,
) -> sqlx::Result<Vec<(String, i64, i64, f64)>> {
    let sql = "SELECT key, COUNT(*), MAX(step), MIN(value) FROM metrics WHERE run_id = $1
               GROUP BY key ORDER BY key";
    super::rows_by(db, sql, run_id).await
}

/// Every key's finite points reduced in SQL by the rule of
/// [`aligndet_common::series::downsample_keep_extremes`] (same buckets of consecutive points,
/// same first / minimum / maximum / last choice, ties to the earliest step), so only a few
/// hundred rows per key leave the database however long the run is. (key, step, value) in
/// key and step order, one row per step.
pub async fn metric_series_downsampled<'e>(
    db: impl sqlx::PgExecutor<'e>,
    run_id: i64,
    max_points: usize,
) -> sqlx::Result<Vec<(String, i64, f64)>> {
    let max_points = max_points.max(4) as i64;
    // `lo` / `hi` are [value, ±step] so MIN / MAX pick the extreme and, among equals, the
    // earliest step, as the Rust rule does; steps stay exact in a float8 below 2^53. The first
    // and last points are primary-key lookups; LIMIT 1 keeps them so (no join the planner
    // could turn into a scan per bucket when a fresh table has no statistics yet).
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "WITH f AS (
             SELECT key, step, value, row_number() OVER (PARTITION BY key ORDER BY step) - 1 AS i
             FROM metrics WHERE run_id = $1 AND value NOT IN ('NaN', 'Infinity', '-Infinity')
         ), c AS (
             SELECT key, COUNT(*) AS n FROM metrics
             WHERE run_id = $1 AND value NOT IN ('NaN', 'Infinity', '-Infinity') GROUP BY key
         ), b AS (
             SELECT f.key, MIN(f.step) AS first_step, MAX(f.step) AS last_step,
                    MIN(ARRAY[f.value, f.step]) AS lo, MAX(ARRAY[f.value, -f.step]) AS hi
             FROM f JOIN c USING (key)
             GROUP BY f.key, CASE WHEN c.n <= $2 THEN f.i ELSE f.i / ((c.n + $3 - 1) / $3) END
         )
         SELECT b.key, p.step, m.value FROM b
         CROSS JOIN LATERAL (VALUES (b.first_step), (b.last_step)) AS p(step)
         CROSS JOIN LATERAL (
             SELECT value FROM metrics WHERE run_id = $1 AND key = b.key AND step = p.step LIMIT 1
         ) m
         UNION ALL SELECT key, lo[2]::BIGINT, lo[1] FROM b
         UNION ALL SELECT key, (-hi[2])::BIGINT, hi[1] FROM b",
    )
    .bind(run_id)
    .bind(max_points)
    .bind(max_points / 4)
    .fetch_all(db)
    .await?;
    let mut rows = rows;
    rows.sort_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
    rows.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    Ok(rows)
}

/// What was stored after a snapshot: for every key of the run (found by a skip scan of the
/// primary key, one probe per key), its points after the given step, or from the start for a
/// key not listed; at most `limit` per key; (key, step, value) in key and step order.
pub async fn metric_tails(
    pool: &PgPool,
    run_id: i64,
    after: &[(&str, i64)],
    limit: i64,
) -> sqlx::Result<Vec<(String, i64, f64)>> {
    let keys: Vec<&str> = after.iter().map(|a| a.0).collect();
    let steps: Vec<i64> = after.iter().map(|a| a.1).collect();
    sqlx::query_as(
        "WITH RECURSIVE k(key) AS (
             (SELECT key FROM metrics WHERE run_id = $1 ORDER BY key LIMIT 1)
             UNION ALL
             SELECT (SELECT key FROM metrics WHERE run_id = $1 AND key > k.key ORDER BY key LIMIT 1)
             FROM k WHERE k.key IS NOT NULL
         )
         SELECT k.key, m.step, m.value FROM k
         LEFT JOIN UNNEST($2::TEXT[], $3::BIGINT[]) AS t(key, after) ON t.key = k.key
         CROSS JOIN LATERAL (
             SELECT step, value FROM metrics
             -- COALESCE, not OR: the bound stays an index range, not a scan of the key.
             WHERE run_id = $1 AND key = k.key AND step > COALESCE(t.after, -9223372036854775808)
             ORDER BY step LIMIT $4
         ) m
         WHERE k.key IS NOT NULL
         ORDER BY k.key, m.step",
    )
    .bind(run_id)
    .bind(&keys)
    .bind(&steps)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn metric_count(pool: &PgPool, run_id: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM metrics WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(pool)
        .await
}

/// Record a worker's artifact (a new one, or new content under its name) in the caller's
/// transaction.
pub async fn upsert_artifact_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    run_id: i64,
    name: &str,
    bytes: i64,
    sha256: &str,
    attempt: i32,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO artifacts (run_id, name, bytes, attempt, sha256) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (run_id, name) DO UPDATE SET bytes = EXCLUDED.bytes, attempt = EXCLUDED.attempt,
             sha256 = EXCLUDED.sha256, created_at = now()",
    )
    .bind(run_id)
    .bind(name)
    .bind(bytes)
    .bind(attempt)
    .bind(sha256)
    .execute(&mut **tx)
    .await?;
    super::notify_run_changed(&mut **tx, run_id).await
}

pub async fn artifacts(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<ArtifactRow>> {
    super::rows_by(
        pool,
        "SELECT name, bytes, attempt, created_at FROM artifacts WHERE run_id = $1 ORDER BY name",
        run_id,
    )
    .await
}

pub async fn status_counts(pool: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as("SELECT status, COUNT(*) FROM runs GROUP BY status ORDER BY status")
        .fetch_all(pool)
        .await
}
