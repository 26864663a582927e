//! Experiments: one form (or one JSON spec) makes the whole AlignDet chain in one transaction.
//!
//! - optional `pretrain_image` (label-free backbone), else the shipped ImageNet backbone;
//! - pseudo-boxes: a reused succeeded `proposals` run of the dataset, or a new one (`aligndet`);
//! - one `pretrain_box` run waiting for its inputs;
//! - per seed × labeled fraction: an `aligndet` fine-tune from the pre-trained detector (lr and
//!   weight decay scaled as in the method, 8.3) and a `baseline` fine-tune with the same seed,
//!   split, schedule, steps, batch and augmentation, from the image-domain backbone alone.
//!
//! Every run waits for the runs it reads (`db::runs::add_dependencies_in`), so the chain runs in
//! order on any number of workers and fails as a whole when a stage fails.

use crate::db;
use crate::db::datasets::DatasetRow;
use crate::db::experiments::{ExperimentRow, ExperimentRun, ExperimentSummary};
use crate::error::PageError;
use crate::routes::render;
use crate::security::CsrfToken;
use crate::state::{AppState, ArtifactRead};
use aligndet_common::dataset::DatasetSplits;
use aligndet_common::jobs::{
    ArtifactRef, ConfigError, JobConfig, ProposalStrategy, ProposalsConfig, RunKind, RunStatus,
};
use aligndet_common::pretrain_config::{
    PretrainBoxConfig, PretrainImageConfig, ViewsConfig, aligned_finetune_hyperparameters,
    artifacts,
};
use aligndet_common::report::{COCO_STAT_NAMES, EvaluationReport};
use aligndet_common::train_config::{
    AugmentConfig, BackboneKind, DetectorKind, InitConfig, LrSchedule, TrainConfig,
};
use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

/// Roles of the runs in an experiment.
pub const ROLE_PRETRAIN_IMAGE: &str = "pretrain_image";
pub const ROLE_PROPOSALS: &str = "proposals";
pub const ROLE_PRETRAIN_BOX: &str = "pretrain_box";
pub const ROLE_ALIGNDET: &str = "aligndet";
pub const ROLE_BASELINE: &str = "baseline";
const ROLE_ORDER: [&str; 5] = [
    ROLE_PRETRAIN_IMAGE,
    ROLE_PROPOSALS,
    ROLE_PRETRAIN_BOX,
    ROLE_ALIGNDET,
    ROLE_BASELINE,
];

/// Most fine-tunes one experiment may make (seeds × fractions × 2 arms).
const MAX_FINETUNES: usize = 200;

/// What an experiment is made from: the form's fields and `POST /api/v1/experiments`'s body.
/// Blank (absent) numbers take the defaults of the job configs: `TrainConfig::default()` for the
/// fine-tunes, `PretrainBoxConfig::for_detector` and `PretrainImageConfig::default()` for the
/// pre-training. The stored spec has every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    pub name: String,
    pub dataset_id: i64,
    #[serde(default = "default_detector")]
    pub detector: DetectorKind,
    #[serde(default = "default_backbone")]
    pub backbone: BackboneKind,
    /// Pre-train the backbone without labels (`pretrain_image`) instead of starting from the
    /// shipped ImageNet weights: the whole detector is then pre-trained label-free.
    #[serde(default)]
    pub label_free: bool,
    #[serde(default)]
    pub image_steps: Option<u32>,
    #[serde(default)]
    pub image_batch_size: Option<u32>,
    #[serde(default)]
    pub image_lr: Option<f64>,
    /// Reuse the pseudo-boxes of this succeeded `proposals` run of the dataset; absent: a new
    /// `proposals` run with the `aligndet` strategy.
    #[serde(default)]
    pub proposals_run_id: Option<i64>,
    /// A new proposals run covers only the first N images (absent: all).
    #[serde(default)]
    pub proposals_max_images: Option<u32>,
    /// Reuse the pre-trained detector of this `pretrain_box` run (succeeded, running or queued)
    /// instead of making pseudo-boxes and pre-training again: only the fine-tunes are created,
    /// the baseline from that run's own image-domain backbone. This is how fine-tuning choices
    /// (learning-rate rule, steps, fractions) are compared on one pre-training.
    #[serde(default)]
    pub pretrained_run_id: Option<i64>,
    /// Shorter side (px) the fine-tunes train and evaluate at; the pre-training views draw
    /// around it in the same proportions as the defaults (480/512/544 around 512). Absent: 512.
    #[serde(default)]
    pub image_size: Option<u32>,
    #[serde(default)]
    pub pretrain_steps: Option<u32>,
    #[serde(default)]
    pub pretrain_batch_size: Option<u32>,
    #[serde(default)]
    pub pretrain_lr: Option<f64>,
    /// Locations, anchors or RoIs the pretext task samples (absent: the detector's default,
    /// 2,048; RetinaNet's similarity matrices grow with its square, so CPUs want 256–512).
    #[serde(default)]
    pub pretrain_samples: Option<u32>,
    #[serde(default)]
    pub finetune_steps: Option<u32>,
    #[serde(default)]
    pub finetune_batch_size: Option<u32>,
    /// Base learning rate and weight decay: the baseline's; the AlignDet arm's are these times
    /// the multipliers.
    #[serde(default)]
    pub finetune_lr: Option<f64>,
    #[serde(default)]
    pub finetune_weight_decay: Option<f64>,
    /// Default: `aligned_finetune_hyperparameters` (lr ×1.5, weight decay ÷2).
    #[serde(default)]
    pub lr_multiplier: Option<f64>,
    #[serde(default)]
    pub wd_multiplier: Option<f64>,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Labeled fractions in percent; the train splits are `{fraction}pct_seed{seed}`.
    #[serde(default = "default_fractions")]
    pub fractions: Vec<u32>,
}

fn default_detector() -> DetectorKind {
    DetectorKind::Fcos
}
fn default_backbone() -> BackboneKind {
    BackboneKind::EfficientnetLite0
}
fn default_seeds() -> Vec<u64> {
    vec![1, 2, 3]
}
fn default_fractions() -> Vec<u32> {
    vec![5, 10]
}

/// The shorter side the default fine-tuning and view sizes are given at.
const DEFAULT_IMAGE_SIZE: u32 = 512;

/// Default shorter sides and longer-side cap (given for a 512 px shorter side) at another
/// shorter side, rounded to whole pixels: 480/512/544 and a 853 cap become 180/192/204 and 320
/// at 192 px. Fine-tuning's augmentation and pre-training's views both scale this way.
fn scale_sizes(min_sizes: &[u32], max_size: u32, image_size: u32) -> (Vec<u32>, u32) {
    let scale = |default: u32| {
        ((default as u64 * image_size as u64 + DEFAULT_IMAGE_SIZE as u64 / 2)
            / DEFAULT_IMAGE_SIZE as u64)
            .max(1) as u32
    };
    (
        min_sizes.iter().map(|&v| scale(v)).collect(),
        scale(max_size),
    )
}

