//! Configuration of supervised training (`finetune` jobs), shared by the server's form and the
//! trainer. Every field has a default a researcher would start from, so a JSON config only needs
//! what differs; `validate` names the first field that is out of range.

use crate::artifacts::ArtifactRef;
use crate::config_error::ConfigError;
use crate::optim_config::{LrSchedule, OptimConfig, OptimizerKind, Precision, ScheduleDefaults};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    Fcos,
    Retinanet,
    FasterRcnn,
    /// Faster R-CNN with torchvision's mask branch (instance segmentation).
    MaskRcnn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackboneKind {
    Resnet18,
    Resnet50,
    EfficientnetLite0,
    MobilenetV2,
}

/// Where the weights come from before training starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case", deny_unknown_fields)]
pub enum InitConfig {
    /// Random initialisation of every module.
    Scratch,
    /// The ImageNet weights shipped for the backbone (EfficientNet-Lite0, MobileNetV2); the rest
    /// random.
    ImagenetBackbone,
    /// A checkpoint artifact of an earlier run (pre-training or fine-tuning), loaded
    /// non-strictly: every tensor whose name and shape match is loaded, the rest reported.
    Checkpoint { artifact: ArtifactRef },
}

impl DetectorKind {
    /// In the order the forms offer them.
    pub const ALL: [DetectorKind; 4] = [
        DetectorKind::Fcos,
        DetectorKind::Retinanet,
        DetectorKind::FasterRcnn,
        DetectorKind::MaskRcnn,
    ];

    /// Whether the detector predicts instance masks (its training data needs them).
    pub fn has_masks(self) -> bool {
        matches!(self, DetectorKind::MaskRcnn)
    }

    /// The detector whose box-domain pre-training this one starts from. Mask R-CNN has no
    /// pretext of its own (nor in the reference): it pre-trains as Faster R-CNN and its mask
    /// head starts fresh at fine-tuning, so either pre-training serves either fine-tune.
    pub fn pretraining_form(self) -> DetectorKind {
        match self {
            DetectorKind::MaskRcnn => DetectorKind::FasterRcnn,
            other => other,
        }
    }

    /// The name researchers write.
    pub fn label(self) -> &'static str {
        match self {
            DetectorKind::Fcos => "FCOS",
            DetectorKind::Retinanet => "RetinaNet",
            DetectorKind::FasterRcnn => "Faster R-CNN",
            DetectorKind::MaskRcnn => "Mask R-CNN",
        }
    }
}

impl BackboneKind {
    /// In the order the forms offer them (the one with shipped ImageNet weights first).
    pub const ALL: [BackboneKind; 4] = [
        BackboneKind::EfficientnetLite0,
        BackboneKind::MobilenetV2,
        BackboneKind::Resnet18,
        BackboneKind::Resnet50,
    ];

