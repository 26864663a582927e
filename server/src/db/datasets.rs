use super::select_with_creator;
use aligndet_common::dataset::CocoDataset;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::HashMap;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DatasetRow {
    pub id: i64,
    pub name: String,
    pub format: String,
    pub source: String,
    pub image_root: String,
    pub annotations_path: String,
    pub num_images: i32,
    pub num_annotations: i32,
    pub splits: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    /// The user who imported it (`None`: before accounts).
    #[sqlx(default)]
    pub created_by: Option<i64>,
    /// That user's name, where the query joins it.
    #[sqlx(default)]
    pub creator: Option<String>,
}

impl DatasetRow {
    /// The stored `splits.json`, if the dataset has one that parses.
    fn parsed_splits(&self) -> Option<aligndet_common::dataset::DatasetSplits> {
        serde_json::from_value(self.splits.clone()?).ok()
    }

    /// Split names a job can name: `train`, `val`, then the labeled subsets (empty without splits).
    pub fn split_names(&self) -> Vec<String> {
        self.parsed_splits()
            .map(|s| {
                let mut names = vec!["train".to_string(), "val".to_string()];
                names.extend(s.labeled.into_keys());
                names
            })
            .unwrap_or_default()
    }

    /// Image ids of one split, sorted; `None` when the dataset has no splits or not this one.
    pub fn split_ids(&self, name: &str) -> Option<Vec<i64>> {
        let s = self.parsed_splits()?;
        let mut ids = match name {
            "train" => s.train,
            "val" => s.val,
            other => s.labeled.get(other)?.clone(),
        };
        ids.sort_unstable();
        ids.dedup();
        Some(ids)
    }
}