/// The default (lr, weight decay) multipliers of the AlignDet arm.
fn default_multipliers() -> (f64, f64) {
    aligned_finetune_hyperparameters(1.0, 1.0)
}

/// A run the experiment makes: its role, kind, name, config and what it waits for.
#[derive(Debug, Clone)]
struct PlannedRun {
    role: &'static str,
    name: String,
    config: JobConfig,
    seed: Option<u64>,
    fraction: Option<u32>,
}

/// A created run, as the API answers it.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedRun {
    pub id: i64,
    pub role: String,
    pub seed: Option<u64>,
    pub fraction: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CreatedExperiment {
    pub id: i64,
    pub runs: Vec<CreatedRun>,
}

/// Steps, warm-up and milestones of a default schedule, scaled to a different number of steps
/// (a 1,000-step recipe asked for 100 steps keeps its shape: warm-up 10, milestones 70 and 90).
fn scaled_schedule(
    default_steps: u32,
    default_warmup: u32,
    schedule: &LrSchedule,
    steps: u32,
) -> (u32, LrSchedule) {
    if steps == default_steps || default_steps == 0 {
        return (default_warmup, schedule.clone());
    }
    let scale = |v: u32| ((v as u64 * steps as u64) / default_steps as u64) as u32;
    let schedule = match schedule {
        LrSchedule::Step { milestones, gamma } => {
            let mut m: Vec<u32> = milestones
                .iter()
                .map(|&v| scale(v))
                .filter(|&v| v > 0)
                .collect();
            m.dedup();
            LrSchedule::Step {
                milestones: m,
                gamma: *gamma,
            }
        }
        other => other.clone(),
    };
    (scale(default_warmup).min(steps), schedule)
}

/// A config error as the spec field a person can change (the generated runs' own field names
/// would mean nothing on the form).
fn spec_error(prefix: &str, e: &ConfigError) -> String {
    let field = match (prefix, e.field.as_str()) {
        (p, f @ ("steps" | "batch_size" | "lr" | "weight_decay")) => format!("{p}_{f}"),
        ("proposals", "max_images") => "proposals_max_images".to_string(),
        (p, f) => format!("{p} config: {f}"),
    };
    format!("{field}: {}", e.problem)
}

fn check_positive(field: &str, v: Option<f64>) -> Result<(), String> {
    match v {
        Some(x) if !(x.is_finite() && x > 0.0) => {
            Err(format!("{field}: must be a positive number"))
        }
        _ => Ok(()),
    }
}

impl ExperimentSpec {
    /// Fill every default in, so the stored spec says exactly what was run.
    fn resolved(&self) -> ExperimentSpec {
        let ft = TrainConfig::default();
        let pb = PretrainBoxConfig::for_detector(self.detector);
        let pi = PretrainImageConfig::default();
        let (lr_m, wd_m) = default_multipliers();
        let mut s = self.clone();
        s.name = s.name.trim().to_string();
        let pretrains = s.pretrained_run_id.is_none();
        if s.label_free && pretrains {
            s.image_steps = s.image_steps.or(Some(pi.steps));
            s.image_batch_size = s.image_batch_size.or(Some(pi.batch_size));
            s.image_lr = s.image_lr.or(Some(pi.lr));
        }
        if pretrains {
            s.pretrain_steps = s.pretrain_steps.or(Some(pb.steps));
            s.pretrain_batch_size = s.pretrain_batch_size.or(Some(pb.batch_size));
            s.pretrain_lr = s.pretrain_lr.or(Some(pb.lr));
            s.pretrain_samples = s.pretrain_samples.or(Some(pb.samples));
        }
        s.image_size = s.image_size.or(Some(DEFAULT_IMAGE_SIZE));
        s.finetune_steps = s.finetune_steps.or(Some(ft.steps));
        s.finetune_batch_size = s.finetune_batch_size.or(Some(ft.batch_size));
        s.finetune_lr = s.finetune_lr.or(Some(ft.lr));
        s.finetune_weight_decay = s.finetune_weight_decay.or(Some(ft.weight_decay));
        s.lr_multiplier = s.lr_multiplier.or(Some(lr_m));
        s.wd_multiplier = s.wd_multiplier.or(Some(wd_m));
        s
    }

