//! The embedded Postgres cluster used when DATABASE_URL is unset.
//!
//! `initdb` + `pg_ctl` from the system packages; data under `<data_dir>/postgres`, listening only
//! on a Unix socket in `<data_dir>/postgres-socket` (no TCP port to collide with). Started with the
//! server and stopped with it; the data survives restarts. Postgres refuses to run as root, so
//! when we are root the cluster runs as the `postgres` system user.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<String>,
}

const DATABASE: &str = "aligndet";

impl EmbeddedPostgres {
    /// Initialise the cluster if needed and start it. Returns once it accepts connections.
    pub fn start(data_dir: &Path) -> anyhow::Result<EmbeddedPostgres> {
        let bin_dir = find_bin_dir()?;
        let run_as = if is_root() {
            Some("postgres".to_string())
        } else {
            None
        };
        let pg = EmbeddedPostgres {
            bin_dir,
            data: data_dir.join("postgres"),
            socket_dir: data_dir.join("postgres-socket"),
            run_as,
        };
        std::fs::create_dir_all(&pg.socket_dir)?;
        pg.give_to_run_as_user(&pg.socket_dir)?;
        if !pg.data.join("PG_VERSION").exists() {
            std::fs::create_dir_all(&pg.data)?;
            pg.give_to_run_as_user(&pg.data)?;
            pg.run(
                "initdb",
                &[
                    "-D",
                    path_str(&pg.data)?,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ],
            )
            .context("initdb failed")?;
        }
        // A cluster left running by a killed server is reused; a stale pid file is handled by pg_ctl.
        if !pg.is_running() {
            let opts = format!(
                "-c listen_addresses='' -c unix_socket_directories='{}' -c max_connections=100",
                path_str(&pg.socket_dir)?
            );
            let log = pg.data.join("server.log");
            pg.run(
                "pg_ctl",
                &[
                    "-D",
                    path_str(&pg.data)?,
                    "-l",
                    path_str(&log)?,
                    "-o",
                    &opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            )
            .with_context(|| format!("pg_ctl start failed; see {}", log.display()))?;
        }
        pg.ensure_database()?;
        Ok(pg)
    }

    pub fn database_url(&self) -> String {
        format!(
            "postgres://postgres@localhost/{DATABASE}?host={}",
            self.socket_dir.display()
        )
    }

    fn is_running(&self) -> bool {
        self.command("pg_ctl")
            .args(["-D", &self.data.to_string_lossy(), "status"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn ensure_database(&self) -> anyhow::Result<()> {
        let sock = path_str(&self.socket_dir)?.to_string();
        let out = self
            .command("psql")
            .args(["-h", &sock, "-U", "postgres", "-d", "postgres", "-tAc"])
            .arg(format!(
                "SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
            ))
            .output()
            .context("running psql")?;
        if !String::from_utf8_lossy(&out.stdout).contains('1') {
            self.run("createdb", &["-h", &sock, "-U", "postgres", DATABASE])?;
        }
        Ok(())
    }

    pub fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                &self.data.to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "stop",
            ])
            .output();
    }

    fn command(&self, program: &str) -> Command {
        let exe = self.bin_dir.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let out = self
            .command(program)
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

    fn give_to_run_as_user(&self, dir: &Path) -> anyhow::Result<()> {
        if let Some(user) = &self.run_as {
            let status = Command::new("chown")
                .args(["-R", &format!("{user}:{user}")])
                .arg(dir)
                .status()?;
            if !status.success() {
                bail!("chown {} to {user} failed", dir.display());
            }
            // The postgres user must be able to reach the folder through its parents.
            let mut parent = dir.parent();
            while let Some(p) = parent {
                let _ = Command::new("chmod").arg("o+x").arg(p).status();
                parent = p.parent();
            }
        }
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
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