    /// The name researchers write.
    pub fn label(self) -> &'static str {
        match self {
            BackboneKind::EfficientnetLite0 => "EfficientNet-Lite0",
            BackboneKind::MobilenetV2 => "MobileNetV2",
            BackboneKind::Resnet18 => "ResNet-18",
            BackboneKind::Resnet50 => "ResNet-50",
        }
    }

    /// Whether ImageNet weights are shipped for it (scripts/setup.sh converts them).
    pub fn has_imagenet_weights(self) -> bool {
        matches!(
            self,
            BackboneKind::EfficientnetLite0 | BackboneKind::MobilenetV2
        )
    }
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
    pub optim: OptimConfig,
    /// Exclude norm parameters and biases from weight decay.
    pub no_decay_norm_and_bias: bool,
    /// Evaluate on `val_split` every this many steps (and always at the end).
    pub eval_every: u32,
    /// Images evaluated at each periodic evaluation (0: the whole split).
    pub eval_max_images: u32,
    /// Images of `val_split` the final evaluation scores (0, the default: the whole split). A
    /// short exploratory run can stop paying for a full evaluation; the report says how many.
    pub final_eval_max_images: u32,
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
            optim: OptimConfig {
                batch_size: 4,
                steps: 1000,
                optimizer: OptimizerKind::Sgd,
                lr: 0.01,
                momentum: 0.9,
                weight_decay: 1e-4,
                warmup_steps: 100,
                schedule: LrSchedule::Step {
                    milestones: vec![700, 900],
                    gamma: 0.1,
                },
                grad_clip_norm: Some(10.0),
                checkpoint_every: 100,
                seed: 0,
                loader_threads: 2,
                precision: Precision::Fp32,
                world_size: 1,
            },
            no_decay_norm_and_bias: true,
            eval_every: 250,
            eval_max_images: 0,
            final_eval_max_images: 0,
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
        self.optim.validate()?;
        if self.eval_every == 0 {
            return Err(err("eval_every", "must be at least 1"));
        }
        validate_init("init", &self.init, self.backbone)?;
        Ok(())
    }

    /// This config's steps and the fields that follow them ([`ScheduleDefaults`]).
    pub fn schedule_defaults(&self) -> ScheduleDefaults {
        self.optim.schedule_defaults(self.eval_every)
    }

    /// Fine-tuning's schedule-derived defaults for a run of `steps` steps.
    pub fn schedule_for_steps(steps: u32) -> ScheduleDefaults {
        TrainConfig::default().schedule_defaults().scaled_to(steps)
    }

    /// Set the number of steps, and warm-up, milestones and the evaluation and checkpoint
    /// intervals with it ([`ScheduleDefaults`]' rule applied to this config's values).
    pub fn scale_schedule_to(&mut self, steps: u32) {
        self.eval_every = self.optim.scale_to(steps, self.eval_every);
    }
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
    if *init == InitConfig::ImagenetBackbone && !backbone.has_imagenet_weights() {
        return Err(err(
            field,
            "ImageNet weights are shipped only for efficientnet_lite0 and mobilenet_v2; start ResNets from scratch or a checkpoint",
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
    fn defaults_validate() {
        config().validate().unwrap();
    }

    #[test]
    fn bad_fields_are_named() {
        let mut c = config();
        c.optim.batch_size = 0;
        assert_eq!(c.validate().unwrap_err().field, "optim.batch_size");
        let mut c = config();
        c.backbone = BackboneKind::Resnet50;
        assert_eq!(c.validate().unwrap_err().field, "init");
        let mut c = config();
        c.backbone = BackboneKind::MobilenetV2;
        c.validate().unwrap();
        assert_eq!(
            serde_json::to_value(BackboneKind::MobilenetV2).unwrap(),
            "mobilenet_v2"
        );
        let mut c = config();
        c.train_split = "../x".into();
        assert_eq!(c.validate().unwrap_err().field, "train_split");
        assert!(serde_json::from_str::<TrainConfig>(r#"{"dataset_id": 1, "stepz": 3}"#).is_err());
        // The old flat shape is refused by name, not silently ignored.
        assert!(serde_json::from_str::<TrainConfig>(r#"{"dataset_id": 1, "steps": 3}"#).is_err());
    }

    #[test]
    fn schedule_defaults_follow_the_steps() {
        let d = TrainConfig::default();
        let at_default = TrainConfig::schedule_for_steps(d.optim.steps);
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
        let short = TrainConfig::schedule_for_steps(20);
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
        let long = TrainConfig::schedule_for_steps(5000);
        assert_eq!(long.warmup_steps, 100);
        assert_eq!(long.milestones, vec![3500, 4500]);
        assert_eq!((long.eval_every, long.checkpoint_every), (1250, 500));
        // One step: still a valid config.
        let one = TrainConfig::schedule_for_steps(1);
        assert_eq!(
            (one.warmup_steps, one.eval_every, one.checkpoint_every),
            (0, 1, 1)
        );
        assert_eq!(one.milestones, vec![1]);
        for steps in [1, 2, 3, 7, 20, 999, 1000, 1001, 10_000_000] {
            let mut c = config();
            c.scale_schedule_to(steps);
            assert_eq!(c.optim.steps, steps);
            assert_eq!(
                c.schedule_defaults(),
                TrainConfig::schedule_for_steps(steps)
            );
            c.validate()
                .unwrap_or_else(|e| panic!("{steps} steps: {e}"));
        }
    }
}
