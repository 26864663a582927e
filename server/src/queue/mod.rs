//! The job queue: runs in Postgres, claimed with `FOR UPDATE SKIP LOCKED`, held under a lease.
//!
//! - claim: the highest-priority, then oldest, queued run whose dependencies (`run_parents.waits`)
//!   have all succeeded and whose requirements the worker's capabilities satisfy (the rules of
//!   `Requirements::unmet_by`, in SQL) goes to the worker, unless it is draining; attempts += 1;
//!   a `run_attempts` row opens.
//! - a run with a live Slurm placement (`slurm`) is claimed only by a claim naming it: the
//!   worker started inside that Slurm job.
//! - a run that ends failed or cancelled fails the queued runs waiting for it (transitively), so
//!   nothing waits forever (`db::runs::fail_dependents_in`).
//! - heartbeat: extends the lease of the current attempt; answers whether a cancel was asked.
//! - every other call of a worker about a run is checked against the current attempt, so a worker
//!   whose lease expired (and whose job went to someone else) is fenced off with 409.
//! - reap: an expired lease puts the run back in the queue, or fails it once `max_attempts` is
//!   used up; the attempt row records why.

pub mod matching;
pub mod slurm;

use crate::db;
use aligndet_common::jobs::RunStatus;
use sqlx::PgPool;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedRun {
    pub id: i64,
    pub name: String,
    pub config: crate::db::stored_config::StoredConfig,
    pub dataset_id: Option<i64>,
    pub attempts: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("run {0} not found")]
    NotFound(i64),
    /// The caller's attempt is not the run's current running attempt.
    #[error(
        "run {run_id}: attempt {attempt} is not current (run is {status}, at attempt {current})"
    )]
    NotCurrent {
        run_id: i64,
        attempt: i32,
        status: String,
        current: i32,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The conditions under which worker `w` may take queued run `q`: its dependencies
/// (`run_parents.waits`) all succeeded, and `w`'s capabilities meet `q`'s requirements (the rules
/// of `Requirements::unmet_by`, in SQL). Shared by [`claim`] and the Slurm agent's
/// [`slurm::placeable`], so both match runs alike.
macro_rules! runnable_by_worker {
    () => {
        " NOT w.draining AND q.status = 'queued'
          AND NOT EXISTS (SELECT 1 FROM run_parents p JOIN runs d ON d.id = p.parent_id
                          WHERE p.run_id = q.id AND p.waits AND d.status <> 'succeeded')
          AND COALESCE(q.requirements->>'device', 'any')
              IN ('any', COALESCE(w.capabilities->>'device', 'cpu'))
          AND COALESCE((q.requirements->>'min_gpu_memory_mb')::bigint, 0)
              <= COALESCE((w.capabilities->>'gpu_memory_mb')::bigint, 0)
          AND GREATEST(COALESCE((q.requirements->>'devices')::int, 1), 1)
              <= CASE WHEN w.capabilities->>'device' = 'cuda'
                      THEN COALESCE((w.capabilities->>'gpu_count')::int, 0)
                      ELSE GREATEST(COALESCE((w.capabilities->>'cpu_threads')::int, 1), 1) END
          AND COALESCE(q.requirements->'labels', '[]'::jsonb)
              <@ COALESCE(w.capabilities->'labels', '[]'::jsonb) "
    };
}
pub(crate) use runnable_by_worker;

/// Claim the best run for `worker_id`, or exactly `run_id` when given. A run with a live Slurm
/// placement goes only to a claim that names it (the worker inside that Slurm job), and that
/// claim records its attempt on the placement.
pub async fn claim(
    pool: &PgPool,
    worker_id: i64,
    run_id: Option<i64>,
    lease_seconds: f64,
) -> Result<Option<ClaimedRun>, QueueError> {
    let mut tx = pool.begin().await?;
    let claimed: Option<ClaimedRun> = sqlx::query_as(concat!(
        "UPDATE runs SET status = 'running', attempts = attempts + 1, worker_id = $1,
                lease_expires_at = now() + make_interval(secs => $2), cancel_requested = false,
                started_at = COALESCE(started_at, now()), updated_at = now(), error = NULL
         WHERE id = (SELECT q.id FROM runs q, workers w
                     WHERE w.id = $1 AND ",
        runnable_by_worker!(),
        " AND CASE WHEN $3::bigint IS NULL
                THEN NOT EXISTS (SELECT 1 FROM slurm_jobs s
                                 WHERE s.run_id = q.id AND s.ended_at IS NULL)
                ELSE q.id = $3 END
                     ORDER BY q.priority DESC, q.id
                     FOR UPDATE OF q SKIP LOCKED LIMIT 1)
         RETURNING id, name, config, dataset_id, attempts"
    ))
    .bind(worker_id)
    .bind(lease_seconds)
    .bind(run_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(run) = &claimed {
        sqlx::query("INSERT INTO run_attempts (run_id, attempt, worker_id) VALUES ($1, $2, $3)")
            .bind(run.id)
            .bind(run.attempts)
            .bind(worker_id)
            .execute(&mut *tx)
            .await?;
        if run_id.is_some() {
            slurm::note_claim(&mut tx, run.id, run.attempts).await?;
        }
        db::notify_run_changed(&mut *tx, run.id).await?;
    }
    tx.commit().await?;
    Ok(claimed)
}

/// Extend the lease; returns whether the user asked to cancel.
pub async fn heartbeat(
    pool: &PgPool,
    run_id: i64,
    worker_id: i64,
    attempt: i32,
    lease_seconds: f64,
) -> Result<bool, QueueError> {
    let cancel: Option<bool> = sqlx::query_scalar(
        "UPDATE runs SET lease_expires_at = now() + make_interval(secs => $4), updated_at = now()
         WHERE id = $1 AND worker_id = $2 AND attempts = $3 AND status = 'running'
         RETURNING cancel_requested",
    )
    .bind(run_id)
    .bind(worker_id)
    .bind(attempt)
    .bind(lease_seconds)
    .fetch_optional(pool)
    .await?;
    match cancel {
        Some(c) => Ok(c),
        None => Err(not_current(pool, run_id, attempt).await),
    }
}

/// Whether `attempt` is the run's current running attempt held by `worker_id` (no row: no run).
/// A macro so that the locking form can extend it with `concat!` (queries are static strings).
macro_rules! is_current_sql {
    () => {
        "SELECT status = 'running' AND attempts = $2 AND worker_id IS NOT DISTINCT FROM $3
         FROM runs WHERE id = $1"
    };
}

/// Fail unless `attempt` is the run's current running attempt and `worker_id` holds it.
pub async fn check_current(
    pool: &PgPool,
    run_id: i64,
    worker_id: i64,
    attempt: i32,
) -> Result<(), QueueError> {
    let ok: Option<bool> = sqlx::query_scalar(is_current_sql!())
        .bind(run_id)
        .bind(attempt)
        .bind(worker_id)
        .fetch_optional(pool)
        .await?;
    current_or_why(pool, run_id, attempt, ok).await
}

/// `check_current` inside the caller's transaction, holding the run's row until it ends. What the
/// attempt records there (an uploaded artifact) is fenced: the run cannot be re-queued or claimed
/// again in between, so a next attempt never reads an artifact its predecessor replaces after
/// the claim (a killed worker's last upload can still be arriving then).
pub async fn lock_current(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    pool: &PgPool,
    run_id: i64,
    worker_id: i64,
    attempt: i32,
) -> Result<(), QueueError> {
    let ok: Option<bool> = sqlx::query_scalar(concat!(is_current_sql!(), " FOR UPDATE"))
        .bind(run_id)
        .bind(attempt)
        .bind(worker_id)
        .fetch_optional(&mut **tx)
        .await?;
    current_or_why(pool, run_id, attempt, ok).await
}

async fn current_or_why(
    pool: &PgPool,
    run_id: i64,
    attempt: i32,
    ok: Option<bool>,
) -> Result<(), QueueError> {
    match ok {
        Some(true) => Ok(()),
        Some(false) => Err(not_current(pool, run_id, attempt).await),
        None => Err(QueueError::NotFound(run_id)),
    }
}

async fn not_current(pool: &PgPool, run_id: i64, attempt: i32) -> QueueError {
    match sqlx::query_as::<_, (String, i32)>("SELECT status, attempts FROM runs WHERE id = $1")
        .bind(run_id)
        .fetch_optional(pool)
        .await
    {
        Ok(Some((status, current))) => QueueError::NotCurrent {
            run_id,
            attempt,
            status,
            current,
        },
        Ok(None) => QueueError::NotFound(run_id),
        Err(e) => QueueError::Db(e),
    }
}

/// The worker's final word on its attempt (only the worker holding it may give it). A
/// `retryable` failure (a cause outside the job, such as a data-parallel rank that died) puts the
/// run back in the queue while attempts remain and no cancel was asked; the next attempt resumes
/// from the run's checkpoint.
pub async fn finish(
    pool: &PgPool,
    run_id: i64,
    worker_id: i64,
    attempt: i32,
    status: RunStatus,
    error: Option<&str>,
    retryable: bool,
) -> Result<(), QueueError> {
    let mut tx = pool.begin().await?;
    let requeue = retryable && status == RunStatus::Failed;
    let new_status: Option<String> = sqlx::query_scalar(
        "UPDATE runs r SET
            status = CASE WHEN x.requeue THEN 'queued' ELSE $3 END,
            error = CASE WHEN x.requeue THEN NULL ELSE $4 END,
            finished_at = CASE WHEN x.requeue THEN NULL ELSE now() END,
            worker_id = CASE WHEN x.requeue THEN NULL ELSE r.worker_id END,
            lease_expires_at = NULL, updated_at = now()
         FROM (SELECT $6 AND attempts < max_attempts AND NOT cancel_requested AS requeue
               FROM runs WHERE id = $1) x
         WHERE r.id = $1 AND r.attempts = $2 AND r.status = 'running' AND r.worker_id = $5
         RETURNING r.status",
    )
    .bind(run_id)
    .bind(attempt)
    .bind(status.as_str())
    .bind(error)
    .bind(worker_id)
    .bind(requeue)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(new_status) = new_status else {
        drop(tx);
        return Err(not_current(pool, run_id, attempt).await);
    };
    let requeued = new_status == RunStatus::Queued.as_str();
    let note = match (requeued, error) {
        (true, Some(e)) => Some(format!("{e}; run re-queued")),
        (true, None) => Some("run re-queued".to_string()),
        (false, e) => e.map(str::to_string),
    };
    sqlx::query(
        "UPDATE run_attempts SET ended_at = now(), outcome = $3, note = $4 WHERE run_id = $1 AND attempt = $2",
    )
    .bind(run_id)
    .bind(attempt)
    .bind(status.as_str())
    .bind(note)
    .execute(&mut *tx)
    .await?;
    db::notify_run_changed(&mut *tx, run_id).await?;
    if !requeued && matches!(status, RunStatus::Failed | RunStatus::Cancelled) {
        db::runs::fail_dependents_in(&mut tx, run_id).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Requeue (or fail) every running run whose lease expired. Returns the runs touched.
pub async fn reap_expired_leases(pool: &PgPool) -> sqlx::Result<Vec<i64>> {
    let mut tx = pool.begin().await?;
    let expired: Vec<(i64, i32, i32, Option<i64>, bool)> = sqlx::query_as(
        "SELECT id, attempts, max_attempts, worker_id, cancel_requested FROM runs
         WHERE status = 'running' AND lease_expires_at < now()
         FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (id, attempt, max_attempts, worker_id, cancel_requested) in &expired {
        let (new_status, note, error) = if *cancel_requested {
            (
                "cancelled",
                "lease expired after a cancel request; the worker is gone".to_string(),
                None,
            )
        } else if attempt < max_attempts {
            (
                "queued",
                format!(
                    "lease expired: worker #{} stopped heartbeating; run re-queued",
                    worker_id.unwrap_or(0)
                ),
                None,
            )
        } else {
            let msg = format!(
                "lease expired on attempt {attempt} of {max_attempts}: worker #{} stopped heartbeating; no attempts left",
                worker_id.unwrap_or(0)
            );
            ("failed", msg.clone(), Some(msg))
        };
        sqlx::query(
            "UPDATE runs SET status = $2, worker_id = NULL, lease_expires_at = NULL, updated_at = now(),
                    error = $3, finished_at = CASE WHEN $2 = 'queued' THEN NULL ELSE now() END
             WHERE id = $1",
        )
        .bind(id)
        .bind(new_status)
        .bind(error)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE run_attempts SET ended_at = now(), outcome = 'lease_expired', note = $3
             WHERE run_id = $1 AND attempt = $2",
        )
        .bind(id)
        .bind(attempt)
        .bind(&note)
        .execute(&mut *tx)
        .await?;
        db::notify_run_changed(&mut *tx, *id).await?;
        if new_status != "queued" {
            db::runs::fail_dependents_in(&mut tx, *id).await?;
        }
    }
    tx.commit().await?;
    Ok(expired.into_iter().map(|r| r.0).collect())
}
