//! Configuration of supervised training (`finetune` jobs), shared by the server's form and the
//! trainer. Every field has a default a researcher would start from, so a JSON config only needs
//! what differs; `validate` names the first field that is out of range.

use crate::artifacts::ArtifactRef;
use crate::config_error::ConfigError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    Fcos,
    Retinanet,
    FasterRcnn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackboneKind {
    Resnet18,
    Resnet50,
    EfficientnetLite0,
}

/// Where the weights come from before training starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case", deny_unknown_fields)]
pub enum InitConfig {
    /// Random initialisation of every module.
    Scratch,
    /// The ImageNet weights shipped for the backbone (EfficientNet-Lite0); the rest random.
    ImagenetBackbone,
    /// A checkpoint artifact of an earlier run (pre-training or fine-tuning), loaded
    /// non-strictly: every tensor whose name and shape match is loaded, the rest reported.
    Checkpoint { artifact: ArtifactRef },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Adamw,
}

impl DetectorKind {
    /// In the order the forms offer them.
    pub const ALL: [DetectorKind; 3] = [
        DetectorKind::Fcos,
        DetectorKind::Retinanet,
        DetectorKind::FasterRcnn,
    ];

    /// The name researchers write.
    pub fn label(self) -> &'static str {
        match self {
            DetectorKind::Fcos => "FCOS",
            DetectorKind::Retinanet => "RetinaNet",
            DetectorKind::FasterRcnn => "Faster R-CNN",
        }
    }
}

impl BackboneKind {
    /// In the order the forms offer them (the one with shipped ImageNet weights first).
    pub const ALL: [BackboneKind; 3] = [
        BackboneKind::EfficientnetLite0,
        BackboneKind::Resnet18,
        BackboneKind::Resnet50,
    ];

    /// The name researchers write.
    pub fn label(self) -> &'static str {
        match self {
            BackboneKind::EfficientnetLite0 => "EfficientNet-Lite0",
            BackboneKind::Resnet18 => "ResNet-18",
            BackboneKind::Resnet50 => "ResNet-50",
        }
    }
}

impl OptimizerKind {
    pub const ALL: [OptimizerKind; 2] = [OptimizerKind::Sgd, OptimizerKind::Adamw];

    /// The name researchers write.
    pub fn label(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "SGD (momentum)",
            OptimizerKind::Adamw => "AdamW",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// Multiply the rate by `gamma` at each milestone step.
    Step { milestones: Vec<u32>, gamma: f64 },
    /// Cosine decay from the base rate to `min_factor` × base at the last step.
    Cosine { min_factor: f64 },
}

/// Training-time data augmentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Shorter-side sizes to pick from per batch (multi-scale training); the first is used at
    /// evaluation.
    pub min_sizes: Vec<u32>,
    pub max_size: u32,
    pub hflip: bool,
    /// Random brightness / contrast / saturation jitter strength (0 disables).
    pub color_jitter: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            min_sizes: vec![512],
            max_size: 853,
            hflip: true,
            color_jitter: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub dataset_id: i64,
    /// Training split: `train`, or a labeled subset such as `5pct_seed0`.
    pub train_split: String,
    /// Split evaluated during and after training.
    pub val_split: String,
    pub detector: DetectorKind,
    pub backbone: BackboneKind,
    pub init: InitConfig,
    /// Backbone stages that train (torchvision's `trainable_backbone_layers`, 0..=5).
    pub trainable_backbone_stages: u8,
    pub augment: AugmentConfig,
    pub batch_size: u32,
    /// Optimizer steps in all.
    pub steps: u32,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    /// SGD momentum (ignored by AdamW, which uses β = (0.9, 0.999)).
    pub momentum: f64,
    pub weight_decay: f64,
    /// Exclude norm parameters and biases from weight decay.
    pub no_decay_norm_and_bias: bool,
    pub warmup_steps: u32,
    pub schedule: LrSchedule,
    /// Clip the global gradient norm to this value (none when absent).
    pub grad_clip_norm: Option<f64>,
    /// Evaluate on `val_split` every this many steps (and always at the end).
    pub eval_every: u32,
    /// Save a resumable checkpoint (weights + optimizer state) every this many steps.
    pub checkpoint_every: u32,
    /// Images evaluated at each periodic evaluation (0: the whole split).
    pub eval_max_images: u32,
    /// Images of `val_split` the final evaluation scores (0, the default: the whole split). A
    /// short exploratory run can stop paying for a full evaluation; the report says how many.
    pub final_eval_max_images: u32,
    pub seed: u64,
    /// Data-loading threads.
    pub loader_threads: u32,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            dataset_id: 0,
            train_split: "train".into(),
            val_split: "val".into(),
            detector: DetectorKind::Fcos,
            backbone: BackboneKind::EfficientnetLite0,
            init: InitConfig::ImagenetBackbone,
            trainable_backbone_stages: 3,
            augment: AugmentConfig::default(),
            batch_size: 4,
            steps: 1000,
            optimizer: OptimizerKind::Sgd,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 1e-4,
            no_decay_norm_and_bias: true,
            warmup_steps: 100,
            schedule: LrSchedule::Step {
                milestones: vec![700, 900],
                gamma: 0.1,
            },
            grad_clip_norm: Some(10.0),
            eval_every: 250,
            checkpoint_every: 100,
            eval_max_images: 0,
            final_eval_max_images: 0,
            seed: 0,
            loader_threads: 2,
        }
    }
}

