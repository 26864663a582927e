//! The embedded Postgres cluster used when DATABASE_URL is unset.
//!
//! `initdb` + `pg_ctl` from the system packages; data under `<data_dir>/postgres`, listening only
//! on a Unix socket in `<data_dir>/postgres-socket` (no TCP port to collide with). Started with the
//! server and stopped with it; the data survives restarts. Postgres refuses to run as root, so
//! when we are root the cluster runs as the `postgres` system user.
//!
//! Access: the socket folder is 0700 and owned by the user the cluster runs as, and every
//! connection, the socket's included, needs the superuser's password (SCRAM), generated once and
//! kept in `<data_dir>/postgres-password` (0600, the server's user only). Clusters made by older
//! versions with `trust` auth are switched over at start.
//!
//! Start is robust against a previous server and postmaster killed with -9: a postmaster.pid
//! whose process is gone or a zombie is stale, a dying cluster's processes are waited out, and
//! readiness is confirmed by connecting, not by `pg_ctl status` (which a zombie fools).

mod auth;
mod procs;

pub use auth::{percent_encode, redact_url};

use anyhow::{Context, bail};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    password_file: PathBuf,
    run_as: Option<String>,
    password: String,
    stopped: bool,
    /// A postmaster already served the cluster when we started (a running server's).
    was_running: bool,
}

const DATABASE: &str = "aligndet";
/// Fixed so that an inherited PGPORT can never point clients and server at different sockets.
const PORT: &str = "5432";
/// How long the processes of a dying cluster (postmaster killed, backends exiting) are waited for.
const DYING_WAIT: Duration = Duration::from_secs(30);
/// How long a started (or found) postmaster gets to accept connections.
const READY_WAIT: Duration = Duration::from_secs(60);
const START_TRIES: u32 = 5;

/// A psql call that failed; `stderr` says why.
#[derive(Debug, thiserror::Error)]
#[error("psql failed: {stderr}")]
struct PsqlError {
    stderr: String,
}

impl PsqlError {
    fn is_auth_failure(&self) -> bool {
        self.stderr.contains("password authentication failed")
            || self.stderr.contains("no password supplied")
    }
}

enum ClusterState {
    /// The postmaster in postmaster.pid is alive (it may still be starting or stopping).
    Running(u32),
    /// No live postmaster, but processes of the cluster are still exiting.
    Dying(Vec<u32>),
    Stopped,
}

enum Ready {
    Yes,
    /// The postmaster we waited for exited (it was shutting down, or failed).
    Gone,
    TimedOut,
}

impl EmbeddedPostgres {
    /// Initialise the cluster if needed and start it. Returns once it accepts connections.
    pub fn start(data_dir: &Path) -> anyhow::Result<EmbeddedPostgres> {
        let bin_dir = find_bin_dir()?;
        let run_as = if is_root() {
            Some("postgres".to_string())
        } else {
            None
        };
        let password = auth::load_or_create_password(data_dir)?;
        let mut pg = EmbeddedPostgres {
            bin_dir,
            data: data_dir.join("postgres"),
            socket_dir: data_dir.join("postgres-socket"),
            password_file: auth::password_file(data_dir),
            run_as,
            password,
            // Nothing to stop until we have touched the cluster.
            stopped: true,
            was_running: false,
        };
        pg.prepare_socket_dir()?;
        pg.was_running = matches!(pg.cluster_state(), ClusterState::Running(_));
        if !pg.data.join("PG_VERSION").exists() {
            pg.initdb()?;
        }
        pg.stopped = false;
        pg.ensure_running()?;
        pg.ensure_password_auth()?;
        pg.ensure_database()?;
        Ok(pg)
    }

    /// The URL the server's pools connect with; it holds the password, so log only
    /// [`redact_url`] of it.
    pub fn database_url(&self) -> String {
        format!(
            "postgres://postgres:{}@localhost:{PORT}/{DATABASE}?host={}",
            percent_encode(&self.password),
            percent_encode(&self.socket_dir.to_string_lossy())
        )
    }

    /// Whether a postmaster was already serving the cluster at [`EmbeddedPostgres::start`]
    /// (the running server's, when `aligndet-server users …` runs beside it).
    pub fn was_running(&self) -> bool {
        self.was_running
    }

    /// Let go without stopping the cluster (someone else started it and still uses it).
    pub fn leave_running(mut self) {
        self.stopped = true;
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let data = self.data.to_string_lossy().into_owned();
        let fast = self
            .server_tool("pg_ctl")
            .args(["-D", &data, "-m", "fast", "-w", "-t", "30", "stop"])
            .output();
        if !fast.is_ok_and(|o| o.status.success())
            && !matches!(self.cluster_state(), ClusterState::Stopped)
        {
            tracing::warn!("embedded Postgres did not stop in 30 s; stopping it immediately");
            let _ = self
                .server_tool("pg_ctl")
                .args(["-D", &data, "-m", "immediate", "-w", "stop"])
                .output();
        }
    }