    /// The runs of a resolved spec, in creation order (pre-training first); the configs are
    /// validated. Run ids of the chain are not known yet: `1` stands for "the run of that role"
    /// and is replaced at creation.
    fn plan(&self) -> Result<Vec<PlannedRun>, String> {
        let name = &self.name;
        if name.is_empty() || name.chars().count() > 150 || name.chars().any(char::is_control) {
            return Err("name: must be 1 to 150 printable characters".into());
        }
        if self.seeds.is_empty() {
            return Err("seeds: give at least one seed".into());
        }
        if self.fractions.is_empty() {
            return Err("fractions: give at least one labeled fraction".into());
        }
        if let Some(f) = self.fractions.iter().find(|f| !(1..=100).contains(*f)) {
            return Err(format!("fractions: {f} is not a percentage in 1..=100"));
        }
        for (field, dup) in [
            ("seeds", has_duplicate(&self.seeds)),
            ("fractions", has_duplicate(&self.fractions)),
        ] {
            if dup {
                return Err(format!("{field}: a value is repeated"));
            }
        }
        if self.seeds.len() * self.fractions.len() * 2 > MAX_FINETUNES {
            return Err(format!(
                "seeds: {} seeds × {} fractions × 2 arms is more than {MAX_FINETUNES} fine-tunes",
                self.seeds.len(),
                self.fractions.len()
            ));
        }
        if let Some(id) = self.pretrained_run_id {
            if id <= 0 {
                return Err("pretrained_run_id: not a run id".into());
            }
            // The reused run fixed these; accepting them silently would misreport what ran.
            let unused = [
                ("label_free", self.label_free),
                ("image_steps", self.image_steps.is_some()),
                ("image_batch_size", self.image_batch_size.is_some()),
                ("image_lr", self.image_lr.is_some()),
                ("proposals_run_id", self.proposals_run_id.is_some()),
                ("proposals_max_images", self.proposals_max_images.is_some()),
                ("pretrain_steps", self.pretrain_steps.is_some()),
                ("pretrain_batch_size", self.pretrain_batch_size.is_some()),
                ("pretrain_lr", self.pretrain_lr.is_some()),
                ("pretrain_samples", self.pretrain_samples.is_some()),
            ];
            if let Some((field, _)) = unused.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{field}: the pre-training run {id} is reused, so its own setting applies; leave this blank"
                ));
            }
        } else if !self.label_free && self.backbone != BackboneKind::EfficientnetLite0 {
            return Err("backbone: ImageNet weights are shipped only for efficientnet_lite0; choose it, or tick label-free image pre-training".into());
        }
        for (field, v) in [
            ("image_lr", self.image_lr),
            ("pretrain_lr", self.pretrain_lr),
            ("finetune_lr", self.finetune_lr),
            ("lr_multiplier", self.lr_multiplier),
            ("wd_multiplier", self.wd_multiplier),
        ] {
            check_positive(field, v)?;
        }
        if let Some(wd) = self.finetune_weight_decay
            && !(wd.is_finite() && wd >= 0.0)
        {
            return Err("finetune_weight_decay: must be a number ≥ 0".into());
        }
        if self.proposals_run_id.is_some_and(|id| id <= 0) {
            return Err("proposals_run_id: not a run id".into());
        }

        let placeholder = |name: &str| ArtifactRef {
            run_id: 1,
            name: name.to_string(),
        };
        let mut runs = Vec::new();
        let reuse = self.pretrained_run_id.is_some();
        let image_init = if self.label_free && !reuse {
            let d = PretrainImageConfig::default();
            let steps = self.image_steps.unwrap_or(d.steps);
            let (warmup_steps, schedule) =
                scaled_schedule(d.steps, d.warmup_steps, &d.schedule, steps);
            let batch_size = self.image_batch_size.unwrap_or(d.batch_size);
            let c = PretrainImageConfig {
                dataset_id: self.dataset_id,
                backbone: self.backbone,
                init: InitConfig::Scratch,
                steps,
                batch_size,
                lr: self.image_lr.unwrap_or(d.lr),
                warmup_steps,
                schedule,
                // The queue must hold whole batches; keep the default size when it fits.
                queue_size: d.queue_size - d.queue_size % batch_size.max(1),
                checkpoint_every: d.checkpoint_every.min(steps.max(1)),
                ..d
            };
            runs.push(PlannedRun {
                role: ROLE_PRETRAIN_IMAGE,
                name: format!("{name} · image pre-training"),
                config: JobConfig::PretrainImage(c),
                seed: None,
                fraction: None,
            });
            InitConfig::Checkpoint {
                artifact: placeholder(artifacts::PRETRAINED_BACKBONE),
            }
        } else {
            InitConfig::ImagenetBackbone
        };
        if self.proposals_run_id.is_none() && !reuse {
            let c = ProposalsConfig {
                dataset_id: self.dataset_id,
                strategy: ProposalStrategy::Aligndet,
                seed: 0,
                max_images: self.proposals_max_images,
                filter: Default::default(),
                chunk_size: 16,
            };
            runs.push(PlannedRun {
                role: ROLE_PROPOSALS,
                name: format!("{name} · pseudo-boxes"),
                config: JobConfig::Proposals(c),
                seed: None,
                fraction: None,
            });
        }
        let image_size = self.image_size.unwrap_or(DEFAULT_IMAGE_SIZE);
        if !(32..=2048).contains(&image_size) {
            return Err(format!("image_size: {image_size} px is outside 32..=2048"));
        }
        if !reuse {
            let d = PretrainBoxConfig::for_detector(self.detector);
            let steps = self.pretrain_steps.unwrap_or(d.steps);
            let (warmup_steps, schedule) =
                scaled_schedule(d.steps, d.warmup_steps, &d.schedule, steps);
            let pb = PretrainBoxConfig {
                dataset_id: self.dataset_id,
                proposals_run_id: self.proposals_run_id.unwrap_or(1),
                backbone: self.backbone,
                backbone_init: image_init.clone(),
                steps,
                batch_size: self.pretrain_batch_size.unwrap_or(d.batch_size),
                lr: self.pretrain_lr.unwrap_or(d.lr),
                samples: self.pretrain_samples.unwrap_or(d.samples),
                views: {
                    let (min_sizes, max_size) =
                        scale_sizes(&d.views.min_sizes, d.views.max_size, image_size);
                    ViewsConfig {
                        min_sizes,
                        max_size,
                        ..d.views.clone()
                    }
                },
                warmup_steps,
                schedule,
                checkpoint_every: d.checkpoint_every.min(steps.max(1)),
                ..d
            };
            runs.push(PlannedRun {
                role: ROLE_PRETRAIN_BOX,
                name: format!("{name} · box-domain pre-training"),
                config: JobConfig::PretrainBox(pb),
                seed: None,
                fraction: None,
            });
        }

        let d = TrainConfig::default();
        let steps = self.finetune_steps.unwrap_or(d.steps);
        let (warmup_steps, schedule) = scaled_schedule(d.steps, d.warmup_steps, &d.schedule, steps);
        let base_lr = self.finetune_lr.unwrap_or(d.lr);
        let base_wd = self.finetune_weight_decay.unwrap_or(d.weight_decay);
        let (lr_m, wd_m) = default_multipliers();
        let (aligned_lr, aligned_wd) = match (self.lr_multiplier, self.wd_multiplier) {
            (None, None) => aligned_finetune_hyperparameters(base_lr, base_wd),
            (l, w) => (base_lr * l.unwrap_or(lr_m), base_wd * w.unwrap_or(wd_m)),
        };
        let base = TrainConfig {
            dataset_id: self.dataset_id,
            val_split: "val".into(),
            detector: self.detector,
            backbone: self.backbone,
            steps,
            batch_size: self.finetune_batch_size.unwrap_or(d.batch_size),
            warmup_steps,
            schedule,
            eval_every: d.eval_every.min(steps.max(1)),
            checkpoint_every: d.checkpoint_every.min(steps.max(1)),
            augment: {
                let (min_sizes, max_size) =
                    scale_sizes(&d.augment.min_sizes, d.augment.max_size, image_size);
                AugmentConfig {
                    min_sizes,
                    max_size,
                    ..d.augment.clone()
                }
            },
            ..d
        };
        for &fraction in &self.fractions {
            for &seed in &self.seeds {
                let split = DatasetSplits::labeled_key(fraction, seed);
                let arm = TrainConfig {
                    train_split: split.clone(),
                    seed,
                    ..base.clone()
                };
                runs.push(PlannedRun {
                    role: ROLE_ALIGNDET,
                    name: format!("{name} · AlignDet {fraction}% seed {seed}"),
                    config: JobConfig::Finetune(TrainConfig {
                        init: InitConfig::Checkpoint {
                            artifact: placeholder(artifacts::PRETRAINED_DETECTOR),
                        },
                        lr: aligned_lr,
                        weight_decay: aligned_wd,
                        ..arm.clone()
                    }),
                    seed: Some(seed),
                    fraction: Some(fraction),
                });
                runs.push(PlannedRun {
                    role: ROLE_BASELINE,
                    name: format!("{name} · baseline {fraction}% seed {seed}"),
                    config: JobConfig::Finetune(TrainConfig {
                        init: image_init.clone(),
                        lr: base_lr,
                        weight_decay: base_wd,
                        ..arm
                    }),
                    seed: Some(seed),
                    fraction: Some(fraction),
                });
            }
        }
        for r in &runs {
            let prefix = match r.role {
                ROLE_PRETRAIN_IMAGE => "image",
                ROLE_PROPOSALS => "proposals",
                ROLE_PRETRAIN_BOX => "pretrain",
                _ => "finetune",
            };
            r.config.validate().map_err(|e| spec_error(prefix, &e))?;
        }
        Ok(runs)
    }
}

