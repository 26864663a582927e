//! The predictions browser of a `finetune` run: its `predictions.json` (COCO results on the val
//! split) drawn over the val images, each prediction marked a true or false positive and each
//! missed ground-truth box marked, at an IoU chosen in the URL; a few images per page, ordered
//! by id or by errors. The model is [`crate::views::predictions`].

use crate::db;
use crate::db::datasets::{BoxRow, DatasetRow};
use crate::db::runs::RunRow;
use crate::error::PageResult;
use crate::error::{OrNotFound, PageError, PagePath, PageQuery};
use crate::matching::Counts;
use crate::numbers::filters;
use crate::routes::render;
use crate::state::{AppState, ArtifactRead};
use crate::views::finetune::finetune_config;
use crate::views::predictions::{
    self as model, ClassCounts, DrawnImage, MAX_TOP, Prediction, SplitMatch, View, parse_view,
};
use aligndet_common::artifacts;
use aligndet_common::jobs::RunKind;
use askama::Template;
use axum::extract::State;
use serde::Deserialize;
use std::collections::HashMap;

/// Images per page: enough to compare, few enough to read the boxes.
const IMAGES_PER_PAGE: usize = 6;

/// The split's numbers: what the file holds, what is shown, and how it matched.
struct Summary {
    num_images: usize,
    total_predictions: usize,
    shown: usize,
    truths: usize,
    crowd: usize,
    counts: Counts,
    /// (category id, name, colour, counts)
    classes: Vec<(i64, String, String, ClassCounts)>,
}

#[derive(Template)]
#[template(path = "predictions.html")]
struct PredictionsPage {
    run: RunRow,
    dataset: Option<DatasetRow>,
    split: String,
    /// Why there is nothing to draw (no predictions.json yet, unreadable file, missing split).
    message: Option<String>,
    view: View,
    max_top: usize,
    summary: Option<Summary>,
    images: Vec<DrawnImage>,
    page: usize,
    pages: usize,
    /// Predictions on images outside the split (left out of the page).
    outside: usize,
    /// Whether predictions or the page's ground truth carry masks (the page then offers the
    /// masks toggle; box-only runs look as before).
    has_masks: bool,
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
    top: Option<usize>,
    iou: Option<f64>,
    sort: Option<String>,
}

/// What `predictions.json` holds for the split; `Err(why)` when there is nothing to draw.
type Loaded = Result<LoadedSplit, String>;

struct LoadedSplit {
    /// The split's image ids.
    ids: Vec<i64>,
    by_image: HashMap<i64, Vec<Prediction>>,
    /// Predictions on images outside the split (counted, not kept).
    outside: usize,
    /// Whether any prediction carries a mask.
    masked: bool,
}

async fn load(
    s: &AppState,
    run_id: i64,
    dataset: &DatasetRow,
    split: &str,
) -> Result<Loaded, PageError> {
    let predictions: Vec<Prediction> = match s.read_artifact(run_id, artifacts::PREDICTIONS).await?
    {
        ArtifactRead::Found(bytes) => match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) => return Ok(Err(format!("predictions.json could not be read: {e}"))),
        },
        ArtifactRead::Missing(_) | ArtifactRead::BadName(_) => {
            return Ok(Err(format!(
                "Run {run_id} has no predictions.json yet: the job writes it after the final evaluation."
            )));
        }
    };
    // The split the predictions were made on; a dataset without splits is shown whole.
    let ids = if dataset.splits.is_some() {
        match dataset.split_ids(split) {
            Some(ids) => ids,
            None => {
                return Ok(Err(format!(
                    "dataset {:?} has no split {split:?}",
                    dataset.name
                )));
            }
        }
    } else {
        db::datasets::image_ids(&s.pool, dataset.id).await?
    };
    let mut by_image: HashMap<i64, Vec<Prediction>> = HashMap::new();
    let mut outside = 0;
    let masked = predictions.iter().any(|p| p.segmentation.is_some());
    for p in predictions {
        if ids.binary_search(&p.image_id).is_ok() {
            by_image.entry(p.image_id).or_default().push(p);
        } else {
            outside += 1;
        }
    }
    Ok(Ok(LoadedSplit {
        ids,
        by_image,
        outside,
        masked,
    }))
}

