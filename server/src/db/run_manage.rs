//! Run hygiene: tags and notes, archiving, deletion (refused while a run that reads this one is
//! queued or running), the reproducibility stamp, and a run's metrics streamed for export.

use aligndet_common::jobs::RunStatus;
use futures_util::TryStreamExt;
use sqlx::PgPool;

/// Replace a run's tags and note. `false`: no such run.
pub async fn set_tags_note(
    pool: &PgPool,
    run_id: i64,
    tags: &[String],
    note: &str,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query("UPDATE runs SET tags = $2, note = $3, updated_at = now() WHERE id = $1")
        .bind(run_id)
        .bind(tags)
        .bind(note)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 1 {
        super::notify_run_changed(&mut *tx, run_id).await?;
    }
    tx.commit().await?;
    Ok(n == 1)
}

/// Archive (hide from lists, keep everything) or bring back. `false`: no such run.
pub async fn set_archived(pool: &PgPool, run_id: i64, archived: bool) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "UPDATE runs SET archived_at = CASE WHEN $2 THEN COALESCE(archived_at, now()) END,
                updated_at = now()
         WHERE id = $1",
    )
    .bind(run_id)
    .bind(archived)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// A run that reads another one's output (as its parent, initial weights, backbone or
/// pseudo-boxes) and has not ended.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Dependent {
    pub id: i64,
    pub name: String,
    pub status: String,
}

/// The queued or running runs whose config or parent list names `run_id`.
pub async fn active_dependents<'e>(
    db: impl sqlx::PgExecutor<'e>,
    run_id: i64,
) -> sqlx::Result<Vec<Dependent>> {
    sqlx::query_as(
        "SELECT r.id, r.name, r.status FROM runs r
         WHERE r.status IN ('queued', 'running') AND r.id <> $1 AND (
             EXISTS (SELECT 1 FROM run_parents p WHERE p.run_id = r.id AND p.parent_id = $1)
             OR r.config #>> '{init,artifact,run_id}' = $1::TEXT
             OR r.config #>> '{backbone_init,artifact,run_id}' = $1::TEXT
             OR r.config #>> '{proposals_run_id}' = $1::TEXT
             OR r.config #>> '{detections,run_id}' = $1::TEXT)
         ORDER BY r.id",
    )
    .bind(run_id)
    .fetch_all(db)
    .await
}

/// What a delete did, or why it did not.
#[derive(Debug)]
pub enum Deletion {
    Deleted,
    NotFound,
    /// The run itself is queued or running: cancel it first.
    Active(RunStatus),
    /// Runs still to read its output.
    Needed(Vec<Dependent>),
}

/// Delete a run and everything stored about it (metrics, logs, attempts, artifact records,
/// pseudo-boxes, parent links: `ON DELETE CASCADE`) in one transaction, unless it is active or
/// an active run needs it. The run row is locked first: a run being submitted that names it
/// (its parent link takes a key-share lock) either commits before (and is found here) or waits
/// and then fails on the missing parent.
pub async fn delete(pool: &PgPool, run_id: i64) -> sqlx::Result<Deletion> {
    let mut tx = pool.begin().await?;
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM runs WHERE id = $1 FOR UPDATE")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(status) = status else {
        return Ok(Deletion::NotFound);
    };
    if let Some(s @ (RunStatus::Queued | RunStatus::Running)) = RunStatus::parse(&status) {
        return Ok(Deletion::Active(s));
    }
    let needed = active_dependents(&mut *tx, run_id).await?;
    if !needed.is_empty() {
        return Ok(Deletion::Needed(needed));
    }
    sqlx::query("DELETE FROM runs WHERE id = $1")
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    super::notify_run_changed(&mut *tx, run_id).await?;
    tx.commit().await?;
    Ok(Deletion::Deleted)
}

/// How much a delete removes: (metric points, log lines, artifacts).
pub async fn footprint(pool: &PgPool, run_id: i64) -> sqlx::Result<(i64, i64, i64)> {
    sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM metrics WHERE run_id = $1),
                (SELECT COUNT(*) FROM run_logs WHERE run_id = $1),
                (SELECT COUNT(*) FROM artifacts WHERE run_id = $1)",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await
}

/// Record the reproducibility stamp of a claimed attempt.
pub async fn set_stamp(pool: &PgPool, run_id: i64, stamp: &serde_json::Value) -> sqlx::Result<()> {
    super::write_by(
        pool,
        "UPDATE runs SET stamp = $2 WHERE id = $1",
        run_id,
        stamp,
    )
    .await?;
    Ok(())
}

/// One stored metric point, as exported.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct MetricRow {
    pub key: String,
    pub step: i64,
    pub value: f64,
    pub wall_time: f64,
    pub attempt: i32,
}

/// Every metric point of a run in (key, step) order, streamed into `sink` (stops when the
/// receiver is gone).
pub async fn each_metric(
    pool: &PgPool,
    run_id: i64,
    sink: tokio::sync::mpsc::Sender<MetricRow>,
) -> sqlx::Result<()> {
    let mut rows = sqlx::query_as::<_, MetricRow>(
        "SELECT key, step, value, wall_time, attempt FROM metrics WHERE run_id = $1
         ORDER BY key, step",
    )
    .bind(run_id)
    .fetch(pool);
    while let Some(row) = rows.try_next().await? {
        if sink.send(row).await.is_err() {
            break;
        }
    }
    Ok(())
}
