//! The `pretrain_image` job: MoCo v2 self-supervised pre-training of a backbone body on the
//! images of a dataset split (labels are never read). See `pretrain::moco` for the method and
//! `data::moco_aug` for the views.
//!
//! Metrics (step = optimizer steps done): `loss/contrastive`, `train/accuracy` (instance
//! discrimination top-1 against the queue), and what the training loop reports for every run
//! (`train/lr`, `train/grad_norm`, `train/images_per_s`, `train/data_wait_ms`, `time/*`).
//! Artifacts: `load_report.json`; `checkpoint.safetensors` every `checkpoint_every` steps
//! (query encoder under its own names, key encoder under `key_encoder.*`, the queue
//! `moco.queue` and its pointer, optimizer state); at the end `backbone.safetensors`: only the
//! query encoder's body under `backbone.body.*` (batch-norm running statistics included),
//! metadata format `aligndet-backbone`, which a `finetune` run loads with init
//! `{"from": "checkpoint", "artifact": {"run_id": …, "name": "backbone.safetensors"}}`.
//!
//! A re-claimed job restores its own checkpoint (both encoders, queue, optimizer) and continues
//! from that step; batches are a function of (seed, step), so it sees the same views.
//!
//! With `optim.world_size > 1` each rank takes its share of the global batch, its keys are
//! computed across the ranks (shuffle-BN, [`KeyShuffle`]) and every rank enqueues the whole
//! global batch's keys.

use super::{JobContext, JobOutcome};
use crate::data::detection::load_split;
use crate::data::loader::Loader;
use crate::data::moco_aug::{MocoAugConfig, MocoBatch, MocoLoaderConfig, moco_loader};
use crate::dist;
use crate::models::build::body_kind;
use crate::pretrain::moco::{KEY_PREFIX, KeyShuffle, Moco, QUEUE};
use crate::train::checkpoint::{read_metadata, write_tensors};
use crate::train::engine::{StepLosses, TrainStep, resume, run_loop, stores_results};
use crate::train::init::{BODY_PREFIX, initialise};
use crate::train::optim::{Optimizer, trainable_params};
use aligndet_common::artifacts;
use aligndet_common::pretrain_config::PretrainImageConfig;
use anyhow::Context;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tch::Tensor;

const OPTIM_PREFIX: &str = "optim.";

fn backbone_name(cfg: &PretrainImageConfig) -> String {
    serde_json::to_value(cfg.backbone)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", cfg.backbone))
}

fn metadata(
    cfg: &PretrainImageConfig,
    format: &str,
    step: u32,
) -> anyhow::Result<HashMap<String, String>> {
    Ok(HashMap::from([
        ("format".into(), format.into()),
        ("backbone".into(), backbone_name(cfg)),
        ("step".into(), step.to_string()),
        ("config".into(), serde_json::to_string(cfg)?),
    ]))
}

/// Everything a resumed run needs, in one file.
fn save_checkpoint(
    path: &Path,
    moco: &Moco,
    opt: &Optimizer,
    mut meta: HashMap<String, String>,
) -> anyhow::Result<()> {
    let mut tensors: Vec<(String, Tensor)> = moco.query_vs.variables().into_iter().collect();
    for (name, t) in moco.key_vs.variables() {
        tensors.push((format!("{KEY_PREFIX}{name}"), t));
    }
    tensors.push((QUEUE.into(), moco.queue.keys.shallow_clone()));
    for (k, t) in &opt.state {
        tensors.push((format!("{OPTIM_PREFIX}{k}"), t.shallow_clone()));
    }
    meta.insert("optimizer_step".into(), opt.step.to_string());
    meta.insert("queue_ptr".into(), moco.queue.ptr.to_string());
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    write_tensors(path, &tensors, meta)
}

/// Restore a checkpoint written by [`save_checkpoint`]; returns the step it was taken at.
fn restore_checkpoint(path: &Path, moco: &mut Moco, opt: &mut Optimizer) -> anyhow::Result<u32> {
    let meta = read_metadata(path)?;
    let tensors =
        Tensor::read_safetensors(path).with_context(|| format!("reading {}", path.display()))?;
    let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
    let device = moco.query_vs.device();
    let mut take = |name: &str, dst: &Tensor| -> anyhow::Result<()> {
        let src = by_name
            .remove(name)
            .with_context(|| format!("checkpoint {} lacks {name}", path.display()))?;
        anyhow::ensure!(
            src.size() == dst.size(),
            "checkpoint {name}: shape {:?}, model {:?}",
            src.size(),
            dst.size()
        );
        tch::no_grad(|| dst.shallow_clone().copy_(&src));
        Ok(())
    };
    for (name, var) in moco.query_vs.variables() {
        take(&name, &var)?;
    }
    for (name, var) in moco.key_vs.variables() {
        take(&format!("{KEY_PREFIX}{name}"), &var)?;
    }
    take(QUEUE, &moco.queue.keys)?;
    opt.state.clear();
    for (name, t) in by_name {
        if let Some(k) = name.strip_prefix(OPTIM_PREFIX) {
            opt.state.insert(k.to_string(), t.to_device(device));
        }
    }
    let num = |key: &str| meta.get(key).and_then(|s| s.parse::<u64>().ok());
    opt.step = num("optimizer_step").unwrap_or(0) as i64;
    moco.queue.ptr = num("queue_ptr").unwrap_or(0) as usize % moco.queue.len().max(1);
    num("step")
        .map(|s| s as u32)
        .context("the checkpoint's metadata has no step")
}

