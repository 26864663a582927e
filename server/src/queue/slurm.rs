//! Slurm placements (`slurm_jobs`): the agent (`trainer slurm-agent`) places queued runs as
//! Slurm jobs; what Slurm says about a job reaches its run here.
//!
//! - an agent is a registered worker; its name identifies its placements, so an agent restarted
//!   under the same name finds them again.
//! - [`reserve`] opens the placement before `sbatch` runs, in one statement that refuses a second
//!   live placement of a run (the unique index `slurm_jobs_one_live_per_run`).
//! - [`rejected`]: `sbatch` refused the job (bad partition, no such account): the run fails with
//!   its words, instead of being submitted again and again.
//! - [`report`]: a terminal state of a job whose worker holds the run's current attempt ends that
//!   attempt with the state as its reason and re-queues the run while attempts remain (a
//!   preemption does not use one up: `max_attempts` grows by one); after a cancel request the run
//!   ends `cancelled`. A job that ended before its worker claimed the run fails the run, naming
//!   the job and its state (a preempted one leaves it queued, to be placed again).

use crate::db;
use aligndet_common::slurm::{LivePlacement, PlaceableRun, StateReport, ended_message};
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

/// Queued runs the calling agent (`agent_id`, a worker) may place, best first.
pub async fn placeable(
    pool: &PgPool,
    agent_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<PlaceableRun>> {
    let rows: Vec<(i64, String)> = sqlx::query_as(concat!(
        "SELECT q.id, q.name FROM runs q, workers w WHERE w.id = $1 AND ",
        super::runnable_by_worker!(),
        " AND NOT EXISTS (SELECT 1 FROM slurm_jobs s WHERE s.run_id = q.id AND s.ended_at IS NULL)
         ORDER BY q.priority DESC, q.id LIMIT $2"
    ))
    .bind(agent_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(run_id, name)| PlaceableRun { run_id, name })
        .collect())
}

/// Open a placement of a queued run for the calling agent; `None` when the run is not queued or
/// already has a live placement.
pub async fn reserve(pool: &PgPool, agent_id: i64, run_id: i64) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO slurm_jobs (run_id, agent)
         SELECT q.id, w.name FROM runs q, workers w
         WHERE q.id = $1 AND w.id = $2 AND q.status = 'queued'
         ON CONFLICT (run_id) WHERE ended_at IS NULL DO NOTHING
         RETURNING id",
    )
    .bind(run_id)
    .bind(agent_id)
    .fetch_optional(pool)
    .await
}

#[derive(sqlx::FromRow)]
struct LiveRow {
    id: i64,
    run_id: i64,
    slurm_job_id: Option<i64>,
    state: String,
    node: Option<String>,
    reason: Option<String>,
    cancel: bool,
}

/// The calling agent's live placements, with whether each job is still wanted.
pub async fn live(pool: &PgPool, agent_id: i64) -> sqlx::Result<Vec<LivePlacement>> {
    let rows: Vec<LiveRow> = sqlx::query_as(
        "SELECT s.id, s.run_id, s.slurm_job_id, s.state, s.node, s.reason,
                r.cancel_requested OR (s.attempt IS NULL AND r.status <> 'queued') AS cancel
         FROM slurm_jobs s JOIN workers w ON w.id = $1 AND s.agent = w.name
              JOIN runs r ON r.id = s.run_id
         WHERE s.ended_at IS NULL ORDER BY s.id",
    )
    .bind(agent_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| LivePlacement {
            placement_id: r.id,
            run_id: r.run_id,
            slurm_job_id: r.slurm_job_id,
            state: r.state,
            node: r.node,
            reason: r.reason,
            cancel: r.cancel,
        })
        .collect())
}

