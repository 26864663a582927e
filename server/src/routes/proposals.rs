//! The pseudo-box browser of a `proposals` run and its COCO export.

use crate::db;
use crate::db::datasets::{BoxRow, DatasetRow, ImageRow};
use crate::db::runs::RunRow;
use crate::error::{OrNotFound, PageError, PagePath, PageQuery};
use crate::numbers::filters;
use crate::plots;
use crate::routes::render;
use crate::state::AppState;
use aligndet_common::api::FilterRule;
use aligndet_common::jobs::RunKind;
use askama::Template;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

pub struct DrawnBox {
    /// Position in the order produced.
    pub order: usize,
    /// Position among the kept boxes (what the slider counts); removed boxes get usize::MAX.
    pub rank: usize,
    pub kept: bool,
    pub rule: &'static str,
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

pub struct ImageView {
    pub dataset_id: i64,
    pub image: ImageRow,
    pub boxes: Vec<DrawnBox>,
    pub kept_count: usize,
    pub initial_count: usize,
    pub gt: Vec<BoxRow>,
    pub prev: Option<i64>,
    pub next: Option<i64>,
}

#[derive(Template)]
#[template(path = "proposals.html")]
struct ProposalsPage {
    run: RunRow,
    dataset: Option<DatasetRow>,
    images_done: i64,
    boxes_kept: i64,
    boxes_total: i64,
    median_seconds: Option<f64>,
    recall_chart: Option<String>,
    view: Option<ImageView>,
}

#[derive(Deserialize)]
pub struct ImageQuery {
    image: Option<i64>,
}

async fn proposals_run(s: &AppState, id: i64) -> Result<(RunRow, i64), PageError> {
    let run = db::runs::get(&s.pool, id).await?.or_not_found("run", id)?;
    let dataset_id = run
        .dataset_id
        .filter(|_| run.kind == RunKind::Proposals)
        .ok_or_else(|| {
            PageError::not_found(format!("run {id} is not a pseudo-box run with a dataset"))
        })?;
    Ok((run, dataset_id))
}

pub async fn browser(
    State(s): State<AppState>,
    PagePath(id): PagePath<i64>,
    PageQuery(q): PageQuery<ImageQuery>,
) -> Result<Response, PageError> {
    let (run, dataset_id) = proposals_run(&s, id).await?;
    let (images_done, boxes_kept, boxes_total, median_seconds) =
        db::proposals::summary(&s.pool, id).await?;
    let done = db::proposals::done_image_ids(&s.pool, id).await?;
    let current = q
        .image
        .filter(|i| done.binary_search(i).is_ok())
        .or(done.first().copied());
    let view = match current {
        Some(image_id) => {
            let pos = done.binary_search(&image_id).unwrap_or(0);
            let row = db::proposals::for_image(&s.pool, id, image_id).await?;
            let image = db::datasets::image(&s.pool, dataset_id, image_id).await?;
            match (row, image) {
                (Some(row), Some(image)) => {
                    let mut kept = 0;
                    let boxes: Vec<DrawnBox> = row
                        .boxes()
                        .into_iter()
                        .enumerate()
                        .map(|(order, (b, rule))| {
                            let is_kept = rule == FilterRule::Kept;
                            let rank = if is_kept {
                                kept += 1;
                                kept - 1
                            } else {
                                usize::MAX
                            };
                            DrawnBox {
                                order,
                                rank,
                                kept: is_kept,
                                rule: rule.label(),
                                x: b[0],
                                y: b[1],
                                w: b[2],
                                h: b[3],
                            }
                        })
                        .collect();
                    Some(ImageView {
                        dataset_id,
                        gt: db::datasets::boxes_for_images(&s.pool, dataset_id, &[image_id])
                            .await?,
                        image,
                        kept_count: kept,
                        initial_count: kept.min(50),
                        boxes,
                        prev: pos.checked_sub(1).map(|p| done[p]),
                        next: done.get(pos + 1).copied(),
                    })
                }
                _ => None,
            }
        }
        None => None,
    };
    let recall_chart = recall_chart(&s, id).await?;
    Ok(render(&ProposalsPage {
        dataset: db::datasets::get(&s.pool, dataset_id).await?,
        run,
        images_done,
        boxes_kept,
        boxes_total,
        median_seconds,
        recall_chart,
        view,
    }))
}

/// Recall against the number of proposals: the job logs `recall/iou50`, `recall/iou70` and
/// `recall/ar` with the proposal count as the step.
pub async fn recall_chart(s: &AppState, run_id: i64) -> Result<Option<String>, PageError> {
    let mut series = Vec::new();
    for (key, label) in [
        ("recall/iou50", "recall @ IoU 0.5"),
        ("recall/iou70", "recall @ IoU 0.7"),
        ("recall/ar", "AR @ IoU 0.5:0.95"),
    ] {
        let pts = db::runs::metric_series(&s.pool, run_id, key).await?;
        if !pts.is_empty() {
            series.push((
                label.to_string(),
                pts.into_iter().map(|(x, y)| (x as f64, y)).collect(),
            ));
        }
    }
    Ok((!series.is_empty()).then(|| {
        let labels = plots::Labels {
            title: "Ground-truth recall vs number of pseudo-boxes",
            x: "pseudo-boxes per image",
            y: "recall of ground-truth boxes",
        };
        plots::line_chart_with(&labels, &series, plots::View::default())
    }))
}

#[derive(Deserialize)]
pub struct ExportQuery {
    #[serde(default)]
    all: Option<u8>,
}

/// COCO JSON with one category `selective_search`, like AlignDet's `filtered_proposals` file.
pub async fn export_coco(
    State(s): State<AppState>,
    PagePath(id): PagePath<i64>,
    PageQuery(q): PageQuery<ExportQuery>,
) -> Result<Response, PageError> {
    let (run, dataset_id) = proposals_run(&s, id).await?;
    let include_removed = q.all.unwrap_or(0) != 0;
    let rows = db::proposals::all(&s.pool, id).await?;
    let mut images = Vec::with_capacity(rows.len());
    let mut annotations = Vec::new();
    // One query for the dataset's images, not one per exported image.
    let dataset_images: std::collections::HashMap<i64, ImageRow> =
        db::datasets::images_page(&s.pool, dataset_id, 0, i64::MAX)
            .await?
            .into_iter()
            .map(|img| (img.id, img))
            .collect();
    for row in &rows {
        if let Some(img) = dataset_images.get(&row.image_id) {
            images.push(serde_json::json!({"id": img.id, "file_name": img.file_name, "width": img.width, "height": img.height}));
        }
        for (b, rule) in row.boxes() {
            if include_removed || rule == FilterRule::Kept {
                let id = annotations.len() + 1;
                annotations.push(serde_json::json!({
                    "id": id, "image_id": row.image_id, "category_id": 1,
                    "bbox": b, "area": b[2] * b[3], "iscrowd": 0,
                }));
            }
        }
    }
    let body = serde_json::json!({
        "info": {"description": format!("pseudo-boxes of run {} ({})", run.id, run.name)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "selective_search"}],
    });
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        header::HeaderValue::from_str(&format!("attachment; filename=\"proposals-run-{id}.json\""))
            .unwrap_or(header::HeaderValue::from_static("attachment")),
    );
    Ok(resp)
}
