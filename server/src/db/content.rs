//! The content (sha256, size) of dataset files and artifacts, and where a blob named by its
//! sha256 lives on this server (see `crate::content`).

use aligndet_common::content::{Blob, NamedBlob};
use sqlx::PgPool;

/// A dataset's annotation file and images by content, once they have been hashed.
pub async fn dataset_content(
    pool: &PgPool,
    dataset_id: i64,
) -> sqlx::Result<Option<(Blob, Vec<NamedBlob>)>> {
    let annotations: Option<(Option<String>, Option<i64>)> = super::row_by(
        pool,
        "SELECT annotations_sha256, annotations_bytes FROM datasets WHERE id = $1",
        dataset_id,
    )
    .await?;
    let Some((Some(sha256), Some(bytes))) = annotations else {
        return Ok(None);
    };
    let rows: Vec<(String, String, i64)> = super::rows_by(
        pool,
        "SELECT file_name, sha256, bytes FROM dataset_files WHERE dataset_id = $1 ORDER BY file_name",
        dataset_id,
    )
    .await?;
    let images = rows
        .into_iter()
        .map(|(file_name, sha256, bytes)| NamedBlob {
            file_name,
            blob: Blob {
                sha256,
                bytes: bytes as u64,
            },
        })
        .collect();
    let annotations = Blob {
        sha256,
        bytes: bytes as u64,
    };
    Ok(Some((annotations, images)))
}

/// Record a dataset's hashed files; the annotation hash goes in last, in the same transaction,
/// so a dataset with an annotation hash always has all its files listed.
pub async fn store_dataset_content(
    pool: &PgPool,
    dataset_id: i64,
    annotations: &Blob,
    images: &[NamedBlob],
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    for chunk in images.chunks(1000) {
        let names: Vec<&str> = chunk.iter().map(|f| f.file_name.as_str()).collect();
        let hashes: Vec<&str> = chunk.iter().map(|f| f.blob.sha256.as_str()).collect();
        let sizes: Vec<i64> = chunk.iter().map(|f| f.blob.bytes as i64).collect();
        sqlx::query(
            "INSERT INTO dataset_files (dataset_id, file_name, sha256, bytes)
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::bigint[])
             ON CONFLICT (dataset_id, file_name) DO NOTHING",
        )
        .bind(dataset_id)
        .bind(&names)
        .bind(&hashes)
        .bind(&sizes)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE datasets SET annotations_sha256 = $2, annotations_bytes = $3 WHERE id = $1",
    )
    .bind(dataset_id)
    .bind(&annotations.sha256)
    .bind(annotations.bytes as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// An artifact a job may read: of the run itself (its checkpoint to resume from) or of a run it
/// reads from (`run_parents`). `sha256` is `None` for artifacts stored before hashing existed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InputArtifactRow {
    pub run_id: i64,
    pub name: String,
    pub bytes: i64,
    pub sha256: Option<String>,
}

pub async fn input_artifacts(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<InputArtifactRow>> {
    super::rows_by(
        pool,
        "SELECT a.run_id, a.name, a.bytes, a.sha256 FROM artifacts a
         WHERE a.run_id = $1
            OR a.run_id IN (SELECT parent_id FROM run_parents WHERE run_id = $1)
         ORDER BY a.run_id, a.name",
        run_id,
    )
    .await
}

/// Record the hash of an artifact file, if the file is still the one of that size.
pub async fn set_artifact_sha256(
    pool: &PgPool,
    run_id: i64,
    name: &str,
    blob: &Blob,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE artifacts SET sha256 = $3 WHERE run_id = $1 AND name = $2 AND bytes = $4")
        .bind(run_id)
        .bind(name)
        .bind(&blob.sha256)
        .bind(blob.bytes as i64)
        .execute(pool)
        .await?;
    Ok(())
}

/// Where the content with one sha256 is stored on this server.
#[derive(Debug, Clone, PartialEq)]
pub enum BlobHome {
    /// A dataset's annotation file.
    Annotations {
        dataset_id: i64,
        path: String,
        bytes: i64,
    },
    /// An image, `file_name` relative to its dataset's image folder.
    Image {
        dataset_id: i64,
        image_root: String,
        file_name: String,
        bytes: i64,
    },
    Artifact {
        run_id: i64,
        name: String,
        bytes: i64,
    },
}

pub async fn locate_blob(pool: &PgPool, sha256: &str) -> sqlx::Result<Option<BlobHome>> {
    let image: Option<(i64, String, String, i64)> = super::row_by(
        pool,
        "SELECT d.id, d.image_root, f.file_name, f.bytes FROM dataset_files f
         JOIN datasets d ON d.id = f.dataset_id WHERE f.sha256 = $1 LIMIT 1",
        sha256,
    )
    .await?;
    if let Some((dataset_id, image_root, file_name, bytes)) = image {
        return Ok(Some(BlobHome::Image {
            dataset_id,
            image_root,
            file_name,
            bytes,
        }));
    }
    let artifact: Option<(i64, String, i64)> = super::row_by(
        pool,
        "SELECT run_id, name, bytes FROM artifacts WHERE sha256 = $1 LIMIT 1",
        sha256,
    )
    .await?;
    if let Some((run_id, name, bytes)) = artifact {
        return Ok(Some(BlobHome::Artifact {
            run_id,
            name,
            bytes,
        }));
    }
    let annotations: Option<(i64, String, i64)> = super::row_by(
        pool,
        "SELECT id, annotations_path, annotations_bytes FROM datasets
         WHERE annotations_sha256 = $1 LIMIT 1",
        sha256,
    )
    .await?;
    Ok(
        annotations.map(|(dataset_id, path, bytes)| BlobHome::Annotations {
            dataset_id,
            path,
            bytes,
        }),
    )
}

/// The sha256 of a run's artifact as stored (`None`: no such artifact, or stored before hashing).
pub async fn artifact_sha256(
    pool: &PgPool,
    run_id: i64,
    name: &str,
) -> sqlx::Result<Option<String>> {
    let found: Option<(Option<String>,)> =
        sqlx::query_as("SELECT sha256 FROM artifacts WHERE run_id = $1 AND name = $2")
            .bind(run_id)
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(found.and_then(|(sha,)| sha))
}
