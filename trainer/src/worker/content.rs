//! A claimed job's inputs, fetched by content into the worker's cache before the job starts, and
//! laid out so the job sees what `trainer run` gives it: a [`DatasetLocation`] of local paths and
//! an [`ArtifactSource`].
//!
//! The dataset's images are hard links in a folder of the dataset's content
//! (`views/dataset-…/images/`) to the cache's blobs, under their dataset file names: the loaders'
//! path checks stay within one folder, a blob evicted later cannot pull a file from under a
//! running job, and the next job on the same dataset reuses the folder.

use super::cache::{BlobCache, BlobSource, CacheReport};
use crate::jobs::ArtifactSource;
use aligndet_common::api::{DatasetLocation, JobSpec};
use aligndet_common::content::Blob;
use aligndet_common::dataset::unsafe_file_name_reason;
use anyhow::Context;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The job's spec with its dataset on local paths, and where its artifacts come from.
pub struct PreparedJob<'a> {
    pub spec: JobSpec,
    pub artifacts: CachedArtifacts<'a>,
    pub report: CacheReport,
    /// The dataset's layout, held against eviction while the job runs.
    view: Option<(&'a BlobCache, PathBuf)>,
}

impl Drop for PreparedJob<'_> {
    fn drop(&mut self) {
        if let Some((cache, view)) = &self.view {
            cache.release_view(view);
        }
    }
}

/// Fetch the dataset (annotations and every image) into the cache and lay it out for the job.
/// Artifacts are fetched when the job asks for them (a parent's artifacts the job never reads
/// are never downloaded).
pub fn prepare<'a>(
    spec: &JobSpec,
    cache: &'a BlobCache,
    source: &'a dyn BlobSource,
) -> anyhow::Result<PreparedJob<'a>> {
    let mut local = spec.clone();
    let artifacts = CachedArtifacts {
        fetches: Default::default(),
        inputs: spec
            .inputs
            .iter()
            .map(|a| ((a.run_id, a.name.clone()), a.blob.clone()))
            .collect(),
        cache,
        source,
    };
    let Some(content) = &spec.dataset_content else {
        return Ok(PreparedJob {
            spec: local,
            artifacts,
            report: CacheReport::default(),
            view: None,
        });
    };
    let started = std::time::Instant::now();
    let mut blobs: Vec<Blob> = content.images.iter().map(|i| i.blob.clone()).collect();
    blobs.push(content.annotations.clone());
    let mut report = cache
        .ensure(&blobs, source)
        .with_context(|| format!("fetching dataset {:?}", content.name))?;
    // One layout per dataset content, kept for the next job: a warm cache with nothing
    // fetched or replaced reuses it instead of linking every image again.
    let digest = layout_digest(content);
    let view = cache
        .root()
        .join("views")
        .join(format!("dataset-{}", &digest[..16]));
    cache.hold_view(&view);
    let images = view.join("images");
    let marker = view.join("complete");
    let reusable = report.fetched == 0
        && report.corrupt == 0
        && std::fs::read_to_string(&marker).is_ok_and(|m| m == digest);
    let laid_out = if reusable {
        Ok(())
    } else {
        lay_out(content, cache, &view, &images, &marker, &digest)
    };
    if let Err(e) = laid_out {
        let _ = std::fs::remove_dir_all(&view);
        cache.release_view(&view);
        return Err(e.context(format!("laying out dataset {:?}", content.name)));
    }
    // What the job waited for: fetching, verifying and laying out.
    report.seconds = started.elapsed().as_secs_f64();
    local.dataset = Some(DatasetLocation {
        dataset_id: content.dataset_id,
        name: content.name.clone(),
        annotations_path: cache
            .path(&content.annotations.sha256)
            .display()
            .to_string(),
        image_root: images.display().to_string(),
        splits: content.splits.clone(),
    });
    Ok(PreparedJob {
        spec: local,
        artifacts,
        report,
        view: Some((cache, view)),
    })
}

/// Names the layout: the annotation file and every (file name, content) pair.
fn layout_digest(content: &aligndet_common::content::DatasetContent) -> String {
    let mut hasher = aligndet_common::content::Hasher::default();
    hasher.update(content.annotations.sha256.as_bytes());
    for image in &content.images {
        hasher.update(image.file_name.as_bytes());
        hasher.update(b"\0");
        hasher.update(image.blob.sha256.as_bytes());
    }
    hasher.finish()
}

/// Link every image under its dataset file name; the marker goes last, so a layout cut short
/// is never reused.
fn lay_out(
    content: &aligndet_common::content::DatasetContent,
    cache: &BlobCache,
    view: &Path,
    images: &Path,
    marker: &Path,
    digest: &str,
) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(view);
    content.images.par_iter().try_for_each(|image| {
        if let Some(why) = unsafe_file_name_reason(&image.file_name) {
            anyhow::bail!(
                "the server named a dataset file {:?}: {why}",
                image.file_name
            );
        }
        link(
            &cache.path(&image.blob.sha256),
            &images.join(&image.file_name),
        )
    })?;
    std::fs::write(marker, digest)?;
    Ok(())
}

/// A hard link (a copy where the file system has none).
fn link(blob: &Path, at: &Path) -> anyhow::Result<()> {
    if let Some(dir) = at.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::hard_link(blob, at).is_err() {
        std::fs::copy(blob, at).with_context(|| format!("copying {}", blob.display()))?;
    }
    Ok(())
}

/// Artifacts of runs a job may read, as the claim listed them by content.
pub struct CachedArtifacts<'a> {
    /// One line per artifact the job read: from the cache, or fetched (and how).
    fetches: std::sync::Mutex<Vec<String>>,
    inputs: HashMap<(i64, String), Blob>,
    cache: &'a BlobCache,
    source: &'a dyn BlobSource,
}

impl CachedArtifacts<'_> {
    /// What the job read and how it came, for the run's log.
    pub fn take_fetches(&self) -> Vec<String> {
        std::mem::take(&mut self.fetches.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl ArtifactSource for CachedArtifacts<'_> {
    fn fetch_optional(&self, run_id: i64, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(blob) = self.inputs.get(&(run_id, name.to_string())) else {
            return Ok(None);
        };
        let report = self
            .cache
            .ensure(std::slice::from_ref(blob), self.source)
            .with_context(|| format!("fetching artifact {name:?} of run {run_id}"))?;
        let how = if report.hits == 1 {
            "from the cache".to_string()
        } else {
            let mut how = format!("fetched ({} bytes", report.bytes_fetched);
            if report.resumed > 0 {
                how += ", resuming a cut download";
            }
            if report.rejected > 0 {
                how += ", again after a download failed its hash check";
            }
            if report.corrupt > 0 {
                how += ", replacing a corrupt cached copy";
            }
            how + ")"
        };
        self.fetches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!(
                "input {name:?} of run {run_id}: {how} in {:.2} s",
                report.seconds
            ));
        let path = self.cache.path(&blob.sha256);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        // The cache verified the file; this guards against it changing since.
        if Blob::of_bytes(&bytes) != *blob {
            anyhow::bail!("artifact {name:?} of run {run_id} changed in the cache while in use");
        }
        Ok(Some(bytes))
    }
}
