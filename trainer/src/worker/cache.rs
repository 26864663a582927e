//! The worker's content-addressed cache: `blobs/ab/abcdef…` holds the bytes whose sha256 is
//! `abcdef…`. Every blob is hashed before a job may use it (a corrupted file is deleted and
//! fetched again); downloads are written aside and renamed into place, so a cut download never
//! leaves a wrong file under a hash. Small blobs come in packs, big ones alone with `Range`, so a
//! cut 150 MB download resumes where it stopped. Least-recently-used blobs are evicted to keep
//! the cache under its cap. One worker holds a cache folder at a time (a lock file says which).

use super::verified::{Stamp, Verified};
use aligndet_common::content::{Blob, Hasher, read_pack_frame_header};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Blobs smaller than this travel in packs.
const PACK_BLOB_LIMIT: u64 = 4 << 20;
/// At most this many bytes per pack request (and [`aligndet_common::content::PACK_MAX_BLOBS`] blobs).
const PACK_BYTES: u64 = 32 << 20;
/// Tries per pack or blob before the job fails; the waits between double from 0.5 s.
const TRIES: u32 = 5;
/// Pack requests in flight at once.
const PARALLEL_PACKS: usize = 4;
/// Fewer blobs than this are checked on the calling thread.
const PARALLEL_CHECKS_FROM: usize = 16;

/// How a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Network trouble, a cut stream or a 5xx: try again.
    #[error("{0}")]
    Transient(String),
    /// The server says no (unknown hash, file gone, bad token): trying again will not help.
    #[error("{0}")]
    Refused(String),
}

/// Where blobs come from (the server's `/api/v1/blobs/`).
pub trait BlobSource: Sync {
    /// One blob's bytes from `offset` on. Answers the offset the bytes start at: `offset` when
    /// the server resumed, 0 when it sends the whole blob.
    fn open_blob(&self, blob: &Blob, offset: u64) -> Result<(u64, Box<dyn Read>), FetchError>;
    /// A pack holding `blobs` (framed as `aligndet_common::content` says).
    fn open_pack(&self, blobs: &[Blob]) -> Result<Box<dyn Read>, FetchError>;
}

/// What one [`BlobCache::ensure`] found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheReport {
    pub blobs: usize,
    /// Present and verified.
    pub hits: usize,
    pub fetched: usize,
    pub bytes_fetched: u64,
    /// Present but with the wrong content: deleted and fetched again.
    pub corrupt: usize,
    /// Big downloads continued from a partial file.
    pub resumed: usize,
    /// Big downloads that failed their hash check and were fetched again from the start.
    pub rejected: usize,
    pub seconds: f64,
}

impl CacheReport {
    /// Counts of `other` added to these (the seconds are left alone).
    pub fn add(&mut self, other: &CacheReport) {
        self.blobs += other.blobs;
        self.hits += other.hits;
        self.fetched += other.fetched;
        self.bytes_fetched += other.bytes_fetched;
        self.corrupt += other.corrupt;
        self.resumed += other.resumed;
        self.rejected += other.rejected;
    }
}

pub struct BlobCache {
    root: PathBuf,
    max_bytes: u64,
    verified: Mutex<Verified>,
    /// Dataset layouts (`views/…`) a job is reading: eviction leaves them alone.
    views_in_use: Mutex<HashSet<PathBuf>>,
    _lock: std::fs::File,
}