fn has_duplicate<T: PartialEq>(v: &[T]) -> bool {
    v.iter().enumerate().any(|(i, a)| v[..i].contains(a))
}

/// Validate a spec against the database and create the experiment and all its runs in one
/// transaction. The inner error (`field: problem`) is the person's; the outer one the server's.
pub async fn create(
    s: &AppState,
    spec: &ExperimentSpec,
) -> sqlx::Result<Result<CreatedExperiment, String>> {
    let spec = spec.resolved();
    let planned = match spec.plan() {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let Some(dataset) = db::datasets::get(&s.pool, spec.dataset_id).await? else {
        return Ok(Err(format!(
            "dataset_id: dataset {} not found",
            spec.dataset_id
        )));
    };
    if let Err(e) = check_splits(&dataset, &planned) {
        return Ok(Err(e));
    }
    if let Some(pid) = spec.proposals_run_id {
        let run = db::runs::get(&s.pool, pid).await?;
        let problem = match &run {
            None => Some(format!("run {pid} not found")),
            Some(r) if r.kind != RunKind::Proposals.as_str() => {
                Some(format!("run {pid} is a {} run, not proposals", r.kind))
            }
            Some(r) if r.dataset_id != Some(dataset.id) => {
                Some(format!("run {pid} made pseudo-boxes for another dataset"))
            }
            // A queued or running proposals run is fine: the box-domain pre-training waits for
            // it, so experiments for several detectors can share one set of pseudo-boxes.
            Some(r)
                if r.status == RunStatus::Queued.as_str()
                    || r.status == RunStatus::Running.as_str() =>
            {
                None
            }
            Some(r) if r.status != RunStatus::Succeeded.as_str() => Some(format!(
                "run {pid} is {}: choose a succeeded, running or queued proposals run",
                r.status
            )),
            Some(_) => {
                let has_boxes = db::runs::artifacts(&s.pool, pid)
                    .await?
                    .iter()
                    .any(|a| a.name == artifacts::PSEUDO_BOXES);
                (!has_boxes).then(|| {
                    format!(
                        "run {pid} has no {} (it predates that artifact): choose new pseudo-boxes",
                        artifacts::PSEUDO_BOXES
                    )
                })
            }
        };
        if let Some(p) = problem {
            return Ok(Err(format!("proposals_run_id: {p}")));
        }
    }

    // A reused pre-training decides the baseline's backbone: the one it was pre-trained on.
    let reused_backbone = match spec.pretrained_run_id {
        None => None,
        Some(pid) => match reused_pretraining(s, &spec, dataset.id, pid).await? {
            Ok(init) => Some(init),
            Err(p) => return Ok(Err(format!("pretrained_run_id: {p}"))),
        },
    };

    let spec_json = serde_json::to_value(&spec).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let mut tx = s.pool.begin().await?;
    let experiment_id = db::experiments::create_in(&mut tx, &spec.name, &spec_json).await?;
    let mut image_run: Option<i64> = None;
    let mut proposals_run: Option<i64> = spec.proposals_run_id;
    let mut box_run: Option<i64> = spec.pretrained_run_id;
    let mut created = Vec::new();
    for p in planned {
        // Fill in the chain's run ids and say what each run waits for.
        let mut deps: Vec<(i64, String)> = Vec::new();
        let config = match p.config {
            JobConfig::PretrainBox(mut c) => {
                let proposals = proposals_run.expect("proposals run planned before");
                c.proposals_run_id = proposals;
                deps.push((proposals, "pseudo-boxes".into()));
                if let (InitConfig::Checkpoint { artifact }, Some(img)) =
                    (&mut c.backbone_init, image_run)
                {
                    artifact.run_id = img;
                    deps.push((img, "backbone".into()));
                }
                JobConfig::PretrainBox(c)
            }
            JobConfig::Finetune(mut c) => {
                if let (ROLE_BASELINE, Some(init)) = (p.role, &reused_backbone) {
                    c.init = init.clone();
                    if let InitConfig::Checkpoint { artifact } = init {
                        deps.push((artifact.run_id, "init".into()));
                    }
                } else if let InitConfig::Checkpoint { artifact } = &mut c.init {
                    let from = if p.role == ROLE_ALIGNDET {
                        box_run
                    } else {
                        image_run
                    };
                    let from = from.expect("pre-training planned before");
                    artifact.run_id = from;
                    deps.push((from, "init".into()));
                }
                JobConfig::Finetune(c)
            }
            other => other,
        };
        let resolved =
            serde_json::to_value(&config).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let id = db::runs::create_in(
            &mut tx,
            &db::runs::NewRun {
                kind: config.kind().as_str(),
                name: &p.name,
                config: resolved,
                dataset_id: config.dataset_id(),
                max_attempts: s.cfg.max_attempts,
                parents: Vec::new(),
            },
        )
        .await?;
        db::experiments::attach_run_in(&mut tx, experiment_id, id, p.role).await?;
        if let Err(e) = db::runs::add_dependencies_in(&mut tx, id, &deps).await? {
            // Only a reused run can have ended since it was checked.
            let field = if spec.pretrained_run_id.is_some() {
                "pretrained_run_id"
            } else {
                "proposals_run_id"
            };
            return Ok(Err(format!("{field}: {e}")));
        }
        match p.role {
            ROLE_PRETRAIN_IMAGE => image_run = Some(id),
            ROLE_PROPOSALS => proposals_run = Some(id),
            ROLE_PRETRAIN_BOX => box_run = Some(id),
            _ => {}
        }
        created.push(CreatedRun {
            id,
            role: p.role.to_string(),
            seed: p.seed,
            fraction: p.fraction,
        });
    }
    tx.commit().await?;
    tracing::info!(
        "experiment #{experiment_id} {:?}: {} runs queued",
        spec.name,
        created.len()
    );
    Ok(Ok(CreatedExperiment {
        id: experiment_id,
        runs: created,
    }))
}

/// Check that run `pid` is a box-domain pre-training of this dataset, detector and backbone that
/// has not failed; returns the backbone it was pre-trained on (the baseline's init).
async fn reused_pretraining(
    s: &AppState,
    spec: &ExperimentSpec,
    dataset_id: i64,
    pid: i64,
) -> sqlx::Result<Result<InitConfig, String>> {
    let Some(run) = db::runs::get(&s.pool, pid).await? else {
        return Ok(Err(format!("run {pid} not found")));
    };
    if run.kind != RunKind::PretrainBox.as_str() {
        return Ok(Err(format!(
            "run {pid} is a {} run, not a box-domain pre-training (pretrain_box)",
            run.kind
        )));
    }
    if run.dataset_id != Some(dataset_id) {
        return Ok(Err(format!("run {pid} pre-trained on another dataset")));
    }
    if run.status == RunStatus::Failed.as_str() || run.status == RunStatus::Cancelled.as_str() {
        return Ok(Err(format!(
            "run {pid} is {}: choose a succeeded, running or queued pre-training",
            run.status
        )));
    }
    let config = match serde_json::from_value::<JobConfig>(run.config.clone()) {
        Ok(JobConfig::PretrainBox(c)) => c,
        Ok(_) => return Ok(Err(format!("run {pid} is not a box-domain pre-training"))),
        Err(e) => return Ok(Err(format!("run {pid}'s config cannot be read: {e}"))),
    };
    if config.detector != spec.detector {
        return Ok(Err(format!(
            "run {pid} pre-trained {}, not {}",
            wire_name(&config.detector),
            wire_name(&spec.detector)
        )));
    }
    if config.backbone != spec.backbone {
        return Ok(Err(format!(
            "run {pid} pre-trained on {}, not {}",
            wire_name(&config.backbone),
            wire_name(&spec.backbone)
        )));
    }
    Ok(Ok(config.backbone_init))
}

/// Every split the fine-tunes read must exist in the dataset (its `splits.json`).
fn check_splits(dataset: &DatasetRow, planned: &[PlannedRun]) -> Result<(), String> {
    let names = dataset.split_names();
    if names.is_empty() {
        return Err(format!(
            "dataset_id: dataset {:?} has no splits (import it again, optionally with a splits.json beside its annotations)",
            dataset.name
        ));
    }
    for p in planned {
        let (field, split) = match &p.config {
            JobConfig::Finetune(c) => {
                if !names.contains(&c.val_split) {
                    return Err(format!(
                        "dataset_id: dataset {:?} has no {:?} split",
                        dataset.name, c.val_split
                    ));
                }
                ("fractions", &c.train_split)
            }
            JobConfig::PretrainBox(c) => ("dataset_id", &c.split),
            JobConfig::PretrainImage(c) => ("dataset_id", &c.split),
            _ => continue,
        };
        if !names.contains(split) {
            return Err(format!(
                "{field}: dataset {:?} has no split {split:?} (it has {})",
                dataset.name,
                names.join(", ")
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The form.

/// The form's fields as text (names as in [`ExperimentSpec`]).
pub struct ExperimentForm {
    pub name: String,
    pub dataset_id: String,
    pub detector: String,
    pub backbone: String,
    pub label_free: bool,
    pub image_steps: String,
    pub image_batch_size: String,
    pub image_lr: String,
    /// `new`, or the id of a proposals run to reuse.
    pub proposals: String,
    pub proposals_max_images: String,
    /// `new`, or the id of a `pretrain_box` run to reuse.
    pub pretrained: String,
    pub pretrain_steps: String,
    pub pretrain_batch_size: String,
    pub pretrain_lr: String,
    pub pretrain_samples: String,
    pub image_size: String,
    pub finetune_steps: String,
    pub finetune_batch_size: String,
    pub finetune_lr: String,
    pub finetune_weight_decay: String,
    pub lr_multiplier: String,
    pub wd_multiplier: String,
    pub seeds: String,
    pub fractions: String,
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(", ")
}

impl ExperimentForm {
    fn defaults() -> ExperimentForm {
        let ft = TrainConfig::default();
        let (lr_m, wd_m) = default_multipliers();
        ExperimentForm {
            name: "aligndet experiment".into(),
            dataset_id: String::new(),
            detector: wire_name(&default_detector()),
            backbone: wire_name(&default_backbone()),
            label_free: false,
            image_steps: String::new(),
            image_batch_size: String::new(),
            image_lr: String::new(),
            proposals: "new".into(),
            proposals_max_images: String::new(),
            pretrained: "new".into(),
            pretrain_steps: String::new(),
            pretrain_batch_size: String::new(),
            pretrain_lr: String::new(),
            pretrain_samples: String::new(),
            image_size: DEFAULT_IMAGE_SIZE.to_string(),
            finetune_steps: ft.steps.to_string(),
            finetune_batch_size: ft.batch_size.to_string(),
            finetune_lr: ft.lr.to_string(),
            finetune_weight_decay: ft.weight_decay.to_string(),
            lr_multiplier: lr_m.to_string(),
            wd_multiplier: wd_m.to_string(),
            seeds: join(&default_seeds()),
            fractions: join(&default_fractions()),
        }
    }

    fn posted(fields: &[(String, String)]) -> ExperimentForm {
        let text = |k: &str| {
            fields
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        ExperimentForm {
            name: text("name"),
            dataset_id: text("dataset_id"),
            detector: text("detector"),
            backbone: text("backbone"),
            label_free: fields.iter().any(|(n, _)| n == "label_free"),
            image_steps: text("image_steps"),
            image_batch_size: text("image_batch_size"),
            image_lr: text("image_lr"),
            proposals: text("proposals"),
            proposals_max_images: text("proposals_max_images"),
            pretrained: text("pretrained"),
            pretrain_steps: text("pretrain_steps"),
            pretrain_batch_size: text("pretrain_batch_size"),
            pretrain_lr: text("pretrain_lr"),
            pretrain_samples: text("pretrain_samples"),
            image_size: text("image_size"),
            finetune_steps: text("finetune_steps"),
            finetune_batch_size: text("finetune_batch_size"),
            finetune_lr: text("finetune_lr"),
            finetune_weight_decay: text("finetune_weight_decay"),
            lr_multiplier: text("lr_multiplier"),
            wd_multiplier: text("wd_multiplier"),
            seeds: text("seeds"),
            fractions: text("fractions"),
        }
    }

    /// Text → spec, naming the field that does not parse (ranges are `plan`'s job).
    fn to_spec(&self) -> Result<ExperimentSpec, String> {
        let dataset_id: i64 = self
            .dataset_id
            .parse()
            .map_err(|_| "dataset_id: choose a dataset".to_string())?;
        let proposals_run_id = match self.proposals.as_str() {
            "" | "new" => None,
            v => Some(v.parse::<i64>().map_err(|_| {
                format!("proposals_run_id: {v:?} is not \"new\" or a proposals run id")
            })?),
        };
        let pretrained_run_id = match self.pretrained.as_str() {
            "" | "new" => None,
            v => Some(v.parse::<i64>().map_err(|_| {
                format!("pretrained_run_id: {v:?} is not \"new\" or a pre-training run id")
            })?),
        };
        Ok(ExperimentSpec {
            name: self.name.clone(),
            dataset_id,
            detector: enum_value("detector", &self.detector)?,
            backbone: enum_value("backbone", &self.backbone)?,
            label_free: self.label_free,
            image_steps: whole("image_steps", &self.image_steps)?,
            image_batch_size: whole("image_batch_size", &self.image_batch_size)?,
            image_lr: real("image_lr", &self.image_lr)?,
            proposals_run_id,
            proposals_max_images: whole("proposals_max_images", &self.proposals_max_images)?,
            pretrained_run_id,
            pretrain_steps: whole("pretrain_steps", &self.pretrain_steps)?,
            pretrain_batch_size: whole("pretrain_batch_size", &self.pretrain_batch_size)?,
            pretrain_lr: real("pretrain_lr", &self.pretrain_lr)?,
            pretrain_samples: whole("pretrain_samples", &self.pretrain_samples)?,
            image_size: whole("image_size", &self.image_size)?,
            finetune_steps: whole("finetune_steps", &self.finetune_steps)?,
            finetune_batch_size: whole("finetune_batch_size", &self.finetune_batch_size)?,
            finetune_lr: real("finetune_lr", &self.finetune_lr)?,
            finetune_weight_decay: real("finetune_weight_decay", &self.finetune_weight_decay)?,
            lr_multiplier: real("lr_multiplier", &self.lr_multiplier)?,
            wd_multiplier: real("wd_multiplier", &self.wd_multiplier)?,
            seeds: list("seeds", &self.seeds)?,
            fractions: list("fractions", &self.fractions)?,
        })
    }
}

/// How a config enum is spelled in JSON (and so in the form's option values).
fn wire_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn enum_value<T: serde::de::DeserializeOwned>(field: &str, v: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(v.to_string()))
        .map_err(|e| format!("{field}: {e}"))
}

fn whole<T: std::str::FromStr>(field: &str, v: &str) -> Result<Option<T>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("{field}: {v:?} is not a whole number in range"))
}

fn real(field: &str, v: &str) -> Result<Option<f64>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(Some(x)),
        _ => Err(format!("{field}: {v:?} is not a finite number")),
    }
}

fn list<T: std::str::FromStr>(field: &str, v: &str) -> Result<Vec<T>, String> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse()
                .map_err(|_| format!("{field}: {p:?} is not a whole number"))
        })
        .collect()
}

