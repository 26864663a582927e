//! A claimed job's inputs, fetched by content into the worker's cache and laid out so the job
//! sees what `trainer run` gives it: a [`DatasetLocation`] of local paths and an
//! [`ArtifactSource`]. The annotation file comes before the job starts, the images stream in
//! behind it ([`super::stream`]), artifacts come when the job asks for them.
//!
//! The dataset's images are hard links in a folder of the dataset's content
//! (`views/dataset-…/images/`) to the cache's blobs, under their dataset file names: the loaders'
//! path checks stay within one folder, a blob evicted later cannot pull a file from under a
//! running job, and the next job on the same dataset reuses the folder.

use super::cache::{BlobCache, BlobSource, CacheReport};
use super::stream::DatasetStream;
use crate::jobs::ArtifactSource;
use aligndet_common::api::{DatasetLocation, JobSpec};
use aligndet_common::content::{Blob, DatasetContent};
use anyhow::Context;
use std::collections::HashMap;
use std::path::PathBuf;

/// The job's spec with its dataset on local paths, and where its artifacts come from.
pub struct PreparedJob<'a> {
    pub spec: JobSpec,
    pub artifacts: CachedArtifacts<'a>,
    /// What fetching the annotation file took (the images come in `stream`).
    pub report: CacheReport,
    stream: Option<DatasetStream>,
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
            stream: None,
            view: None,
        });
    };
    let dataset = open_dataset(content, cache, source)?;
    local.dataset = Some(dataset.location);
    Ok(PreparedJob {
        spec: local,
        artifacts,
        report: dataset.annotations,
        stream: Some(dataset.stream),
        view: Some((cache, dataset.view)),
    })
}

/// A dataset whose annotation file is in the cache and whose images are about to stream in.
pub struct OpenedDataset {
    pub location: DatasetLocation,
    /// What fetching the annotation file took.
    pub annotations: CacheReport,
    pub stream: DatasetStream,
    /// Held against eviction: the caller releases it ([`BlobCache::release_view`]).
    pub view: PathBuf,
}

/// Fetch the annotation file (the job reads it first) and open the dataset's layout, one per
/// dataset content and kept for the next job; its images stream in behind the running job.
pub fn open_dataset(
    content: &DatasetContent,
    cache: &BlobCache,
    source: &dyn BlobSource,
) -> anyhow::Result<OpenedDataset> {
    let annotations = cache
        .ensure(std::slice::from_ref(&content.annotations), source)
        .with_context(|| format!("fetching the annotations of dataset {:?}", content.name))?;
    let digest = layout_digest(content);
    let view = cache
        .root()
        .join("views")
        .join(format!("dataset-{}", &digest[..16]));
    cache.hold_view(&view);
    let images = view.join("images");
    let stream = DatasetStream::new(
        content.images.clone(),
        images.clone(),
        view.join("complete"),
        digest,
    )
    .with_context(|| format!("laying out dataset {:?}", content.name));
    let stream = match stream {
        Ok(stream) => stream,
        Err(e) => {
            cache.release_view(&view);
            return Err(e);
        }
    };
    Ok(OpenedDataset {
        location: DatasetLocation {
            dataset_id: content.dataset_id,
            name: content.name.clone(),
            annotations_path: cache
                .path(&content.annotations.sha256)
                .display()
                .to_string(),
            image_root: images.display().to_string(),
            splits: content.splits.clone(),
        },
        annotations,
        stream,
        view,
    })
}

impl PreparedJob<'_> {
    /// Run `job` while the dataset's images stream in behind it (at once when there is no
    /// dataset). `on_stream_failure` runs as soon as the stream fails (to stop the job: an
    /// image it needs will not come). Answers the job's result and what the stream did.
    pub fn run_streaming<R>(
        &self,
        on_stream_failure: impl FnOnce() + Send,
        job: impl FnOnce() -> R,
    ) -> (R, Option<anyhow::Result<CacheReport>>) {
        let Some(stream) = &self.stream else {
            return (job(), None);
        };
        let (cache, source) = (self.artifacts.cache, self.artifacts.source);
        let ranks = self.spec.config.optim().map_or(1, |o| o.world_size);
        if ranks > 1 {
            // Ranks past the first are processes of their own that read the layout directly:
            // everything must be in place before they start.
            let streamed = stream.run_to_completion(cache, source);
            if streamed.is_err() {
                on_stream_failure();
            }
            return (job(), Some(streamed));
        }
        std::thread::scope(|scope| {
            let streamer = scope.spawn(move || {
                let result = stream.run(cache, source);
                if result.is_err() {
                    on_stream_failure();
                }
                result
            });
            let outcome = job();
            stream.stop();
            let streamed = streamer
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the dataset stream panicked")));
            (outcome, Some(streamed))
        })
    }
}

/// Names the layout: the annotation file and every (file name, content) pair.
fn layout_digest(content: &DatasetContent) -> String {
    let mut hasher = aligndet_common::content::Hasher::default();
    hasher.update(content.annotations.sha256.as_bytes());
    for image in &content.images {
        hasher.update(image.file_name.as_bytes());
        hasher.update(b"\0");
        hasher.update(image.blob.sha256.as_bytes());
    }
    hasher.finish()
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
