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
    key_sha256: &str,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO workers (name, device, info, key_sha256) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(name)
    .bind(device)
    .bind(info)
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
    sqlx::query_as("SELECT * FROM workers ORDER BY last_seen_at DESC LIMIT 100")
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
