//! Run kinds, statuses and job configs. One config type per job kind; adding a kind adds a
//! variant here, an entry point in the trainer and a section on the run page.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Lifecycle of a run. Stored as lower-case text in Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A terminal status never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// A status as the database stores it; an unknown text is refused by name.
impl TryFrom<String> for RunStatus {
    type Error = String;
    fn try_from(s: String) -> Result<RunStatus, String> {
        RunStatus::parse(&s).ok_or_else(|| format!("unknown run status {s:?}"))
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of job a worker can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// Forward + backward of a detection backbone on the worker's device, to compare workers.
    Benchmark,
    /// Selective-search pseudo-boxes over a whole dataset, with proposal recall.
    Proposals,
    /// COCO bbox evaluation of a detections file against a dataset (or one of its splits).
    Evaluate,
    /// Supervised training of a detector, with periodic evaluation and resumable checkpoints.
    Finetune,
    /// AlignDet box-domain pre-training of a detector's neck and heads on pseudo-boxes.
    PretrainBox,
    /// MoCo v2-style self-supervised pre-training of a backbone on a dataset's images.
    PretrainImage,
}

impl RunKind {
    pub const ALL: [RunKind; 6] = [
        RunKind::Benchmark,
        RunKind::Proposals,
        RunKind::Evaluate,
        RunKind::Finetune,
        RunKind::PretrainBox,
        RunKind::PretrainImage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Benchmark => "benchmark",
            RunKind::Proposals => "proposals",
            RunKind::Evaluate => "evaluate",
            RunKind::Finetune => "finetune",
            RunKind::PretrainBox => "pretrain_box",
            RunKind::PretrainImage => "pretrain_image",
        }
    }

    pub fn parse(s: &str) -> Option<RunKind> {
        RunKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A kind as the database stores it; an unknown text is refused by name.
impl TryFrom<String> for RunKind {
    type Error = String;
    fn try_from(s: String) -> Result<RunKind, String> {
        RunKind::parse(&s).ok_or_else(|| format!("unknown run kind {s:?}"))
    }
}

impl fmt::Display for RunKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

use crate::artifacts::ArtifactRef;
use crate::config_error::ConfigError;

fn config_error(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::new(field, problem)
}

/// The full, resolved config of a run: every default is filled in before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobConfig {
    Benchmark(BenchmarkConfig),
    Proposals(ProposalsConfig),
    Evaluate(EvaluateConfig),
    /// Supervised training of a detector (see [`crate::train_config`]).
    Finetune(crate::train_config::TrainConfig),
    /// AlignDet box-domain pre-training (see [`crate::pretrain_config`]).
    PretrainBox(crate::pretrain_config::PretrainBoxConfig),
    /// Image-domain self-supervised pre-training of a backbone.
    PretrainImage(crate::pretrain_config::PretrainImageConfig),
}

impl JobConfig {
    pub fn kind(&self) -> RunKind {
        match self {
            JobConfig::Benchmark(_) => RunKind::Benchmark,
            JobConfig::Proposals(_) => RunKind::Proposals,
            JobConfig::Evaluate(_) => RunKind::Evaluate,
            JobConfig::Finetune(_) => RunKind::Finetune,
            JobConfig::PretrainBox(_) => RunKind::PretrainBox,
            JobConfig::PretrainImage(_) => RunKind::PretrainImage,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            JobConfig::Benchmark(c) => c.validate(),
            JobConfig::Proposals(c) => c.validate(),
            JobConfig::Evaluate(c) => c.validate(),
            JobConfig::Finetune(c) => c.validate(),
            JobConfig::PretrainBox(c) => c.validate(),
            JobConfig::PretrainImage(c) => c.validate(),
        }
    }

    /// The optimisation settings of the training kinds (`None` for the others).
    pub fn optim(&self) -> Option<&crate::optim_config::OptimConfig> {
        match self {
            JobConfig::Finetune(c) => Some(&c.optim),
            JobConfig::PretrainBox(c) => Some(&c.optim),
            JobConfig::PretrainImage(c) => Some(&c.optim),
            JobConfig::Benchmark(_) | JobConfig::Proposals(_) | JobConfig::Evaluate(_) => None,
        }
    }