/// Record the Slurm job id `sbatch` answered; `false` when the placement is not the agent's
/// live one.
pub async fn submitted(
    pool: &PgPool,
    agent_id: i64,
    placement_id: i64,
    slurm_job_id: i64,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let run: Option<i64> = sqlx::query_scalar(
        "UPDATE slurm_jobs s SET slurm_job_id = $3, state = 'PENDING'
         FROM workers w
         WHERE s.id = $1 AND w.id = $2 AND s.agent = w.name AND s.ended_at IS NULL
         RETURNING s.run_id",
    )
    .bind(placement_id)
    .bind(agent_id)
    .bind(slurm_job_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(run) = run {
        db::notify_run_changed(&mut *tx, run).await?;
    }
    tx.commit().await?;
    Ok(run.is_some())
}

/// `sbatch` refused the job: the placement ends, and the run (if still queued) fails with
/// `error`. `false` when the placement is not the agent's live one.
pub async fn rejected(
    pool: &PgPool,
    agent_id: i64,
    placement_id: i64,
    error: &str,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let Some((run_id, _, _)) = end_placement(&mut tx, agent_id, placement_id, "REJECTED").await?
    else {
        return Ok(false);
    };
    let message = format!("sbatch refused the Slurm job for this run: {error}");
    fail_queued_run(&mut tx, run_id, &message).await?;
    db::notify_run_changed(&mut *tx, run_id).await?;
    tx.commit().await?;
    Ok(true)
}

#[derive(sqlx::FromRow)]
struct PlacementHead {
    run_id: i64,
    slurm_job_id: Option<i64>,
    attempt: Option<i32>,
    ended_at: Option<DateTime<Utc>>,
}

/// What Slurm says about a placement's job; a terminal state ends the placement and reaches
/// the run (see the module notes). `false` when the placement is not the agent's live one (an
/// ended placement answers `true`: reports are idempotent).
pub async fn report(
    pool: &PgPool,
    agent_id: i64,
    placement_id: i64,
    r: &StateReport,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let row: Option<PlacementHead> = sqlx::query_as(
        "SELECT s.run_id, s.slurm_job_id, s.attempt, s.ended_at FROM slurm_jobs s
         JOIN workers w ON w.id = $2 AND s.agent = w.name WHERE s.id = $1 FOR UPDATE OF s",
    )
    .bind(placement_id)
    .bind(agent_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(head) = row else {
        return Ok(false);
    };
    if head.ended_at.is_some() {
        return Ok(true);
    }
    let terminal = aligndet_common::slurm::is_terminal(&r.state);
    sqlx::query(
        "UPDATE slurm_jobs SET state = $2, reason = $3, node = COALESCE($4, node),
                exit_code = COALESCE($5, exit_code),
                submitted_at = COALESCE(to_timestamp($6::bigint), submitted_at),
                started_at = COALESCE(started_at, to_timestamp($7::bigint)),
                ended_at = CASE WHEN $8 THEN now() END
         WHERE id = $1",
    )
    .bind(placement_id)
    .bind(&r.state)
    .bind(r.reason.as_deref().filter(|x| *x != "None"))
    .bind(r.node.as_deref().filter(|n| !n.is_empty()))
    .bind(&r.exit_code)
    .bind(r.submitted_at)
    .bind(r.started_at)
    .bind(terminal)
    .execute(&mut *tx)
    .await?;
    if terminal {
        let message = ended_message(head.slurm_job_id, r);
        job_ended(&mut tx, head.run_id, head.attempt, &r.state, &message).await?;
    }
    db::notify_run_changed(&mut *tx, head.run_id).await?;
    tx.commit().await?;
    Ok(true)
}

/// Close a live placement of the agent's; its run, Slurm job id and claimed attempt.
async fn end_placement(
    tx: &mut Transaction<'_, Postgres>,
    agent_id: i64,
    placement_id: i64,
    state: &str,
) -> sqlx::Result<Option<(i64, Option<i64>, Option<i32>)>> {
    sqlx::query_as(
        "UPDATE slurm_jobs s SET state = $3, ended_at = now()
         FROM workers w
         WHERE s.id = $1 AND w.id = $2 AND s.agent = w.name AND s.ended_at IS NULL
         RETURNING s.run_id, s.slurm_job_id, s.attempt",
    )
    .bind(placement_id)
    .bind(agent_id)
    .bind(state)
    .fetch_optional(&mut **tx)
    .await
}

/// A queued run fails with `message` (and so do the runs waiting for it); a run in any other
/// state is left alone.
async fn fail_queued_run(
    tx: &mut Transaction<'_, Postgres>,
    run_id: i64,
    message: &str,
) -> sqlx::Result<()> {
    let failed = sqlx::query(
        "UPDATE runs SET status = 'failed', error = $2, finished_at = now(), updated_at = now()
         WHERE id = $1 AND status = 'queued'",
    )
    .bind(run_id)
    .bind(message)
    .execute(&mut **tx)
    .await?;
    if failed.rows_affected() == 1 {
        db::runs::fail_dependents_in(tx, run_id).await?;
    }
    Ok(())
}

/// The run's side of a Slurm job that ended (`state`, described by `message`).
async fn job_ended(
    tx: &mut Transaction<'_, Postgres>,
    run_id: i64,
    attempt: Option<i32>,
    state: &str,
    message: &str,
) -> sqlx::Result<()> {
    let run: Option<(String, i32, i32, bool)> = sqlx::query_as(
        "SELECT status, attempts, max_attempts, cancel_requested FROM runs WHERE id = $1 FOR UPDATE",
    )
    .bind(run_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((status, attempts, max_attempts, cancel_requested)) = run else {
        return Ok(());
    };
    let preempted = state == "PREEMPTED";
    match attempt {
        // Its worker held the run's current attempt and never gave its final word.
        Some(a) if status == "running" && a == attempts => {
            let (new_status, note) = if cancel_requested {
                ("cancelled", format!("{message} after a cancel request"))
            } else if preempted {
                (
                    "queued",
                    format!(
                        "{message}; a preemption does not count against max attempts; run re-queued"
                    ),
                )
            } else if attempts < max_attempts {
                ("queued", format!("{message}; run re-queued"))
            } else {
                (
                    "failed",
                    format!("{message} on attempt {attempts} of {max_attempts}; no attempts left"),
                )
            };
            end_attempt(tx, run_id, attempts, new_status, &note, preempted).await
        }
        // The job ended before its worker claimed the run.
        None if status == "queued" && !preempted => {
            let why = format!("{message} before its worker claimed the run");
            fail_queued_run(tx, run_id, &why).await
        }
        _ => Ok(()),
    }
}

async fn end_attempt(
    tx: &mut Transaction<'_, Postgres>,
    run_id: i64,
    attempt: i32,
    new_status: &str,
    note: &str,
    preempted: bool,
) -> sqlx::Result<()> {
    let outcome = if new_status == "cancelled" {
        "cancelled"
    } else {
        "slurm_job_ended"
    };
    sqlx::query(
        "UPDATE runs SET status = $2, lease_expires_at = NULL, updated_at = now(),
                worker_id = CASE WHEN $2 = 'queued' THEN NULL ELSE worker_id END,
                error = CASE WHEN $2 = 'failed' THEN $3 END,
                finished_at = CASE WHEN $2 = 'queued' THEN NULL ELSE now() END,
                max_attempts = max_attempts + CASE WHEN $2 = 'queued' AND $4 THEN 1 ELSE 0 END
         WHERE id = $1",
    )
    .bind(run_id)
    .bind(new_status)
    .bind(note)
    .bind(preempted)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE run_attempts SET ended_at = now(), outcome = $3, note = $4
         WHERE run_id = $1 AND attempt = $2",
    )
    .bind(run_id)
    .bind(attempt)
    .bind(outcome)
    .bind(note)
    .execute(&mut **tx)
    .await?;
    if new_status != "queued" {
        db::runs::fail_dependents_in(tx, run_id).await?;
    }
    Ok(())
}

/// A claim naming `run_id` took attempt `attempt`: its live placement (if any) now holds it.
pub(super) async fn note_claim(
    tx: &mut Transaction<'_, Postgres>,
    run_id: i64,
    attempt: i32,
) -> sqlx::Result<()> {
    db::write_by(
        &mut **tx,
        "UPDATE slurm_jobs SET attempt = $2 WHERE run_id = $1 AND ended_at IS NULL",
        run_id,
        attempt,
    )
    .await?;
    Ok(())
}

/// A run's latest placement, for its page and its API summary.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct PlacementRow {
    pub slurm_job_id: Option<i64>,
    pub state: String,
    pub reason: Option<String>,
    pub node: Option<String>,
    pub agent: String,
    pub submitted_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

impl PlacementRow {
    /// Seconds the job waited in Slurm's queue (so far, while pending).
    pub fn pending_seconds(&self) -> i64 {
        let until = self.started_at.or(self.ended_at).unwrap_or_else(Utc::now);
        (until - self.submitted_at).num_seconds().max(0)
    }
}

pub async fn latest_for_run(pool: &PgPool, run_id: i64) -> sqlx::Result<Option<PlacementRow>> {
    db::row_by(
        pool,
        "SELECT slurm_job_id, state, reason, node, agent, submitted_at, started_at, ended_at
         FROM slurm_jobs WHERE run_id = $1 ORDER BY id DESC LIMIT 1",
        run_id,
    )
    .await
}
