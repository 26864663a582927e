//! A claimed job's inputs by content (see `aligndet_common::content`): the dataset's annotation
//! file and images, and the artifacts it may read, each with its sha256 and size. Datasets and
//! artifacts stored before hashing existed are hashed here the first time a job needs them.
//! Blobs are then served by hash (`routes::content`), from the files the hashes were taken of.

use crate::db;
use crate::db::content::BlobHome;
use crate::state::AppState;
use aligndet_common::content::{ArtifactInput, Blob, DatasetContent, NamedBlob};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// The dataset by content, hashing its files on first use.
pub async fn dataset_content(
    s: &AppState,
    dataset: &db::datasets::DatasetRow,
) -> anyhow::Result<DatasetContent> {
    let (annotations, images) = match db::content::dataset_content(&s.worker_pool, dataset.id)
        .await?
    {
        Some(found) => found,
        None => {
            let annotations_path = PathBuf::from(&dataset.annotations_path);
            let image_root = PathBuf::from(&dataset.image_root);
            let (annotations, images) =
                tokio::task::spawn_blocking(move || hash_dataset(&annotations_path, &image_root))
                    .await??;
            db::content::store_dataset_content(&s.worker_pool, dataset.id, &annotations, &images)
                .await?;
            tracing::info!(
                "dataset #{} hashed: {} images for remote workers",
                dataset.id,
                images.len()
            );
            (annotations, images)
        }
    };
    Ok(DatasetContent {
        dataset_id: dataset.id,
        name: dataset.name.clone(),
        annotations,
        images,
        splits: dataset.splits.clone(),
    })
}

/// Only the image list of the stored (already validated) COCO file.
#[derive(serde::Deserialize)]
struct ImageList {
    images: Vec<ImageName>,
}

#[derive(serde::Deserialize)]
struct ImageName {
    file_name: String,
}

fn hash_dataset(annotations: &Path, image_root: &Path) -> anyhow::Result<(Blob, Vec<NamedBlob>)> {
    let text = std::fs::read(annotations).with_context(|| {
        format!(
            "reading the dataset's annotations {}",
            annotations.display()
        )
    })?;
    let list: ImageList = serde_json::from_slice(&text)
        .with_context(|| format!("parsing {}", annotations.display()))?;
    let mut names: Vec<String> = list.images.into_iter().map(|i| i.file_name).collect();
    names.sort();
    names.dedup();
    let images = parallel_map(names, |file_name| {
        let path = image_root.join(&file_name);
        let blob = Blob::of_file(&path)
            .with_context(|| format!("image {file_name:?} of the dataset ({})", path.display()))?;
        Ok(NamedBlob { file_name, blob })
    })?;
    Ok((Blob::of_bytes(&text), images))
}

/// `f` over `items` on a few threads (hashing is I/O and CPU bound), keeping the order.
fn parallel_map<T: Send, R: Send>(
    items: Vec<T>,
    f: impl Fn(T) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<R>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    let chunk = items.len().div_ceil(threads).max(1);
    let mut chunks: Vec<Vec<T>> = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        chunks.push(items.by_ref().take(chunk).collect());
    }
    let results: Vec<anyhow::Result<Vec<R>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|part| scope.spawn(|| part.into_iter().map(&f).collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("hashing panicked")))
            })
            .collect()
    });
    let mut out = Vec::new();
    for part in results {
        out.extend(part?);
    }
    Ok(out)
}

/// The artifacts a run's job may read, by content; an artifact listed but whose file is gone is
/// an error that names it.
pub async fn artifact_inputs(s: &AppState, run_id: i64) -> anyhow::Result<Vec<ArtifactInput>> {
    let rows = db::content::input_artifacts(&s.worker_pool, run_id).await?;
    let mut inputs = Vec::with_capacity(rows.len());
    for row in rows {
        let blob = match row.sha256 {
            Some(sha256) => Blob {
                sha256,
                bytes: row.bytes as u64,
            },
            None => {
                let path = s.artifacts_dir(row.run_id).join(&row.name);
                let blob = tokio::task::spawn_blocking(move || Blob::of_file(&path))
                    .await?
                    .with_context(|| missing_artifact(row.run_id, &row.name))?;
                db::content::set_artifact_sha256(&s.worker_pool, row.run_id, &row.name, &blob)
                    .await?;
                blob
            }
        };
        inputs.push(ArtifactInput {
            run_id: row.run_id,
            name: row.name,
            blob,
        });
    }
    Ok(inputs)
}

fn missing_artifact(run_id: i64, name: &str) -> String {
    format!("artifact {name:?} of run {run_id} is recorded but its file cannot be read")
}

/// A blob this server holds: its file, the size it must have, and what it is (for messages,
/// which never show a server path).
pub struct BlobFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub what: String,
}

/// Where a blob is, or `None` for a hash this server does not hold. Names come from the database
/// (checked at import and upload), never from the caller.
pub async fn blob_file(s: &AppState, sha256: &str) -> anyhow::Result<Option<BlobFile>> {
    let Some(home) = db::content::locate_blob(&s.worker_pool, sha256).await? else {
        return Ok(None);
    };
    Ok(Some(match home {
        BlobHome::Annotations {
            dataset_id,
            path,
            bytes,
        } => BlobFile {
            path: PathBuf::from(path),
            bytes: bytes as u64,
            what: format!("the annotation file of dataset {dataset_id}"),
        },
        BlobHome::Image {
            dataset_id,
            image_root,
            file_name,
            bytes,
        } => BlobFile {
            path: Path::new(&image_root).join(&file_name),
            bytes: bytes as u64,
            what: format!("image {file_name:?} of dataset {dataset_id}"),
        },
        BlobHome::Artifact {
            run_id,
            name,
            bytes,
        } => BlobFile {
            path: s.artifacts_dir(run_id).join(&name),
            bytes: bytes as u64,
            what: format!("artifact {name:?} of run {run_id}"),
        },
    }))
}

/// Where a resumable upload grows (`.partial-{sha256}-{name}`) and where a one-piece upload is
/// written before it is moved into place (`.upload-{random}`), beside the artifacts. A name
/// with a leading dot is never an artifact name, so neither can be served.
pub const PARTIAL_UPLOAD_PREFIX: &str = ".partial-";
pub const WHOLE_UPLOAD_PREFIX: &str = ".upload-";

/// Remove the pieces of uploads an attempt left unfinished: once it has reported its end, nobody
/// will resume them. (Unfinished pieces are never served: they are not in the artifacts table.)
pub async fn discard_partial_uploads(s: &AppState, run_id: i64) {
    let Ok(mut entries) = tokio::fs::read_dir(s.artifacts_dir(run_id)).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(PARTIAL_UPLOAD_PREFIX) || name.starts_with(WHOLE_UPLOAD_PREFIX) {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
}
