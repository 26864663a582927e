//! Dataset pages: list and import (server paths, zip upload), the image browser, images.

use crate::accounts::gate::UserPage;
use crate::db;
use crate::db::datasets::{BoxRow, CategoryCount, DatasetRow, ImageRow};
use crate::error::PageForm;
use crate::error::PageResult;
use crate::error::{OrNotFound, PageError, PagePath, PageQuery};
use crate::forms::actions::ImportForm;
use crate::import::{self, Format, ImportError, ServerPathImport};
use crate::numbers::filters;
use crate::plots;
use crate::routes::{refused, render};
use crate::security::{self};
use crate::state::AppState;
use crate::views::mask_paths::annotation_mask;
use askama::Template;
use axum::body::Body;
use axum::extract::{Multipart, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;
use std::collections::HashMap;
use tokio::io::AsyncWriteExt;

#[derive(Template)]
#[template(path = "datasets.html")]
struct DatasetsPage {
    datasets: Vec<DatasetRow>,
    csrf: String,
    import_roots: Vec<String>,
    upload_limit_mib: u64,
    error: Option<ImportError>,
}

async fn list_page(s: &AppState, csrf: String, error: Option<ImportError>) -> PageResult {
    let refusal = error.is_some();
    let page = DatasetsPage {
        datasets: db::datasets::list(&s.pool).await?,
        csrf,
        import_roots: security::import_roots(s)
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        upload_limit_mib: s.cfg.upload_limit_mib,
        error,
    };
    Ok(if refusal {
        refused(&page)
    } else {
        render(&page)
    })
}

pub async fn list(UserPage { s, csrf, .. }: UserPage) -> PageResult {
    list_page(&s, csrf.0, None).await
}

pub async fn import_from_server(
    UserPage { s, user, csrf }: UserPage,
    PageForm(form): PageForm<ImportForm>,
) -> PageResult {
    let Some(format) = Format::parse(&form.format) else {
        return Err(PageError::bad_request(format!(
            "unknown format {:?}; use coco or voc",
            form.format
        )));
    };
    let req = ServerPathImport {
        name: form.name,
        format,
        annotations: form.annotations,
        images: form.images,
        created_by: Some(user.id),
    };
    match import::import_server_paths(&s, req).await {
        Ok(id) => Ok(Redirect::to(&format!("/datasets/{id}")).into_response()),
        Err(e) => list_page(&s, csrf.0, Some(e)).await,
    }
}

/// Largest `name` field read from an upload form (100 characters of up to 4 bytes, and slack).
const MAX_NAME_FIELD_BYTES: usize = 4096;

/// Multipart: `name` then `file`. The file streams to disk with the size limit enforced as it goes.
pub async fn upload(UserPage { s, user, csrf }: UserPage, mut multipart: Multipart) -> PageResult {
    let limit = s.cfg.upload_limit_mib * 1024 * 1024;
    let mut name: Option<String> = None;
    let mut saved: Option<(std::path::PathBuf, String)> = None;
    let tmp_dir = s.data_dir.join("uploads");
    tokio::fs::create_dir_all(&tmp_dir).await?;
    let fail = |msg: String| ImportError {
        message: msg,
        report: None,
    };
    let outcome: Result<(), ImportError> = async {
        while let Some(mut field) = multipart
            .next_field()
            .await
            .map_err(|e| fail(format!("the upload could not be read: {e}")))?
        {
            match field.name() {
                Some("name") => {
                    // Read capped: the body limit is the zip's, far too much for a name.
                    let mut bytes = Vec::new();
                    while let Some(chunk) = field
                        .chunk()
                        .await
                        .map_err(|e| fail(format!("reading name: {e}")))?
                    {
                        bytes.extend_from_slice(&chunk);
                        if bytes.len() > MAX_NAME_FIELD_BYTES {
                            return Err(fail(
                                "the dataset name must be 1 to 100 characters".to_string(),
                            ));
                        }
                    }
                    name = Some(
                        String::from_utf8(bytes)
                            .map_err(|_| fail("the dataset name is not UTF-8 text".to_string()))?,
                    );
                }
                Some("file") => {
                    let original = field.file_name().unwrap_or("upload.zip").to_string();
                    let path = tmp_dir.join(format!("{}.zip", crate::secrets::random_token()));
                    let mut f = tokio::fs::File::create(&path)
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                    saved = Some((path, original));
                    let mut total = 0u64;
                    while let Some(chunk) = field.chunk().await.map_err(|e| {
                        fail(format!("the upload was interrupted or too large: {e}"))
                    })? {
                        total += chunk.len() as u64;
                        if total > limit {
                            return Err(fail(format!(
                                "the upload is larger than the limit of {} MiB",
                                s.cfg.upload_limit_mib
                            )));
                        }
                        f.write_all(&chunk).await.map_err(|e| fail(e.to_string()))?;
                    }
                    f.flush().await.map_err(|e| fail(e.to_string()))?;
                }
                _ => {}
            }
        }
        Ok(())
    }
    .await;
    let result = match (outcome, name, saved.clone()) {
        (Err(e), _, _) => Err(e),
        (Ok(()), Some(name), Some((path, original))) => {
            import::import_upload(&s, &name, &original, path, Some(user.id)).await
        }
        (Ok(()), _, _) => Err(fail("the form needs a name and a zip file".to_string())),
    };
    if let Some((path, _)) = saved {
        let _ = tokio::fs::remove_file(path).await;
    }
    match result {
        Ok(id) => Ok(Redirect::to(&format!("/datasets/{id}")).into_response()),
        Err(e) => list_page(&s, csrf.0, Some(e)).await,
    }
}

pub struct ImageWithBoxes {
    pub image: ImageRow,
    pub boxes: Vec<BoxRow>,
    /// (category id, SVG path) of the boxes' masks, drawn under the boxes.
    pub masks: Vec<(i64, String)>,
}

#[derive(Template)]
#[template(path = "dataset.html")]
struct DatasetPage {
    dataset: DatasetRow,
    categories: Vec<CategoryCount>,
    images: Vec<ImageWithBoxes>,
    page: i64,
    pages: i64,
    /// ("train", 2000), ("val", 300), ("5pct_seed1", 100), …
    splits: Vec<(String, usize)>,
    names: HashMap<i64, String>,
    /// The class the gallery is filtered to: (id, name, images holding it).
    filter: Option<(i64, String, i64)>,
    /// Whether an image of the page has a mask (the page then offers the masks toggle).
    has_masks: bool,
}

impl DatasetPage {
    /// A stable, distinct colour per category id (golden-angle hues).
    fn color(&self, category_id: &i64) -> String {
        let hue = (*category_id as f64 * 137.508).rem_euclid(360.0);
        format!("hsl({hue:.0}, 85%, 50%)")
    }
    fn category_name(&self, category_id: &i64) -> String {
        self.names
            .get(category_id)
            .cloned()
            .unwrap_or_else(|| category_id.to_string())
    }
    /// Whether the gallery shows only this class's images.
    fn filtered_to(&self, category_id: &i64) -> bool {
        self.filter.as_ref().is_some_and(|f| f.0 == *category_id)
    }
    /// The query of another page of this gallery.
    fn page_query(&self, page: i64) -> String {
        match &self.filter {
            Some((c, _, _)) => format!("?class={c}&page={page}"),
            None => format!("?page={page}"),
        }
    }
}

#[derive(Deserialize)]
pub struct DatasetPageQuery {
    #[serde(default)]
    page: i64,
    /// Only images holding a box of this class (a category id; empty: every image).
    #[serde(default)]
    class: Option<String>,
}

const IMAGES_PER_PAGE: i64 = 24;

/// The gallery's class filter: the class's id, name and how many images hold it.
async fn class_filter(
    s: &AppState,
    id: i64,
    categories: &[CategoryCount],
    class: i64,
) -> Result<(i64, String, i64), PageError> {
    let name = categories
        .iter()
        .find(|k| k.id == class)
        .map(|k| k.name.clone())
        .ok_or_else(|| {
            PageError::not_found(format!("dataset {id} has no class with id {class}"))
        })?;
    let (_, n) = db::datasets::images_with_category(&s.pool, id, class, 0, 0).await?;
    Ok((class, name, n))
}

/// ("train", 2000), ("val", 300), then the labeled subsets; empty without splits.
fn split_sizes(dataset: &DatasetRow) -> Vec<(String, usize)> {
    dataset
        .splits
        .clone()
        .and_then(|v| serde_json::from_value::<aligndet_common::dataset::DatasetSplits>(v).ok())
        .map(|s| {
            let mut rows = vec![
                ("train".to_string(), s.train.len()),
                ("val".to_string(), s.val.len()),
            ];
            rows.extend(s.labeled.iter().map(|(k, v)| (k.clone(), v.len())));
            rows
        })
        .unwrap_or_default()
}

pub async fn show(
    State(s): State<AppState>,
    PagePath(id): PagePath<i64>,
    PageQuery(q): PageQuery<DatasetPageQuery>,
) -> PageResult {
    let dataset = db::datasets::get(&s.pool, id)
        .await?
        .or_not_found("dataset", id)?;
    let categories = db::datasets::category_counts(&s.pool, id).await?;
    let filter = match q.class.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        Some(c) => {
            let c: i64 = c.parse().map_err(|_| {
                PageError::bad_request(format!("class={c} is not a class id (a number)"))
            })?;
            Some(class_filter(&s, id, &categories, c).await?)
        }
        None => None,
    };
    let shown = filter.as_ref().map_or(dataset.num_images as i64, |f| f.2);
    let pages = ((shown + IMAGES_PER_PAGE - 1) / IMAGES_PER_PAGE).max(1);
    let page = q.page.clamp(0, pages - 1);
    let (offset, limit) = (page * IMAGES_PER_PAGE, IMAGES_PER_PAGE);
    let rows = match &filter {
        Some((c, _, _)) => {
            db::datasets::images_with_category(&s.pool, id, *c, offset, limit)
                .await?
                .0
        }
        None => db::datasets::images_page(&s.pool, id, offset, limit).await?,
    };
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut by_image: HashMap<i64, Vec<BoxRow>> = HashMap::new();
    for b in db::datasets::boxes_for_images(&s.pool, id, &ids).await? {
        by_image.entry(b.image_id).or_default().push(b);
    }
    let masks = db::datasets::masks_for_images(&s.pool, id, &ids).await?;
    let images: Vec<ImageWithBoxes> = rows
        .into_iter()
        .map(|image| {
            let boxes = by_image.remove(&image.id).unwrap_or_default();
            let masks = boxes
                .iter()
                .filter_map(|b| Some((b.category_id, annotation_mask(&masks, b.id, &image)?)))
                .collect();
            ImageWithBoxes {
                boxes,
                masks,
                image,
            }
        })
        .collect();
    let has_masks = images.iter().any(|i| !i.masks.is_empty());
    let names = categories.iter().map(|c| (c.id, c.name.clone())).collect();
    let splits = split_sizes(&dataset);
    Ok(render(&DatasetPage {
        splits,
        dataset,
        categories,
        images,
        page,
        pages,
        names,
        filter,
        has_masks,
    }))
}

