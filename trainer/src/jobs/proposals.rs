//! The `proposals` job: selective-search pseudo-boxes for every image of a dataset.
//!
//! Images are processed in chunks (parallel inside a chunk); each finished chunk is sent to the
//! server, which stores it per image, so a re-claimed job skips what an earlier attempt finished.
//! A stop request is checked before each image, and the images of a chunk that finished before a
//! stop or a failure are still sent.
//! At the end, recall of the ground-truth boxes against the number of pseudo-boxes is logged as
//! metrics (`recall/iou50`, `recall/iou70`, `recall/ar`, with the box count as the step) and
//! written as the `recall.json` artifact. The kept boxes of every image go to the
//! `pseudo_boxes.json` artifact, which box-domain pre-training reads.

use super::{JobContext, JobOutcome};
use crate::proposals::{
    self, FilterConfig, ImageBoxes, RecallPoint, Strategy, filter_boxes, propose,
    recall::DEFAULT_COUNTS, recall_curve,
};
use aligndet_common::api::{FilterRule, ImageProposals};
use aligndet_common::artifacts;
use aligndet_common::dataset::CocoDataset;
use aligndet_common::images::{ImageLimits, decode_checked};
use aligndet_common::jobs::ProposalsConfig;
use aligndet_common::pretrain_config::{ImagePseudoBoxes, PseudoBoxes};
use anyhow::Context;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub fn run(ctx: &mut JobContext<'_>, cfg: &ProposalsConfig) -> anyhow::Result<JobOutcome> {
    cfg.validate()?;
    let location = ctx.dataset()?;
    let text = std::fs::read(&location.annotations_path)
        .with_context(|| format!("reading {}", location.annotations_path))?;
    let dataset: CocoDataset = serde_json::from_slice(&text)
        .with_context(|| format!("parsing {}", location.annotations_path))?;
    let mut images = dataset.images.clone();
    images.sort_by_key(|i| i.id);
    if let Some(n) = cfg.max_images {
        images.truncate(n as usize);
    }
    let mut results: HashMap<i64, ImageProposals> = ctx
        .resume
        .proposals
        .iter()
        .map(|p| (p.image_id, p.clone()))
        .collect();
    let todo: Vec<_> = images
        .iter()
        .filter(|i| !results.contains_key(&i.id))
        .cloned()
        .collect();
    ctx.log(format!(
        "{} images ({} already done), strategy {}",
        images.len(),
        images.len() - todo.len(),
        cfg.strategy.as_str()
    ));
    let root = Path::new(&location.image_root);
    let strategy = Strategy::by_name(cfg.strategy.as_str())?;
    let started = Instant::now();
    let limits = ctx.spec.image_limits;
    let stop = ctx.stop.clone();
    for chunk in todo.chunks(cfg.chunk_size as usize) {
        if ctx.should_stop() {
            return Ok(JobOutcome::Stopped);
        }
        // Set by the first failing image so the rest of the chunk does not start.
        let failed = AtomicBool::new(false);
        let outcomes: Vec<Option<anyhow::Result<ImageProposals>>> = chunk
            .par_iter()
            .map(|img| {
                if stop.is_set() || failed.load(Ordering::SeqCst) {
                    return None;
                }
                let outcome =
                    propose_image(&root.join(&img.file_name), img.id, limits, cfg, &strategy);
                if outcome.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                Some(outcome)
            })
            .collect();
        let mut computed = Vec::new();
        let mut first_error = None;
        for outcome in outcomes.into_iter().flatten() {
            match outcome {
                Ok(p) => computed.push(p),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let stopped = computed.len() + usize::from(first_error.is_some()) < chunk.len();
        if !computed.is_empty() {
            for p in &computed {
                results.insert(p.image_id, p.clone());
            }
            ctx.sink.proposals(computed);
            let done = results.len() as i64;
            ctx.sink.metric(
                "progress/images_done",
                done,
                done as f64 / images.len().max(1) as f64,
            );
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if stopped {
            ctx.log(format!(
                "stopping on request: {} of {} images done",
                results.len(),
                images.len()
            ));
            return Ok(JobOutcome::Stopped);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    if !todo.is_empty() {
        ctx.sink
            .metric("seconds_per_image", 0, elapsed / todo.len() as f64);
    }

    let ordered: Vec<&ImageProposals> = images.iter().filter_map(|i| results.get(&i.id)).collect();
    let report = recall_report(&dataset, &ordered);
    for (key, curve) in &report.curves {
        ctx.sink.metrics(
            curve
                .iter()
                .map(|&(n, r)| aligndet_common::api::MetricPoint {
                    key: key.clone(),
                    step: n as i64,
                    value: r,
                    wall_time: super::sink::now_seconds(),
                })
                .collect(),
        );
    }
    ctx.store_report(artifacts::RECALL, &report.json)?;
    let pseudo = PseudoBoxes {
        strategy: cfg.strategy.as_str().to_string(),
        images: ordered
            .iter()
            .map(|p| ImagePseudoBoxes {
                image_id: p.image_id,
                boxes: p
                    .boxes
                    .iter()
                    .zip(&p.removed_by)
                    .filter(|(_, r)| **r == FilterRule::Kept)
                    .map(|(b, _)| *b)
                    .collect(),
            })
            .collect(),
    };
    ctx.store_data(artifacts::PSEUDO_BOXES, &pseudo)?;
    let kept: usize = ordered
        .iter()
        .map(|p| {
            p.removed_by
                .iter()
                .filter(|r| **r == FilterRule::Kept)
                .count()
        })
        .sum();
    ctx.log(format!(
        "done: {} images, {kept} pseudo-boxes kept, {:.3} s per image",
        ordered.len(),
        elapsed / todo.len().max(1) as f64
    ));
    Ok(JobOutcome::Succeeded)
}

/// One image: decoded whole under the server's limits (the error names the file), then
/// selective search and the filter.
fn propose_image(
    path: &Path,
    image_id: i64,
    limits: ImageLimits,
    cfg: &ProposalsConfig,
    strategy: &Strategy,
) -> anyhow::Result<ImageProposals> {
    let t = Instant::now();
    let bytes = crate::data::arrivals::read(path)?;
    let rgb = decode_checked(&bytes, path, limits)
        .map_err(|e| anyhow::anyhow!("image {} {e}", path.display()))?
        .to_rgb8();
    let (boxes, removed_by) = propose_and_filter(&rgb, cfg, strategy);
    Ok(ImageProposals {
        image_id,
        boxes,
        removed_by,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Selective search plus the filter's verdict for every box, in the order produced.
fn propose_and_filter(
    rgb: &image::RgbImage,
    cfg: &ProposalsConfig,
    strategy: &Strategy,
) -> (Vec<[f32; 4]>, Vec<FilterRule>) {
    let boxes = propose(rgb, strategy, cfg.seed);
    let outcome = filter_boxes(&boxes, rgb.width(), rgb.height(), &filter_config(cfg));
    let mut verdicts = vec![FilterRule::Kept; boxes.len()];
    for removed in &outcome.removed {
        verdicts[removed.index] = match removed.rule {
            proposals::FilterRule::MinSide => FilterRule::TooSmall,
            proposals::FilterRule::AspectRatio => FilterRule::Aspect,
            proposals::FilterRule::RelativeSize => FilterRule::TooLarge,
            proposals::FilterRule::Nms => FilterRule::Nms,
            proposals::FilterRule::TopK => FilterRule::TopK,
        };
    }
    (boxes, verdicts)
}

/// The platform's filter settings in the selective-search module's terms.
fn filter_config(cfg: &ProposalsConfig) -> FilterConfig {
    let f = &cfg.filter;
    FilterConfig {
        min_width: f.min_side as f32,
        min_height: f.min_side as f32,
        max_aspect_ratio: f.max_aspect as f32,
        max_relative_size: f.max_relative_size as f32,
        nms_iou: f.nms_iou.map(|t| t as f32),
        top_k: f.top_k.map(|k| k as usize),
        ..FilterConfig::default()
    }
}

struct RecallSummary {
    /// metric key → (number of boxes per image, value)
    curves: Vec<(String, Vec<(usize, f64)>)>,
    json: serde_json::Value,
}

/// Recall of the non-crowd ground truth by the kept pseudo-boxes and by all boxes.
fn recall_report(dataset: &CocoDataset, results: &[&ImageProposals]) -> RecallSummary {
    let mut gt: HashMap<i64, Vec<[f32; 4]>> = HashMap::new();
    for a in dataset.annotations.iter().filter(|a| a.iscrowd == 0) {
        let b = a.bbox;
        gt.entry(a.image_id).or_default().push([
            b[0] as f32,
            b[1] as f32,
            b[2] as f32,
            b[3] as f32,
        ]);
    }
    let kept: Vec<Vec<[f32; 4]>> = results
        .iter()
        .map(|p| {
            p.boxes
                .iter()
                .zip(&p.removed_by)
                .filter(|(_, r)| **r == FilterRule::Kept)
                .map(|(b, _)| *b)
                .collect()
        })
        .collect();
    let empty = Vec::new();
    let report_for = |boxes: Vec<&[[f32; 4]]>| {
        let images: Vec<ImageBoxes<'_>> = results
            .iter()
            .zip(boxes)
            .map(|(p, proposals)| ImageBoxes {
                gt: gt.get(&p.image_id).unwrap_or(&empty),
                proposals,
            })
            .collect();
        recall_curve(&images, &DEFAULT_COUNTS)
    };
    let filtered = report_for(kept.iter().map(|k| k.as_slice()).collect());
    let unfiltered = report_for(results.iter().map(|p| p.boxes.as_slice()).collect());
    let mut curves = Vec::new();
    for (prefix, report) in [("recall", &filtered), ("recall_all", &unfiltered)] {
        for (size, curve) in [
            ("", &report.overall),
            ("/small", &report.small),
            ("/medium", &report.medium),
            ("/large", &report.large),
        ] {
            if curve.num_gt == 0 {
                continue;
            }
            // x = boxes per image. The "all" point is drawn only beyond the largest fixed count
            // (at the mean number available); below it, the fixed counts already cover it.
            let largest = curve
                .points
                .iter()
                .filter_map(|p| p.max_proposals)
                .max()
                .unwrap_or(0);
            let x = |p: &RecallPoint| p.max_proposals.unwrap_or(p.mean_proposals.round() as usize);
            let mut points: Vec<&RecallPoint> = curve
                .points
                .iter()
                .filter(|p| p.max_proposals.is_some() || x(p) > largest)
                .collect();
            points.sort_by_key(|p| x(p));
            points.dedup_by_key(|p| x(p));
            let series = |f: fn(&RecallPoint) -> f64| points.iter().map(|p| (x(p), f(p))).collect();
            curves.push((format!("{prefix}/iou50{size}"), series(|p| p.recall_50)));
            curves.push((format!("{prefix}/iou70{size}"), series(|p| p.recall_70)));
            curves.push((format!("{prefix}/ar{size}"), series(|p| p.average_recall)));
        }
    }
    RecallSummary {
        curves,
        json: serde_json::json!({ "filtered": filtered, "all_boxes": unfiltered }),
    }
}
