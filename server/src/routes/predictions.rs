//! The predictions browser of a `finetune` run: its `predictions.json` (COCO results on the val
//! split) drawn over the val images beside the ground truth, a few images per page.

use crate::db;
use crate::db::datasets::{DatasetRow, ImageRow};
use crate::db::runs::RunRow;
use crate::error::{OrNotFound, PageError, PagePath, PageQuery};
use crate::numbers::filters;
use crate::routes::render;
use crate::state::{AppState, ArtifactRead};
use crate::views::finetune::finetune_config;
use aligndet_common::artifacts;
use aligndet_common::jobs::RunKind;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use std::collections::HashMap;

/// Images per page: enough to compare, few enough to read the boxes.
const IMAGES_PER_PAGE: usize = 6;

/// The score threshold the page opens with (the slider moves it in the browser).
const DEFAULT_THRESHOLD: f64 = 0.3;

/// One entry of a COCO results file.
#[derive(Deserialize)]
struct Prediction {
    image_id: i64,
    category_id: i64,
    bbox: [f64; 4],
    score: f64,
}

pub struct DrawnBox {
    pub category_id: i64,
    pub label: String,
    /// Predictions only; ground truth has none.
    pub score: Option<f64>,
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    /// Below the opening threshold: drawn hidden until the slider comes down.
    pub hidden: bool,
}

impl DrawnBox {
    /// Prediction labels sit above the box, or just inside it at the image's top edge.
    fn above_y(&self, font: &f64) -> f64 {
        if self.y >= *font {
            self.y - font * 0.25
        } else {
            self.y + font
        }
    }
    /// Ground-truth labels sit inside the box's bottom edge, apart from the predictions'.
    fn inside_bottom_y(&self, font: &f64) -> f64 {
        self.y + self.h - font * 0.25
    }
}

pub struct PredictedImage {
    pub dataset_id: i64,
    pub image: ImageRow,
    /// Lowest score first, so the most confident boxes are drawn on top.
    pub predictions: Vec<DrawnBox>,
    pub gt: Vec<DrawnBox>,
    pub above: usize,
    /// Label size in image pixels (the overlay scales with the image).
    pub font: f64,
}

#[derive(Template)]
#[template(path = "predictions.html")]
struct PredictionsPage {
    run: RunRow,
    dataset: Option<DatasetRow>,
    split: String,
    /// Why there is nothing to draw (no predictions.json yet, unreadable file, missing split).
    message: Option<String>,
    images: Vec<PredictedImage>,
    /// (category id, name, colour, predictions in the split)
    classes: Vec<(i64, String, String, usize)>,
    page: usize,
    pages: usize,
    threshold: f64,
    num_images: usize,
    num_predictions: usize,
    /// Predictions on images outside the split (left out of the page).
    outside: usize,
}

impl PredictionsPage {
    fn color(&self, category_id: &i64) -> String {
        class_color(*category_id)
    }
}

