//! Configuration of the two pre-training job kinds, shared by the server's forms and the trainer:
//!
//! - [`PretrainBoxConfig`] (`pretrain_box`): AlignDet's box-domain pre-training. The backbone is
//!   frozen; the neck and heads of the very detector that will be fine-tuned learn from the
//!   pseudo-boxes of a `proposals` run, with a box-level contrastive loss against a momentum
//!   copy plus box regression (method notes, sections 4–7).
//! - [`PretrainImageConfig`] (`pretrain_image`): MoCo v2-style image-domain self-supervision of
//!   the backbone alone, so that a detector can be pre-trained without any label.
//!
//! Defaults are the method's where they fit a CPU-sized run (temperature 0.5, EMA 0.996, 2,048
//! sampled points / anchors, 4,096 RoIs, SGD 0.01 with momentum 0.9 and weight decay 1e-4), with
//! one deviation: box-domain pre-training clips the gradient norm at 10 (the reference does not
//! clip, at 16 image pairs per step; at 2–4 pairs Faster R-CNN's box head diverged without it).

use crate::config_error::ConfigError;
use crate::optim_config::{LrSchedule, OptimConfig, OptimizerKind, Precision, ScheduleDefaults};
use crate::train_config::{
    BackboneKind, DetectorKind, InitConfig, validate_init, validate_split_name,
};
use serde::{Deserialize, Serialize};

fn err(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::new(field, problem)
}

/// The two-view augmentation of box-domain pre-training (method notes, section 3), at sizes a
/// run chooses: each view draws its own shorter side, flip and colour operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ViewsConfig {
    /// Shorter sides to draw from, one per view.
    pub min_sizes: Vec<u32>,
    /// Cap on the longer side.
    pub max_size: u32,
    pub hflip: bool,
    /// One of SoftTeacher's nine colour operations per view.
    pub color_ops: bool,
}

impl Default for ViewsConfig {
    fn default() -> Self {
        ViewsConfig {
            min_sizes: vec![480, 512, 544],
            max_size: 853,
            hflip: true,
            color_ops: true,
        }
    }
}

/// Which pseudo-boxes of an image take part (method notes, 2.3 and A1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxSelection {
    /// The first `max_boxes_per_image` in the proposals run's order (the reference's top-k).
    First,
    /// A fresh random subset every time the image is loaded (the deviation A1 recommends).
    Random,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainBoxConfig {
    pub dataset_id: i64,
    /// The `proposals` run whose kept pseudo-boxes are the pretext targets.
    pub proposals_run_id: i64,
    /// Images used (their labels are never read); `train` keeps the validation images unseen.
    pub split: String,
    /// The detector that will be fine-tuned: its neck and heads are what this run trains.
    pub detector: DetectorKind,
    pub backbone: BackboneKind,
    /// The frozen image-domain backbone: the shipped ImageNet weights, or a `pretrain_image`
    /// run's `backbone.safetensors`.
    pub backbone_init: InitConfig,
    /// Pseudo-boxes per image at most (0: all). The reference keeps 50 for RetinaNet.
    pub max_boxes_per_image: u32,
    pub box_selection: BoxSelection,
    pub views: ViewsConfig,
    /// Output size of the embedding projector.
    pub embedding_dim: u32,
    /// InfoNCE temperature τ.
    pub temperature: f64,
    /// m₀ of the momentum detector's cosine schedule (m goes from m₀ to 1).
    pub ema_momentum: f64,
    /// FCOS: points sampled per view over each group; RetinaNet: anchors per image;
    /// Faster R-CNN: RPN anchors and RoIs per image. Positives first, then negatives fill up.
    pub samples: u32,
    /// Image pairs per group, the reference's images per GPU: each group is padded, sampled,
    /// numbered (instance ids) and contrasted on its own (negatives come from its own images
    /// only), and the losses are the mean over groups. So results do not depend on how many
    /// processes share the batch, and one process reproduces the paper's 8 GPUs × 2 images.
    /// 0: the whole batch of each rank is one group.
    pub group_size: u32,
    pub contrastive_weight: f64,
    pub regression_weight: f64,
    /// Batch (image pairs), schedule, checkpoint cadence (online and momentum detectors with
    /// the optimizer state), seed and loader threads.
    pub optim: OptimConfig,
}