    /// The dataset this job reads, if any (for filtering runs by dataset).
    pub fn dataset_id(&self) -> Option<i64> {
        match self {
            JobConfig::Benchmark(_) => None,
            JobConfig::Proposals(c) => Some(c.dataset_id),
            JobConfig::Evaluate(c) => Some(c.dataset_id),
            JobConfig::Finetune(c) => Some(c.dataset_id),
            JobConfig::PretrainBox(c) => Some(c.dataset_id),
            JobConfig::PretrainImage(c) => Some(c.dataset_id),
        }
    }
}

/// An `evaluate` job: COCO bbox evaluation of a results file against a dataset split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateConfig {
    pub dataset_id: i64,
    /// `train`, `val` or a labeled subset of the dataset's splits; all images when absent.
    #[serde(default)]
    pub split: Option<String>,
    pub detections: ArtifactRef,
}

impl EvaluateConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(s) = &self.split
            && (s.is_empty() || s.len() > 100)
        {
            return Err(config_error("split", "must be 1 to 100 characters"));
        }
        crate::artifacts::check_artifact_name(&self.detections.name)
            .map_err(|e| config_error("detections.name", e))?;
        Ok(())
    }
}

/// Selective-search strategies: OpenCV-like `fast` and `quality`, and the single setting AlignDet's
/// pseudo-boxes were made with (`aligndet`: scale 300, sigma 0.9, min size 100, HSV).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStrategy {
    Fast,
    Quality,
    Aligndet,
}

impl ProposalStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalStrategy::Fast => "fast",
            ProposalStrategy::Quality => "quality",
            ProposalStrategy::Aligndet => "aligndet",
        }
    }
}

/// The AlignDet/SoCo pseudo-box filter (defaults: `ratio3size0008`), plus optional NMS and top-k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalFilterConfig {
    #[serde(default = "ProposalFilterConfig::default_min_side")]
    pub min_side: f64,
    #[serde(default = "ProposalFilterConfig::default_max_aspect")]
    pub max_aspect: f64,
    #[serde(default = "ProposalFilterConfig::default_max_relative_size")]
    pub max_relative_size: f64,
    #[serde(default)]
    pub nms_iou: Option<f64>,
    #[serde(default)]
    pub top_k: Option<u32>,
}

impl ProposalFilterConfig {
    fn default_min_side() -> f64 {
        32.0
    }
    fn default_max_aspect() -> f64 {
        3.0
    }
    fn default_max_relative_size() -> f64 {
        0.8
    }
}

impl Default for ProposalFilterConfig {
    fn default() -> Self {
        ProposalFilterConfig {
            min_side: Self::default_min_side(),
            max_aspect: Self::default_max_aspect(),
            max_relative_size: Self::default_max_relative_size(),
            nms_iou: None,
            top_k: None,
        }
    }
}

/// A `proposals` job: pseudo-boxes for every image of a dataset (or its first `max_images`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalsConfig {
    pub dataset_id: i64,
    #[serde(default = "ProposalsConfig::default_strategy")]
    pub strategy: ProposalStrategy,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub max_images: Option<u32>,
    #[serde(default)]
    pub filter: ProposalFilterConfig,
    /// Images per batch sent to the server (the unit of resumption).
    #[serde(default = "ProposalsConfig::default_chunk")]
    pub chunk_size: u32,
}

