//! The `evaluate` job: COCO bbox evaluation of a detections artifact against a dataset split.
//! Writes `eval.json` (an `EvaluationReport`) and logs the 12 statistics as metrics.

use super::{JobContext, JobOutcome};
use crate::eval::coco::{EvalParams, GroundTruth, evaluate, parse_detections};
use aligndet_common::dataset::DatasetSplits;
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
    let gt_bytes = std::fs::read(&location.annotations_path)
        .with_context(|| format!("reading {}", location.annotations_path))?;
    let mut gt = GroundTruth::from_json_bytes(&gt_bytes)?;
    if let Some(split) = &cfg.split {
        let splits: DatasetSplits = location
            .splits
            .clone()
            .context("the dataset has no splits")
            .and_then(|v| serde_json::from_value(v).context("reading the dataset's splits"))?;
        let ids: HashSet<i64> = match split.as_str() {
            "train" => splits.train.iter().copied().collect(),
            "val" => splits.val.iter().copied().collect(),
            other => splits
                .labeled
                .get(other)
                .with_context(|| {
                    format!(
                        "split {other:?} not found; the dataset has train, val and {}",
                        splits
                            .labeled
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?
                .iter()
                .copied()
                .collect(),
        };
        gt.images.retain(|i| ids.contains(i));
        gt.annotations.retain(|a| ids.contains(&a.image_id));
    }
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
    let report = EvaluationReport {
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
        num_detections: detections.len(),
        seconds: started.elapsed().as_secs_f64(),
    };
    let path = ctx.work_dir.join("eval.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    ctx.sink.artifact("eval.json", &path)?;
    ctx.log(format!(
        "AP {:.4}  AP50 {:.4}  AP75 {:.4}",
        result.stats[0], result.stats[1], result.stats[2]
    ));
    Ok(JobOutcome::Succeeded)
}