impl Default for PretrainBoxConfig {
    fn default() -> Self {
        PretrainBoxConfig {
            dataset_id: 0,
            proposals_run_id: 0,
            split: "train".into(),
            detector: DetectorKind::Fcos,
            backbone: BackboneKind::EfficientnetLite0,
            backbone_init: InitConfig::ImagenetBackbone,
            max_boxes_per_image: 0,
            box_selection: BoxSelection::First,
            views: ViewsConfig::default(),
            embedding_dim: 256,
            temperature: 0.5,
            ema_momentum: 0.996,
            samples: 2048,
            group_size: 2,
            contrastive_weight: 1.0,
            regression_weight: 1.0,
            optim: OptimConfig {
                batch_size: 4,
                steps: 1000,
                optimizer: OptimizerKind::Sgd,
                lr: 0.01,
                momentum: 0.9,
                weight_decay: 1e-4,
                warmup_steps: 100,
                schedule: LrSchedule::Step {
                    milestones: vec![667, 917],
                    gamma: 0.1,
                },
                grad_clip_norm: Some(10.0),
                checkpoint_every: 100,
                seed: 42,
                loader_threads: 2,
                precision: Precision::Fp32,
                world_size: 1,
            },
        }
    }
}

impl PretrainBoxConfig {
    /// This config's steps and the fields that follow them ([`ScheduleDefaults`]; no periodic
    /// evaluation).
    pub fn schedule_defaults(&self) -> ScheduleDefaults {
        self.optim.schedule_defaults(0)
    }

    /// The reference's per-detector settings: RetinaNet keeps the first 50 boxes, Faster R-CNN
    /// samples 4,096 RoIs and trains at lr 0.02 (method notes, table of section 7); Mask R-CNN
    /// pre-trains in Faster R-CNN's box-domain form (the reference has no mask branch there).
    pub fn for_detector(detector: DetectorKind) -> PretrainBoxConfig {
        let base = PretrainBoxConfig {
            detector,
            ..PretrainBoxConfig::default()
        };
        match detector {
            DetectorKind::Fcos => base,
            DetectorKind::Retinanet => PretrainBoxConfig {
                max_boxes_per_image: 50,
                ..base
            },
            DetectorKind::FasterRcnn | DetectorKind::MaskRcnn => PretrainBoxConfig {
                samples: 4096,
                optim: OptimConfig {
                    lr: 0.02,
                    ..base.optim.clone()
                },
                ..base
            },
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.dataset_id <= 0 {
            return Err(err("dataset_id", "choose a dataset"));
        }
        if self.proposals_run_id <= 0 {
            return Err(err(
                "proposals_run_id",
                "choose the proposals run whose pseudo-boxes to pre-train on",
            ));
        }
        validate_split_name("split", &self.split)?;
        validate_init("backbone_init", &self.backbone_init, self.backbone)?;
        let v = &self.views;
        if v.min_sizes.is_empty() || v.min_sizes.iter().any(|&s| !(32..=2048).contains(&s)) {
            return Err(err("views.min_sizes", "give 1 or more sizes in 32..=2048"));
        }
        if v.max_size < *v.min_sizes.iter().max().unwrap_or(&0) || v.max_size > 4096 {
            return Err(err("views.max_size", "must be ≥ every min size and ≤ 4096"));
        }
        if self.max_boxes_per_image > 10_000 {
            return Err(err("max_boxes_per_image", "must be 0 (all) to 10000"));
        }
        if self.group_size > 256 {
            return Err(err(
                "group_size",
                "must be 0 (the rank's whole batch) to 256",
            ));
        }
        let per_rank = self.optim.batch_size / self.optim.world_size.max(1);
        if self.optim.world_size > 1
            && (self.group_size == 0 || !per_rank.is_multiple_of(self.group_size))
        {
            return Err(err(
                "group_size",
                format!(
                    "with {} ranks each rank takes {per_rank} image pairs, which must be whole groups: choose a group size that divides {per_rank}",
                    self.optim.world_size
                ),
            ));
        }
        if !(8..=4096).contains(&self.embedding_dim) {
            return Err(err("embedding_dim", "must be 8..=4096"));
        }
        validate_contrast(self.temperature, "ema_momentum", self.ema_momentum)?;
        if !(16..=65_536).contains(&self.samples) {
            return Err(err("samples", "must be 16..=65536"));
        }
        for (field, w) in [
            ("contrastive_weight", self.contrastive_weight),
            ("regression_weight", self.regression_weight),
        ] {
            if !(0.0..=100.0).contains(&w) {
                return Err(err(field, "must be in [0, 100]"));
            }
        }
        self.optim.validate()
    }
}

/// MoCo v2 (He et al. 2020; Chen et al. 2020): a query encoder and a momentum key encoder, each
/// the backbone with global pooling and a 2-layer MLP projector, a queue of negative keys,
/// InfoNCE at temperature 0.2, and MoCo v2's augmentations (random resized crop, colour jitter,
/// grayscale, blur, flip).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainImageConfig {
    pub dataset_id: i64,
    /// Images used (labels are never read).
    pub split: String,
    pub backbone: BackboneKind,
    /// Start from scratch (fully self-supervised) or from a checkpoint's backbone.
    pub init: InitConfig,
    /// Side of the square crops.
    pub crop_size: u32,
    /// Negative keys kept in the queue.
    pub queue_size: u32,
    pub embedding_dim: u32,
    pub hidden_dim: u32,
    pub temperature: f64,
    /// Momentum of the key encoder (constant, as in MoCo).
    pub key_momentum: f64,
    pub optim: OptimConfig,
}