#[derive(Template)]
#[template(path = "new_experiment.html")]
struct NewExperimentPage {
    csrf: String,
    error: Option<String>,
    form: ExperimentForm,
    datasets: Vec<DatasetRow>,
    /// Succeeded proposals runs: (id, dataset id, label).
    proposals_runs: Vec<(i64, String)>,
    /// Box-domain pre-trainings that have not failed: (id, label).
    pretrained_runs: Vec<(i64, String)>,
    detectors: Vec<(String, &'static str)>,
    backbones: Vec<(String, &'static str)>,
}

impl NewExperimentPage {
    async fn new(
        s: &AppState,
        csrf: String,
        error: Option<String>,
        form: ExperimentForm,
    ) -> Result<NewExperimentPage, PageError> {
        let datasets = db::datasets::list(&s.pool).await?;
        let runs = db::runs::list(
            &s.pool,
            &db::runs::RunFilter {
                kind: Some(RunKind::Proposals.as_str().into()),
                status: Some(RunStatus::Succeeded.as_str().into()),
                ..Default::default()
            },
        )
        .await?;
        let label = |r: &db::runs::RunRow| {
            let dataset = datasets
                .iter()
                .find(|d| Some(d.id) == r.dataset_id)
                .map(|d| d.name.clone())
                .unwrap_or_else(|| "?".into());
            (r.id, format!("#{} {} (dataset {dataset})", r.id, r.name))
        };
        let proposals_runs = runs.iter().map(label).collect();
        let pretrained_runs = db::runs::list(
            &s.pool,
            &db::runs::RunFilter {
                kind: Some(RunKind::PretrainBox.as_str().into()),
                ..Default::default()
            },
        )
        .await?
        .iter()
        .filter(|r| {
            r.status != RunStatus::Failed.as_str() && r.status != RunStatus::Cancelled.as_str()
        })
        .map(|r| {
            let (id, text) = label(r);
            (id, format!("{text}, {}", r.status))
        })
        .collect();
        Ok(NewExperimentPage {
            csrf,
            error,
            form,
            datasets,
            proposals_runs,
            pretrained_runs,
            detectors: [
                (DetectorKind::Fcos, "FCOS"),
                (DetectorKind::Retinanet, "RetinaNet"),
                (DetectorKind::FasterRcnn, "Faster R-CNN"),
            ]
            .into_iter()
            .map(|(k, label)| (wire_name(&k), label))
            .collect(),
            backbones: [
                (BackboneKind::EfficientnetLite0, "EfficientNet-Lite0"),
                (BackboneKind::Resnet18, "ResNet-18"),
                (BackboneKind::Resnet50, "ResNet-50"),
            ]
            .into_iter()
            .map(|(k, label)| (wire_name(&k), label))
            .collect(),
        })
    }
}

pub async fn new_form(
    State(s): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
) -> Result<Response, PageError> {
    Ok(render(
        &NewExperimentPage::new(&s, csrf.0, None, ExperimentForm::defaults()).await?,
    ))
}

pub async fn create_from_form(
    State(s): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let form = ExperimentForm::posted(&fields);
    let outcome = match form.to_spec() {
        Ok(spec) => create(&s, &spec).await?,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(created) => Ok(Redirect::to(&format!("/experiments/{}", created.id)).into_response()),
        Err(e) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            render(&NewExperimentPage::new(&s, csrf.0, Some(e), form).await?),
        )
            .into_response()),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading an experiment back.

/// One run of an experiment as the page and the API show it.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub id: i64,
    pub role: String,
    pub kind: String,
    pub name: String,
    pub status: String,
    pub error: Option<String>,
    pub attempts: i32,
    pub seed: Option<u64>,
    pub fraction: Option<u32>,
    pub train_split: Option<String>,
    /// Dependencies not succeeded yet.
    pub waiting_for: Vec<i64>,
    /// Last step reported and the run's total, when it has steps.
    pub step: Option<i64>,
    pub steps: Option<u64>,
    /// Final COCO statistics of a succeeded fine-tune (name → value).
    pub eval: Option<serde_json::Map<String, serde_json::Value>>,
}

impl RunView {
    pub fn progress(&self) -> String {
        match (self.step, self.steps) {
            _ if self.status == "succeeded" => "done".into(),
            (Some(s), Some(n)) if n > 0 => format!("step {s} / {n}"),
            (None, Some(n)) => format!("0 / {n}"),
            _ => String::new(),
        }
    }
    pub fn waiting_text(&self) -> String {
        if self.status != "queued" || self.waiting_for.is_empty() {
            return String::new();
        }
        let ids: Vec<String> = self.waiting_for.iter().map(|i| i.to_string()).collect();
        format!("waiting for run {}", ids.join(", "))
    }
    pub fn ap(&self) -> Option<f64> {
        self.eval
            .as_ref()
            .and_then(|e| e.get("AP"))
            .and_then(|v| v.as_f64())
    }
    pub fn ap_text(&self) -> String {
        self.ap().map(|v| format!("{v:.3}")).unwrap_or_default()
    }
    pub fn seed_text(&self) -> String {
        self.seed.map(|s| s.to_string()).unwrap_or_default()
    }
    pub fn fraction_text(&self) -> String {
        self.fraction.map(|f| format!("{f}%")).unwrap_or_default()
    }
    pub fn error_text(&self) -> String {
        self.error.clone().unwrap_or_default()
    }
}

/// The labeled fraction of a split named `{p}pct_seed{s}`.
fn fraction_of(split: &str) -> Option<u32> {
    split.split_once("pct_seed")?.0.parse().ok()
}

/// The final evaluation of a finished fine-tune: its `eval.json`, else the last `eval/*` values.
async fn final_eval(
    s: &AppState,
    run_id: i64,
) -> anyhow::Result<Option<serde_json::Map<String, serde_json::Value>>> {
    if let ArtifactRead::Found(bytes) = s.read_artifact(run_id, "eval.json").await?
        && let Ok(report) = serde_json::from_slice::<EvaluationReport>(&bytes)
    {
        let map = COCO_STAT_NAMES
            .iter()
            .zip(report.stats.iter())
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        return Ok(Some(map));
    }
    let metrics = db::experiments::final_eval_metrics(&s.pool, run_id).await?;
    if metrics.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        metrics
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::from(v)))
            .collect(),
    ))
}

