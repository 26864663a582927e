//! What workers log (table `run_logs`): stored as sent, read back as a run page's tail.

use aligndet_common::api::LogLine;
use sqlx::PgPool;

/// Store log lines; a line sent twice (same attempt and sequence number) is stored once.
pub async fn insert(
    pool: &PgPool,
    run_id: i64,
    attempt: i32,
    lines: &[LogLine],
) -> sqlx::Result<()> {
    let seqs: Vec<i64> = lines.iter().map(|l| l.seq).collect();
    let walls: Vec<f64> = lines.iter().map(|l| l.wall_time).collect();
    let levels: Vec<&str> = lines.iter().map(|l| l.level.as_str()).collect();
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    let codes: Vec<Option<&str>> = lines.iter().map(|l| l.code.as_deref()).collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO run_logs (run_id, attempt, seq, wall_time, level, text, code)
         SELECT $1, $2, * FROM UNNEST($3::BIGINT[], $4::FLOAT8[], $5::TEXT[], $6::TEXT[], $7::TEXT[])
         ON CONFLICT DO NOTHING",
    )
    .bind(run_id)
    .bind(attempt)
    .bind(&seqs)
    .bind(&walls)
    .bind(&levels)
    .bind(&texts)
    .bind(&codes)
    .execute(&mut *tx)
    .await?;
    super::notify_run_changed(&mut *tx, run_id).await?;
    tx.commit().await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogRow {
    pub attempt: i32,
    pub seq: i64,
    pub wall_time: f64,
    pub level: String,
    pub text: String,
}

/// The last `n` lines a run logged (over all its attempts), oldest first.
pub async fn tail(pool: &PgPool, run_id: i64, n: i64) -> sqlx::Result<Vec<LogRow>> {
    let mut rows: Vec<LogRow> = sqlx::query_as(
        "SELECT attempt, seq, wall_time, level, text FROM run_logs WHERE run_id = $1
         ORDER BY attempt DESC, seq DESC LIMIT $2",
    )
    .bind(run_id)
    .bind(n)
    .fetch_all(pool)
    .await?;
    rows.reverse();
    Ok(rows)
}

/// A training-health warning: the latest line of its code.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WarningRow {
    pub code: String,
    pub text: String,
}

/// The run's training-health warnings, the latest line of each code (a resumed attempt's
/// repeat replaces the earlier one), ordered by code.
pub async fn warnings(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<WarningRow>> {
    Ok(warnings_of(pool, &[run_id])
        .await?
        .remove(&run_id)
        .unwrap_or_default())
}

/// For each of `run_ids` with warnings, their latest lines (as [`warnings`]).
pub async fn warnings_of(
    pool: &PgPool,
    run_ids: &[i64],
) -> sqlx::Result<std::collections::HashMap<i64, Vec<WarningRow>>> {
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (run_id, code) run_id, code, text FROM run_logs
         WHERE run_id = ANY($1) AND code IS NOT NULL ORDER BY run_id, code, attempt DESC, seq DESC",
    )
    .bind(run_ids)
    .fetch_all(pool)
    .await?;
    let mut out = std::collections::HashMap::<i64, Vec<WarningRow>>::new();
    for (run_id, code, text) in rows {
        out.entry(run_id)
            .or_default()
            .push(WarningRow { code, text });
    }
    Ok(out)
}