pub async fn histogram(State(s): State<AppState>, PagePath(id): PagePath<i64>) -> PageResult {
    db::datasets::get(&s.pool, id)
        .await?
        .or_not_found("dataset", id)?;
    let sizes = db::datasets::box_sizes(&s.pool, id).await?;
    let svg = plots::histogram("Box size (sqrt of area)", "pixels", &sizes, 40);
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

/// Serve one image file. The file name was validated at import; we still resolve it under the
/// dataset's root and refuse anything that escapes it.
pub async fn image_file(
    State(s): State<AppState>,
    PagePath((id, image_id)): PagePath<(i64, i64)>,
) -> PageResult {
    let dataset = db::datasets::get(&s.pool, id)
        .await?
        .or_not_found("dataset", id)?;
    let image = db::datasets::image(&s.pool, id, image_id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("image {image_id} not in dataset {id}")))?;
    let root = std::path::Path::new(&dataset.image_root)
        .canonicalize()
        .map_err(|e| PageError::not_found(format!("image folder unavailable: {e}")))?;
    let path = security::safe_join(&root, &image.file_name).ok_or_else(|| {
        PageError::not_found(format!("image file {:?} not found", image.file_name))
    })?;
    let mime = match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("bmp") => "image/bmp",
        Some("tif" | "tiff") => "image/tiff",
        Some("webp") => "image/webp",
        _ => "application/octet-stream",
    };
    // Dataset images are small (tiles, COCO-sized photos): reading them whole is simplest.
    let bytes = tokio::fs::read(&path).await?;
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        Body::from(bytes),
    )
        .into_response())
}
