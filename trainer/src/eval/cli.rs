//! `trainer eval --gt GT.json --dt DT.json [--iou-type bbox|segm] [--threads N]
//! [--pr-curves]`: COCO evaluation of a results file, printed as JSON on stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, anyhow};
use serde::Serialize;

use super::coco::mask::MaskSet;
use super::coco::mask::load::{RawSegmResults, ground_truth_masks};
use super::coco::{
    AreaSummary, ClassSummary, Detection, EvalError, EvalParams, EvalResult, GroundTruth, IouType,
    PrCurve, STAT_NAMES, evaluate, evaluate_segm, parse_detections,
};

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// COCO ground-truth file (images, categories, annotations).
    #[arg(long, value_name = "GT.json")]
    pub gt: PathBuf,
    /// COCO results file: a JSON array of {image_id, category_id, bbox, score}, with
    /// `segmentation` (RLE or polygons) for segm.
    #[arg(long, value_name = "DT.json")]
    pub dt: PathBuf,
    /// Overlap measure: boxes, or masks (pycocotools' iouType="segm").
    #[arg(long, value_enum, default_value = "bbox")]
    pub iou_type: IouType,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Also print per-class precision-recall curves.
    #[arg(long)]
    pub pr_curves: bool,
}

#[derive(Serialize)]
struct Output<'a> {
    stats: &'a [f64; 12],
    stat_names: &'a [&'a str; 12],
    per_class: &'a [ClassSummary],
    per_size: &'a [AreaSummary],
    #[serde(skip_serializing_if = "Option::is_none")]
    pr_curves: Option<&'a [PrCurve]>,
    timings: Timings,
}

/// Seconds per stage.
#[derive(Serialize)]
struct Timings {
    load: f64,
    evaluate: f64,
    accumulate: f64,
}

pub fn main(args: EvalArgs) -> anyhow::Result<()> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()
        .context("starting the worker threads")?;
    pool.install(|| run(&args))
}

fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (gt, detections, masks) = match args.iou_type {
        IouType::Bbox => {
            let (gt, detections) =
                rayon::join(|| load_ground_truth(&args.gt), || load_detections(&args.dt));
            (gt?, detections?, None)
        }
        IouType::Segm => load_segm(args)?,
    };
    let load = started.elapsed().as_secs_f64();

    let result: Result<EvalResult, EvalError> = match &masks {
        None => evaluate(&gt, &detections, &EvalParams::default()),
        Some(masks) => evaluate_segm(&gt, &detections, masks, &EvalParams::segm()),
    };
    let result = result.map_err(|e| match e {
        EvalError::UnknownImage { .. } | EvalError::UnknownCategory { .. } => {
            anyhow!("detections file {}: {e}", args.dt.display())
        }
        other => anyhow!(other),
    })?;
    let output = Output {
        stats: &result.stats,
        stat_names: &STAT_NAMES,
        per_class: &result.per_class,
        per_size: &result.per_size,
        pr_curves: args.pr_curves.then_some(result.pr_curves.as_slice()),
        timings: Timings {
            load,
            evaluate: result.timings.evaluate,
            accumulate: result.timings.accumulate,
        },
    };
    // Written (not println!) so that a closed pipe is an error, not a panic.
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, &output)
        .and_then(|()| writeln!(stdout).map_err(serde_json::Error::io))
        .context("writing the result to stdout")?;
    // The process ends next: freeing hundreds of MB of masks one allocation at a time would
    // add a quarter of a second to a 5,000-image segm evaluation.
    std::mem::forget((gt, detections, masks, result));
    Ok(())
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} file {}", path.display()))
}

fn load_ground_truth(path: &Path) -> anyhow::Result<GroundTruth> {
    let bytes = read(path, "ground-truth")?;
    GroundTruth::from_json_bytes(&bytes)
        .map_err(|e| anyhow!("ground-truth file {}: {e}", path.display()))
}

/// Ground truth, detections and their masks. The results need the ground truth's image
/// sizes (polygons are rasterized at them), so they are read after it.
fn load_segm(args: &EvalArgs) -> anyhow::Result<(GroundTruth, Vec<Detection>, Option<MaskSet>)> {
    let (gt_bytes, dt_bytes) = rayon::join(
        || read(&args.gt, "ground-truth"),
        || read(&args.dt, "detections"),
    );
    let (gt_bytes, dt_bytes) = (gt_bytes?, dt_bytes?);
    let gt_error = |e| anyhow!("ground-truth file {}: {e}", args.gt.display());
    let dt_error = |e| anyhow!("detections file {}: {e}", args.dt.display());
    // Parsing the results (one thread) overlaps rasterizing the ground truth (the others).
    let (gt, raw_results) = rayon::join(
        || -> anyhow::Result<_> {
            let gt = GroundTruth::from_json_bytes(&gt_bytes).map_err(gt_error)?;
            let (gt_masks, sizes) = ground_truth_masks(&gt_bytes, &gt).map_err(gt_error)?;
            Ok((gt, gt_masks, sizes))
        },
        || RawSegmResults::parse(&dt_bytes).map_err(dt_error),
    );
    let (gt, gt_masks, sizes) = gt?;
    drop(gt_bytes);
    let results = raw_results?.convert(&sizes).map_err(dt_error)?;
    let crowd = gt.annotations.iter().map(|a| a.iscrowd).collect();
    let masks = MaskSet::new(gt_masks, crowd, results.masks, results.areas);
    Ok((gt, results.detections, Some(masks)))
}

fn load_detections(path: &Path) -> anyhow::Result<Vec<Detection>> {
    let bytes = read(path, "detections")?;
    parse_detections(&bytes).map_err(|e| anyhow!("detections file {}: {e}", path.display()))
}
