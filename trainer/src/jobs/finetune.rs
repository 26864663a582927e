//! The `finetune` job: supervised training of a detector from a chosen initialisation, with
//! periodic COCO evaluation and resumable checkpoints.
//!
//! Metrics (step = optimizer steps done): `loss/total`, `loss/<term>` and what the training loop
//! reports for every run (`train/lr`, `train/grad_norm`, `train/images_per_s`,
//! `train/data_wait_ms`, `time/*`, [`crate::train::engine`]); `eval/<COCO stat>` at each
//! evaluation. Artifacts: `load_report.json`, `checkpoint.safetensors` (weights + optimizer state,
//! replaced at every checkpoint), and at the end `model.safetensors`, `eval.json`,
//! `predictions.json`.
//!
//! A re-claimed job finds its own `checkpoint.safetensors`, restores weights and optimizer state
//! and continues from that step; batches are a function of (seed, step), so it sees the same data.
//! Metric points past the checkpoint are logged again and replace the earlier attempt's.

use super::evaluate::{build_report, ground_truth, segm_report};
use super::{JobContext, JobOutcome};
use crate::data::detection::{DetectionSplit, load_split};
use crate::data::loader::{Batch, Loader, LoaderConfig};
use crate::eval::coco::mask::rle::Rle;
use crate::eval::coco::params::IouType;
use crate::eval::coco::{Detection, GroundTruth};
use crate::models::backbone::freeze_stages;
use crate::models::build::{body_norm, build_detector};
use crate::models::detector::Detector;
use crate::models::transform::DetectionTransform;
use crate::train::checkpoint;
use crate::train::device;
use crate::train::engine::{
    StepLosses, TrainStep, checkpoint_step, resume, run_loop, stores_results,
};
use crate::train::evaluation::{images_to_predict, predict_split_masks, score};
use crate::train::health::zero_size_warning;
use crate::train::init::{BODY_PREFIX, initialise};
use crate::train::optim::{Optimizer, trainable_params};
use crate::train::results::{results_json, segm_results_json};
use crate::train::segm_eval::GroundTruthMasks;
use aligndet_common::api::MetricPoint;
use aligndet_common::artifacts;
use aligndet_common::report::{COCO_STAT_NAMES, EvaluationReport};
use aligndet_common::train_config::TrainConfig;
use anyhow::Context;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Detections kept for evaluation (mmdetection's and the paper's test threshold).
const EVAL_SCORE_THRESHOLD: f64 = 0.05;
/// Images per forward pass when evaluating (at least; the final evaluation uses the training
/// batch size when it is larger).
const EVAL_BATCH: usize = 4;

/// Metadata stored in every checkpoint and model file.
fn metadata(
    cfg: &TrainConfig,
    split: &DetectionSplit,
    step: u32,
) -> anyhow::Result<HashMap<String, String>> {
    let categories: Vec<_> = split
        .category_ids
        .iter()
        .zip(&split.category_names)
        .map(|(id, name)| serde_json::json!({"id": id, "name": name}))
        .collect();
    Ok(HashMap::from([
        ("format".into(), "aligndet-detector".into()),
        ("step".into(), step.to_string()),
        ("config".into(), serde_json::to_string(cfg)?),
        ("categories".into(), serde_json::to_string(&categories)?),
    ]))
}

/// What the training loop needs of a fine-tune: its batches and losses, its checkpoint and its
/// periodic evaluation.
struct FinetuneStep<'a> {
    cfg: &'a TrainConfig,
    model: &'a dyn Detector,
    vs: &'a tch::nn::VarStore,
    train: &'a DetectionSplit,
    val: &'a DetectionSplit,
    gt: &'a GroundTruth,
    /// The dataset's masks, read once, for the mask AP of a mask detector.
    gt_masks: Option<&'a GroundTruthMasks>,
    loader: Loader<Batch>,
    base_transform: &'a DetectionTransform,
    eval_transform: &'a DetectionTransform,
    device: tch::Device,
}

impl TrainStep for FinetuneStep<'_> {
    type Batch = Batch;

    fn next_batch(&mut self) -> anyhow::Result<Batch> {
        self.loader.next_batch()
    }

    fn losses(&mut self, batch: Batch, _step: u32) -> anyhow::Result<StepLosses> {
        let transform = transform_at(self.base_transform, self.cfg, batch.min_size);
        let images: Vec<_> = batch
            .images
            .iter()
            .map(|t| device::to_device(t, self.device))
            .collect();
        let targets: Vec<_> = batch
            .targets
            .iter()
            .map(|t| crate::models::detector::Targets {
                boxes: device::to_device(&t.boxes, self.device),
                labels: device::to_device(&t.labels, self.device),
                masks: t.masks.as_ref().map(|m| device::to_device(m, self.device)),
            })
            .collect();
        let (tb, tt) = transform.batch_with_targets(&images, &targets);
        Ok(StepLosses {
            terms: self.model.losses(&tb, &tt, true),
            metrics: Vec::new(),
        })
    }

    fn save_checkpoint(&self, path: &Path, opt: &Optimizer, done: u32) -> anyhow::Result<()> {
        checkpoint::save(
            path,
            self.vs,
            Some(opt),
            metadata(self.cfg, self.train, done)?,
        )
    }

    fn after_step(&mut self, ctx: &mut JobContext<'_>, done: u32) -> anyhow::Result<()> {
        if done.is_multiple_of(self.cfg.eval_every) {
            let (detections, masks, images) = predict_watched(
                ctx,
                Watched {
                    model: self.model,
                    transform: self.eval_transform,
                    split: self.val,
                    max_images: self.cfg.eval_max_images as usize,
                    batch_size: EVAL_BATCH,
                    device: self.device,
                },
                done,
            )?;
            let (_, result) = score(self.gt, &detections, &images)?;
            log_eval(ctx, done, IouType::Bbox, &result.stats);
            if let Some(gt_masks) = self.gt_masks {
                let segm = gt_masks.score_predictions(&images, &detections, &masks)?;
                log_eval(ctx, done, IouType::Segm, &segm.stats);
            }
        }
        Ok(())
    }
}