pub struct NewDataset<'a> {
    pub name: &'a str,
    pub format: &'a str,
    pub source: &'a str,
    pub image_root: &'a str,
    pub annotations_path: &'a str,
    pub splits: Option<serde_json::Value>,
    /// The user importing it.
    pub created_by: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CategoryCount {
    pub id: i64,
    pub name: String,
    pub count: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ImageRow {
    pub id: i64,
    pub file_name: String,
    pub width: i32,
    pub height: i32,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BoxRow {
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub iscrowd: bool,
}

pub async fn name_taken(pool: &PgPool, name: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM datasets WHERE name = $1)")
        .bind(name)
        .fetch_one(pool)
        .await
}

/// Whether `e` is the unique violation (SQLSTATE 23505) of `datasets.name`: another dataset
/// took the name between the caller's check and its insert.
pub fn is_name_conflict(e: &sqlx::Error) -> bool {
    super::is_unique_violation(e, "datasets_name_key")
}

/// Insert a validated dataset and all its rows in the caller's transaction (all or nothing).
/// `annotations_path` may contain `{id}`, replaced by the new dataset id.
pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    new: &NewDataset<'_>,
    data: &CocoDataset,
) -> sqlx::Result<i64> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO datasets (name, format, source, image_root, annotations_path, num_images, num_annotations, splits, created_by)
         VALUES ($1, $2, $3, $4, '', $5, $6, $7, $8) RETURNING id",
    )
    .bind(new.name)
    .bind(new.format)
    .bind(new.source)
    .bind(new.image_root)
    .bind(data.images.len() as i32)
    .bind(data.annotations.len() as i32)
    .bind(&new.splits)
    .bind(new.created_by)
    .fetch_one(&mut **tx)
    .await?;
    let annotations_path = new.annotations_path.replace("{id}", &id.to_string());
    super::write_by(
        &mut **tx,
        "UPDATE datasets SET annotations_path = $2 WHERE id = $1",
        id,
        annotations_path,
    )
    .await?;

    let (cat_ids, cat_names): (Vec<i64>, Vec<String>) = data
        .categories
        .iter()
        .map(|c| (c.id, c.name.clone()))
        .unzip();
    sqlx::query(
        "INSERT INTO categories (dataset_id, id, name) SELECT $1, * FROM UNNEST($2::BIGINT[], $3::TEXT[])",
    )
    .bind(id)
    .bind(&cat_ids)
    .bind(&cat_names)
    .execute(&mut **tx)
    .await?;

    // Chunked so one statement's arrays stay moderate on very large datasets.
    for chunk in data.images.chunks(20_000) {
        let ids: Vec<i64> = chunk.iter().map(|i| i.id).collect();
        let names: Vec<String> = chunk.iter().map(|i| i.file_name.clone()).collect();
        let widths: Vec<i32> = chunk.iter().map(|i| i.width as i32).collect();
        let heights: Vec<i32> = chunk.iter().map(|i| i.height as i32).collect();
        sqlx::query(
            "INSERT INTO images (dataset_id, id, file_name, width, height)
             SELECT $1, * FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::INT[], $5::INT[])",
        )
        .bind(id)
        .bind(&ids)
        .bind(&names)
        .bind(&widths)
        .bind(&heights)
        .execute(&mut **tx)
        .await?;
    }
    for chunk in data.annotations.chunks(20_000) {
        let col = |f: fn(&aligndet_common::dataset::CocoAnnotation) -> f64| -> Vec<f64> {
            chunk.iter().map(f).collect()
        };
        let ids: Vec<i64> = chunk.iter().map(|a| a.id).collect();
        let image_ids: Vec<i64> = chunk.iter().map(|a| a.image_id).collect();
        let cat_ids: Vec<i64> = chunk.iter().map(|a| a.category_id).collect();
        let crowd: Vec<bool> = chunk.iter().map(|a| a.iscrowd != 0).collect();
        let masks: Vec<Option<serde_json::Value>> =
            chunk.iter().map(|a| a.segmentation.clone()).collect();
        sqlx::query(
            "INSERT INTO annotations (dataset_id, id, image_id, category_id, x, y, w, h, area, iscrowd, segmentation)
             SELECT $1, * FROM UNNEST($2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::FLOAT8[], $6::FLOAT8[],
                                      $7::FLOAT8[], $8::FLOAT8[], $9::FLOAT8[], $10::BOOL[], $11::JSONB[])",
        )
        .bind(id)
        .bind(&ids)
        .bind(&image_ids)
        .bind(&cat_ids)
        .bind(col(|a| a.bbox[0]))
        .bind(col(|a| a.bbox[1]))
        .bind(col(|a| a.bbox[2]))
        .bind(col(|a| a.bbox[3]))
        .bind(col(|a| a.area))
        .bind(&crowd)
        .bind(&masks)
        .execute(&mut **tx)
        .await?;
    }
    Ok(id)
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<DatasetRow>> {
    sqlx::query_as(select_with_creator!("datasets", "ORDER BY id"))
        .fetch_all(pool)
        .await
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<DatasetRow>> {
    super::row_by(pool, select_with_creator!("datasets", "WHERE id = $1"), id).await
}

pub async fn get_by_name(pool: &PgPool, name: &str) -> sqlx::Result<Option<DatasetRow>> {
    super::row_by(pool, "SELECT * FROM datasets WHERE name = $1", name).await
}

pub async fn category_counts(pool: &PgPool, dataset_id: i64) -> sqlx::Result<Vec<CategoryCount>> {
    super::rows_by(
        pool,
        "SELECT c.id, c.name, COUNT(a.id) AS count
         FROM categories c LEFT JOIN annotations a ON a.dataset_id = c.dataset_id AND a.category_id = c.id
         WHERE c.dataset_id = $1 GROUP BY c.id, c.name ORDER BY c.id",
        dataset_id,
    )
    .await
}

pub async fn images_page(
    pool: &PgPool,
    dataset_id: i64,
    offset: i64,
    limit: i64,
) -> sqlx::Result<Vec<ImageRow>> {
    sqlx::query_as(
        "SELECT id, file_name, width, height FROM images WHERE dataset_id = $1 ORDER BY id OFFSET $2 LIMIT $3",
    )
    .bind(dataset_id)
    .bind(offset)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A page of the images holding at least one box of `category_id` (in id order), and how many
/// images do.
pub async fn images_with_category(
    pool: &PgPool,
    dataset_id: i64,
    category_id: i64,
    offset: i64,
    limit: i64,
) -> sqlx::Result<(Vec<ImageRow>, i64)> {
    let rows = sqlx::query_as(
        "SELECT i.id, i.file_name, i.width, i.height FROM images i
         WHERE i.dataset_id = $1 AND EXISTS (SELECT 1 FROM annotations a
           WHERE a.dataset_id = $1 AND a.image_id = i.id AND a.category_id = $2)
         ORDER BY i.id OFFSET $3 LIMIT $4",
    )
    .bind(dataset_id)
    .bind(category_id)
    .bind(offset)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT image_id) FROM annotations WHERE dataset_id = $1 AND category_id = $2",
    )
    .bind(dataset_id)
    .bind(category_id)
    .fetch_one(pool)
    .await?;
    Ok((rows, total))
}

