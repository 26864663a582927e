//! The `evaluate` job: COCO bbox evaluation of a detections artifact against a dataset split,
//! and mask (segm) evaluation beside it when the detections carry masks (Mask R-CNN).
//! Writes `eval.json` (an `EvaluationReport`) and logs the 12 statistics as metrics
//! (`eval/<stat>`, `eval/segm_<stat>`).

use super::{JobContext, JobOutcome};
use crate::data::detection::split_image_ids;
use crate::eval::coco::mask::load::{SegmResults, parse_segm_results};
use crate::eval::coco::{EvalParams, EvalResult, GroundTruth, evaluate, parse_detections};
use crate::train::segm_eval::GroundTruthMasks;
use aligndet_common::api::DatasetLocation;
use aligndet_common::artifacts;
use aligndet_common::jobs::EvaluateConfig;
use aligndet_common::report::{
    COCO_STAT_NAMES, ClassResult, EvaluationReport, PrCurve, SegmReport, SizeResult,
};
use anyhow::Context;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

pub fn run(ctx: &mut JobContext<'_>, cfg: &EvaluateConfig) -> anyhow::Result<JobOutcome> {
    cfg.validate()?;
    let started = Instant::now();
    let location = ctx.dataset()?;
    let gt = ground_truth(&location, cfg.split.as_deref())?;
    let dt_bytes = ctx
        .inputs
        .fetch(cfg.detections.run_id, &cfg.detections.name)?;
    let mut detections = parse_detections(&dt_bytes)
        .with_context(|| format!("reading detections {:?}", cfg.detections.name))?;
    if cfg.split.is_some() {
        let images: HashSet<i64> = gt.images.iter().copied().collect();
        let before = detections.len();
        detections.retain(|d| images.contains(&d.image_id));
        if detections.len() < before {
            ctx.log(format!(
                "{} detections on images outside the split were left out",
                before - detections.len()
            ));
        }
    }
    ctx.log(format!(
        "evaluating {} detections on {} images ({} ground-truth boxes)",
        detections.len(),
        gt.images.len(),
        gt.annotations.len()
    ));
    // Masks are read before any metric is sent, so a refused file leaves nothing behind.
    let segm = if carries_masks(&dt_bytes) {
        Some(evaluate_masks(
            &location,
            &gt.images,
            &dt_bytes,
            &cfg.detections.name,
        )?)
    } else {
        None
    };
    let result = evaluate(&gt, &detections, &EvalParams::default())?;
    for (name, value) in COCO_STAT_NAMES.iter().zip(result.stats) {
        ctx.sink.metric(&format!("eval/{name}"), 0, value);
    }
    if let Some(segm) = &segm {
        for (name, value) in COCO_STAT_NAMES.iter().zip(segm.stats) {
            ctx.sink.metric(&format!("eval/segm_{name}"), 0, value);
        }
        ctx.log(format!(
            "mask AP {:.4}  AP50 {:.4}  AP75 {:.4}",
            segm.stats[0], segm.stats[1], segm.stats[2]
        ));
    }
    let report = EvaluationReport {
        segm: segm.as_ref().map(segm_report),
        ..build_report(
            &gt,
            detections.len(),
            &result,
            started.elapsed().as_secs_f64(),
        )
    };
    ctx.store_report(artifacts::EVAL_REPORT, &report)?;
    ctx.log(format!(
        "AP {:.4}  AP50 {:.4}  AP75 {:.4}",
        result.stats[0], result.stats[1], result.stats[2]
    ));
    Ok(JobOutcome::Succeeded)
}

/// Whether any result of a COCO results file has a `segmentation` (a mask detector's).
fn carries_masks(dt_bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct MaskField {
        #[serde(default)]
        segmentation: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Vec<MaskField>>(dt_bytes)
        .is_ok_and(|results| results.iter().any(|r| r.segmentation.is_some()))
}

/// Mask AP of a results file on `images`: every annotation of the dataset needs a mask, and
/// results on other images are left out (with their masks).
fn evaluate_masks(
    location: &DatasetLocation,
    images: &[i64],
    dt_bytes: &[u8],
    detections_name: &str,
) -> anyhow::Result<EvalResult> {
    let gt = GroundTruthMasks::load(location).with_context(|| {
        format!(
            "detections {detections_name:?} carry masks, so they are scored by mask IoU too, \
             and dataset {:?} needs a mask on every annotation",
            location.name
        )
    })?;
    let all = parse_segm_results(dt_bytes, &gt.sizes)
        .with_context(|| format!("reading the masks of detections {detections_name:?}"))?;
    let keep: HashSet<i64> = images.iter().copied().collect();
    let mut results = SegmResults {
        detections: Vec::new(),
        masks: Vec::new(),
        areas: Vec::new(),
    };
    for ((d, m), a) in all.detections.into_iter().zip(all.masks).zip(all.areas) {
        if keep.contains(&d.image_id) {
            results.detections.push(d);
            results.masks.push(m);
            results.areas.push(a);
        }
    }
    gt.score(images, results)
}

/// The dataset's ground truth, restricted to a split's images when one is named.
pub fn ground_truth(
    location: &DatasetLocation,
    split: Option<&str>,
) -> anyhow::Result<GroundTruth> {
    let gt_bytes = std::fs::read(&location.annotations_path)
        .with_context(|| format!("reading {}", location.annotations_path))?;
    let mut gt = GroundTruth::from_json_bytes(&gt_bytes)?;
    if let Some(split) = split {
        let ids = split_image_ids(location, split)?;
        gt.images.retain(|i| ids.contains(i));
        gt.annotations.retain(|a| ids.contains(&a.image_id));
    }
    Ok(gt)
}

/// The stored report (`eval.json`) of an evaluation.
pub fn build_report(
    gt: &GroundTruth,
    num_detections: usize,
    result: &EvalResult,
    seconds: f64,
) -> EvaluationReport {
    let names: HashMap<i64, String> = result
        .per_class
        .iter()
        .map(|c| (c.category_id, c.name.clone()))
        .collect();
    let mut pr_curves = Vec::new();
    for c in &result.pr_curves {
        let name = names
            .get(&c.category_id)
            .cloned()
            .unwrap_or_else(|| c.category_id.to_string());
        for (iou, p) in [
            (Some(0.5), &c.precision_iou50),
            (Some(0.75), &c.precision_iou75),
            (None, &c.precision_mean),
        ] {
            pr_curves.push(PrCurve {
                name: name.clone(),
                iou,
                precision: p.clone(),
            });
        }
    }
    EvaluationReport {
        stats: result.stats.to_vec(),
        per_class: class_results(result),
        per_size: size_results(result),
        pr_curves,
        num_images: gt.images.len(),
        num_detections,
        seconds,
        segm: None,
    }
}

/// The mask half of a report (Mask R-CNN), from a segm evaluation.
pub fn segm_report(result: &EvalResult) -> SegmReport {
    SegmReport {
        stats: result.stats.to_vec(),
        per_class: class_results(result),
        per_size: size_results(result),
    }
}

fn class_results(result: &EvalResult) -> Vec<ClassResult> {
    result
        .per_class
        .iter()
        .map(|c| ClassResult {
            category_id: c.category_id,
            name: c.name.clone(),
            ap: c.ap,
            ap50: c.ap50,
            ap75: c.ap75,
            ar100: c.ar100,
            num_gt: c.num_gt,
        })
        .collect()
}

fn size_results(result: &EvalResult) -> Vec<SizeResult> {
    result
        .per_size
        .iter()
        .map(|s| SizeResult {
            area: s.area.clone(),
            ap: s.ap,
            ar: s.ar,
        })
        .collect()
}