/// The transform at a given training scale.
fn transform_at(base: &DetectionTransform, cfg: &TrainConfig, min_size: u32) -> DetectionTransform {
    DetectionTransform {
        min_size: min_size as f64,
        max_size: cfg.augment.max_size as f64,
        ..base.clone()
    }
}

pub fn run(ctx: &mut JobContext<'_>, cfg: &TrainConfig) -> anyhow::Result<JobOutcome> {
    cfg.validate()?;
    let location = ctx.dataset()?;
    let train = Arc::new(load_split(&location, Some(&cfg.train_split))?);
    let val = load_split(&location, Some(&cfg.val_split))?;
    anyhow::ensure!(train.num_classes() > 0, "the dataset has no categories");
    if cfg.detector.has_masks() {
        // name a bad mask before anything trains or is stored
        crate::data::masks::check_split(&train)
            .with_context(|| format!("{:?} needs instance masks", cfg.detector))?;
    }
    let gt = ground_truth(&location, Some(&cfg.val_split))?;
    let gt_masks = if cfg.detector.has_masks() {
        Some(GroundTruthMasks::load(&location)?)
    } else {
        None
    };
    ctx.log(format!(
        "training {:?} on {:?} ({} images of split {}), evaluating on {} images of split {}",
        cfg.detector,
        cfg.backbone,
        train.samples.len(),
        cfg.train_split,
        val.samples.len(),
        cfg.val_split
    ));

    tch::manual_seed(cfg.optim.seed as i64);
    let mut vs = tch::nn::VarStore::new(ctx.device);
    let num_classes = train.num_classes() as i64 + 1;
    let mut model = build_detector(
        &vs.root(),
        cfg.detector,
        cfg.backbone,
        body_norm(&cfg.init),
        num_classes,
    )?;
    model.set_score_threshold(EVAL_SCORE_THRESHOLD);

    let init = initialise(&mut vs, &cfg.init, cfg.backbone, ctx.inputs, &ctx.work_dir)?;
    super::store_init_report(ctx, &init, artifacts::LOAD_REPORT)?;

    let frozen = freeze_body_stages(&vs, model.as_ref(), cfg.trainable_backbone_stages);
    let params = trainable_params(&vs, cfg.no_decay_norm_and_bias);
    let mut opt = Optimizer::for_config(&cfg.optim, params);
    ctx.log(format!(
        "{}; {frozen} frozen by trainable_backbone_stages = {}",
        opt.describe_params(),
        cfg.trainable_backbone_stages
    ));

    let start_step = resume(ctx, |path| {
        checkpoint::restore(path, &mut vs, &mut opt).map(|meta| checkpoint_step(&meta))
    })?;

    let base_transform = model.transform().clone();
    let eval_transform = transform_at(&base_transform, cfg, cfg.augment.min_sizes[0]);
    let loader = Loader::start(
        train.clone(),
        LoaderConfig {
            batch_size: cfg.optim.batch_size as usize,
            seed: cfg.optim.seed,
            hflip: cfg.augment.hflip,
            color_jitter: cfg.augment.color_jitter,
            min_sizes: cfg.augment.min_sizes.clone(),
            threads: cfg.optim.loader_threads as usize,
            prefetch: 2 * cfg.optim.loader_threads as usize,
            masks: cfg.detector.has_masks(),
        },
        start_step as u64,
    )?;
    let mut job = FinetuneStep {
        cfg,
        model: model.as_ref(),
        vs: &vs,
        train: &train,
        val: &val,
        gt: &gt,
        gt_masks: gt_masks.as_ref(),
        loader,
        base_transform: &base_transform,
        eval_transform: &eval_transform,
        device: ctx.device,
    };
    let outcome = run_loop(ctx, &cfg.optim, &mut opt, &mut job, start_step)?;
    if !stores_results(outcome) {
        return Ok(outcome);
    }
    drop(job);

    // final evaluation (the whole split unless the config sizes it), the model and its predictions
    let started = Instant::now();
    let (detections, masks, images) = predict_watched(
        ctx,
        Watched {
            model: model.as_ref(),
            transform: &eval_transform,
            split: &val,
            max_images: cfg.final_eval_max_images as usize,
            batch_size: EVAL_BATCH.max(cfg.optim.batch_size as usize),
            device: ctx.device,
        },
        cfg.optim.steps,
    )?;
    let final_images = images.len();
    if final_images < val.samples.len() {
        ctx.log(format!(
            "final evaluation on the first {final_images} of {} images of {} (final_eval_max_images)",
            val.samples.len(),
            cfg.val_split
        ));
    }
    let (gt_used, result) = score(&gt, &detections, &images)?;
    log_eval(ctx, cfg.optim.steps, IouType::Bbox, &result.stats);
    let segm = if let Some(gt_masks) = &gt_masks {
        let segm = gt_masks.score_predictions(&images, &detections, &masks)?;
        log_eval(ctx, cfg.optim.steps, IouType::Segm, &segm.stats);
        Some(segm_report(&segm))
    } else {
        None
    };
    let report = EvaluationReport {
        segm,
        ..build_report(
            &gt_used,
            detections.len(),
            &result,
            started.elapsed().as_secs_f64(),
        )
    };
    ctx.store_report(artifacts::EVAL_REPORT, &report)?;
    let predictions = if cfg.detector.has_masks() {
        segm_results_json(&detections, &masks)
    } else {
        results_json(&detections)
    };
    ctx.store_data(artifacts::PREDICTIONS, &predictions)?;
    let path = ctx.work_dir.join(artifacts::MODEL);
    checkpoint::save(&path, &vs, None, metadata(cfg, &train, cfg.optim.steps)?)?;
    ctx.sink.artifact(artifacts::MODEL, &path)?;
    ctx.log(format!(
        "final AP {:.4}  AP50 {:.4}  AP75 {:.4} on {} images",
        result.stats[0],
        result.stats[1],
        result.stats[2],
        images.len()
    ));
    Ok(JobOutcome::Succeeded)
}

