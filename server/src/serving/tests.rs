//! Against a real Postgres (`ALIGNDET_TEST_PG`, a fresh database per test; skipped when unset):
//! the SQL downsampling is the Rust rule, and the live cache follows a run's changes.

use super::live_series;
use crate::config::ServerConfig;
use crate::state::AppState;
use crate::test_db::{TestDb, fresh_db};
use aligndet_common::api::MetricPoint;
use aligndet_common::series::downsample_keep_extremes;
use clap::Parser;
use sqlx::PgPool;
use std::time::{Duration, Instant};

/// A fresh, migrated database with one running run in it: the database, a pool on it and the
/// run's id (`None`, the test skipped, when `ALIGNDET_TEST_PG` is unset).
async fn db_with_a_run() -> Option<(TestDb, PgPool, i64)> {
    let db = fresh_db().await?;
    let pool = PgPool::connect(&db.url).await.expect("connect");
    crate::db::migrate(&pool).await.expect("migrate");
    let run = sqlx::query_scalar(
        "INSERT INTO runs (kind, name, config, status) VALUES ('benchmark', 't', '{}', 'running')
         RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .expect("run");
    Some((db, pool, run))
}

fn point(key: &str, step: i64, value: f64) -> MetricPoint {
    MetricPoint {
        key: key.into(),
        step,
        value,
        wall_time: step as f64,
    }
}

/// Deterministic values with many ties (few levels), spikes, NaN and infinities, uneven steps.
fn series_points() -> Vec<MetricPoint> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut pts = Vec::new();
    let mut step = 0;
    for i in 0..12_345 {
        step += 1 + (next() % 3) as i64;
        let v = match next() % 100 {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => 1e6 * if i % 2 == 0 { 1.0 } else { -1.0 },
            4 => -0.0,
            _ => (next() % 7) as f64 * 0.5,
        };
        pts.push(point("noisy", step, v));
    }
    for i in 0..5_000 {
        pts.push(point("flat", i, 2.0));
    }
    for i in 0..500 {
        pts.push(point("short", i * 10, (i as f64).sqrt()));
    }
    pts.push(point("single_nan", 7, f64::NAN));
    pts.push(point("single", 3, 0.25));
    pts
}

#[tokio::test]
async fn sql_downsampling_is_the_rust_rule() {
    let Some((db, pool, run)) = db_with_a_run().await else {
        return;
    };
    let pts = series_points();
    for chunk in pts.chunks(5_000) {
        crate::db::runs::insert_metrics(&pool, run, 1, chunk)
            .await
            .expect("insert");
    }
    for max_points in [4, 37, 40, 800, 20_000] {
        let rows = crate::db::runs::metric_series_downsampled(&pool, run, max_points)
            .await
            .expect("downsample");
        for key in ["noisy", "flat", "short", "single", "single_nan"] {
            let full: Vec<(f64, f64)> = pts
                .iter()
                .filter(|p| p.key == key && p.value.is_finite())
                .map(|p| (p.step as f64, p.value))
                .collect();
            let want = downsample_keep_extremes(&full, max_points);
            let got: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.0 == key)
                .map(|r| (r.1 as f64, r.2))
                .collect();
            // Bit-equal, so -0.0 and 0.0 count as different.
            let bits = |v: &[(f64, f64)]| -> Vec<(u64, u64)> {
                v.iter().map(|p| (p.0.to_bits(), p.1.to_bits())).collect()
            };
            assert_eq!(bits(&got), bits(&want), "{key} at {max_points} points");
        }
    }
    let live = live_series::compute(&pool, run).await.expect("compute");
    let counts = live.key_counts();
    assert_eq!(
        counts.iter().map(|c| c.1).sum::<i64>(),
        pts.len() as i64,
        "{counts:?}"
    );
    assert!(live.single_value("single_nan").is_some_and(f64::is_nan));
    assert_eq!(live.single_value("single"), Some(0.25));
    assert_eq!(live.single_value("short"), None);
    assert!(live.points("noisy").len() <= crate::plots::MAX_POINTS_PER_LINE);
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn live_series_follow_the_run() {
    let Some((db, pool, run)) = db_with_a_run().await else {
        return;
    };
    let data = std::env::temp_dir().join(&db.name);
    let cfg = ServerConfig::parse_from(["aligndet-server", "--database-url", &db.url]);
    let s = AppState::new(pool.clone(), pool.clone(), cfg, data, "token".into());
    // Real NOTIFY → broadcast bridge, as the server runs it.
    let _keeper = crate::state::spawn_background_tasks(&s, &db.url)
        .await
        .expect("background tasks");
    let batch = |from: i64, n: i64| -> Vec<MetricPoint> {
        (from..from + n)
            .map(|i| point("loss", i, (i as f64 * 0.01).sin()))
            .collect()
    };
    crate::db::runs::insert_metrics(&pool, run, 1, &batch(0, 3_000))
        .await
        .expect("insert");
    let first = live_series::for_run(&s, run).await.expect("first");
    assert_eq!(first.key_counts(), vec![("loss".to_string(), 3_000)]);
    let again = live_series::for_run(&s, run).await.expect("again");
    assert!(
        std::sync::Arc::ptr_eq(&first, &again),
        "unchanged run: cached"
    );
    // New points: served at once (the tail), and the last point is exact.
    crate::db::runs::insert_metrics(&pool, run, 1, &batch(3_000, 10))
        .await
        .expect("insert");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = live_series::for_run(&s, run).await.expect("after insert");
        if now.key_counts()[0].1 == 3_010 {
            let last = *now.points("loss").last().expect("points");
            assert_eq!(last, (3_009.0, (3_009.0f64 * 0.01).sin()));
            break;
        }
        assert!(Instant::now() < deadline, "change never seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And a full recomputation follows, equal to computing from scratch.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = live_series::for_run(&s, run).await.expect("later");
        let scratch = live_series::compute(&pool, run).await.expect("compute");
        if *now == scratch {
            break;
        }
        assert!(Instant::now() < deadline, "never recomputed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.shutdown.trigger();
    pool.close().await;
    db.drop_db().await;
}
