//! The `evaluate` job: COCO bbox evaluation of a detections artifact against a dataset split.
//! Writes `eval.json` (an `EvaluationReport`) and logs the 12 statistics as metrics.

use super::{JobContext, JobOutcome};
use crate::data::detection::split_image_ids;
use crate::eval::coco::{EvalParams, EvalResult, GroundTruth, evaluate, parse_detections};
use aligndet_common::api::DatasetLocation;
use aligndet_common::artifacts;
use aligndet_common::jobs::EvaluateConfig;
use aligndet_common::report::{
    COCO_STAT_NAMES, ClassResult, EvaluationReport, PrCurve, SizeResult,
};
use anyhow::Context;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

pub fn run(ctx: &mut JobContext<'_>, cfg: &EvaluateConfig) -> anyhow::Result<JobOutcome> {
    cfg.validate()?;
    let started = Instant::now();
    let location = ctx
        .spec
        .dataset
        .clone()
        .context("the job spec names no dataset")?;
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
    let result = evaluate(&gt, &detections, &EvalParams::default())?;
    for (name, value) in COCO_STAT_NAMES.iter().zip(result.stats) {
        ctx.sink.metric(&format!("eval/{name}"), 0, value);
    }
    let report = build_report(
        &gt,
        detections.len(),
        &result,
        started.elapsed().as_secs_f64(),
    );
    let path = ctx.work_dir.join(artifacts::EVAL_REPORT);
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    ctx.sink.artifact(artifacts::EVAL_REPORT, &path)?;
    ctx.log(format!(
        "AP {:.4}  AP50 {:.4}  AP75 {:.4}",
        result.stats[0], result.stats[1], result.stats[2]
    ));
    Ok(JobOutcome::Succeeded)
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
        per_class: result
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
            .collect(),
        per_size: result
            .per_size
            .iter()
            .map(|s| SizeResult {
                area: s.area.clone(),
                ap: s.ap,
                ar: s.ar,
            })
            .collect(),
        pr_curves,
        num_images: gt.images.len(),
        num_detections,
        seconds,
    }
}
