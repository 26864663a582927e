use chrono::{DateTime, Utc};
use sqlx::PgPool;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerRow {
    pub id: i64,
    pub name: String,
    pub device: String,
    pub info: serde_json::Value,
    pub registered_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// `aligndet_common::capabilities::Capabilities` as JSON.
    pub capabilities: serde_json::Value,
    /// Finishes its current run, claims no more.
    pub draining: bool,
}

impl WorkerRow {
    /// A worker that called in within the last 30 s counts as connected.
    pub fn is_connected(&self) -> bool {
        Utc::now() - self.last_seen_at < chrono::Duration::seconds(30)
    }
}

/// A new worker; `key_sha256` is the digest of the secret it was given.
pub async fn register(
    pool: &PgPool,
    name: &str,
    device: &str,
    info: &serde_json::Value,
    capabilities: &serde_json::Value,
    key_sha256: &str,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO workers (name, device, info, capabilities, key_sha256)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(name)
    .bind(device)
    .bind(info)
    .bind(capabilities)
    .bind(key_sha256)
    .fetch_one(pool)
    .await
}

/// The worker whose key has this digest, marked as seen.
pub async fn identify(pool: &PgPool, key_sha256: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("UPDATE workers SET last_seen_at = now() WHERE key_sha256 = $1 RETURNING id")
        .bind(key_sha256)
        .fetch_optional(pool)
        .await
}

pub async fn touch(pool: &PgPool, worker_id: i64) -> sqlx::Result<bool> {
    let r = sqlx::query("UPDATE workers SET last_seen_at = now() WHERE id = $1")
        .bind(worker_id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<WorkerRow>> {
    sqlx::query_as(
        "SELECT id, name, device, info, registered_at, last_seen_at, capabilities, draining
         FROM workers ORDER BY last_seen_at DESC LIMIT 100",
    )
    .fetch_all(pool)
    .await
}

/// Drain a worker (it finishes its current run and claims no more) or undo it; `false` when
/// there is no such worker.
pub async fn set_draining(pool: &PgPool, worker_id: i64, draining: bool) -> sqlx::Result<bool> {
    super::write_by(
        pool,
        "UPDATE workers SET draining = $2 WHERE id = $1",
        worker_id,
        draining,
    )
    .await
}

/// The capabilities (JSON) and draining flag of the workers seen in the last 30 s (as
/// [`WorkerRow::is_connected`]).
pub async fn connected_capabilities(pool: &PgPool) -> sqlx::Result<Vec<(serde_json::Value, bool)>> {
    sqlx::query_as(
        "SELECT capabilities, draining FROM workers
         WHERE last_seen_at > now() - interval '30 seconds'",
    )
    .fetch_all(pool)
    .await
}

/// Each worker's training throughput over the attempts it started in the last hour: (worker
/// id, median `train/images_per_s`, steps measured).
pub async fn recent_throughput(pool: &PgPool) -> sqlx::Result<Vec<(i64, f64, i64)>> {
    sqlx::query_as(
        "SELECT a.worker_id,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY m.value),
                count(*)
         FROM run_attempts a
         JOIN metrics m ON m.run_id = a.run_id AND m.key = 'train/images_per_s'
                       AND m.attempt = a.attempt
         WHERE a.worker_id IS NOT NULL AND a.started_at > now() - interval '1 hour'
         GROUP BY a.worker_id",
    )
    .fetch_all(pool)
    .await
}

/// The run each worker is running now: (worker id, run id, run name).
pub async fn current_runs(pool: &PgPool) -> sqlx::Result<Vec<(i64, i64, String)>> {
    sqlx::query_as(
        "SELECT worker_id, id, name FROM runs
         WHERE status = 'running' AND worker_id IS NOT NULL ORDER BY id",
    )
    .fetch_all(pool)
    .await
}