impl Default for PretrainImageConfig {
    fn default() -> Self {
        PretrainImageConfig {
            dataset_id: 0,
            split: "train".into(),
            backbone: BackboneKind::EfficientnetLite0,
            init: InitConfig::Scratch,
            crop_size: 128,
            queue_size: 4096,
            embedding_dim: 128,
            hidden_dim: 1024,
            temperature: 0.2,
            key_momentum: 0.999,
            optim: OptimConfig {
                batch_size: 32,
                steps: 2000,
                optimizer: OptimizerKind::Sgd,
                lr: 0.03,
                momentum: 0.9,
                weight_decay: 1e-4,
                warmup_steps: 0,
                schedule: LrSchedule::Cosine { min_factor: 0.0 },
                grad_clip_norm: None,
                checkpoint_every: 200,
                seed: 0,
                loader_threads: 2,
                precision: Precision::Fp32,
                world_size: 1,
            },
        }
    }
}

impl PretrainImageConfig {
    /// This config's steps and the fields that follow them ([`ScheduleDefaults`]; no periodic
    /// evaluation).
    pub fn schedule_defaults(&self) -> ScheduleDefaults {
        self.optim.schedule_defaults(0)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.dataset_id <= 0 {
            return Err(err("dataset_id", "choose a dataset"));
        }
        validate_split_name("split", &self.split)?;
        validate_init("init", &self.init, self.backbone)?;
        if !(32..=1024).contains(&self.crop_size) {
            return Err(err("crop_size", "must be 32..=1024"));
        }
        if self.queue_size > 1_000_000 {
            return Err(err("queue_size", "must be at most 1000000"));
        }
        if !self.queue_size.is_multiple_of(self.optim.batch_size.max(1)) {
            return Err(err("queue_size", "must be a multiple of the batch size"));
        }
        if !(8..=4096).contains(&self.embedding_dim) {
            return Err(err("embedding_dim", "must be 8..=4096"));
        }
        if !(8..=16_384).contains(&self.hidden_dim) {
            return Err(err("hidden_dim", "must be 8..=16384"));
        }
        validate_contrast(self.temperature, "key_momentum", self.key_momentum)?;
        self.optim.validate()?;
        if self.optim.batch_size < 2 {
            return Err(err(
                "optim.batch_size",
                "contrastive learning needs at least 2 images",
            ));
        }
        Ok(())
    }
}