fn err(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::new(field, problem)
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.dataset_id <= 0 {
            return Err(err("dataset_id", "choose a dataset"));
        }
        validate_split_name("train_split", &self.train_split)?;
        validate_split_name("val_split", &self.val_split)?;
        if self.trainable_backbone_stages > 5 {
            return Err(err("trainable_backbone_stages", "must be 0..=5"));
        }
        let a = &self.augment;
        if a.min_sizes.is_empty() || a.min_sizes.iter().any(|&s| !(32..=2048).contains(&s)) {
            return Err(err(
                "augment.min_sizes",
                "give 1 or more sizes in 32..=2048",
            ));
        }
        if a.max_size < *a.min_sizes.iter().max().unwrap_or(&0) || a.max_size > 4096 {
            return Err(err(
                "augment.max_size",
                "must be ≥ every min size and ≤ 4096",
            ));
        }
        if !(0.0..=1.0).contains(&a.color_jitter) {
            return Err(err("augment.color_jitter", "must be in 0..=1"));
        }
        validate_optimisation(
            self.batch_size,
            self.steps,
            self.lr,
            self.momentum,
            self.weight_decay,
            self.warmup_steps,
            &self.schedule,
            self.grad_clip_norm,
        )?;
        if self.eval_every == 0 {
            return Err(err("eval_every", "must be at least 1"));
        }
        if self.checkpoint_every == 0 {
            return Err(err("checkpoint_every", "must be at least 1"));
        }
        if !(1..=64).contains(&self.loader_threads) {
            return Err(err("loader_threads", "must be 1..=64"));
        }
        validate_init("init", &self.init, self.backbone)?;
        Ok(())
    }

    /// This config's steps and the fields that follow them ([`ScheduleDefaults`]).
    pub fn schedule_defaults(&self) -> ScheduleDefaults {
        ScheduleDefaults::of(
            self.steps,
            self.warmup_steps,
            &self.schedule,
            self.eval_every,
            self.checkpoint_every,
        )
    }

    /// Learning rate at `step` (0-based): linear warmup from 0.001 × base, then the schedule.
    pub fn lr_at(&self, step: u32) -> f64 {
        scheduled_lr(self.lr, self.warmup_steps, &self.schedule, self.steps, step)
    }
}

/// The fields of a training config that follow its length (warm-up, step-schedule milestones,
/// evaluation and checkpoint intervals), and the one rule that derives them from the number of
/// steps when a form leaves them blank.
///
/// Each kind's defaults are stated for its default number of steps (the reference, e.g. 1000
/// steps with warm-up 100, milestones 700 and 900, evaluation every 250 and a checkpoint every
/// 100 for fine-tuning). For another number of steps [`ScheduleDefaults::scaled_to`] keeps each
/// value's fraction of the run, rounded to the nearest step:
///
/// - milestones: the same fractions (70 % and 90 % of the steps for fine-tuning), at least 1,
///   repeated ones dropped so they stay increasing;
/// - warm-up: the same fraction (a tenth), but never more than the default, since warm-up is
///   about the first iterations rather than the length of the schedule;
/// - evaluation and checkpoint intervals: the same fraction (every quarter and every tenth of
///   the run for fine-tuning), at least 1 (0 stays 0: the kind has no such interval).
///
/// At the reference steps every value is the default itself, so configs are unchanged there.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleDefaults {
    pub steps: u32,
    pub warmup_steps: u32,
    /// Milestones of the step schedule (empty when the default schedule is cosine).
    pub milestones: Vec<u32>,
    /// 0 for the pre-training kinds, which have no periodic evaluation.
    pub eval_every: u32,
    pub checkpoint_every: u32,
}

impl ScheduleDefaults {
    /// Fine-tuning's schedule-derived defaults for a run of `steps` steps.
    pub fn for_steps(steps: u32) -> ScheduleDefaults {
        TrainConfig::default().schedule_defaults().scaled_to(steps)
    }

