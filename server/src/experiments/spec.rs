//! What an experiment is made from ([`ExperimentSpec`]: the form's fields and
//! `POST /api/v1/experiments`'s body), its defaults ([`ExperimentSpec::resolved`]) and the checks
//! a spec must pass before its runs are planned ([`ExperimentSpec::validate`]).

use aligndet_common::pretrain_config::{
    PretrainBoxConfig, PretrainImageConfig, aligned_finetune_hyperparameters,
};
use aligndet_common::train_config::{BackboneKind, DetectorKind, TrainConfig};
use serde::{Deserialize, Serialize};

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
    /// Validation images each periodic evaluation of the fine-tunes scores (0: the whole split).
    #[serde(default)]
    pub eval_max_images: Option<u32>,
    /// Validation images the fine-tunes' final evaluation scores (0, the default: the whole
    /// split): tiny exploratory fine-tunes need not pay for a full evaluation each.
    #[serde(default)]
    pub final_eval_max_images: Option<u32>,
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

pub(crate) fn default_detector() -> DetectorKind {
    DetectorKind::Fcos
}
pub(crate) fn default_backbone() -> BackboneKind {
    BackboneKind::EfficientnetLite0
}
pub(crate) fn default_seeds() -> Vec<u64> {
    vec![1, 2, 3]
}
pub(crate) fn default_fractions() -> Vec<u32> {
    vec![5, 10]
}

/// The shorter side the default fine-tuning and view sizes are given at.
pub(crate) const DEFAULT_IMAGE_SIZE: u32 = 512;

/// The default (lr, weight decay) multipliers of the AlignDet arm.
pub(crate) fn default_multipliers() -> (f64, f64) {
    aligned_finetune_hyperparameters(1.0, 1.0)
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
    pub fn resolved(&self) -> ExperimentSpec {
        let ft = TrainConfig::default();
        let pb = PretrainBoxConfig::for_detector(self.detector);
        let pi = PretrainImageConfig::default();
        let (lr_m, wd_m) = default_multipliers();
        let mut s = self.clone();
        s.name = s.name.trim().to_string();
        let pretrains = s.pretrained_run_id.is_none();
        if s.label_free && pretrains {
            s.image_steps = s.image_steps.or(Some(pi.optim.steps));
            s.image_batch_size = s.image_batch_size.or(Some(pi.optim.batch_size));
            s.image_lr = s.image_lr.or(Some(pi.optim.lr));
        }
        if pretrains {
            s.pretrain_steps = s.pretrain_steps.or(Some(pb.optim.steps));
            s.pretrain_batch_size = s.pretrain_batch_size.or(Some(pb.optim.batch_size));
            s.pretrain_lr = s.pretrain_lr.or(Some(pb.optim.lr));
            s.pretrain_samples = s.pretrain_samples.or(Some(pb.samples));
        }
        s.image_size = s.image_size.or(Some(DEFAULT_IMAGE_SIZE));
        s.finetune_steps = s.finetune_steps.or(Some(ft.optim.steps));
        s.eval_max_images = s.eval_max_images.or(Some(ft.eval_max_images));
        s.final_eval_max_images = s.final_eval_max_images.or(Some(ft.final_eval_max_images));
        s.finetune_batch_size = s.finetune_batch_size.or(Some(ft.optim.batch_size));
        s.finetune_lr = s.finetune_lr.or(Some(ft.optim.lr));
        s.finetune_weight_decay = s.finetune_weight_decay.or(Some(ft.optim.weight_decay));
        s.lr_multiplier = s.lr_multiplier.or(Some(lr_m));
        s.wd_multiplier = s.wd_multiplier.or(Some(wd_m));
        s
    }

    /// The checks of a resolved spec that need no database: names, lists, numbers and the
    /// settings a reused pre-training fixes. The first problem is returned as `field: problem`.
    pub fn validate(&self) -> Result<(), String> {
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
        } else if !self.label_free && !self.backbone.has_imagenet_weights() {
            return Err("backbone: ImageNet weights are shipped only for efficientnet_lite0 and mobilenet_v2; choose one, or tick label-free image pre-training".into());
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
        let image_size = self.image_size.unwrap_or(DEFAULT_IMAGE_SIZE);
        if !(32..=2048).contains(&image_size) {
            return Err(format!("image_size: {image_size} px is outside 32..=2048"));
        }
        Ok(())
    }
}

fn has_duplicate<T: PartialEq>(v: &[T]) -> bool {
    v.iter().enumerate().any(|(i, a)| v[..i].contains(a))
}
