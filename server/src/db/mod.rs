//! All SQL lives here, one module per table group. Routes call these functions and never write
//! SQL themselves; the queue's lease logic lives in `crate::queue`.

pub mod compare;
pub mod content;
pub mod datasets;
pub mod experiments;
pub mod liveness;
pub mod logs;
pub mod proposals;
pub mod run_manage;
pub mod run_search;
pub mod runs;
pub mod stored_config;
pub mod users;
pub mod workers;

#[cfg(test)]
mod migration_tests;

/// The column `creator` of a row of `$table`: the name of the user who created it (NULL for
/// rows made before accounts). Every list and page that says who made something reads it so.
macro_rules! creator_column {
    ($table:literal) => {
        concat!(
            "(SELECT name FROM users WHERE id = ",
            $table,
            ".created_by) AS creator"
        )
    };
}
pub(crate) use creator_column;

/// `SELECT $table.*` with its [`creator_column!`], then `$rest` (`"WHERE id = $1"`, …).
macro_rules! select_with_creator {
    ($table:literal, $rest:literal) => {
        concat!(
            "SELECT ",
            $table,
            ".*, ",
            $crate::db::creator_column!($table),
            " FROM ",
            $table,
            " ",
            $rest
        )
    };
}
pub(crate) use select_with_creator;

use sqlx::postgres::{PgRow, Postgres};
use sqlx::{Encode, FromRow, PgPool, Type};

// Most reads here are "the rows of this table for this one key" (`$1`): these three run such a
// read, so each function says only its SQL, its key and what a row is.

/// Every row of `sql`, with `$1` bound to `key`, on the pool or inside a transaction.
pub async fn rows_by<'e, 'q, T, K>(
    db: impl sqlx::PgExecutor<'e>,
    sql: &'static str,
    key: K,
) -> sqlx::Result<Vec<T>>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
    K: 'q + Encode<'q, Postgres> + Type<Postgres> + Send,
{
    sqlx::query_as(sql).bind(key).fetch_all(db).await
}

/// The row of `sql` (at most one), with `$1` bound to `key`.
pub async fn row_by<'q, T, K>(pool: &PgPool, sql: &'static str, key: K) -> sqlx::Result<Option<T>>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
    K: 'q + Encode<'q, Postgres> + Type<Postgres> + Send,
{
    sqlx::query_as(sql).bind(key).fetch_optional(pool).await
}

/// The one-column rows of `sql` as values, with `$1` bound to `key`.
pub async fn values_by<'q, T, K>(pool: &PgPool, sql: &'static str, key: K) -> sqlx::Result<Vec<T>>
where
    T: for<'r> sqlx::Decode<'r, Postgres> + Type<Postgres> + Send + Unpin,
    K: 'q + Encode<'q, Postgres> + Type<Postgres> + Send,
{
    sqlx::query_scalar(sql).bind(key).fetch_all(pool).await
}

/// Write `sql` with `$1` bound to `key` and `$2` to `value` (most writes here set one column
/// of the row with that key); whether any row was there to change.
pub async fn write_by<'e, 'q, K, V>(
    db: impl sqlx::PgExecutor<'e>,
    sql: &'static str,
    key: K,
    value: V,
) -> sqlx::Result<bool>
where
    K: 'q + Encode<'q, Postgres> + Type<Postgres> + Send,
    V: 'q + Encode<'q, Postgres> + Type<Postgres> + Send,
{
    let done = sqlx::query(sql).bind(key).bind(value).execute(db).await?;
    Ok(done.rows_affected() > 0)
}

/// Whether `e` is the unique violation (SQLSTATE 23505) of `constraint`: another writer took
/// the value between the caller's check and its insert.
pub fn is_unique_violation(e: &sqlx::Error, constraint: &str) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.code().as_deref() == Some("23505") && d.constraint() == Some(constraint))
}

/// Tell listeners (run pages) that something about a run changed.
pub async fn notify_run_changed<'e, E>(executor: E, run_id: i64) -> sqlx::Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    sqlx::query("SELECT pg_notify('run_changed', $1)")
        .bind(run_id.to_string())
        .execute(executor)
        .await?;
    Ok(())
}

/// A read-only transaction at REPEATABLE READ: every query made in it sees one snapshot.
pub async fn begin_snapshot(
    pool: &PgPool,
) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("../migrations").run(pool).await?;
    Ok(())
}
