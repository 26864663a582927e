//! Pseudo-boxes of `proposals` runs (table `proposal_images`).

use aligndet_common::api::{FilterRule, ImageProposals};
use sqlx::PgPool;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProposalRow {
    pub image_id: i64,
    pub boxes: Vec<f32>,
    pub removed_by: Vec<i16>,
    pub seconds: f64,
}

impl ProposalRow {
    /// `(x, y, w, h, rule)` per box, in the order produced.
    pub fn boxes(&self) -> Vec<([f32; 4], FilterRule)> {
        self.boxes
            .chunks_exact(4)
            .zip(&self.removed_by)
            .map(|(b, r)| {
                (
                    [b[0], b[1], b[2], b[3]],
                    FilterRule::from_code(*r).unwrap_or(FilterRule::Kept),
                )
            })
            .collect()
    }
}

/// Upsert per image: a re-sent batch (or a re-run image) replaces what was there.
pub async fn upsert(
    pool: &PgPool,
    run_id: i64,
    attempt: i32,
    images: &[ImageProposals],
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    for img in images {
        let flat: Vec<f32> = img.boxes.iter().flatten().copied().collect();
        let rules: Vec<i16> = img.removed_by.iter().map(|r| *r as i16).collect();
        sqlx::query(
            "INSERT INTO proposal_images (run_id, image_id, boxes, removed_by, seconds, attempt)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (run_id, image_id) DO UPDATE
               SET boxes = EXCLUDED.boxes, removed_by = EXCLUDED.removed_by,
                   seconds = EXCLUDED.seconds, attempt = EXCLUDED.attempt",
        )
        .bind(run_id)
        .bind(img.image_id)
        .bind(&flat)
        .bind(&rules)
        .bind(img.seconds)
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
    }
    super::notify_run_changed(&mut *tx, run_id).await?;
    tx.commit().await
}

pub async fn done_image_ids(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<i64>> {
    super::values_by(
        pool,
        "SELECT image_id FROM proposal_images WHERE run_id = $1 ORDER BY image_id",
        run_id,
    )
    .await
}

pub async fn for_image(
    pool: &PgPool,
    run_id: i64,
    image_id: i64,
) -> sqlx::Result<Option<ProposalRow>> {
    sqlx::query_as("SELECT image_id, boxes, removed_by, seconds FROM proposal_images WHERE run_id = $1 AND image_id = $2")
        .bind(run_id)
        .bind(image_id)
        .fetch_optional(pool)
        .await
}

pub async fn all(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<ProposalRow>> {
    super::rows_by(
        pool,
        "SELECT image_id, boxes, removed_by, seconds FROM proposal_images
         WHERE run_id = $1 ORDER BY image_id",
        run_id,
    )
    .await
}

/// Every image's pseudo-boxes, in image order, row by row as Postgres sends them (the COCO
/// export writes each before the next is read).
pub fn stream_all(
    pool: &PgPool,
    run_id: i64,
) -> futures_util::stream::BoxStream<'_, sqlx::Result<ProposalRow>> {
    sqlx::query_as(
        "SELECT image_id, boxes, removed_by, seconds FROM proposal_images
         WHERE run_id = $1 ORDER BY image_id",
    )
    .bind(run_id)
    .fetch(pool)
}

/// (images done, boxes kept, boxes produced, median seconds per image)
pub async fn summary(pool: &PgPool, run_id: i64) -> sqlx::Result<(i64, i64, i64, Option<f64>)> {
    sqlx::query_as(
        "SELECT COUNT(*),
                COALESCE(SUM((SELECT COUNT(*) FROM unnest(removed_by) r WHERE r = 0)), 0)::BIGINT,
                COALESCE(SUM(cardinality(removed_by)), 0)::BIGINT,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds)
         FROM proposal_images WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await
}