pub async fn browser(
    State(s): State<AppState>,
    PagePath(id): PagePath<i64>,
    PageQuery(q): PageQuery<PredictionsQuery>,
) -> PageResult {
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
    let view =
        parse_view(q.threshold, q.top, q.iou, q.sort.as_deref()).map_err(PageError::bad_request)?;
    let mut page = PredictionsPage {
        run,
        split: config.val_split.clone(),
        message: None,
        view,
        max_top: MAX_TOP,
        summary: None,
        images: Vec::new(),
        page: 0,
        pages: 1,
        outside: 0,
        dataset: None,
        has_masks: false,
    };
    let Some(dataset) = db::datasets::get(&s.pool, config.dataset_id).await? else {
        page.message = Some(format!("dataset {} no longer exists", config.dataset_id));
        return Ok(render(&page));
    };
    match load(&s, id, &dataset, &config.val_split).await? {
        Ok(loaded) => {
            page.outside = loaded.outside;
            page.has_masks = loaded.masked;
            fill(
                &s,
                &mut page,
                &dataset,
                &loaded.ids,
                loaded.by_image,
                q.page,
            )
            .await?;
        }
        Err(why) => page.message = Some(why),
    }
    page.dataset = Some(dataset);
    Ok(render(&page))
}

/// Matches the split, counts it, and draws the page's images.
async fn fill(
    s: &AppState,
    page: &mut PredictionsPage,
    dataset: &DatasetRow,
    ids: &[i64],
    predictions: HashMap<i64, Vec<Prediction>>,
    page_no: usize,
) -> Result<(), PageError> {
    let names: HashMap<i64, String> = db::datasets::category_names(&s.pool, dataset.id)
        .await?
        .into_iter()
        .collect();
    let name_of = |cat: i64| names.get(&cat).cloned().unwrap_or_else(|| cat.to_string());
    let mut truths: HashMap<i64, Vec<BoxRow>> = HashMap::new();
    for b in db::datasets::boxes_for_images(&s.pool, dataset.id, ids).await? {
        truths.entry(b.image_id).or_default().push(b);
    }
    let split = model::match_split(ids, predictions, truths, &page.view);
    let order = model::ordered(&split, page.view.sort);
    page.pages = order.len().div_ceil(IMAGES_PER_PAGE).max(1);
    page.page = page_no.min(page.pages - 1);
    let page_ids: Vec<i64> = order
        .iter()
        .skip(page.page * IMAGES_PER_PAGE)
        .take(IMAGES_PER_PAGE)
        .copied()
        .collect();
    let mut rows: HashMap<i64, _> = db::datasets::images_by_ids(&s.pool, dataset.id, &page_ids)
        .await?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    let gt_masks = db::datasets::masks_for_images(&s.pool, dataset.id, &page_ids).await?;
    page.has_masks |= !gt_masks.is_empty();
    for image_id in &page_ids {
        if let (Some(row), Some(m)) = (rows.remove(image_id), split.images.get(image_id)) {
            page.images
                .push(model::draw(dataset.id, row, m, &gt_masks, &name_of));
        }
    }
    page.summary = Some(summary(split, &names, &name_of));
    Ok(())
}

fn summary(
    split: SplitMatch,
    names: &HashMap<i64, String>,
    name_of: &dyn Fn(i64) -> String,
) -> Summary {
    let mut per_class = split.per_class;
    for cat in names.keys() {
        per_class.entry(*cat).or_default();
    }
    Summary {
        num_images: split.images.len(),
        total_predictions: split.total_predictions,
        shown: split.shown,
        truths: split.truths,
        crowd: split.crowd,
        counts: split.counts,
        classes: per_class
            .into_iter()
            .map(|(c, n)| (c, name_of(c), class_color(c), n))
            .collect(),
    }
}