fn freeze_body_stages(vs: &tch::nn::VarStore, model: &dyn Detector, trainable: u8) -> usize {
    match model.body() {
        Some(body) => freeze_stages(vs, BODY_PREFIX, body, trainable),
        None => 0,
    }
}

/// What [`predict_watched`] predicts with.
struct Watched<'a> {
    model: &'a dyn Detector,
    transform: &'a DetectionTransform,
    split: &'a DetectionSplit,
    /// The first this many images (0: all).
    max_images: usize,
    batch_size: usize,
    device: tch::Device,
}

/// Predict the split for the evaluation at training step `step`, reporting its progress
/// (`evaluation/progress`, the fraction of images done, about once a second), its speed
/// (`evaluation/images_per_s`) and a dead box-regression head; returns the detections, their
/// masks (RLE; none for box detectors) and the ids of the images predicted.
fn predict_watched(
    ctx: &mut JobContext<'_>,
    w: Watched<'_>,
    step: u32,
) -> anyhow::Result<(Vec<Detection>, Vec<Rle>, Vec<i64>)> {
    let started = Instant::now();
    let mut reported = Instant::now();
    let sink = &mut *ctx.sink;
    let (detections, masks) = predict_split_masks(
        w.model,
        w.transform,
        w.split,
        w.max_images,
        w.batch_size,
        w.device,
        &mut |done, all| {
            if done == all || reported.elapsed().as_secs_f64() >= 1.0 {
                sink.metric("evaluation/progress", step as i64, done as f64 / all as f64);
                reported = Instant::now();
            }
        },
    )?;
    let n = images_to_predict(w.split, w.max_images);
    let seconds = started.elapsed().as_secs_f64();
    ctx.sink.metric(
        "evaluation/images_per_s",
        step as i64,
        n as f64 / seconds.max(1e-9),
    );
    let sizes = detections.iter().map(|d| (d.bbox[2], d.bbox[3]));
    if let Some(warning) = zero_size_warning(sizes, step) {
        ctx.sink.warning(&warning.code, warning.message);
    }
    let images = w.split.samples[..n].iter().map(|s| s.image_id).collect();
    Ok((detections, masks, images))
}

/// Box AP (`eval/<name>`) or, for a mask detector, mask AP beside it (`eval/segm_<name>`):
/// the 12 statistics as metric points and a log line.
fn log_eval(ctx: &mut JobContext<'_>, step: u32, iou_type: IouType, stats: &[f64; 12]) {
    let (prefix, label) = match iou_type {
        IouType::Bbox => ("eval/", "AP"),
        IouType::Segm => ("eval/segm_", "mask AP"),
    };
    let now = crate::jobs::sink::now_seconds();
    ctx.sink.metrics(
        COCO_STAT_NAMES
            .iter()
            .zip(stats)
            .map(|(name, &value)| MetricPoint {
                key: format!("{prefix}{name}"),
                step: step as i64,
                value,
                wall_time: now,
            })
            .collect(),
    );
    ctx.log(format!(
        "step {step}: {label} {:.4}  AP50 {:.4}",
        stats[0], stats[1]
    ));
}
