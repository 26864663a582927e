//! Users, their browser sessions and personal API tokens. Secrets arrive here already hashed
//! (sha256 of a session or API token, an argon2 PHC string of a password): no clear secret is
//! ever bound to a query.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A user as the login check needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub password_hash: String,
    pub role: String,
    pub disabled: bool,
}

/// Who a session or API token belongs to (only enabled users come back).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Holder {
    pub id: i64,
    pub name: String,
    pub role: String,
}

/// A user as the admin page lists them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserSummary {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub sessions: i64,
    pub tokens: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn count(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(pool)
        .await
}

/// A duplicate name is a unique violation (`is_name_taken`).
pub async fn create(
    pool: &PgPool,
    name: &str,
    password_hash: &str,
    role: &str,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO users (name, password_hash, role) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(name)
    .bind(password_hash)
    .bind(role)
    .fetch_one(pool)
    .await
}

pub fn is_name_taken(e: &sqlx::Error) -> bool {
    super::is_unique_violation(e, "users_name_key")
}

pub async fn by_name(pool: &PgPool, name: &str) -> sqlx::Result<Option<UserRow>> {
    super::row_by(
        pool,
        "SELECT id, name, password_hash, role, disabled FROM users WHERE name = $1",
        name,
    )
    .await
}

pub async fn by_id(pool: &PgPool, id: i64) -> sqlx::Result<Option<UserRow>> {
    super::row_by(
        pool,
        "SELECT id, name, password_hash, role, disabled FROM users WHERE id = $1",
        id,
    )
    .await
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<UserSummary>> {
    sqlx::query_as(
        "SELECT u.id, u.name, u.role, u.disabled, u.created_at,
                (SELECT COUNT(*) FROM sessions s WHERE s.user_id = u.id AND s.expires_at > now())
                    AS sessions,
                (SELECT COUNT(*) FROM api_tokens t WHERE t.user_id = u.id AND t.revoked_at IS NULL)
                    AS tokens
         FROM users u ORDER BY u.name",
    )
    .fetch_all(pool)
    .await
}

/// Whether the user exists.
pub async fn set_role(pool: &PgPool, id: i64, role: &str) -> sqlx::Result<bool> {
    super::write_by(pool, "UPDATE users SET role = $2 WHERE id = $1", id, role).await
}

pub async fn set_password(pool: &PgPool, id: i64, password_hash: &str) -> sqlx::Result<bool> {
    super::write_by(
        pool,
        "UPDATE users SET password_hash = $2 WHERE id = $1",
        id,
        password_hash,
    )
    .await
}

/// Disabling also ends the user's sessions and revokes their tokens, in one transaction: a
/// disabled user keeps no way in, even if the flag is cleared later.
pub async fn set_disabled(pool: &PgPool, id: i64, disabled: bool) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let found = super::write_by(
        &mut *tx,
        "UPDATE users SET disabled = $2 WHERE id = $1",
        id,
        disabled,
    )
    .await?;
    if disabled {
        revoke_all_in(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok(found)
}

/// End every session and revoke every token of a user; (sessions, tokens) affected.
pub async fn revoke_all(pool: &PgPool, user_id: i64) -> sqlx::Result<(u64, u64)> {
    let mut tx = pool.begin().await?;
    let n = revoke_all_in(&mut tx, user_id).await?;
    tx.commit().await?;
    Ok(n)
}

async fn revoke_all_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    user_id: i64,
) -> sqlx::Result<(u64, u64)> {
    let sessions = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    let tokens = sqlx::query(
        "UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok((sessions, tokens))
}

/// Store a new session (expired ones of the same user are swept at the same time).
pub async fn create_session(
    pool: &PgPool,
    user_id: i64,
    token_sha256: &[u8],
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND expires_at <= now()")
        .bind(user_id)
        .execute(pool)
        .await?;
    sqlx::query("INSERT INTO sessions (token_sha256, user_id, expires_at) VALUES ($1, $2, $3)")
        .bind(token_sha256)
        .bind(user_id)
        .bind(expires_at)
        .execute(pool)
        .await?;
    Ok(())
}

/// The enabled user holding an unexpired session.
pub async fn session_holder(pool: &PgPool, token_sha256: &[u8]) -> sqlx::Result<Option<Holder>> {
    super::row_by(
        pool,
        "SELECT u.id, u.name, u.role FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.token_sha256 = $1 AND s.expires_at > now() AND NOT u.disabled",
        token_sha256,
    )
    .await
}

pub async fn delete_session(pool: &PgPool, token_sha256: &[u8]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE token_sha256 = $1")
        .bind(token_sha256)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn create_token(
    pool: &PgPool,
    user_id: i64,
    name: &str,
    token_sha256: &[u8],
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO api_tokens (user_id, name, token_sha256) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(user_id)
    .bind(name)
    .bind(token_sha256)
    .fetch_one(pool)
    .await
}

/// The enabled user holding an unrevoked token (its last use is recorded).
pub async fn token_holder(pool: &PgPool, token_sha256: &[u8]) -> sqlx::Result<Option<Holder>> {
    super::row_by(
        pool,
        "WITH used AS (
             UPDATE api_tokens SET last_used_at = now()
             WHERE token_sha256 = $1 AND revoked_at IS NULL RETURNING user_id)
         SELECT u.id, u.name, u.role FROM used JOIN users u ON u.id = used.user_id
         WHERE NOT u.disabled",
        token_sha256,
    )
    .await
}

pub async fn tokens_of(pool: &PgPool, user_id: i64) -> sqlx::Result<Vec<TokenRow>> {
    super::rows_by(
        pool,
        "SELECT id, user_id, name, created_at, last_used_at, revoked_at FROM api_tokens
         WHERE user_id = $1 ORDER BY revoked_at IS NOT NULL, id DESC",
        user_id,
    )
    .await
}

pub async fn all_tokens(pool: &PgPool) -> sqlx::Result<Vec<TokenRow>> {
    sqlx::query_as(
        "SELECT id, user_id, name, created_at, last_used_at, revoked_at FROM api_tokens
         WHERE revoked_at IS NULL ORDER BY user_id, id",
    )
    .fetch_all(pool)
    .await
}

/// Revoke one token; `owner` limits it to that user's tokens (`None`: any, for admins).
/// Whether a live token was revoked.
pub async fn revoke_token(pool: &PgPool, id: i64, owner: Option<i64>) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE api_tokens SET revoked_at = now()
         WHERE id = $1 AND revoked_at IS NULL AND ($2::BIGINT IS NULL OR user_id = $2)",
    )
    .bind(id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The names of users by id, for "created by" columns.
pub async fn name_of(pool: &PgPool, id: Option<i64>) -> sqlx::Result<Option<String>> {
    let Some(id) = id else { return Ok(None) };
    super::row_by::<(String,), _>(pool, "SELECT name FROM users WHERE id = $1", id)
        .await
        .map(|r| r.map(|(n,)| n))
}
