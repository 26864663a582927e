//! What `/proc` says about a cluster's processes. `pg_ctl status` (and Postgres's own lock-file
//! check) use `kill(pid, 0)`, which also succeeds for a zombie: a postmaster killed with -9 whose
//! parent has not reaped it looks "running" to them for as long as the zombie lasts.

use std::path::{Path, PathBuf};

/// The process state letter from `/proc/PID/stat` (`R`, `S`, `Z`, …); None if there is no such
/// process.
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (comm) S ...": comm may itself hold spaces and parentheses, so split at the last ')'.
    let (_, after) = stat.rsplit_once(')')?;
    after.trim_start().chars().next()
}

/// Alive and not a zombie (or dead, `X`).
pub fn is_live(pid: u32) -> bool {
    matches!(state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// The pid on the first line of a `postmaster.pid` or socket lock file.
pub fn lock_file_pid(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    // Socket lock files of old servers hold a negative pid for "postmaster"; use its magnitude.
    text.lines()
        .next()?
        .trim()
        .trim_start_matches('-')
        .parse()
        .ok()
}

/// Live Postgres processes of the cluster in `data`: their binary is `postgres` and their
/// working directory is the data folder (the postmaster and every backend chdir there).
pub fn cluster_processes(data: &Path) -> Vec<u32> {
    let Ok(data) = data.canonicalize() else {
        return vec![];
    };
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && is_live(pid))
        .filter(|&pid| {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            cwd.as_deref() == Some(data.as_path()) && exe.as_deref().is_some_and(is_postgres_binary)
        })
        .collect()
}

fn is_postgres_binary(exe: &Path) -> bool {
    // A binary replaced by a package upgrade reads "postgres (deleted)".
    exe.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "postgres" || n.starts_with("postgres "))
}

/// Socket lock files (`.s.PGSQL.<port>.lock`) in the socket folder.
pub fn socket_lock_files(socket_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(socket_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".s.PGSQL.") && n.ends_with(".lock"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zombie_is_not_live_and_a_reaped_child_is_gone() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        // Not yet waited for: once it exits it stays a zombie until we reap it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while state(pid) != Some('Z') {
            assert!(std::time::Instant::now() < deadline, "never a zombie");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!is_live(pid));
        child.wait().expect("reap");
        assert_eq!(state(pid), None);
        assert!(is_live(std::process::id()));
    }

    #[test]
    fn lock_files_give_their_pid() {
        let dir = std::env::temp_dir().join(format!("aligndet-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("postmaster.pid");
        std::fs::write(&f, "4242\n/data\n1700000000\n5432\n").expect("write");
        assert_eq!(lock_file_pid(&f), Some(4242));
        std::fs::write(&f, "garbage").expect("write");
        assert_eq!(lock_file_pid(&f), None);
        assert_eq!(lock_file_pid(&dir.join("missing")), None);
        std::fs::write(dir.join(".s.PGSQL.5432.lock"), "1\n").expect("write");
        std::fs::write(dir.join(".s.PGSQL.5432"), "").expect("write");
        assert_eq!(
            socket_lock_files(&dir),
            vec![dir.join(".s.PGSQL.5432.lock")]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
