//! Which cached blobs were verified, and when each was last used. A blob whose file still has
//! the size, modification time and inode it had when its hash was checked is not hashed again
//! (git's index trusts the same stat data): any write to the file changes its modification time,
//! so a corrupted or replaced file is hashed, caught and fetched again. The record is one JSON
//! file beside the blobs; a missing or unreadable one only means every blob is hashed once more.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    bytes: u64,
    mtime_ns: i64,
    inode: u64,
}

impl Stamp {
    /// [`Stamp::to_bytes`]'s length.
    pub const BYTES: usize = 24;

    pub fn to_bytes(self) -> [u8; Self::BYTES] {
        let mut b = [0; Self::BYTES];
        b[..8].copy_from_slice(&self.bytes.to_le_bytes());
        b[8..16].copy_from_slice(&self.mtime_ns.to_le_bytes());
        b[16..].copy_from_slice(&self.inode.to_le_bytes());
        b
    }

    /// The inverse of [`Stamp::to_bytes`] on a slice of [`Stamp::BYTES`] bytes.
    pub fn from_bytes(b: &[u8]) -> Stamp {
        let word = |at: usize| {
            let mut w = [0; 8];
            w.copy_from_slice(&b[at..at + 8]);
            w
        };
        Stamp {
            bytes: u64::from_le_bytes(word(0)),
            mtime_ns: i64::from_le_bytes(word(8)),
            inode: u64::from_le_bytes(word(16)),
        }
    }

    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            bytes: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            inode: meta.ino(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    stamp: Stamp,
    /// Seconds since the Unix epoch: eviction takes the least recently used first.
    used: u64,
}

pub struct Verified {
    file: PathBuf,
    entries: FxHashMap<String, Entry>,
    changed: bool,
}

/// Last-use times closer than this are not worth rewriting the record for (eviction order is
/// coarse: hours, not seconds).
pub const USE_RESOLUTION_S: u64 = 3600;

impl Verified {
    pub fn load(file: &Path) -> Verified {
        let entries = std::fs::read(file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Verified {
            file: file.to_path_buf(),
            entries,
            changed: false,
        }
    }

    /// The file at `meta` is the one whose hash was checked as `sha256`.
    pub fn vouches_for(&self, sha256: &str, meta: &std::fs::Metadata) -> bool {
        self.entries
            .get(sha256)
            .is_some_and(|e| e.stamp == Stamp::of(meta))
    }

    /// The stat data `sha256`'s blob had when its hash was checked.
    pub fn stamp(&self, sha256: &str) -> Option<Stamp> {
        self.entries.get(sha256).map(|e| e.stamp)
    }

    /// The file at `meta` was just checked to hash to `sha256`.
    pub fn record(&mut self, sha256: &str, meta: &std::fs::Metadata) {
        self.changed = true;
        self.entries.insert(
            sha256.to_string(),
            Entry {
                stamp: Stamp::of(meta),
                used: now(),
            },
        );
    }

    pub fn forget(&mut self, sha256: &str) {
        self.changed |= self.entries.remove(sha256).is_some();
    }

    pub fn mark_used(&mut self, sha256: &str) {
        let now = now();
        if let Some(e) = self.entries.get_mut(sha256)
            && now.saturating_sub(e.used) >= USE_RESOLUTION_S
        {
            e.used = now;
            self.changed = true;
        }
    }

    pub fn last_used(&self, sha256: &str) -> Option<u64> {
        self.entries.get(sha256).map(|e| e.used)
    }

    /// Written aside and renamed, so a crash leaves the old record or the new one.
    pub fn save_if_changed(&mut self) -> std::io::Result<()> {
        if !self.changed {
            return Ok(());
        }
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.entries)?)?;
        std::fs::rename(tmp, &self.file)?;
        self.changed = false;
        Ok(())
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
