//! The server's own heartbeat (`server_liveness`, one row) and lease continuity across the time
//! the server was down: workers keep computing and buffering through an outage, so the outage
//! must not count against their leases.

use sqlx::PgPool;

/// What one tick found.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// Seconds since the previous tick (0 on the first tick ever).
    pub gap_s: f64,
    /// Runs whose lease was extended by `gap_s`.
    pub extended: Vec<i64>,
}

/// Record that the server is alive now. When the previous tick is at least `min_gap_s` old, the
/// server (or its database) was not serving for that long: every running lease is first
/// extended by the whole gap. One transaction, so a gap is never counted twice. Run it before
/// the lease reaper, at start (`min_gap_s` 0) and then every second.
pub async fn tick(pool: &PgPool, min_gap_s: f64) -> sqlx::Result<Tick> {
    let mut tx = pool.begin().await?;
    // The database's clock, the one leases are set and reaped with.
    let gap_s: Option<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM (now() - last_tick))::float8 FROM server_liveness
         WHERE id FOR UPDATE",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let gap_s = gap_s.unwrap_or(0.0).max(0.0);
    let extended: Vec<i64> = if gap_s > 0.0 && gap_s >= min_gap_s {
        sqlx::query_scalar(
            "UPDATE runs SET lease_expires_at = lease_expires_at + make_interval(secs => $1)
             WHERE status = 'running' AND lease_expires_at IS NOT NULL
             RETURNING id",
        )
        .bind(gap_s)
        .fetch_all(&mut *tx)
        .await?
    } else {
        vec![]
    };
    sqlx::query(
        "INSERT INTO server_liveness (id, last_tick) VALUES (true, now())
         ON CONFLICT (id) DO UPDATE SET last_tick = EXCLUDED.last_tick",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Tick { gap_s, extended })
}
