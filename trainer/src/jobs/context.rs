//! What a job entry point gets ([`JobContext`]) and how it ends ([`JobOutcome`]); kept apart
//! from the dispatch in `jobs/mod.rs` so that the training loop can use them without an import
//! circle.

use super::inputs::ArtifactSource;
use super::sink::{EventSink, StopFlag};
use aligndet_common::api::{DatasetLocation, JobSpec};
use aligndet_common::artifacts;
use anyhow::Context;
use serde::Serialize;
use std::path::PathBuf;

/// How a job ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Succeeded,
    /// Stopped early at the user's request (or because the worker lost the job's lease).
    Stopped,
}

/// Everything a job entry point gets.
pub struct JobContext<'a> {
    pub spec: &'a JobSpec,
    pub device: tch::Device,
    /// The devices a data-parallel job's ranks take, rank 0's first (`--gpus`); empty: CPU
    /// ranks share the CPU, CUDA ranks take consecutive GPUs from `device`.
    pub rank_devices: Vec<tch::Device>,
    pub sink: &'a mut dyn EventSink,
    /// Scratch folder for this attempt (checkpoints, artifacts before upload).
    pub work_dir: PathBuf,
    pub stop: StopFlag,
    /// What an earlier attempt already finished and stored (resumption).
    pub resume: ResumeState,
    /// Where job inputs stored as artifacts of other runs come from.
    pub inputs: &'a dyn ArtifactSource,
}

impl JobContext<'_> {
    pub fn should_stop(&self) -> bool {
        self.stop.is_set()
    }

    pub fn log(&mut self, text: impl Into<String>) {
        self.sink.log("info", text.into());
    }

    /// Store `value` as the JSON artifact `name`, indented: a report a person may open.
    pub fn store_report(&mut self, name: &str, value: &impl Serialize) -> anyhow::Result<()> {
        self.store_file(name, &serde_json::to_vec_pretty(value)?)
    }

    /// Store `value` as the JSON artifact `name`, compact: data that programs read (predictions,
    /// pseudo-boxes), often large.
    pub fn store_data(&mut self, name: &str, value: &impl Serialize) -> anyhow::Result<()> {
        self.store_file(name, &serde_json::to_vec(value)?)
    }

    fn store_file(&mut self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.work_dir.join(name);
        std::fs::write(&path, bytes)?;
        self.sink.artifact(name, &path)
    }

    /// Where the dataset the job reads lies; an error for a spec without one.
    pub fn dataset(&self) -> anyhow::Result<DatasetLocation> {
        self.spec
            .dataset
            .clone()
            .context("the job spec names no dataset")
    }
}

/// What a re-claimed job gets back from its earlier attempts.
#[derive(Debug, Clone, Default)]
pub struct ResumeState {
    /// Pseudo-boxes of images a `proposals` job already finished.
    pub proposals: Vec<aligndet_common::api::ImageProposals>,
}

/// The checkpoint an earlier attempt of this run stored (`checkpoint.safetensors`), written into
/// the work dir; `None` on a first attempt.
pub fn own_checkpoint(ctx: &JobContext<'_>) -> anyhow::Result<Option<PathBuf>> {
    let Some(bytes) = ctx
        .inputs
        .fetch_optional(ctx.spec.run_id, artifacts::CHECKPOINT)?
    else {
        return Ok(None);
    };
    let path = ctx.work_dir.join("resume.safetensors");
    std::fs::write(&path, bytes)?;
    Ok(Some(path))
}
