//! A fresh database per test on the test Postgres (`ALIGNDET_TEST_PG`; tests that need one are
//! skipped when it is unset), for the server's own unit tests against a real Postgres.

use sqlx::PgPool;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct TestDb {
    admin: PgPool,
    pub name: String,
    pub url: String,
}

/// A new, empty database, or `None` (with a note) when `ALIGNDET_TEST_PG` is unset.
pub async fn fresh_db() -> Option<TestDb> {
    let Ok(admin_url) = std::env::var("ALIGNDET_TEST_PG") else {
        eprintln!("ALIGNDET_TEST_PG unset: skipping");
        return None;
    };
    let admin = PgPool::connect(&admin_url).await.expect("admin connection");
    // pid, a per-process counter and the clock: two tests of one process (the counter) and a
    // database left behind by a killed earlier process with the same pid (the clock) never collide.
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!("aligndet_unit_{}_{n}_{nanos}", std::process::id());
    // The name is ours (digits and underscores): nothing to inject.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create database");
    let base = admin_url.rsplit_once('/').expect("URL with a database").0;
    let url = format!("{base}/{name}");
    Some(TestDb { admin, name, url })
}

impl TestDb {
    pub async fn drop_db(self) {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await;
    }
}