pub async fn run_views(s: &AppState, runs: Vec<ExperimentRun>) -> anyhow::Result<Vec<RunView>> {
    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let deps = db::runs::dependencies(&s.pool, &ids).await?;
    let steps = db::experiments::last_steps(&s.pool, &ids).await?;
    let mut views = Vec::with_capacity(runs.len());
    for r in runs {
        let config: Option<JobConfig> = serde_json::from_value(r.config.clone()).ok();
        let (seed, fraction, train_split, total) = match &config {
            Some(JobConfig::Finetune(c)) => (
                Some(c.seed),
                fraction_of(&c.train_split),
                Some(c.train_split.clone()),
                Some(c.steps as u64),
            ),
            Some(JobConfig::PretrainBox(c)) => (None, None, None, Some(c.steps as u64)),
            Some(JobConfig::PretrainImage(c)) => (None, None, None, Some(c.steps as u64)),
            _ => (None, None, None, None),
        };
        let eval = if r.kind == RunKind::Finetune.as_str() && r.status == "succeeded" {
            final_eval(s, r.id).await?
        } else {
            None
        };
        views.push(RunView {
            id: r.id,
            role: r.experiment_role.clone().unwrap_or_default(),
            waiting_for: deps
                .iter()
                .filter(|d| d.run_id == r.id && d.status != "succeeded")
                .map(|d| d.parent_id)
                .collect(),
            step: steps.iter().find(|(id, _)| *id == r.id).map(|(_, st)| *st),
            steps: total,
            kind: r.kind,
            name: r.name,
            status: r.status,
            error: r.error,
            attempts: r.attempts,
            seed,
            fraction,
            train_split,
            eval,
        });
    }
    views.sort_by_key(|v| {
        (
            ROLE_ORDER
                .iter()
                .position(|r| *r == v.role)
                .unwrap_or(ROLE_ORDER.len()),
            v.fraction,
            v.seed,
            v.id,
        )
    });
    Ok(views)
}