impl ProposalsConfig {
    fn default_strategy() -> ProposalStrategy {
        ProposalStrategy::Fast
    }
    fn default_chunk() -> u32 {
        16
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let f = &self.filter;
        if !(f.min_side >= 0.0 && f.min_side.is_finite()) {
            return Err(config_error(
                "filter.min_side",
                "must be a finite number ≥ 0",
            ));
        }
        if !(f.max_aspect >= 1.0 && f.max_aspect.is_finite()) {
            return Err(config_error(
                "filter.max_aspect",
                "must be a finite number ≥ 1",
            ));
        }
        if !(f.max_relative_size > 0.0 && f.max_relative_size <= 1.0) {
            return Err(config_error(
                "filter.max_relative_size",
                "must be in (0, 1]",
            ));
        }
        if f.nms_iou.is_some_and(|t| !(t > 0.0 && t <= 1.0)) {
            return Err(config_error("filter.nms_iou", "must be in (0, 1]"));
        }
        if f.top_k == Some(0) {
            return Err(config_error("filter.top_k", "must be at least 1"));
        }
        if !(1..=1024).contains(&self.chunk_size) {
            return Err(config_error("chunk_size", "must be between 1 and 1024"));
        }
        if self.max_images == Some(0) {
            return Err(config_error("max_images", "must be at least 1"));
        }
        Ok(())
    }
}

/// Backbones the benchmark can time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchmarkBackbone {
    Resnet18,
    Resnet50,
}

impl BenchmarkBackbone {
    pub fn as_str(self) -> &'static str {
        match self {
            BenchmarkBackbone::Resnet18 => "resnet18",
            BenchmarkBackbone::Resnet50 => "resnet50",
        }
    }
}

/// Worker benchmark: `steps` timed forward + backward passes after `warmup_steps` untimed ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkConfig {
    #[serde(default = "BenchmarkConfig::default_backbone")]
    pub backbone: BenchmarkBackbone,
    #[serde(default = "BenchmarkConfig::default_batch_size")]
    pub batch_size: u32,
    /// Square input side in pixels.
    #[serde(default = "BenchmarkConfig::default_resolution")]
    pub resolution: u32,
    #[serde(default = "BenchmarkConfig::default_steps")]
    pub steps: u32,
    #[serde(default = "BenchmarkConfig::default_warmup_steps")]
    pub warmup_steps: u32,
}

impl Default for BenchmarkConfig {
    fn default() -> Self {
        BenchmarkConfig {
            backbone: Self::default_backbone(),
            batch_size: Self::default_batch_size(),
            resolution: Self::default_resolution(),
            steps: Self::default_steps(),
            warmup_steps: Self::default_warmup_steps(),
        }
    }
}

impl BenchmarkConfig {
    fn default_backbone() -> BenchmarkBackbone {
        BenchmarkBackbone::Resnet18
    }
    fn default_batch_size() -> u32 {
        2
    }
    fn default_resolution() -> u32 {
        224
    }
    fn default_steps() -> u32 {
        20
    }
    fn default_warmup_steps() -> u32 {
        1
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=256).contains(&self.batch_size) {
            return Err(config_error("batch_size", "must be between 1 and 256"));
        }
        if !(32..=2048).contains(&self.resolution) || !self.resolution.is_multiple_of(32) {
            return Err(config_error(
                "resolution",
                "must be a multiple of 32 between 32 and 2048",
            ));
        }
        if !(1..=100_000).contains(&self.steps) {
            return Err(config_error("steps", "must be between 1 and 100000"));
        }
        if self.warmup_steps > 1000 {
            return Err(config_error("warmup_steps", "must be at most 1000"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benchmark_defaults_fill_in_and_round_trip() {
        let cfg: JobConfig = serde_json::from_str(r#"{"kind":"benchmark","steps":3}"#).unwrap();
        let JobConfig::Benchmark(b) = &cfg else {
            panic!("not a benchmark")
        };
        assert_eq!(b.steps, 3);
        assert_eq!(b.batch_size, BenchmarkConfig::default().batch_size);
        let back: JobConfig = serde_json::from_value(serde_json::to_value(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_rejected_with_the_field_named() {
        assert!(serde_json::from_str::<JobConfig>(r#"{"kind":"benchmark","stepz":3}"#).is_err());
        let cfg = BenchmarkConfig {
            resolution: 100,
            ..Default::default()
        };
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.field, "resolution");
    }

    #[test]
    fn status_strings_round_trip() {
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
        }
        assert!(RunStatus::Cancelled.is_terminal());
        assert!(!RunStatus::Running.is_terminal());
    }
}
