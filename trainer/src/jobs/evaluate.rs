//! The `evaluate` job: COCO bbox evaluation of a detections artifact against a dataset split.

use super::{JobContext, JobOutcome};
use aligndet_common::jobs::EvaluateConfig;

pub fn run(_ctx: &mut JobContext<'_>, cfg: &EvaluateConfig) -> anyhow::Result<JobOutcome> {
    cfg.validate()?;
    anyhow::bail!("the COCO evaluator is not wired in yet")
}
