//! Access to the embedded cluster: the generated superuser password, `pg_hba.conf`, switching a
//! trusting cluster over to passwords, and connection URLs that carry (or hide) the password.

use super::{EmbeddedPostgres, PsqlError, path_str};
use anyhow::{Context, bail};
use rand::Rng;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `<data_dir>/postgres-password`: readable only by the server's own user.
pub fn password_file(data_dir: &Path) -> PathBuf {
    data_dir.join("postgres-password")
}

/// Read the cluster password, or generate and store one (0600). A file with looser permissions
/// is tightened rather than trusted as is.
pub fn load_or_create_password(data_dir: &Path) -> anyhow::Result<String> {
    let path = password_file(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("restricting {}", path.display()))?;
            let pw = text.trim().to_string();
            anyhow::ensure!(!pw.is_empty(), "{} is empty", path.display());
            Ok(pw)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pw = random_password();
            // Written under a temporary name and renamed: a crash never leaves half a password.
            let tmp = data_dir.join(".postgres-password.tmp");
            let _ = std::fs::remove_file(&tmp);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| {
                    f.write_all(pw.as_bytes())?;
                    f.sync_all()
                })
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            Ok(pw)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn random_password() -> String {
    rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// The pg_hba.conf every embedded cluster gets: a password (SCRAM) on every connection, the
/// Unix socket included. The socket folder's 0700 is the first fence, this is the second.
pub const HBA_CONF: &str = "\
# Written by AlignDet Studio: every connection needs the password in <data dir>/postgres-password.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 scram-sha-256
host    all          all   127.0.0.1/32  scram-sha-256
host    all          all   ::1/128       scram-sha-256
local   replication  all                 scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
host    replication  all   ::1/128       scram-sha-256
";

/// Whether any rule of this pg_hba.conf lets a client in without a password.
pub fn hba_allows_passwordless(conf: &str) -> bool {
    conf.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .any(|rule| {
            rule.split_whitespace()
                .any(|t| matches!(t, "trust" | "peer" | "ident"))
        })
}

/// Percent-encode everything but RFC 3986's unreserved characters (for URL user info, paths
/// and query values alike).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `url` with its password (user info or `password=` query value) replaced by `***`, for logs
/// and error messages. Anything that does not parse as a URL is hidden entirely.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsable database URL>".to_string();
    };
    // The user info ends at the last '@' before the query: an unencoded '@' or '/' in a
    // password must not leak the rest of it.
    let before_query = rest.split(['?', '#']).next().unwrap_or("");
    let (userinfo, rest) = match before_query.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(host_end);
    let authority = match userinfo {
        Some(info) => match info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{info}@{host}"),
        },
        None => host.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl EmbeddedPostgres {
    /// Require the password on every connection. A cluster from an older version still trusts
    /// local connections: set the password through that door, then close it. A cluster whose
    /// password is not the one in our file (file lost or edited) gets the file's password.
    pub(super) fn ensure_password_auth(&self) -> anyhow::Result<()> {
        let hba_path = self.data.join("pg_hba.conf");
        let hba = std::fs::read_to_string(&hba_path)
            .with_context(|| format!("reading {}", hba_path.display()))?;
        if hba_allows_passwordless(&hba) {
            self.psql(None, "postgres", &self.set_password_sql())
                .context("setting the superuser password")?;
            // Rewritten in place, so the file keeps its owner (the cluster's user) and mode.
            std::fs::write(&hba_path, HBA_CONF)
                .with_context(|| format!("writing {}", hba_path.display()))?;
            self.run_server_tool("pg_ctl", &["-D", path_str(&self.data)?, "reload"])
                .context("reloading pg_hba.conf")?;
            self.wait_until_password_required()?;
            tracing::warn!(
                "the embedded cluster let local users in without a password; it now requires the one in {}",
                self.password_file.display()
            );
        }
        match self.psql(Some(&self.password), "postgres", "SELECT 1") {
            Ok(_) => Ok(()),
            Err(e)
                if e.downcast_ref::<PsqlError>()
                    .is_some_and(PsqlError::is_auth_failure) =>
            {
                tracing::warn!(
                    "the embedded cluster refused the password in {}; setting it again",
                    self.password_file.display()
                );
                self.reset_password()
            }
            Err(e) => Err(e.context("connecting to the embedded Postgres")),
        }
    }

    fn set_password_sql(&self) -> String {
        format!(
            "SET password_encryption = 'scram-sha-256';\nALTER USER postgres PASSWORD '{}';\n",
            self.password.replace('\'', "''")
        )
    }

    /// A reload is asynchronous: wait until a connection without the password is refused.
    fn wait_until_password_required(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.psql(None, "postgres", "SELECT 1") {
                Err(e)
                    if e.downcast_ref::<PsqlError>()
                        .is_some_and(PsqlError::is_auth_failure) =>
                {
                    return Ok(());
                }
                _ if Instant::now() >= deadline => {
                    bail!(
                        "the embedded cluster still accepts connections without a password after reloading pg_hba.conf"
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Set the superuser password in single-user mode (no connection, so no authentication),
    /// which needs the cluster stopped; then start it again.
    fn reset_password(&self) -> anyhow::Result<()> {
        self.run_server_tool(
            "pg_ctl",
            &["-D", path_str(&self.data)?, "-m", "fast", "-w", "stop"],
        )
        .context("stopping the cluster to reset its password")?;
        let mut child = self
            .server_tool("postgres")
            .args(["--single", "-D", path_str(&self.data)?, "postgres"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting postgres --single")?;
        // Through stdin, never the command line, which every local user can read.
        let sql = self.set_password_sql().replace('\n', " ");
        if let Some(mut stdin) = child.stdin.take() {
            writeln!(stdin, "{sql}").context("writing to postgres --single")?;
        }
        let out = child
            .wait_with_output()
            .context("waiting for postgres --single")?;
        if !out.status.success() {
            bail!(
                "postgres --single exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.ensure_running()?;
        self.psql(Some(&self.password), "postgres", "SELECT 1")
            .context("connecting with the reset password")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(
            redact_url("postgres://postgres:s3cr%40t@localhost/db?host=%2Ftmp"),
            "postgres://postgres:***@localhost/db?host=%2Ftmp"
        );
        assert_eq!(
            redact_url("postgres://u@h:5432/db?sslmode=disable&password=hunter2"),
            "postgres://u@h:5432/db?sslmode=disable&password=***"
        );
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        // A password holding '@' and '/' (encoded or not) is still hidden.
        assert_eq!(
            redact_url("postgres://me:a@b/c@host/db"),
            "postgres://me:***@host/db"
        );
        assert_eq!(redact_url("garbage hunter2"), "<unparsable database URL>");
    }

    #[test]
    fn percent_encoding_round_trips_through_sqlx() {
        let pw = "p@ss:w/rd ?&%#";
        let url = format!(
            "postgres://postgres:{}@localhost/aligndet?host={}",
            percent_encode(pw),
            percent_encode("/tmp/a b/socket")
        );
        let opts: sqlx::postgres::PgConnectOptions = url.parse().expect("parses");
        assert_eq!(opts.get_socket(), Some(&PathBuf::from("/tmp/a b/socket")));
        assert_eq!(opts.get_database(), Some("aligndet"));
        assert!(!redact_url(&url).contains("w%2Frd"));
    }

    #[test]
    fn trust_peer_and_ident_rules_are_found() {
        assert!(!hba_allows_passwordless(HBA_CONF));
        assert!(hba_allows_passwordless("local all all trust\n"));
        assert!(hba_allows_passwordless(
            "# c\nhost all all 127.0.0.1/32 scram-sha-256\nlocal all postgres peer"
        ));
        assert!(!hba_allows_passwordless("# local all all trust\n"));
    }

    #[test]
    fn a_password_file_is_created_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("aligndet-pw-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pw = load_or_create_password(&dir).expect("created");
        assert_eq!(pw.len(), 32);
        let mode = std::fs::metadata(password_file(&dir))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(password_file(&dir), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        assert_eq!(load_or_create_password(&dir).expect("read"), pw);
        let mode = std::fs::metadata(password_file(&dir))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "loosened file tightened again");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