pub async fn image(
    pool: &PgPool,
    dataset_id: i64,
    image_id: i64,
) -> sqlx::Result<Option<ImageRow>> {
    sqlx::query_as(
        "SELECT id, file_name, width, height FROM images WHERE dataset_id = $1 AND id = $2",
    )
    .bind(dataset_id)
    .bind(image_id)
    .fetch_optional(pool)
    .await
}

pub async fn boxes_for_images(
    pool: &PgPool,
    dataset_id: i64,
    image_ids: &[i64],
) -> sqlx::Result<Vec<BoxRow>> {
    sqlx::query_as(
        "SELECT id, image_id, category_id, x, y, w, h, iscrowd FROM annotations
         WHERE dataset_id = $1 AND image_id = ANY($2) ORDER BY id",
    )
    .bind(dataset_id)
    .bind(image_ids)
    .fetch_all(pool)
    .await
}

/// (annotation id, segmentation) of the annotations on these images that carry one.
pub async fn masks_for_images(
    pool: &PgPool,
    dataset_id: i64,
    image_ids: &[i64],
) -> sqlx::Result<HashMap<i64, serde_json::Value>> {
    let rows: Vec<(i64, serde_json::Value)> = sqlx::query_as(
        "SELECT id, segmentation FROM annotations
         WHERE dataset_id = $1 AND image_id = ANY($2) AND segmentation IS NOT NULL",
    )
    .bind(dataset_id)
    .bind(image_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// An annotation a mask detector would train on (the rule of
/// `aligndet_common::dataset::CocoAnnotation::is_trained_on`, which the trainer's loader keeps
/// objects by, said in SQL) that has no segmentation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UnmaskedAnnotation {
    pub id: i64,
    pub file_name: String,
    /// How many such annotations these images hold in all.
    pub total: i64,
}

/// The first (by id) training annotation on these images without a mask, if any.
pub async fn first_unmasked_annotation(
    pool: &PgPool,
    dataset_id: i64,
    image_ids: &[i64],
) -> sqlx::Result<Option<UnmaskedAnnotation>> {
    sqlx::query_as(
        "SELECT a.id, i.file_name, count(*) OVER () AS total
         FROM annotations a JOIN images i ON i.dataset_id = a.dataset_id AND i.id = a.image_id
         WHERE a.dataset_id = $1 AND a.image_id = ANY($2) AND a.segmentation IS NULL
           AND NOT a.iscrowd AND a.w >= $3 AND a.h >= $3
         ORDER BY a.id LIMIT 1",
    )
    .bind(dataset_id)
    .bind(image_ids)
    .bind(aligndet_common::dataset::MIN_TRAIN_BOX_PX)
    .fetch_optional(pool)
    .await
}

/// sqrt(w·h) of every box, for the size histogram.
pub async fn box_sizes(pool: &PgPool, dataset_id: i64) -> sqlx::Result<Vec<f64>> {
    super::values_by(
        pool,
        "SELECT sqrt(GREATEST(w * h, 0)) FROM annotations WHERE dataset_id = $1",
        dataset_id,
    )
    .await
}

pub async fn counts(pool: &PgPool) -> sqlx::Result<(i64, i64, i64)> {
    sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM datasets), (SELECT COUNT(*) FROM images), (SELECT COUNT(*) FROM annotations)",
    )
    .fetch_one(pool)
    .await
}

/// (id, name) of every category of a dataset, for labelling boxes without counting them.
pub async fn category_names(pool: &PgPool, dataset_id: i64) -> sqlx::Result<Vec<(i64, String)>> {
    super::rows_by(
        pool,
        "SELECT id, name FROM categories WHERE dataset_id = $1 ORDER BY id",
        dataset_id,
    )
    .await
}

/// The images with these ids (those that exist), in id order.
pub async fn images_by_ids(
    pool: &PgPool,
    dataset_id: i64,
    image_ids: &[i64],
) -> sqlx::Result<Vec<ImageRow>> {
    sqlx::query_as(
        "SELECT id, file_name, width, height FROM images WHERE dataset_id = $1 AND id = ANY($2) ORDER BY id",
    )
    .bind(dataset_id)
    .bind(image_ids)
    .fetch_all(pool)
    .await
}

/// Ids of every image of a dataset in id order (a split when the dataset has none).
pub async fn image_ids(pool: &PgPool, dataset_id: i64) -> sqlx::Result<Vec<i64>> {
    super::values_by(
        pool,
        "SELECT id FROM images WHERE dataset_id = $1 ORDER BY id",
        dataset_id,
    )
    .await
}