    /// The reference values of a config (its steps and the fields that follow them).
    pub fn of(
        steps: u32,
        warmup_steps: u32,
        schedule: &LrSchedule,
        eval_every: u32,
        checkpoint_every: u32,
    ) -> ScheduleDefaults {
        ScheduleDefaults {
            steps,
            warmup_steps,
            milestones: match schedule {
                LrSchedule::Step { milestones, .. } => milestones.clone(),
                LrSchedule::Cosine { .. } => Vec::new(),
            },
            eval_every,
            checkpoint_every,
        }
    }

    /// The same schedule for a run of `steps` steps (the rule above).
    pub fn scaled_to(&self, steps: u32) -> ScheduleDefaults {
        let reference = u64::from(self.steps.max(1));
        let scale = |v: u32| -> u32 {
            let scaled = (u64::from(v) * u64::from(steps) + reference / 2) / reference;
            u32::try_from(scaled).unwrap_or(u32::MAX)
        };
        let interval = |v: u32| if v == 0 { 0 } else { scale(v).max(1) };
        let mut milestones: Vec<u32> = self.milestones.iter().map(|&m| scale(m).max(1)).collect();
        milestones.dedup();
        ScheduleDefaults {
            steps,
            warmup_steps: scale(self.warmup_steps).min(self.warmup_steps),
            milestones,
            eval_every: interval(self.eval_every),
            checkpoint_every: interval(self.checkpoint_every),
        }
    }
}

/// Learning rate at `step` (0-based) of `steps`: linear warmup from 0.001 × `base` over
/// `warmup_steps`, then the schedule (shared by fine-tuning and both pre-training kinds).
pub fn scheduled_lr(
    base: f64,
    warmup_steps: u32,
    schedule: &LrSchedule,
    steps: u32,
    step: u32,
) -> f64 {
    let lr = match schedule {
        LrSchedule::Step { milestones, gamma } => {
            let passed = milestones.iter().filter(|&&m| step >= m).count() as i32;
            base * gamma.powi(passed)
        }
        LrSchedule::Cosine { min_factor } => {
            let t = step as f64 / steps.max(1) as f64;
            let f =
                min_factor + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
            base * f
        }
    };
    if step < warmup_steps {
        let alpha = step as f64 / warmup_steps as f64;
        lr * (0.001 * (1.0 - alpha) + alpha)
    } else {
        lr
    }
}

/// Checks of the optimisation fields every training config has (the field names are the same in
/// `TrainConfig`, `PretrainBoxConfig` and `PretrainImageConfig`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn validate_optimisation(
    batch_size: u32,
    steps: u32,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    warmup_steps: u32,
    schedule: &LrSchedule,
    grad_clip_norm: Option<f64>,
) -> Result<(), ConfigError> {
    if !(1..=256).contains(&batch_size) {
        return Err(err("batch_size", "must be 1..=256"));
    }
    if !(1..=10_000_000).contains(&steps) {
        return Err(err("steps", "must be 1..=10000000"));
    }
    if !(lr > 0.0 && lr < 10.0) {
        return Err(err("lr", "must be in (0, 10)"));
    }
    if !(0.0..1.0).contains(&momentum) {
        return Err(err("momentum", "must be in [0, 1)"));
    }
    if !(0.0..1.0).contains(&weight_decay) {
        return Err(err("weight_decay", "must be in [0, 1)"));
    }
    if warmup_steps > steps {
        return Err(err("warmup_steps", "must not exceed steps"));
    }
    match schedule {
        LrSchedule::Step { milestones, gamma } => {
            if milestones.windows(2).any(|w| w[0] >= w[1]) {
                return Err(err("schedule.milestones", "must be increasing"));
            }
            if !(*gamma > 0.0 && *gamma <= 1.0) {
                return Err(err("schedule.gamma", "must be in (0, 1]"));
            }
        }
        LrSchedule::Cosine { min_factor } => {
            if !(0.0..=1.0).contains(min_factor) {
                return Err(err("schedule.min_factor", "must be in [0, 1]"));
            }
        }
    }
    if let Some(c) = grad_clip_norm
        && !(c > 0.0 && c.is_finite())
    {
        return Err(err("grad_clip_norm", "must be positive"));
    }
    Ok(())
}

/// A split name: letters, digits and `_`, at most 64 characters.
pub(crate) fn validate_split_name(field: &str, v: &str) -> Result<(), ConfigError> {
    if v.is_empty() || v.len() > 64 || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(err(field, format!("{v:?} is not a split name")));
    }
    Ok(())
}

