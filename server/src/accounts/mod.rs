//! Accounts: roles, password hashing, session and API-token secrets, and the first admin.
//!
//! - [`gate`]: who is asking (session cookie for pages, personal token for the user API) and the
//!   one place roles are enforced: a middleware layer per route group.
//! - [`login_limit`]: the failed-login rate limit.
//! - [`cli`]: `aligndet-server users …` and `tokens create`.

pub mod cli;
pub mod gate;
pub mod login_limit;

use crate::db;
use anyhow::Context;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::Rng;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::path::{Path, PathBuf};

/// What a user may do; each role can do everything the one before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Role {
    /// Read every page and the read API.
    Viewer,
    /// Also create and cancel runs, import datasets, create experiments.
    Editor,
    /// Also manage users and workers.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Editor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The signed-in person making a request.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: i64,
    pub name: String,
    pub role: Role,
}

impl CurrentUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// A stored holder; an unknown role (edited by hand in the table) counts as viewer.
    pub fn from_holder(h: db::users::Holder) -> CurrentUser {
        CurrentUser {
            role: Role::parse(&h.role).unwrap_or(Role::Viewer),
            id: h.id,
            name: h.name,
        }
    }
}

/// Personal API tokens start with this, so either side of the API can tell a person's token
/// from the worker token and say which one a call needs.
pub const API_TOKEN_PREFIX: &str = "adt_";

pub const MIN_PASSWORD_CHARS: usize = 10;

/// The sha256 of a session or API token: what the database keeps.
pub fn token_digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A new personal API token (shown once) and its digest.
pub fn new_api_token() -> (String, Vec<u8>) {
    let token = format!("{API_TOKEN_PREFIX}{}", crate::secrets::random_token());
    let digest = token_digest(&token);
    (token, digest)
}

/// An argon2id hash of the password with a fresh salt (PHC string).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt_bytes: [u8; 16] = rand::rng().random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

/// Whether `password` matches the stored hash (a malformed hash never matches).
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A user name: 1–64 letters, digits, `.`, `_`, `-` (it appears in pages and logs).
pub fn check_user_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || name.len() > 64 {
        return Err("a user name has 1 to 64 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "the user name {name:?} may contain only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(name.to_string())
}

pub fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "a password needs at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if password.len() > 1024 {
        return Err("a password has at most 1024 bytes".into());
    }
    Ok(())
}

/// Where the first admin's one-time password is written.
pub fn first_admin_password_file(data_dir: &Path) -> PathBuf {
    data_dir.join("first-admin-password")
}

/// How the server starts with respect to accounts.
#[derive(Debug, PartialEq)]
pub enum Bootstrap {
    /// Users exist already.
    HasUsers,
    /// No user existed: `admin` was created, its password written to this file.
    CreatedAdmin(PathBuf),
}

/// Serving with no user at all: on a loopback address, create `admin` with a random password
/// in a 0600 file (the default stays one command); elsewhere refuse, since everyone on the
/// network could race the operator to that account's first login.
pub async fn bootstrap(pool: &PgPool, data_dir: &Path, bind: &str) -> anyhow::Result<Bootstrap> {
    if db::users::count(pool).await? > 0 {
        return Ok(Bootstrap::HasUsers);
    }
    if !is_loopback_bind(bind) {
        anyhow::bail!(
            "refusing to serve on {bind} with no user account: anyone on the network could use it. \
             Create an admin first: aligndet-server --data-dir {} users add NAME --role admin \
             (or start once on 127.0.0.1, which creates `admin` with a one-time password)",
            data_dir.display()
        );
    }
    let password = crate::secrets::random_token();
    let hash = hash_password(&password)?;
    let file = first_admin_password_file(data_dir);
    write_private(&file, &format!("{password}\n"))?;
    db::users::create(pool, "admin", &hash, Role::Admin.as_str())
        .await
        .context("creating the first admin")?;
    Ok(Bootstrap::CreatedAdmin(file))
}

/// The bind address is loopback (127.0.0.0/8, ::1, localhost).
pub fn is_loopback_bind(bind: &str) -> bool {
    let host = match bind.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => bind.rsplit_once(':').map_or(bind, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Write a file only its owner can read (created 0600, never widened in between).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_salt_and_verify() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert_ne!(a, b, "fresh salt each time");
        assert!(a.starts_with("$argon2id$"));
        assert!(!a.contains("correct horse"));
        assert!(verify_password("correct horse battery", &a));
        assert!(!verify_password("correct horse batterx", &a));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn loopback_binds() {
        assert!(is_loopback_bind("127.0.0.1:8080"));
        assert!(is_loopback_bind("127.0.0.1:0"));
        assert!(is_loopback_bind("[::1]:80"));
        assert!(is_loopback_bind("localhost:8080"));
        assert!(!is_loopback_bind("0.0.0.0:8080"));
        assert!(!is_loopback_bind("[::]:8080"));
        assert!(!is_loopback_bind("10.1.2.3:8080"));
    }

    #[test]
    fn names_and_roles() {
        assert_eq!(check_user_name(" ana-1 ").unwrap(), "ana-1");
        assert!(check_user_name("a b").is_err());
        assert!(check_user_name("<script>").is_err());
        assert!(check_password("short").is_err());
        assert!(Role::Admin > Role::Editor && Role::Editor > Role::Viewer);
        assert_eq!(Role::parse("editor"), Some(Role::Editor));
        assert_eq!(Role::parse("root"), None);
        let (t, d) = new_api_token();
        assert!(t.starts_with(API_TOKEN_PREFIX));
        assert_eq!(d, token_digest(&t));
    }
}