/// What the training loop needs of MoCo: the contrastive loss of two views, the queue update
/// after each step, and the checkpoint of both encoders and the queue.
struct MocoStep<'a> {
    cfg: &'a PretrainImageConfig,
    moco: &'a mut Moco,
    loader: Loader<MocoBatch>,
    /// This step's keys, enqueued once the optimizer has stepped.
    keys: Option<Tensor>,
}

impl TrainStep for MocoStep<'_> {
    type Batch = MocoBatch;

    fn next_batch(&mut self) -> anyhow::Result<MocoBatch> {
        self.loader.next_batch()
    }

    fn losses(&mut self, batch: MocoBatch, _step: u32) -> anyhow::Result<StepLosses> {
        let shuffle = dist::current().map(|group| {
            let optim = &self.cfg.optim;
            KeyShuffle::new(group, optim.batch_size as usize, optim.seed, batch.step)
        });
        let out = self
            .moco
            .forward(&batch.view_q, &batch.view_k, shuffle.as_ref())?;
        self.keys = Some(out.keys);
        Ok(StepLosses {
            terms: vec![("contrastive".to_string(), out.loss)],
            metrics: vec![("train/accuracy".to_string(), out.accuracy)],
        })
    }

    fn after_update(&mut self, _step: u32) -> anyhow::Result<Vec<(String, f64)>> {
        if let Some(keys) = self.keys.take() {
            self.moco.queue.enqueue(&keys);
        }
        Ok(Vec::new())
    }

    fn replicated(&self) -> Vec<(String, Tensor)> {
        self.moco.replicated()
    }

    fn save_checkpoint(&self, path: &Path, opt: &Optimizer, done: u32) -> anyhow::Result<()> {
        save_checkpoint(
            path,
            self.moco,
            opt,
            metadata(self.cfg, "aligndet-moco-checkpoint", done)?,
        )
    }
}

/// Only the query encoder's body, under `backbone.body.*`.
pub fn export_backbone(
    path: &Path,
    moco: &Moco,
    meta: HashMap<String, String>,
) -> anyhow::Result<usize> {
    let prefix = format!("{BODY_PREFIX}.");
    let mut tensors: Vec<(String, Tensor)> = moco
        .query_vs
        .variables()
        .into_iter()
        .filter(|(name, _)| name.starts_with(&prefix))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    write_tensors(path, &tensors, meta)?;
    Ok(tensors.len())
}

pub fn run(ctx: &mut JobContext<'_>, cfg: &PretrainImageConfig) -> anyhow::Result<JobOutcome> {
    cfg.validate()?;
    anyhow::ensure!(
        cfg.queue_size >= cfg.optim.batch_size,
        "queue_size ({}) must hold at least one batch ({}): its keys are the negatives",
        cfg.queue_size,
        cfg.optim.batch_size
    );
    let location = ctx.dataset()?;
    let split = Arc::new(load_split(&location, Some(&cfg.split))?);
    anyhow::ensure!(
        !split.samples.is_empty(),
        "split {:?} has no images",
        cfg.split
    );
    ctx.log(format!(
        "MoCo v2 pre-training of {:?} on {} images of split {} ({} steps of {} images, crop {}, queue {})",
        cfg.backbone,
        split.samples.len(),
        cfg.split,
        cfg.optim.steps,
        cfg.optim.batch_size,
        cfg.crop_size,
        cfg.queue_size
    ));

    tch::manual_seed(cfg.optim.seed as i64);
    let mut moco = Moco::new(
        ctx.device,
        body_kind(cfg.backbone),
        cfg.hidden_dim as i64,
        cfg.embedding_dim as i64,
        cfg.queue_size as i64,
        cfg.temperature,
        cfg.key_momentum,
    );
    let init = initialise(
        &mut moco.query_vs,
        &cfg.init,
        cfg.backbone,
        ctx.inputs,
        &ctx.work_dir,
    )?;
    super::store_init_report(ctx, &init, artifacts::LOAD_REPORT)?;
    moco.sync_key()?;

    // MoCo decays every parameter
    let params = trainable_params(&moco.query_vs, false);
    let mut opt = Optimizer::for_config(&cfg.optim, params);
    ctx.log(format!("{} in the query encoder", opt.describe_params()));

    let start_step = resume(ctx, |path| restore_checkpoint(path, &mut moco, &mut opt))?;

    let (mean, std) = moco.query.body.pixel_norm();
    let loader = moco_loader(
        split.clone(),
        MocoLoaderConfig {
            batch_size: cfg.optim.batch_size as usize,
            seed: cfg.optim.seed,
            aug: MocoAugConfig::moco_v2(cfg.crop_size),
            pixel_norm: (mean, std),
            threads: cfg.optim.loader_threads as usize,
            prefetch: 2 * cfg.optim.loader_threads as usize,
        },
        start_step as u64,
    )?;

    let started = Instant::now();
    let mut job = MocoStep {
        cfg,
        moco: &mut moco,
        loader,
        keys: None,
    };
    let outcome = run_loop(ctx, &cfg.optim, &mut opt, &mut job, start_step)?;
    if !stores_results(outcome) {
        return Ok(outcome);
    }
    drop(job);

    let path = ctx.work_dir.join(artifacts::PRETRAINED_BACKBONE);
    let n = export_backbone(
        &path,
        &moco,
        metadata(cfg, "aligndet-backbone", cfg.optim.steps)?,
    )?;
    ctx.sink.artifact(artifacts::PRETRAINED_BACKBONE, &path)?;
    ctx.log(format!(
        "wrote {}: {n} body tensors under {BODY_PREFIX}.* ({:.1} s of training)",
        artifacts::PRETRAINED_BACKBONE,
        started.elapsed().as_secs_f64()
    ));
    Ok(JobOutcome::Succeeded)
}