/// The checkpoint an `init` names must be a well-formed artifact reference.
pub(crate) fn validate_init(
    field: &str,
    init: &InitConfig,
    backbone: BackboneKind,
) -> Result<(), ConfigError> {
    if let InitConfig::Checkpoint { artifact } = init {
        crate::artifacts::check_artifact_name(&artifact.name)
            .map_err(|problem| err(&format!("{field}.artifact.name"), problem))?;
        if artifact.run_id <= 0 {
            return Err(err(
                &format!("{field}.artifact.run_id"),
                "choose the run whose checkpoint to start from",
            ));
        }
    }
    if *init == InitConfig::ImagenetBackbone && backbone != BackboneKind::EfficientnetLite0 {
        return Err(err(
            field,
            "ImageNet weights are shipped only for efficientnet_lite0; start ResNets from scratch or a checkpoint",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TrainConfig {
        TrainConfig {
            dataset_id: 1,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn defaults_validate_and_partial_json_fills_defaults() {
        config().validate().unwrap();
        let c: TrainConfig =
            serde_json::from_str(r#"{"dataset_id": 3, "steps": 50, "warmup_steps": 5}"#).unwrap();
        assert_eq!(c.steps, 50);
        assert_eq!(c.detector, DetectorKind::Fcos);
        c.validate().unwrap();
    }

    #[test]
    fn bad_fields_are_named() {
        let mut c = config();
        c.batch_size = 0;
        assert_eq!(c.validate().unwrap_err().field, "batch_size");
        let mut c = config();
        c.backbone = BackboneKind::Resnet50;
        assert_eq!(c.validate().unwrap_err().field, "init");
        let mut c = config();
        c.train_split = "../x".into();
        assert_eq!(c.validate().unwrap_err().field, "train_split");
        assert!(serde_json::from_str::<TrainConfig>(r#"{"dataset_id": 1, "stepz": 3}"#).is_err());
    }

    #[test]
    fn warmup_then_step_schedule() {
        let c = TrainConfig {
            lr: 0.1,
            warmup_steps: 10,
            steps: 100,
            schedule: LrSchedule::Step {
                milestones: vec![50, 80],
                gamma: 0.1,
            },
            ..config()
        };
        assert!((c.lr_at(0) - 0.0001).abs() < 1e-12);
        assert!((c.lr_at(10) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(50) - 0.01).abs() < 1e-12);
        assert!((c.lr_at(99) - 0.001).abs() < 1e-12);
    }

    #[test]
    fn schedule_defaults_follow_the_steps() {
        let d = TrainConfig::default();
        let at_default = ScheduleDefaults::for_steps(d.steps);
        assert_eq!(
            at_default,
            d.schedule_defaults(),
            "the defaults at 1000 steps"
        );
        assert_eq!(at_default.warmup_steps, 100);
        assert_eq!(at_default.milestones, vec![700, 900]);
        assert_eq!(
            (at_default.eval_every, at_default.checkpoint_every),
            (250, 100)
        );
        let short = ScheduleDefaults::for_steps(20);
        assert_eq!(
            short,
            ScheduleDefaults {
                steps: 20,
                warmup_steps: 2,
                milestones: vec![14, 18],
                eval_every: 5,
                checkpoint_every: 2,
            }
        );
        // Longer runs: milestones and intervals grow, warm-up stays at the default.
        let long = ScheduleDefaults::for_steps(5000);
        assert_eq!(long.warmup_steps, 100);
        assert_eq!(long.milestones, vec![3500, 4500]);
        assert_eq!((long.eval_every, long.checkpoint_every), (1250, 500));
        // One step: still a valid config.
        let one = ScheduleDefaults::for_steps(1);
        assert_eq!(
            (one.warmup_steps, one.eval_every, one.checkpoint_every),
            (0, 1, 1)
        );
        assert_eq!(one.milestones, vec![1]);
        for steps in [1, 2, 3, 7, 20, 999, 1000, 1001, 10_000_000] {
            let s = ScheduleDefaults::for_steps(steps);
            let c = TrainConfig {
                steps,
                warmup_steps: s.warmup_steps,
                schedule: LrSchedule::Step {
                    milestones: s.milestones,
                    gamma: 0.1,
                },
                eval_every: s.eval_every,
                checkpoint_every: s.checkpoint_every,
                ..config()
            };
            c.validate()
                .unwrap_or_else(|e| panic!("{steps} steps: {e}"));
        }
        // A kind without periodic evaluation keeps none.
        let no_eval =
            ScheduleDefaults::of(2000, 0, &LrSchedule::Cosine { min_factor: 0.0 }, 0, 200);
        assert_eq!(no_eval.scaled_to(2000), no_eval);
        let s = no_eval.scaled_to(50);
        assert_eq!(
            (s.warmup_steps, s.eval_every, s.checkpoint_every),
            (0, 0, 5)
        );
        assert!(s.milestones.is_empty());
    }

    #[test]
    fn cosine_ends_at_min_factor() {
        let c = TrainConfig {
            lr: 1.0,
            warmup_steps: 0,
            steps: 100,
            schedule: LrSchedule::Cosine { min_factor: 0.05 },
            ..config()
        };
        assert!((c.lr_at(0) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(100) - 0.05).abs() < 1e-12);
    }
}
