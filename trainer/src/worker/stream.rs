//! A dataset's images streamed into the cache behind a running job: fetched (or, warm, checked)
//! in chunks, linked into the dataset's layout, and announced to the readers
//! ([`crate::data::arrivals`]), taking first whatever a reader is waiting for. The job starts
//! once the annotation file is in; a warm cache checks its files while the loader already reads.

use super::cache::{BlobCache, BlobSource, CacheReport};
use super::layout_marker;
use super::verified::Stamp;
use crate::data::arrivals::{Arrivals, Registration, Vouch};
use aligndet_common::content::{Blob, NamedBlob};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The first chunk is small, so that step 1's images arrive soon; the rest are bigger.
const FIRST_CHUNK: usize = 32;
const CHUNK: usize = 256;
/// Threads of the streamer's own pool: the global pool's threads may all be readers waiting
/// for it.
const STREAM_THREADS: usize = 4;

/// One dataset layout being filled: `images/` of `view`, complete once `marker` holds `digest`.
pub struct DatasetStream {
    images: Vec<NamedBlob>,
    layout: PathBuf,
    marker: PathBuf,
    digest: String,
    /// The layout was complete: its links stand unless a blob is fetched again.
    reuse: bool,
    arrivals: Arc<Arrivals>,
    _registration: Registration,
    stop: AtomicBool,
}

impl DatasetStream {
    /// Readers under `layout` wait from now on for their file.
    pub fn new(
        images: Vec<NamedBlob>,
        layout: PathBuf,
        marker: PathBuf,
        digest: String,
    ) -> anyhow::Result<DatasetStream> {
        // Another job streaming the same layout: let it finish first (then all is in place).
        if let Some(other) = crate::data::arrivals::streaming(&layout) {
            other.wait_closed();
        }
        // A complete layout of this digest was made from these very names (the digest covers
        // them), checked when it was made.
        let stamps = layout_marker::read(&marker, &digest, images.len());
        let reuse = stamps.is_some();
        if !reuse {
            for image in &images {
                let name = &image.file_name;
                if let Some(why) = aligndet_common::dataset::unsafe_file_name_reason(name) {
                    anyhow::bail!("the server named a dataset file {name:?}: {why}");
                }
            }
            let _ = std::fs::remove_file(&marker);
            let _ = std::fs::remove_dir_all(&layout);
        }
        std::fs::create_dir_all(&layout)?;
        let names: Vec<String> = images.iter().map(|i| i.file_name.clone()).collect();
        // A complete layout from an earlier job: a reader may take a file whose stat data is
        // still that of its checked blob (a hard link shares the inode) without the streamer.
        let vouch: Option<Vouch> = stamps.map(|stamps| {
            Box::new(move |position: usize, meta: &std::fs::Metadata| {
                Stamp::of(meta) == stamps[position]
            }) as Vouch
        });
        let arrivals = Arrivals::new(&layout, names, vouch);
        Ok(DatasetStream {
            images,
            layout,
            marker,
            digest,
            reuse,
            _registration: crate::data::arrivals::register(arrivals.clone()),
            arrivals,
            stop: AtomicBool::new(false),
        })
    }