    /// 0700, owned by the user the cluster runs as: no other local user can reach the socket.
    fn prepare_socket_dir(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.socket_dir)
            .with_context(|| format!("creating {}", self.socket_dir.display()))?;
        self.give_to_run_as_user(&self.socket_dir, false)?;
        self.let_run_as_user_reach(&self.socket_dir);
        std::fs::set_permissions(&self.socket_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", self.socket_dir.display()))?;
        Ok(())
    }

    fn initdb(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data)
            .with_context(|| format!("creating {}", self.data.display()))?;
        self.give_to_run_as_user(&self.data, true)?;
        self.let_run_as_user_reach(&self.data);
        // initdb runs as the cluster's user, who may not read our password file: hand it a
        // copy in the (0700, theirs) socket folder, removed right after.
        let pwfile = self.socket_dir.join(".initdb-password");
        let _ = std::fs::remove_file(&pwfile);
        let _cleanup = RemoveOnDrop(pwfile.clone());
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pwfile)
            .and_then(|mut f| writeln!(f, "{}", self.password))
            .with_context(|| format!("writing {}", pwfile.display()))?;
        self.give_to_run_as_user(&pwfile, false)?;
        self.run_server_tool(
            "initdb",
            &[
                "-D",
                path_str(&self.data)?,
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                &format!("--pwfile={}", path_str(&pwfile)?),
                "-E",
                "UTF8",
                "--no-instructions",
            ],
        )
        .context("initdb failed")?;
        std::fs::write(self.data.join("pg_hba.conf"), auth::HBA_CONF)
            .context("writing pg_hba.conf")?;
        Ok(())
    }

    fn log_file(&self) -> PathBuf {
        self.data.join("server.log")
    }

    /// Start the cluster unless a healthy postmaster already serves it (one left by a killed
    /// server is reused), riding out a previous postmaster that is still dying.
    fn ensure_running(&self) -> anyhow::Result<()> {
        let dying_deadline = Instant::now() + DYING_WAIT;
        let mut delay = Duration::from_millis(250);
        let mut last_error = String::new();
        for attempt in 1..=START_TRIES {
            match self.settle(dying_deadline)? {
                ClusterState::Running(pid) => match self.wait_ready(pid) {
                    Ready::Yes => return Ok(()),
                    Ready::Gone => {
                        last_error = format!("postmaster {pid} exited before accepting connections")
                    }
                    Ready::TimedOut => {
                        last_error = format!(
                            "postmaster {pid} did not accept connections in {} s",
                            READY_WAIT.as_secs()
                        )
                    }
                },
                _ => {
                    self.remove_stale_locks();
                    match self.pg_ctl_start() {
                        Ok(()) => {
                            let pid = procs::lock_file_pid(&self.data.join("postmaster.pid"));
                            match pid.map(|p| self.wait_ready(p)) {
                                Some(Ready::Yes) => return Ok(()),
                                _ => last_error = "started, but not accepting connections".into(),
                            }
                        }
                        Err(e) => last_error = format!("{e:#}"),
                    }
                }
            }
            if attempt < START_TRIES {
                tracing::warn!(
                    "embedded Postgres start {attempt}/{START_TRIES} failed ({last_error}); retrying in {delay:?}"
                );
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(4));
            }
        }
        bail!(
            "the embedded Postgres did not start after {START_TRIES} tries: {last_error}; see {}{}",
            self.log_file().display(),
            log_tail(&self.log_file())
        )
    }

    fn cluster_state(&self) -> ClusterState {
        let live = procs::cluster_processes(&self.data);
        match procs::lock_file_pid(&self.data.join("postmaster.pid")) {
            Some(pid) if live.contains(&pid) => ClusterState::Running(pid),
            _ if !live.is_empty() => ClusterState::Dying(live),
            _ => ClusterState::Stopped,
        }
    }

    /// The cluster's state once no process of a dead postmaster is left (until `deadline`).
    fn settle(&self, deadline: Instant) -> anyhow::Result<ClusterState> {
        loop {
            match self.cluster_state() {
                ClusterState::Dying(pids) if Instant::now() >= deadline => bail!(
                    "processes {pids:?} of an earlier postmaster in {} are still running after {} s; see {}",
                    self.data.display(),
                    DYING_WAIT.as_secs(),
                    self.log_file().display()
                ),
                ClusterState::Dying(_) => std::thread::sleep(Duration::from_millis(100)),
                state => return Ok(state),
            }
        }
    }

    /// Connect (pg_isready) until the postmaster `pid` accepts connections.
    fn wait_ready(&self, pid: u32) -> Ready {
        let deadline = Instant::now() + READY_WAIT;
        loop {
            let ready = self
                .client_tool("pg_isready")
                .args(["-q", "-t", "2", "-d", "postgres", "-U", "postgres"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ready::Yes;
            }
            if !procs::is_live(pid) {
                return Ready::Gone;
            }
            if Instant::now() >= deadline {
                return Ready::TimedOut;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// With no process of the cluster alive, its lock files are stale: Postgres would refuse to
    /// start while their pid is a zombie (`kill(pid, 0)` succeeds), or reused by another process.
    fn remove_stale_locks(&self) {
        let mut locks = procs::socket_lock_files(&self.socket_dir);
        locks.push(self.data.join("postmaster.pid"));
        for lock in locks.iter().filter(|f| f.exists()) {
            let pid = procs::lock_file_pid(lock);
            let what = match pid.and_then(procs::state) {
                Some('Z') => "a zombie",
                Some(_) => "not a process of this cluster",
                None => "gone",
            };
            match std::fs::remove_file(lock) {
                Ok(()) => tracing::warn!(
                    "removed stale {} (pid {}: {what})",
                    lock.display(),
                    pid.map_or("?".to_string(), |p| p.to_string())
                ),
                Err(e) => tracing::warn!("could not remove stale {}: {e}", lock.display()),
            }
            // The socket beside a socket lock is as stale as the lock.
            if let Some(socket) = lock.to_str().and_then(|l| l.strip_suffix(".lock")) {
                let _ = std::fs::remove_file(socket);
            }
        }
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let socket = path_str(&self.socket_dir)?;
        // pg_ctl hands -o to a shell inside single quotes.
        anyhow::ensure!(
            !socket.contains('\''),
            "the data dir path must not contain a single quote: {socket}"
        );
        let opts = format!(
            "-c listen_addresses='' -c port={PORT} -c unix_socket_directories='{socket}' \
             -c unix_socket_permissions=0700 -c max_connections=100"
        );
        self.run_server_tool(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data)?,
                "-l",
                path_str(&self.log_file())?,
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .with_context(|| format!("pg_ctl start failed; see {}", self.log_file().display()))
    }

    fn ensure_database(&self) -> anyhow::Result<()> {
        let found = self.psql(
            Some(&self.password),
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"),
        )?;
        if found.trim() != "1" {
            self.psql(
                Some(&self.password),
                "postgres",
                &format!("CREATE DATABASE {DATABASE}"),
            )
            .context("creating the database")?;
        }
        Ok(())
    }

    /// Run SQL (given on stdin) as the superuser over the socket; returns the unaligned output.
    fn psql(&self, password: Option<&str>, database: &str, sql: &str) -> anyhow::Result<String> {
        let mut cmd = self.client_tool("psql");
        // -w: never prompt; a missing or wrong password is an error.
        cmd.args(["-X", "-w", "-q", "-tA", "-v", "ON_ERROR_STOP=1"])
            .args(["-d", database, "-U", "postgres"])
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(pw) = password {
            // The child's environment is readable only by our own user (and root).
            cmd.env("PGPASSWORD", pw);
        }
        let mut child = cmd.spawn().context("starting psql")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(sql.as_bytes()).context("writing to psql")?;
        }
        let out = child.wait_with_output().context("running psql")?;
        if !out.status.success() {
            return Err(PsqlError {
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A client program (psql, pg_isready) run as the server's own user, aimed at our socket,
    /// with nothing inherited that could point it elsewhere or supply a password.
    fn client_tool(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin_dir.join(program));
        c.arg("-h").arg(&self.socket_dir).args(["-p", PORT]);
        for var in [
            "PGPASSWORD",
            "PGHOST",
            "PGHOSTADDR",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGSERVICE",
            "PGOPTIONS",
        ] {
            c.env_remove(var);
        }
        // A path that cannot exist (libpq ignores a missing file silently, not /dev/null).
        c.env("PGPASSFILE", "/dev/null/no-pgpass")
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        c
    }

    /// A server program (initdb, pg_ctl, postgres) run as the cluster's user.
    fn server_tool(&self, program: &str) -> Command {
        let exe = self.bin_dir.join(program);
        let mut c = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        // Our working directory may be closed to the cluster's user.
        c.current_dir("/").env_remove("PGPORT").stdin(Stdio::null());
        c
    }

    fn run_server_tool(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let out = self
            .server_tool(program)
            .args(args)
            .output()
            .with_context(|| format!("starting {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} exited with {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    fn give_to_run_as_user(&self, path: &Path, recursive: bool) -> anyhow::Result<()> {
        if let Some(user) = &self.run_as {
            let mut chown = Command::new("chown");
            if recursive {
                chown.arg("-R");
            }
            let status = chown.arg(format!("{user}:{user}")).arg(path).status()?;
            if !status.success() {
                bail!("chown {} to {user} failed", path.display());
            }
        }
        Ok(())
    }

    /// The cluster's user must be able to traverse the folders above `path` (search only).
    fn let_run_as_user_reach(&self, path: &Path) {
        if self.run_as.is_some() {
            let mut parent = path.parent();
            while let Some(p) = parent {
                let _ = Command::new("chmod").arg("o+x").arg(p).status();
                parent = p.parent();
            }
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The last lines of the cluster's log, to put the reason in the error itself.
fn log_tail(log: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(log) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
    if tail.is_empty() {
        String::new()
    } else {
        format!("; it ends:\n  {tail}")
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("path {} is not UTF-8", p.display()))
}

/// Debian puts the server binaries in /usr/lib/postgresql/<version>/bin; pick the newest.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("ALIGNDET_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .context("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql), and DATABASE_URL is unset")
}