/// What both pre-trainings' contrastive losses share: the InfoNCE temperature, and the momentum
/// of the slowly following encoder (`ema_momentum`, `key_momentum`).
fn validate_contrast(
    temperature: f64,
    momentum_field: &str,
    momentum: f64,
) -> Result<(), ConfigError> {
    if !(temperature > 0.0 && temperature <= 10.0) {
        return Err(err("temperature", "must be in (0, 10]"));
    }
    if !(0.0..=1.0).contains(&momentum) {
        return Err(err(momentum_field, "must be in [0, 1]"));
    }
    Ok(())
}

/// Fine-tuning from AlignDet weights: the reference's rule for SGD recipes is lr ×1.5 and weight
/// decay ÷2 (method notes, 8.3). Returns the (lr, weight decay) to offer as defaults.
pub fn aligned_finetune_hyperparameters(lr: f64, weight_decay: f64) -> (f64, f64) {
    (
        lr * ALIGNED_FINETUNE_LR_FACTOR,
        weight_decay / ALIGNED_FINETUNE_WD_DIVISOR,
    )
}

/// AlignDet's fine-tuning rule: the learning rate is multiplied by this ...
pub const ALIGNED_FINETUNE_LR_FACTOR: f64 = 1.5;
/// ... and the weight decay divided by this (the new-run page's script reads both).
pub const ALIGNED_FINETUNE_WD_DIVISOR: f64 = 2.0;

/// The `pseudo_boxes.json` artifact of a `proposals` run: every image's kept pseudo-boxes,
/// `[x, y, w, h]` in original pixels, in the run's order (which `BoxSelection::First` keeps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PseudoBoxes {
    pub strategy: String,
    pub images: Vec<ImagePseudoBoxes>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePseudoBoxes {
    pub image_id: i64,
    pub boxes: Vec<[f32; 4]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default box-domain config with its dataset and proposals run named.
    fn named_box_config() -> PretrainBoxConfig {
        PretrainBoxConfig {
            dataset_id: 1,
            proposals_run_id: 2,
            ..PretrainBoxConfig::default()
        }
    }

    #[test]
    fn defaults_validate_once_the_inputs_are_named() {
        named_box_config().validate().unwrap();
        assert_eq!(
            PretrainBoxConfig::default().validate().unwrap_err().field,
            "dataset_id"
        );
        let i = PretrainImageConfig {
            dataset_id: 1,
            ..PretrainImageConfig::default()
        };
        i.validate().unwrap();
    }

    #[test]
    fn per_detector_defaults_follow_the_reference() {
        assert_eq!(
            PretrainBoxConfig::for_detector(DetectorKind::Retinanet).max_boxes_per_image,
            50
        );
        assert_eq!(
            PretrainBoxConfig::for_detector(DetectorKind::FasterRcnn).samples,
            4096
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let ok = named_box_config();
        let c = PretrainBoxConfig {
            temperature: 0.0,
            ..ok.clone()
        };
        assert_eq!(c.validate().unwrap_err().field, "temperature");
        let c = PretrainBoxConfig {
            backbone: BackboneKind::Resnet50,
            ..ok.clone()
        };
        assert_eq!(c.validate().unwrap_err().field, "backbone_init");
        let i = PretrainImageConfig {
            dataset_id: 1,
            queue_size: 100,
            ..PretrainImageConfig::default()
        };
        assert_eq!(i.validate().unwrap_err().field, "queue_size");
        assert!(
            serde_json::from_str::<PretrainBoxConfig>(r#"{"dataset_id": 1, "tau": 3}"#).is_err()
        );
    }

    #[test]
    fn aligned_finetune_rule() {
        let (lr, wd) = aligned_finetune_hyperparameters(0.01, 1e-4);
        assert!((lr - 0.015).abs() < 1e-15 && (wd - 5e-5).abs() < 1e-18);
    }

    #[test]
    fn pretraining_schedules_scale_by_the_same_rule() {
        let b = PretrainBoxConfig::default().schedule_defaults();
        assert_eq!(b.scaled_to(1000), b, "the defaults at the default steps");
        let s = b.scaled_to(20);
        assert_eq!(s.milestones, vec![13, 18]);
        assert_eq!((s.warmup_steps, s.checkpoint_every), (2, 2));
        let i = PretrainImageConfig::default().schedule_defaults();
        assert_eq!(i.scaled_to(2000), i);
        assert_eq!(i.scaled_to(100).checkpoint_every, 10);
    }
}