impl BlobCache {
    /// Open (creating) the cache folder and take its lock.
    pub fn open(root: &Path, max_bytes: u64) -> anyhow::Result<BlobCache> {
        for sub in ["blobs", "partial", "views"] {
            std::fs::create_dir_all(root.join(sub))
                .map_err(|e| anyhow::anyhow!("creating the cache {}: {e}", root.display()))?;
        }
        let lock_path = root.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor we own; released when the file is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            anyhow::bail!(
                "the cache {} is in use by another worker: give each worker its own --cache",
                root.display()
            );
        }
        // Pack members a killed worker left half-written (big downloads stay: they resume).
        for entry in std::fs::read_dir(root.join("partial"))?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "pack") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(BlobCache {
            root: root.to_path_buf(),
            max_bytes,
            verified: Mutex::new(Verified::load(&root.join("verified.json"))),
            views_in_use: Mutex::new(HashSet::new()),
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join(&sha256[..2]).join(sha256)
    }

    /// Make every blob present and verified, fetching what is missing or corrupt.
    pub fn ensure(&self, blobs: &[Blob], source: &dyn BlobSource) -> anyhow::Result<CacheReport> {
        self.ensure_keeping(blobs, &HashSet::new(), source)
    }

    /// [`BlobCache::ensure`] for one part of a job's inputs: making room never evicts `keep`
    /// (the rest of them).
    pub fn ensure_keeping(
        &self,
        blobs: &[Blob],
        keep: &HashSet<&str>,
        source: &dyn BlobSource,
    ) -> anyhow::Result<CacheReport> {
        let started = Instant::now();
        let mut unique: HashMap<&str, &Blob> = HashMap::new();
        for b in blobs {
            aligndet_common::content::check_sha256(&b.sha256).map_err(anyhow::Error::msg)?;
            unique.insert(&b.sha256, b);
        }
        let unique_blobs: Vec<&Blob> = unique.values().copied().collect();
        // A handful (the annotation file, one artifact) is checked here: handing it to the
        // pool costs more than the checks.
        let checks: Vec<(&Blob, Presence)> = if unique_blobs.len() < PARALLEL_CHECKS_FROM {
            unique_blobs
                .iter()
                .map(|b| (*b, self.presence(b)))
                .collect()
        } else {
            unique_blobs
                .par_iter()
                .map(|b| (*b, self.presence(b)))
                .collect()
        };
        let mut report = CacheReport {
            blobs: unique.len(),
            ..CacheReport::default()
        };
        let mut missing = Vec::new();
        for (blob, presence) in checks {
            match presence {
                Presence::Verified => report.hits += 1,
                Presence::Corrupt => {
                    report.corrupt += 1;
                    missing.push(blob.clone());
                }
                Presence::Absent => missing.push(blob.clone()),
            }
        }
        let needed: u64 = missing.iter().map(|b| b.bytes).sum();
        if needed > 0 {
            // Nothing fetched, nothing grew: a warm cache skips the scan.
            let mut keep = keep.clone();
            keep.extend(unique.keys().copied());
            self.evict(&keep, self.max_bytes.saturating_sub(needed))?;
        }
        let (small, big): (Vec<Blob>, Vec<Blob>) =
            missing.into_iter().partition(|b| b.bytes < PACK_BLOB_LIMIT);
        self.fetch_packs(small, source, &mut report)?;
        for blob in big {
            self.fetch_alone(&blob, source, &mut report)?;
        }
        let mut verified = self.verified();
        for sha256 in unique.keys() {
            verified.mark_used(sha256);
        }
        verified.save_if_changed()?;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// The stat data each blob had when its hash was checked (`None`: not checked yet).
    pub fn stamps<'b>(&self, sha256s: impl Iterator<Item = &'b str>) -> Vec<Option<Stamp>> {
        let verified = self.verified();
        sha256s.map(|sha| verified.stamp(sha)).collect()
    }

    /// These blobs were just used (eviction takes the least recently used first).
    pub fn mark_used<'b>(&self, sha256s: impl Iterator<Item = &'b str>) -> anyhow::Result<()> {
        let mut verified = self.verified();
        for sha in sha256s {
            verified.mark_used(sha);
        }
        verified.save_if_changed()?;
        Ok(())
    }

    pub fn hold_view(&self, view: &Path) {
        self.views().insert(view.to_path_buf());
    }

    pub fn release_view(&self, view: &Path) {
        self.views().remove(view);
    }

    fn views(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.views_in_use.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, Verified> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn presence(&self, blob: &Blob) -> Presence {
        let path = self.path(&blob.sha256);
        let Ok(meta) = std::fs::metadata(&path) else {
            return Presence::Absent;
        };
        if self.verified().vouches_for(&blob.sha256, &meta) {
            return Presence::Verified;
        }
        if Blob::of_file(&path).is_ok_and(|found| found == *blob) {
            self.verified().record(&blob.sha256, &meta);
            Presence::Verified
        } else {
            self.verified().forget(&blob.sha256);
            let _ = std::fs::remove_file(&path);
            Presence::Corrupt
        }
    }

    fn fetch_packs(
        &self,
        blobs: Vec<Blob>,
        source: &dyn BlobSource,
        report: &mut CacheReport,
    ) -> anyhow::Result<()> {
        if blobs.is_empty() {
            // Nothing to fetch: no pool of request threads (a warm cache's every call).
            return Ok(());
        }
        // As many blobs per pack as keeps every request in flight busy.
        let per_pack = blobs
            .len()
            .div_ceil(PARALLEL_PACKS)
            .clamp(1, aligndet_common::content::PACK_MAX_BLOBS);
        let mut groups: Vec<Vec<Blob>> = Vec::new();
        let mut bytes = 0;
        for blob in blobs {
            let full = groups
                .last()
                .is_none_or(|g| g.len() >= per_pack || bytes >= PACK_BYTES);
            if full {
                groups.push(Vec::new());
                bytes = 0;
            }
            bytes += blob.bytes;
            groups.last_mut().expect("pushed above").push(blob);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(PARALLEL_PACKS)
            .build()?;
        let results: Vec<anyhow::Result<u64>> = pool.install(|| {
            groups
                .par_iter()
                .map(|g| self.fetch_pack(g, source))
                .collect()
        });
        for (group, result) in groups.iter().zip(results) {
            report.bytes_fetched += result?;
            report.fetched += group.len();
        }
        Ok(())
    }

    /// One pack, retried for the blobs it did not deliver; answers the bytes stored.
    fn fetch_pack(&self, group: &[Blob], source: &dyn BlobSource) -> anyhow::Result<u64> {
        let mut wanted: HashMap<String, Blob> = group
            .iter()
            .map(|b| (b.sha256.clone(), b.clone()))
            .collect();
        let mut stored = 0;
        let mut last_error = String::new();
        for attempt in 0..TRIES {
            if wanted.is_empty() {
                return Ok(stored);
            }
            if attempt > 0 {
                backoff(attempt);
            }
            let request: Vec<Blob> = wanted.values().cloned().collect();
            let mut reader = match source.open_pack(&request) {
                Ok(r) => r,
                Err(FetchError::Refused(m)) => anyhow::bail!("fetching job inputs: {m}"),
                Err(FetchError::Transient(m)) => {
                    last_error = m;
                    continue;
                }
            };
            loop {
                match self.store_frame(&mut reader, &wanted) {
                    Ok(Some(blob)) => {
                        stored += blob.bytes;
                        wanted.remove(&blob.sha256);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        last_error = format!("{e:#}");
                        break;
                    }
                }
            }
        }
        if wanted.is_empty() {
            return Ok(stored);
        }
        anyhow::bail!(
            "{} of {} job inputs could not be fetched after {TRIES} tries: {last_error}",
            wanted.len(),
            group.len()
        )
    }

    /// Read one frame of a pack into the cache; `None` at the end of the pack.
    fn store_frame(
        &self,
        reader: &mut dyn Read,
        wanted: &HashMap<String, Blob>,
    ) -> anyhow::Result<Option<Blob>> {
        let Some(header) = read_pack_frame_header(reader)? else {
            return Ok(None);
        };
        if wanted.get(&header.sha256) != Some(&header) {
            anyhow::bail!(
                "the server's pack held {} ({} bytes), which was not asked for",
                header.sha256,
                header.bytes
            );
        }
        let partial = self.partial_path(&header.sha256, false);
        let mut file = std::fs::File::create(&partial)?;
        let result = copy_hashing(&mut reader.take(header.bytes), &mut file, Hasher::default())
            .map_err(anyhow::Error::from)
            .and_then(|(n, hasher)| self.commit(&partial, &header, n, hasher.finish()));
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result.map(|()| Some(header))
    }

    /// A big blob on its own, continuing a partial download left by an earlier try or job.
    fn fetch_alone(
        &self,
        blob: &Blob,
        source: &dyn BlobSource,
        report: &mut CacheReport,
    ) -> anyhow::Result<()> {
        let partial = self.partial_path(&blob.sha256, true);
        let mut last_error = String::new();
        for attempt in 0..TRIES {
            if attempt > 0 {
                backoff(attempt);
            }
            let have = std::fs::metadata(&partial).map_or(0, |m| m.len());
            let have = if have > blob.bytes { 0 } else { have };
            let (start, reader) = match source.open_blob(blob, have) {
                Ok(r) => r,
                Err(FetchError::Refused(m)) => anyhow::bail!("fetching job input: {m}"),
                Err(FetchError::Transient(m)) => {
                    last_error = m;
                    continue;
                }
            };
            if start > 0 {
                report.resumed += 1;
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(start == 0)
                .append(start > 0)
                .open(&partial)?;
            let copied = std::io::copy(&mut reader.take(blob.bytes - start), &mut file);
            drop(file);
            match copied {
                Ok(n) if start + n == blob.bytes => {
                    // Hashed once, whole: the part from earlier tries included.
                    let found = Blob::of_file(&partial)?;
                    match self.commit(&partial, blob, found.bytes, found.sha256) {
                        Ok(()) => {
                            report.fetched += 1;
                            report.bytes_fetched += blob.bytes - start;
                            return Ok(());
                        }
                        Err(e) => {
                            let _ = std::fs::remove_file(&partial);
                            report.rejected += 1;
                            last_error = format!("{e:#}");
                        }
                    }
                }
                Ok(n) => {
                    last_error = format!(
                        "the download of {} stopped at {} of {} bytes",
                        blob.sha256,
                        start + n,
                        blob.bytes
                    )
                }
                Err(e) => last_error = format!("downloading {}: {e}", blob.sha256),
            }
        }
        anyhow::bail!(
            "job input {} could not be fetched after {TRIES} tries: {last_error}",
            blob.sha256
        )
    }

    /// Move a finished download into place if its size and hash are right.
    fn commit(
        &self,
        partial: &Path,
        blob: &Blob,
        bytes: u64,
        sha256: String,
    ) -> anyhow::Result<()> {
        if bytes != blob.bytes || sha256 != blob.sha256 {
            anyhow::bail!(
                "the server sent {bytes} bytes with sha256 {sha256} for the job input {} \
                 ({} bytes): the file changed on the server or was damaged in transit",
                blob.sha256,
                blob.bytes
            );
        }
        let path = self.path(&blob.sha256);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::rename(partial, &path)?;
        self.verified()
            .record(&blob.sha256, &std::fs::metadata(&path)?);
        Ok(())
    }

    /// Where a download is written before it is verified. Big downloads keep one name, so the
    /// next try (or job) continues them; pack members get a name of their own.
    fn partial_path(&self, sha256: &str, resumable: bool) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = if resumable {
            format!("{sha256}.part")
        } else {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("{sha256}.{}-{n}.pack", std::process::id())
        };
        self.root.join("partial").join(name)
    }

    /// Delete least-recently-used blobs outside `keep` until the cache holds at most `target`
    /// bytes; answers the bytes freed.
    pub fn evict(&self, keep: &HashSet<&str>, target: u64) -> anyhow::Result<u64> {
        let mut entries = Vec::new();
        let mut total = 0;
        for dir in std::fs::read_dir(self.root.join("blobs"))? {
            for entry in std::fs::read_dir(dir?.path())? {
                let entry = entry?;
                let meta = entry.metadata()?;
                total += meta.len();
                let name = entry.file_name().to_string_lossy().into_owned();
                let used = self.verified().last_used(&name).unwrap_or_else(|| {
                    use std::os::unix::fs::MetadataExt;
                    meta.mtime().max(0) as u64
                });
                entries.push((used, meta.len(), entry.path()));
            }
        }
        entries.sort();
        let mut freed = 0;
        for (_, len, path) in entries {
            if total - freed <= target {
                break;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if keep.contains(name) {
                continue;
            }
            std::fs::remove_file(&path)?;
            self.verified().forget(name);
            freed += len;
        }
        if freed > 0 {
            // A layout's links keep evicted blobs on disk: drop the layouts no job reads (the
            // next job on their dataset lays it out again).
            let in_use = self.views();
            for entry in std::fs::read_dir(self.root.join("views"))?.flatten() {
                if !in_use.contains(&entry.path()) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(freed)
    }
}

enum Presence {
    Verified,
    Corrupt,
    Absent,
}

fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(500 << (attempt - 1).min(5)));
}

/// Copy to the end, hashing what passes; answers the bytes copied.
fn copy_hashing(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    mut hasher: Hasher,
) -> std::io::Result<(u64, Hasher)> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok((total, hasher));
        }
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
        total += n as u64;
    }
}
