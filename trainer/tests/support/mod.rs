//! What the trainer's parity tests share: the setup's Python venv and running the repository's
//! reference scripts with it. (Each test binary uses only some of it.)
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

/// The setup's cache folder (`ALIGNDET_CACHE`, default ~/.cache/aligndet-studio).
pub fn cache() -> PathBuf {
    std::env::var_os("ALIGNDET_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME is set"))
                .join(".cache/aligndet-studio")
        })
}

/// Run scripts/`script` with the setup's venv; it must succeed.
pub fn run_script(script: &str, args: &[&OsStr]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(script);
    let status = Command::new(cache().join("venv/bin/python"))
        .arg(&path)
        .args(args)
        .status()
        .expect("run a Python script (scripts/setup.sh installs its venv)");
    assert!(status.success(), "{script} failed");
}

/// Run scripts/`script` with `args` and `--out DIR` (a fresh temp folder named by `tag`);
/// returns the folder the reference wrote.
pub fn reference(script: &str, tag: &str, args: &[&str]) -> PathBuf {
    let out = std::env::temp_dir().join(format!("aligndet-{tag}-{}", std::process::id()));
    let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    all.push(OsStr::new("--out"));
    all.push(out.as_os_str());
    run_script(script, &all);
    out
}