    /// Stop after the chunk in hand (the job ended).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.arrivals.wake();
    }

    /// Fetch, check and lay out every image, readers' wants first. On failure the readers
    /// waiting (and any later) get the error; so does the caller.
    pub fn run(&self, cache: &BlobCache, source: &dyn BlobSource) -> anyhow::Result<CacheReport> {
        self.run_as(cache, source, Readers::Vouch)
    }

    /// [`DatasetStream::run`] with no reader in this process (a multi-rank job's ranks are
    /// processes of their own): every file is checked here before anyone reads.
    pub fn run_to_completion(
        &self,
        cache: &BlobCache,
        source: &dyn BlobSource,
    ) -> anyhow::Result<CacheReport> {
        self.run_as(cache, source, Readers::Elsewhere)
    }

    fn run_as(
        &self,
        cache: &BlobCache,
        source: &dyn BlobSource,
        readers: Readers,
    ) -> anyhow::Result<CacheReport> {
        let result = self.fill(cache, source, readers);
        let failure = result.as_ref().err().map(|e| format!("{e:#}"));
        self.arrivals.close(failure);
        result
    }

    fn fill(
        &self,
        cache: &BlobCache,
        source: &dyn BlobSource,
        readers: Readers,
    ) -> anyhow::Result<CacheReport> {
        // Readers here vouch for a complete layout's files themselves; otherwise go in order.
        let in_order = !self.reuse || readers == Readers::Elsewhere;
        let started = Instant::now();
        // Made when first needed: a warm layout's readers may vouch for every file themselves.
        let mut pool: Option<rayon::ThreadPool> = None;
        // Made when first needed too: what making room must not evict.
        let mut keep: Option<HashSet<&str>> = None;
        let mut report = CacheReport::default();
        let mut done = vec![false; self.images.len()];
        let mut processed = 0;
        let mut next = 0;
        let mut marker_intact = self.reuse;
        while !self.stop.load(Ordering::SeqCst) {
            let mut chunk = self.arrivals.take_wanted();
            chunk.retain(|&i| !done[i]);
            // A complete layout is checked by its readers, file by file as they read
            // (`Vouch`): the streamer only serves what they could not vouch for. A new one is
            // filled in order.
            let size = if next == 0 { FIRST_CHUNK } else { CHUNK };
            while in_order && chunk.len() < size && next < self.images.len() {
                if !done[next] && !self.arrivals.is_ready(next) {
                    chunk.push(next);
                }
                next += 1;
            }
            chunk.sort_unstable();
            chunk.dedup();
            if chunk.is_empty() {
                if !in_order && !self.arrivals.complete() {
                    self.arrivals.wait_for_wants(Duration::from_millis(200));
                    continue;
                }
                break;
            }
            let blobs: Vec<Blob> = chunk.iter().map(|&i| self.images[i].blob.clone()).collect();
            let pool = match &mut pool {
                Some(pool) => pool,
                None => pool.insert(
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(STREAM_THREADS)
                        .build()?,
                ),
            };
            let keep = keep.get_or_insert_with(|| {
                self.images.iter().map(|i| i.blob.sha256.as_str()).collect()
            });
            let got = pool.install(|| cache.ensure_keeping(&blobs, keep, source))?;
            if !self.reuse || got.fetched > 0 || got.corrupt > 0 {
                // New bytes under a name: the layout is not complete until relinked.
                if marker_intact {
                    std::fs::remove_file(&self.marker)?;
                    marker_intact = false;
                }
                pool.install(|| {
                    use rayon::prelude::*;
                    chunk.par_iter().try_for_each(|&i| {
                        let image = &self.images[i];
                        link(
                            &cache.path(&image.blob.sha256),
                            &self.layout.join(&image.file_name),
                        )
                    })
                })?;
            }
            report.add(&got);
            processed += chunk.len();
            for &i in &chunk {
                done[i] = true;
            }
            self.arrivals.mark_ready(&chunk);
        }
        // What readers vouched for themselves came from the cache too.
        let vouched = self.arrivals.ready_count().saturating_sub(processed);
        report.blobs += vouched;
        report.hits += vouched;
        // The marker's age says when the layout's blobs were last marked used: a layout used
        // again within the eviction's resolution needs no marking (it would change nothing).
        let resolution = super::verified::USE_RESOLUTION_S;
        if !marker_intact || !layout_marker::touched_within(&self.marker, resolution) {
            let shas = || self.images.iter().map(|i| i.blob.sha256.as_str());
            cache.mark_used(shas())?;
            if marker_intact {
                layout_marker::touch(&self.marker)?;
            } else if self.arrivals.complete() {
                // Every blob was checked (or vouched for by its stamp) on its way in.
                let stamps: Option<Vec<Stamp>> = cache.stamps(shas()).into_iter().collect();
                if let Some(stamps) = stamps {
                    layout_marker::write(&self.marker, &self.digest, &stamps)?;
                }
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
}

/// Who reads the files as they arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readers {
    /// Readers in this process, which vouch for a complete layout's files as they open them.
    Vouch,
    /// None here: the streamer checks every file itself.
    Elsewhere,
}

/// A hard link (a copy where the file system has none), put in place by a rename so that a
/// reader of the old link never finds the name missing.
fn link(blob: &Path, at: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(dir) = at.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut aside = at.as_os_str().to_owned();
    aside.push(format!(".linking-{}", std::process::id()));
    let aside = PathBuf::from(aside);
    let _ = std::fs::remove_file(&aside);
    if std::fs::hard_link(blob, &aside).is_err() {
        std::fs::copy(blob, &aside).with_context(|| format!("copying {}", blob.display()))?;
    }
    std::fs::rename(&aside, at).with_context(|| format!("placing {}", at.display()))?;
    Ok(())
}
