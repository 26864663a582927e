//! The evaluation entry point: groups, matches and accumulates in parallel (rayon; run it
//! inside a `ThreadPool::install` to bound the threads).

use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::accumulate::accumulate;
use super::cells::{Cells, UnknownId};
use super::iou::{BoxIou, IouMeasure};
use super::load::{Detection, GroundTruth};
use super::mask::MaskSet;
use super::matching::{CategoryMatches, MatchInput};
use super::params::{EvalParams, IouType};
use super::summary::{self, AreaSummary, ClassSummary, PrCurve};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(
        "detection at index {index} has image_id {image_id}, which is not an image of the ground truth"
    )]
    UnknownImage { index: usize, image_id: i64 },
    #[error(
        "detection at index {index} has category_id {category_id}, which is not a category of the ground truth"
    )]
    UnknownCategory { index: usize, category_id: i64 },
    #[error("invalid evaluation parameters: {0}")]
    InvalidParams(String),
}

/// Seconds spent in each stage (pycocotools' `evaluate` and `accumulate` + `summarize`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimings {
    pub evaluate: f64,
    pub accumulate: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// pycocotools' `COCOeval.stats`; names in [`summary::STAT_NAMES`]. -1 = undefined.
    pub stats: [f64; 12],
    /// One entry per ground-truth category, ascending id.
    pub per_class: Vec<ClassSummary>,
    pub per_size: Vec<AreaSummary>,
    /// One entry per ground-truth category, ascending id.
    pub pr_curves: Vec<PrCurve>,
    pub timings: StageTimings,
}

/// Evaluates `detections` (a results file, in file order) against `gt` by box IoU.
///
/// Fails if a detection refers to an image or category that is not in the ground truth.
pub fn evaluate(
    gt: &GroundTruth,
    detections: &[Detection],
    params: &EvalParams,
) -> Result<EvalResult, EvalError> {
    if params.iou_type != IouType::Bbox {
        return Err(EvalError::InvalidParams(
            "segm evaluation needs the masks: call evaluate_segm".into(),
        ));
    }
    let measure = BoxIou {
        detections,
        ground_truth: gt,
    };
    run(gt, detections, params, &measure)
}

/// Evaluates by mask IoU (`iouType="segm"`); `masks` holds one mask per ground-truth
/// annotation and per detection (see [`super::mask::load`]).
pub fn evaluate_segm(
    gt: &GroundTruth,
    detections: &[Detection],
    masks: &MaskSet,
    params: &EvalParams,
) -> Result<EvalResult, EvalError> {
    if params.iou_type != IouType::Segm {
        return Err(EvalError::InvalidParams(
            "evaluate_segm needs iou_type segm".into(),
        ));
    }
    if masks.num_ground_truth() != gt.annotations.len()
        || masks.num_detections() != detections.len()
    {
        return Err(EvalError::InvalidParams(
            "there must be one mask per annotation and per detection".into(),
        ));
    }
    run(gt, detections, params, masks)
}

fn run<M: IouMeasure>(
    gt: &GroundTruth,
    detections: &[Detection],
    params: &EvalParams,
    measure: &M,
) -> Result<EvalResult, EvalError> {
    params.validate().map_err(EvalError::InvalidParams)?;
    let started = Instant::now();
    let cells = Cells::build(gt, detections).map_err(|e| match e {
        UnknownId::Image { index, image_id } => EvalError::UnknownImage { index, image_id },
        UnknownId::Category { index, category_id } => {
            EvalError::UnknownCategory { index, category_id }
        }
    })?;
    let matches = match_all(&MatchInput {
        params,
        cells: &cells,
        ground_truth: gt,
        detections,
        measure,
    });
    let evaluate_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let acc = accumulate(&matches, params);
    let all_area = params
        .area_ranges
        .iter()
        .position(|r| r.label == "all")
        .unwrap_or(0);
    let num_gt: Vec<usize> = matches.iter().map(|m| m.non_ignored_gt[all_area]).collect();
    let stats = summary::coco_stats(&acc, params);
    let per_class = summary::per_class(&acc, params, gt, &cells.category_ids, &num_gt);
    let per_size = summary::per_size(&acc, params);
    let pr_curves = summary::pr_curves(&acc, params, &cells.category_ids);
    let timings = StageTimings {
        evaluate: evaluate_s,
        accumulate: started.elapsed().as_secs_f64(),
    };
    Ok(EvalResult {
        stats,
        per_class,
        per_size,
        pr_curves,
        timings,
    })
}

/// Matches every category, splitting each into runs of images so that a few large
/// categories still spread over all threads. Returns one entry per category, in order.
fn match_all<M: IouMeasure>(input: &MatchInput<'_, M>) -> Vec<CategoryMatches> {
    let num_images = input.cells.num_images();
    let num_categories = input.cells.category_ids.len();
    let target_tasks = rayon::current_num_threads() * 8;
    let images_per_task = (num_images * num_categories)
        .div_ceil(target_tasks.max(1))
        .clamp(64, num_images.max(64));
    let tasks: Vec<(usize, std::ops::Range<usize>)> = (0..num_categories)
        .flat_map(|k| {
            (0..num_images)
                .step_by(images_per_task)
                .map(move |start| (k, start..(start + images_per_task).min(num_images)))
        })
        .collect();
    let parts: Vec<(usize, CategoryMatches)> = tasks
        .into_par_iter()
        .map(|(k, images)| (k, input.match_images(k, images)))
        .collect();

    let mut per_category: Vec<CategoryMatches> = (0..num_categories)
        .map(|_| CategoryMatches {
            non_ignored_gt: vec![0; input.params.area_ranges.len()],
            ..Default::default()
        })
        .collect();
    for (k, part) in parts {
        per_category[k].append(part);
    }
    per_category
}
