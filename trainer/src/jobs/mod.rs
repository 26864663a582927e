//! Job kinds: one entry point per kind, all reporting through one [`EventSink`].
//!
//! A job never knows whether its events go to a server (worker mode) or to JSON-lines files
//! (`trainer run`); it only calls the sink and checks [`JobContext::should_stop`] at safe points.

pub mod benchmark;
pub mod context;
pub mod evaluate;
pub mod finetune;
pub mod inputs;
pub mod local;
pub mod pretrain_box;
pub mod pretrain_image;
pub mod proposals;
pub mod ranks;
pub mod sink;

use aligndet_common::jobs::JobConfig;

pub use context::{JobContext, JobOutcome, ResumeState, own_checkpoint};
pub use inputs::{ArtifactSource, FolderArtifacts};
pub use local::{RunArgs, run_local};
pub use sink::{EventSink, StopFlag};

/// Run a job: as `optim.world_size` data-parallel ranks when its config asks for more than one
/// (this process is rank 0, [`ranks`]), otherwise here.
pub fn run_job(ctx: &mut JobContext<'_>) -> anyhow::Result<JobOutcome> {
    // Every loader decodes under the spec's limits (the server's, or the defaults offline).
    crate::data::augment::set_image_limits(ctx.spec.image_limits);
    let world_size = ctx.spec.config.optim().map_or(1, |o| o.world_size as usize);
    if let Some(optim) = ctx.spec.config.optim() {
        crate::train::precision::check_supported(optim.precision, ctx.device)?;
    }
    if world_size > 1 && crate::dist::current().is_none() {
        return ranks::run_as_rank_zero(ctx, world_size, dispatch);
    }
    dispatch(ctx)
}

/// The kind's entry point.
fn dispatch(ctx: &mut JobContext<'_>) -> anyhow::Result<JobOutcome> {
    match &ctx.spec.config {
        JobConfig::Benchmark(cfg) => benchmark::run(ctx, &cfg.clone()),
        JobConfig::Proposals(cfg) => proposals::run(ctx, &cfg.clone()),
        JobConfig::Evaluate(cfg) => evaluate::run(ctx, &cfg.clone()),
        JobConfig::Finetune(cfg) => finetune::run(ctx, &cfg.clone()),
        JobConfig::PretrainBox(cfg) => pretrain_box::run(ctx, &cfg.clone()),
        JobConfig::PretrainImage(cfg) => pretrain_image::run(ctx, &cfg.clone()),
    }
}

/// Log where the initial weights came from and store the load report as an artifact.
pub fn store_init_report(
    ctx: &mut JobContext<'_>,
    init: &crate::train::init::InitReport,
    artifact: &str,
) -> anyhow::Result<()> {
    ctx.log(format!(
        "initialised from {}: {} tensors loaded, {} missing, {} unexpected, {} shape mismatches",
        init.source,
        init.load.loaded.len(),
        init.load.missing.len(),
        init.load.unexpected.len(),
        init.load.shape_mismatch.len()
    ));
    ctx.store_report(artifact, init)
}

/// The device a job runs on and its ranks' devices, from `--device` and `--gpus 0,1,…`: with
/// `--gpus` (each visible), rank 0 runs on the first; without, ranks are placed from `--device`.
pub fn devices(
    device: &str,
    gpus: Option<&str>,
) -> anyhow::Result<(tch::Device, Vec<tch::Device>)> {
    let Some(list) = gpus else {
        return Ok((parse_device(device)?, Vec::new()));
    };
    let ranks: Vec<tch::Device> = list
        .split(',')
        .map(|i| parse_device(&format!("cuda:{}", i.trim())))
        .collect::<anyhow::Result<_>>()?;
    let first = *ranks
        .first()
        .ok_or_else(|| anyhow::anyhow!("--gpus names no GPU"))?;
    Ok((first, ranks))
}

/// Parse a device name given on the command line.
pub fn parse_device(name: &str) -> anyhow::Result<tch::Device> {
    match name {
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => Ok(tch::Device::Cuda(0)),
        other => {
            let idx = other
                .strip_prefix("cuda:")
                .and_then(|i| i.parse::<usize>().ok())
                .ok_or_else(|| {
                    anyhow::anyhow!("unknown device {other:?}: use cpu, cuda or cuda:N")
                })?;
            let available = tch::Cuda::device_count() as usize;
            if idx >= available {
                anyhow::bail!(
                    "device {other} requested but {available} CUDA device(s) are visible"
                );
            }
            Ok(tch::Device::Cuda(idx))
        }
    }
}