/// A stable, distinct colour per category id (golden-angle hues, as on the dataset page).
fn class_color(category_id: i64) -> String {
    let hue = (category_id as f64 * 137.508).rem_euclid(360.0);
    format!("hsl({hue:.0}, 85%, 45%)")
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PredictionsQuery {
    page: usize,
    threshold: Option<f64>,
}

pub async fn browser(
    State(s): State<AppState>,
    PagePath(id): PagePath<i64>,
    PageQuery(q): PageQuery<PredictionsQuery>,
) -> Result<Response, PageError> {
    let run = db::runs::get(&s.pool, id).await?.or_not_found("run", id)?;
    if run.kind != RunKind::Finetune {
        return Err(PageError::not_found(format!(
            "run {id} is a {} run; only fine-tune runs have predictions to browse",
            run.kind
        )));
    }
    let config = finetune_config(&run).ok_or_else(|| {
        PageError::not_found(format!("run {id} has no readable fine-tune config"))
    })?;
    let threshold = q
        .threshold
        .filter(|t| t.is_finite())
        .unwrap_or(DEFAULT_THRESHOLD)
        .clamp(0.0, 1.0);
    let dataset = db::datasets::get(&s.pool, config.dataset_id).await?;
    let mut page = PredictionsPage {
        run,
        split: config.val_split.clone(),
        message: None,
        images: Vec::new(),
        classes: Vec::new(),
        page: 0,
        pages: 1,
        threshold,
        num_images: 0,
        num_predictions: 0,
        outside: 0,
        dataset: None,
    };
    let Some(dataset) = dataset else {
        page.message = Some(format!("dataset {} no longer exists", config.dataset_id));
        return Ok(render(&page));
    };
    let predictions: Vec<Prediction> = match s.read_artifact(id, artifacts::PREDICTIONS).await? {
        ArtifactRead::Found(bytes) => match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) => {
                page.message = Some(format!("predictions.json could not be read: {e}"));
                page.dataset = Some(dataset);
                return Ok(render(&page));
            }
        },
        ArtifactRead::Missing(_) | ArtifactRead::BadName(_) => {
            page.message = Some(format!(
                "Run {id} has no predictions.json yet: the job writes it after the final evaluation."
            ));
            page.dataset = Some(dataset);
            return Ok(render(&page));
        }
    };
    // The split the predictions were made on; a dataset without splits is shown whole.
    let ids = if dataset.splits.is_some() {
        match dataset.split_ids(&config.val_split) {
            Some(ids) => ids,
            None => {
                page.message = Some(format!(
                    "dataset {:?} has no split {:?}",
                    dataset.name, config.val_split
                ));
                page.dataset = Some(dataset);
                return Ok(render(&page));
            }
        }
    } else {
        db::datasets::image_ids(&s.pool, dataset.id).await?
    };
    let names: HashMap<i64, String> = db::datasets::category_names(&s.pool, dataset.id)
        .await?
        .into_iter()
        .collect();
    let name_of = |cat: i64| names.get(&cat).cloned().unwrap_or_else(|| cat.to_string());

    let mut by_image: HashMap<i64, Vec<Prediction>> = HashMap::new();
    let mut per_class: HashMap<i64, usize> = HashMap::new();
    for p in predictions {
        if ids.binary_search(&p.image_id).is_err() {
            page.outside += 1;
            continue;
        }
        page.num_predictions += 1;
        *per_class.entry(p.category_id).or_default() += 1;
        by_image.entry(p.image_id).or_default().push(p);
    }
    let mut class_ids: Vec<i64> = names.keys().copied().collect();
    class_ids.extend(per_class.keys().filter(|c| !names.contains_key(c)));
    class_ids.sort_unstable();
    page.classes = class_ids
        .into_iter()
        .map(|c| {
            (
                c,
                name_of(c),
                class_color(c),
                per_class.get(&c).copied().unwrap_or(0),
            )
        })
        .collect();

    page.num_images = ids.len();
    page.pages = ids.len().div_ceil(IMAGES_PER_PAGE).max(1);
    page.page = q.page.min(page.pages - 1);
    let start = page.page * IMAGES_PER_PAGE;
    let page_ids: Vec<i64> = ids
        .iter()
        .skip(start)
        .take(IMAGES_PER_PAGE)
        .copied()
        .collect();
    let mut gt_by_image: HashMap<i64, Vec<DrawnBox>> = HashMap::new();
    for b in db::datasets::boxes_for_images(&s.pool, dataset.id, &page_ids).await? {
        gt_by_image.entry(b.image_id).or_default().push(DrawnBox {
            category_id: b.category_id,
            label: name_of(b.category_id),
            score: None,
            x: b.x,
            y: b.y,
            w: b.w,
            h: b.h,
            hidden: false,
        });
    }
    for image in db::datasets::images_by_ids(&s.pool, dataset.id, &page_ids).await? {
        let mut preds = by_image.remove(&image.id).unwrap_or_default();
        preds.sort_by(|a, b| a.score.total_cmp(&b.score));
        let predictions: Vec<DrawnBox> = preds
            .into_iter()
            .map(|p| DrawnBox {
                category_id: p.category_id,
                label: name_of(p.category_id),
                score: Some(p.score),
                x: p.bbox[0],
                y: p.bbox[1],
                w: p.bbox[2],
                h: p.bbox[3],
                hidden: p.score < threshold,
            })
            .collect();
        page.images.push(PredictedImage {
            dataset_id: dataset.id,
            above: predictions.iter().filter(|p| !p.hidden).count(),
            predictions,
            gt: gt_by_image.remove(&image.id).unwrap_or_default(),
            font: (image.width.max(image.height) as f64 / 40.0).max(4.0),
            image,
        });
    }
    page.dataset = Some(dataset);
    Ok(render(&page))
}
