//! Run artifacts: the one rule for their names, the names the jobs write and read, and how a
//! config points at another run's artifact.

use serde::{Deserialize, Serialize};

/// Fine-tuning: the final detector weights.
pub const MODEL: &str = "model.safetensors";
/// Every training job: weights, optimiser and job state for resumption.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// `pretrain_box`: the online detector without its pre-training predictors (projector,
/// regression and centerness convs), named as the fine-tuning detector names them.
pub const PRETRAINED_DETECTOR: &str = "pretrained.safetensors";
/// `pretrain_image`: the query encoder's backbone, under `backbone.body.*`.
pub const PRETRAINED_BACKBONE: &str = "backbone.safetensors";
/// `proposals`: the kept pseudo-boxes of every image, in the run's order.
pub const PSEUDO_BOXES: &str = "pseudo_boxes.json";
/// `proposals`: recall against the ground truth, by number of boxes and object size.
pub const RECALL: &str = "recall.json";
/// Fine-tuning: the final detections on the validation split, as COCO results.
pub const PREDICTIONS: &str = "predictions.json";
/// Fine-tuning and `evaluate`: the COCO evaluation report.
pub const EVAL_REPORT: &str = "eval.json";
/// Training from other weights: which tensors loaded, which were skipped and why.
pub const LOAD_REPORT: &str = "load_report.json";
/// `benchmark`: the timing summary.
pub const BENCHMARK: &str = "benchmark.json";

/// An artifact of a run, as a config names it (an `evaluate` job's detections, a checkpoint to
/// start from).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactRef {
    pub run_id: i64,
    pub name: String,
}

/// Artifact names are single path components of safe characters: they become file names in the
/// server's artifact store. Returns the reason a name is refused.
pub fn check_artifact_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err("artifact name must be 1 to 128 characters".into());
    }
    if name.starts_with('.') {
        return Err("artifact name must not start with '.'".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "artifact name contains the character {c:?}; allowed are A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_reject_traversal_and_odd_characters() {
        for bad in ["", "..", "../x", "a/b", ".hidden", "a\\b", "x y", "nul\0"] {
            assert!(check_artifact_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["model.safetensors", "ckpt-000100.pt", "metrics_v2.json"] {
            assert!(check_artifact_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn every_name_the_jobs_write_passes_the_rule() {
        for name in [
            MODEL,
            CHECKPOINT,
            PRETRAINED_DETECTOR,
            PRETRAINED_BACKBONE,
            PSEUDO_BOXES,
            RECALL,
            PREDICTIONS,
            EVAL_REPORT,
            LOAD_REPORT,
            BENCHMARK,
        ] {
            assert!(check_artifact_name(name).is_ok(), "{name}");
        }
    }
}
