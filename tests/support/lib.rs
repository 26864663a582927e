//! Test harness for the integration tests in `tests/`: real Postgres databases, real server and
//! worker processes (the binaries cargo built), a real headless Chromium through chromedriver.
//!
//! Postgres: `ALIGNDET_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/postgres`) is used to
//! create one fresh database per test, dropped afterwards.

pub mod accounts;
pub mod boxes;
pub mod browser;
pub mod datasets;
pub mod experiments;
pub mod pretrain;
pub mod rows;
pub mod server;
pub mod slurm;
pub mod workers;

pub use browser::*;
pub use datasets::*;
pub use rows::*;
pub use server::*;
pub use workers::*;

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Folder holding the built binaries (`target/debug`), found from the test executable's path.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> → target/debug
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace` first",
        p.display()
    );
    p
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A unique temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "aligndet-test-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p.canonicalize().expect("canonical temp dir"))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn admin_url() -> String {
    std::env::var("ALIGNDET_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-tAc", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A fresh database on the test Postgres, dropped on drop.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn create() -> TestDb {
        // The clock as well as pid and counter: a database left by a killed earlier process with
        // the same pid must not collide.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "aligndet_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        psql(&admin_url(), &format!("CREATE DATABASE {name}")).expect("create test database");
        let base = admin_url();
        let url = match base.rfind('/') {
            Some(i) => format!("{}/{name}", &base[..i]),
            None => panic!("bad ALIGNDET_TEST_PG"),
        };
        TestDb { name, url }
    }

    /// Run one SQL statement and return its text output.
    pub fn query(&self, sql: &str) -> String {
        psql(&self.url, sql).expect("query")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = psql(
            &admin_url(),
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A free local port, for a server that must come back at the same address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