/// Mean and sample standard deviation.
fn mean_std(v: &[f64]) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Some((mean, var.sqrt()))
}

/// One row of the experiment's summary: a labeled fraction, both arms' AP over finished seeds.
pub struct SummaryRow {
    pub fraction: String,
    pub baseline: String,
    pub aligndet: String,
    pub margin: String,
    pub seeds: String,
}

fn summary(views: &[RunView]) -> Vec<SummaryRow> {
    let mut fractions: Vec<u32> = views.iter().filter_map(|v| v.fraction).collect();
    fractions.sort_unstable();
    fractions.dedup();
    let fmt = |m: Option<(f64, f64)>| {
        m.map(|(m, s)| format!("{m:.3} ± {s:.3}"))
            .unwrap_or_else(|| "–".into())
    };
    fractions
        .into_iter()
        .map(|f| {
            let ap = |role: &str, seed: Option<u64>| {
                views
                    .iter()
                    .find(|v| v.role == role && v.fraction == Some(f) && v.seed == seed)
                    .and_then(RunView::ap)
            };
            let seeds: Vec<Option<u64>> = {
                let mut s: Vec<Option<u64>> = views
                    .iter()
                    .filter(|v| v.fraction == Some(f))
                    .map(|v| v.seed)
                    .collect();
                s.sort_unstable();
                s.dedup();
                s
            };
            let base: Vec<f64> = seeds.iter().filter_map(|s| ap(ROLE_BASELINE, *s)).collect();
            let ours: Vec<f64> = seeds.iter().filter_map(|s| ap(ROLE_ALIGNDET, *s)).collect();
            let deltas: Vec<f64> = seeds
                .iter()
                .filter_map(|s| Some(ap(ROLE_ALIGNDET, *s)? - ap(ROLE_BASELINE, *s)?))
                .collect();
            SummaryRow {
                fraction: format!("{f}%"),
                baseline: fmt(mean_std(&base)),
                aligndet: fmt(mean_std(&ours)),
                margin: mean_std(&deltas)
                    .map(|(m, s)| format!("{m:+.3} ± {s:.3}"))
                    .unwrap_or_else(|| "–".into()),
                seeds: format!("{} of {}", deltas.len(), seeds.len()),
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "experiment.html")]
struct ExperimentPage {
    exp: ExperimentRow,
    spec_pretty: String,
    runs: Vec<RunView>,
    reused_proposals: Option<i64>,
    reused_pretraining: Option<i64>,
    compare_url: String,
    finished: usize,
    failed: usize,
    summary: Vec<SummaryRow>,
}

async fn get_experiment(s: &AppState, id: i64) -> Result<ExperimentRow, PageError> {
    db::experiments::get(&s.pool, id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("experiment {id} not found")))
}

/// The ids of the fine-tune runs (in creation order) as the `/compare` page takes them.
pub fn compare_url(runs: &[RunView]) -> String {
    let mut ids: Vec<i64> = runs
        .iter()
        .filter(|r| r.kind == RunKind::Finetune.as_str())
        .map(|r| r.id)
        .collect();
    ids.sort_unstable();
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("/compare?runs={}", ids.join(","))
}

pub async fn show(State(s): State<AppState>, Path(id): Path<i64>) -> Result<Response, PageError> {
    let exp = get_experiment(&s, id).await?;
    let runs = run_views(&s, db::experiments::runs(&s.pool, id).await?).await?;
    let reused_proposals = exp
        .spec
        .get("proposals_run_id")
        .and_then(|v| v.as_i64())
        .filter(|pid| !runs.iter().any(|r| r.id == *pid));
    let reused_pretraining = exp.spec.get("pretrained_run_id").and_then(|v| v.as_i64());
    Ok(render(&ExperimentPage {
        spec_pretty: serde_json::to_string_pretty(&exp.spec)?,
        compare_url: compare_url(&runs),
        finished: runs
            .iter()
            .filter(|r| RunStatus::parse(&r.status).is_some_and(|st| st.is_terminal()))
            .count(),
        failed: runs
            .iter()
            .filter(|r| r.status == "failed" || r.status == "cancelled")
            .count(),
        summary: summary(&runs),
        reused_proposals,
        reused_pretraining,
        runs,
        exp,
    }))
}

#[derive(Template)]
#[template(path = "experiments.html")]
struct ExperimentsPage {
    experiments: Vec<ExperimentSummary>,
}

pub async fn list_page(State(s): State<AppState>) -> Result<Response, PageError> {
    Ok(render(&ExperimentsPage {
        experiments: db::experiments::list(&s.pool).await?,
    }))
}

/// The experiment as JSON (for `GET /api/v1/experiments/{id}`); `None` when absent.
pub async fn summary_json(s: &AppState, id: i64) -> anyhow::Result<Option<serde_json::Value>> {
    let Some(exp) = db::experiments::get(&s.pool, id).await? else {
        return Ok(None);
    };
    let runs = run_views(s, db::experiments::runs(&s.pool, id).await?).await?;
    let done = runs
        .iter()
        .all(|r| RunStatus::parse(&r.status).is_some_and(|st| st.is_terminal()));
    let dataset_id = exp.spec.get("dataset_id").and_then(|v| v.as_i64());
    let dataset_name = match dataset_id {
        Some(d) => db::datasets::get(&s.pool, d).await?.map(|d| d.name),
        None => None,
    };
    Ok(Some(serde_json::json!({
        "id": exp.id,
        "name": exp.name,
        "dataset": {"id": dataset_id, "name": dataset_name},
        "spec": exp.spec,
        "created_at": exp.created_at,
        "done": done,
        "compare_url": compare_url(&runs),
        "runs": runs,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ExperimentSpec {
        serde_json::from_value(serde_json::json!({"name": "x", "dataset_id": 1})).unwrap()
    }

    #[test]
    fn default_plan_has_both_arms_at_the_same_seeds_and_splits() {
        let plan = spec().resolved().plan().unwrap();
        let roles: Vec<&str> = plan.iter().map(|p| p.role).collect();
        assert_eq!(roles[..2], [ROLE_PROPOSALS, ROLE_PRETRAIN_BOX]);
        assert_eq!(plan.len(), 2 + 3 * 2 * 2);
        for pair in plan[2..].chunks(2) {
            let (JobConfig::Finetune(a), JobConfig::Finetune(b)) =
                (&pair[0].config, &pair[1].config)
            else {
                panic!("fine-tunes expected")
            };
            assert_eq!(
                (a.seed, &a.train_split, a.steps),
                (b.seed, &b.train_split, b.steps)
            );
            assert!((a.lr - 1.5 * b.lr).abs() < 1e-12);
            assert!((a.weight_decay - b.weight_decay / 2.0).abs() < 1e-15);
        }
    }

    #[test]
    fn short_runs_keep_a_valid_schedule() {
        let mut s = spec();
        s.finetune_steps = Some(20);
        s.pretrain_steps = Some(10);
        s.label_free = true;
        s.image_steps = Some(5);
        s.image_batch_size = Some(3);
        s.resolved().plan().unwrap();
    }

    #[test]
    fn image_size_sets_both_arms_and_the_views_in_proportion() {
        let mut s = spec();
        s.image_size = Some(192);
        s.pretrain_samples = Some(256);
        let plan = s.resolved().plan().unwrap();
        let JobConfig::PretrainBox(pb) = &plan[1].config else {
            panic!("box-domain pre-training expected")
        };
        assert_eq!(pb.views.min_sizes, [180, 192, 204]);
        assert_eq!(pb.views.max_size, 320);
        assert_eq!(pb.samples, 256);
        for p in &plan[2..] {
            let JobConfig::Finetune(c) = &p.config else {
                panic!("fine-tune expected")
            };
            assert_eq!(
                (c.augment.min_sizes.as_slice(), c.augment.max_size),
                (&[192][..], 320)
            );
        }
        // The default size reproduces the job defaults exactly.
        let plan = spec().resolved().plan().unwrap();
        let JobConfig::PretrainBox(pb) = &plan[1].config else {
            panic!("box-domain pre-training expected")
        };
        assert_eq!(pb.views, ViewsConfig::default());
        s.image_size = Some(8);
        assert!(s.resolved().plan().unwrap_err().starts_with("image_size:"));
    }

    #[test]
    fn a_reused_pretraining_plans_only_the_fine_tunes_and_refuses_its_own_settings() {
        let mut s = spec();
        s.pretrained_run_id = Some(7);
        s.lr_multiplier = Some(1.0);
        let resolved = s.resolved();
        // nothing of the pre-training is filled in: the stored spec must not claim it
        assert_eq!(resolved.pretrain_steps, None);
        let plan = resolved.plan().unwrap();
        assert_eq!(plan.len(), 3 * 2 * 2);
        assert!(
            plan.iter()
                .all(|p| p.role == ROLE_ALIGNDET || p.role == ROLE_BASELINE)
        );
        for p in &plan {
            let JobConfig::Finetune(c) = &p.config else {
                panic!("fine-tune expected")
            };
            let from_checkpoint = matches!(c.init, InitConfig::Checkpoint { .. });
            assert_eq!(from_checkpoint, p.role == ROLE_ALIGNDET);
        }
        for (field, set) in [
            (
                "pretrain_steps",
                (|s: &mut ExperimentSpec| s.pretrain_steps = Some(10)) as fn(&mut ExperimentSpec),
            ),
            ("proposals_run_id", |s| s.proposals_run_id = Some(3)),
            ("label_free", |s| s.label_free = true),
            ("pretrain_samples", |s| s.pretrain_samples = Some(256)),
        ] {
            let mut bad = s.clone();
            set(&mut bad);
            let err = bad.resolved().plan().unwrap_err();
            assert!(
                err.starts_with(&format!("{field}: the pre-training run 7 is reused")),
                "{err}"
            );
        }
        s.pretrained_run_id = Some(0);
        assert!(
            s.resolved()
                .plan()
                .unwrap_err()
                .starts_with("pretrained_run_id:")
        );
    }
}
