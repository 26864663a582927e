//! The `pretrain_box` job: AlignDet's box-domain pre-training (method notes, sections 4–7).
//!
//! The backbone comes from the image domain (ImageNet, or a `pretrain_image` run) and stays
//! frozen; the neck and heads of the detector that will be fine-tuned learn from the pseudo-boxes
//! of a `proposals` run. Each step: view 1 through the online detector (with gradients), view 2
//! through the momentum detector (no gradients), the box-level contrastive loss between their
//! embeddings by instance id plus the online view's regression terms, one optimizer step, then
//! the momentum detector's EMA update with m going from m₀ to 1 on a cosine.
//!
//! Metrics: `loss/total`, `loss/contrastive`, `loss/<regression term>`, `train/lr`,
//! `train/ema_momentum`, `train/grad_norm`, `train/images_per_s`, `train/data_wait_ms`,
//! `pretrain/positives`, `pretrain/negatives`, `pretrain/instances` (online view, sampled),
//! `pretrain/contrastive_chance` (the loss of uninformative embeddings at this step's counts),
//! `pretrain/top1_retrieval` and `pretrain/top1_chance` (cross-view nearest-key accuracy, and
//! a random pick's), `pretrain/weight_change` (‖w − w₀‖/‖w₀‖ of what transfers),
//! `time/online_forward_ms`, `time/momentum_forward_ms`, and the training loop's
//! `time/forward_ms` (both views and the loss) and `time/backward_update_ms` (with the EMA).
//! Artifacts: `backbone_load_report.json`, `checkpoint.safetensors` (online and momentum
//! detectors, optimizer state; resumable), and at the end `pretrained.safetensors`: the online
//! detector without its pre-training predictors, under the fine-tuning detector's names.

use super::{JobContext, JobOutcome};
use crate::data::detection::load_split;
use crate::data::loader::Loader;
use crate::models::build::body_kind;
use crate::pretrain::build::build_pretrainer;
use crate::pretrain::contrastive::{box_contrastive_loss, normalize};
use crate::pretrain::data::{PairBatch, PretrainSet, pair_loader, pretrain_set};
use crate::pretrain::detector::{BACKGROUND, BoxPretrainer, is_pretraining_only};
use crate::pretrain::ema::{averaged_variables, copy_all, ema_update, momentum_at};
use crate::train::checkpoint;
use crate::train::device::to_device;
use crate::train::engine::{
    StepLosses, TrainStep, checkpoint_step, resume, run_loop, stores_results,
};
use crate::train::init::{BODY_PREFIX, initialise};
use crate::train::optim::{Optimizer, Param, trainable_params};
use aligndet_common::artifacts;
use aligndet_common::pretrain_config::{PretrainBoxConfig, PseudoBoxes};
use anyhow::Context;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tch::{Tensor, nn};

/// The torch seed of one group of one step (distinct per step and group, reproducible across
/// attempts and ranks).
fn group_seed(seed: u64, step: u32, group: usize) -> i64 {
    let mut rng = crate::data::loader::rng_for(seed, u64::from(step), group as u64);
    rand::Rng::random::<i64>(&mut rng)
}

/// Where the momentum detector's weights live inside the checkpoint.
const MOMENTUM_PREFIX: &str = "momentum.";

fn metadata(
    cfg: &PretrainBoxConfig,
    step: u32,
    format: &str,
) -> anyhow::Result<HashMap<String, String>> {
    Ok(HashMap::from([
        ("format".into(), format.into()),
        ("step".into(), step.to_string()),
        ("config".into(), serde_json::to_string(cfg)?),
    ]))
}

/// One pre-training model with its variables.
struct Detector {
    vs: nn::VarStore,
    model: Box<dyn BoxPretrainer>,
}

fn build(cfg: &PretrainBoxConfig, device: tch::Device) -> Detector {
    let vs = nn::VarStore::new(device);
    let model = build_pretrainer(&vs.root(), cfg, body_kind(cfg.backbone));
    Detector { vs, model }
}

fn load_pseudo_boxes(ctx: &JobContext<'_>, cfg: &PretrainBoxConfig) -> anyhow::Result<PseudoBoxes> {
    let bytes = ctx
        .inputs
        .fetch(cfg.proposals_run_id, artifacts::PSEUDO_BOXES)
        .with_context(|| {
            format!(
                "reading the pseudo-boxes of proposals run {} (did it finish?)",
                cfg.proposals_run_id
            )
        })?;
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} of run {} is not a pseudo-boxes file",
            artifacts::PSEUDO_BOXES,
            cfg.proposals_run_id
        )
    })
}

/// What the training loop needs of box-domain pre-training: both views through the online and
/// the momentum detector and the box-level contrastive loss, the momentum detector's EMA update,
/// and the checkpoint of both detectors.
struct BoxStep<'a> {
    cfg: &'a PretrainBoxConfig,
    online: &'a Detector,
    target: &'a Detector,
    loader: Loader<PairBatch>,
    initial: TransferableWeights,
    device: tch::Device,
}

impl BoxStep<'_> {
    /// The losses of one group of image pairs (one GPU batch of the reference).
    fn group_losses(&self, batch: &PairBatch) -> StepLosses {
        let device = self.device;
        let to_device =
            |v: &[Tensor]| -> Vec<Tensor> { v.iter().map(|t| to_device(t, device)).collect() };
        let (online, target) = (&self.online.model, &self.target.model);
        let online_batch = online
            .transform()
            .pad_batch(&to_device(&batch.online.images));
        let target_batch = target
            .transform()
            .pad_batch(&to_device(&batch.target.images));
        let t_online = Instant::now();
        let out = online.forward_view(&online_batch, &to_device(&batch.online.boxes), true);
        let online_ms = t_online.elapsed().as_secs_f64() * 1e3;
        let t_target = Instant::now();
        let keys = tch::no_grad(|| {
            target.forward_view(&target_batch, &to_device(&batch.target.boxes), false)
        });
        let target_ms = t_target.elapsed().as_secs_f64() * 1e3;
        let contrastive = box_contrastive_loss(
            &out.embeddings,
            &out.instances,
            &keys.embeddings,
            &keys.instances,
            self.cfg.temperature,
            Some(BACKGROUND),
        ) * self.cfg.contrastive_weight;
        let mut terms = vec![("contrastive".to_string(), contrastive)];
        for (k, v) in out.losses {
            terms.push((k, v * self.cfg.regression_weight));
        }
        let (top1, top1_chance) = top1_retrieval(
            &out.embeddings,
            &out.instances,
            &keys.embeddings,
            &keys.instances,
        );
        let mut metrics: Vec<(String, f64)> = out
            .stats
            .iter()
            .map(|(k, v)| (format!("pretrain/{k}"), *v))
            .collect();
        metrics.extend([
            (
                "pretrain/contrastive_chance".to_string(),
                chance_level(&out.instances, &keys.instances),
            ),
            ("pretrain/top1_retrieval".to_string(), top1),
            ("pretrain/top1_chance".to_string(), top1_chance),
            (
                "pretrain/embedding_spread".to_string(),
                embedding_spread(&out.embeddings),
            ),
            ("time/online_forward_ms".to_string(), online_ms),
            ("time/momentum_forward_ms".to_string(), target_ms),
        ]);
        StepLosses { terms, metrics }
    }
}

impl TrainStep for BoxStep<'_> {
    type Batch = PairBatch;

    fn next_batch(&mut self) -> anyhow::Result<PairBatch> {
        self.loader.next_batch()
    }

    /// The mean over the batch's groups of each group's losses and measures (timings summed).
    /// The samplers draw from torch's generator, seeded per group with (seed, step, the group's
    /// index in the global batch): a step is a function of (seed, step), so a resumed run repeats
    /// the steps it had not saved exactly, and a group is the same whichever rank computes it.
    fn losses(&mut self, batch: PairBatch, step: u32) -> anyhow::Result<StepLosses> {
        let groups = batch.into_groups(self.cfg.group_size as usize);
        let first = crate::dist::rank() * groups.len();
        let n = groups.len() as f64;
        let mut total: Option<StepLosses> = None;
        for (g, group) in groups.iter().enumerate() {
            tch::manual_seed(group_seed(self.cfg.optim.seed, step, first + g));
            let part = self.group_losses(group);
            total = Some(match total {
                None => part,
                Some(mut acc) => {
                    for ((_, a), (_, b)) in acc.terms.iter_mut().zip(part.terms) {
                        *a = &*a + b;
                    }
                    for ((_, a), (_, b)) in acc.metrics.iter_mut().zip(part.metrics) {
                        *a += b;
                    }
                    acc
                }
            });
        }
        let mut mean = total.context("the batch has no image pairs")?;
        for (_, t) in mean.terms.iter_mut() {
            *t = &*t / n;
        }
        for (k, v) in mean.metrics.iter_mut() {
            if !k.starts_with("time/") {
                *v /= n;
            }
        }
        Ok(mean)
    }

    fn after_update(&mut self, step: u32) -> anyhow::Result<Vec<(String, f64)>> {
        let m = momentum_at(
            step as u64,
            self.cfg.optim.steps as u64,
            self.cfg.ema_momentum,
        );
        ema_update(&self.target.vs, &self.online.vs, m);
        Ok(vec![
            ("train/ema_momentum".to_string(), m),
            (
                "pretrain/weight_change".to_string(),
                self.initial.relative_change(),
            ),
        ])
    }

    fn replicated(&self) -> Vec<(String, Tensor)> {
        averaged_variables(&self.target.vs, MOMENTUM_PREFIX)
    }

    fn save_checkpoint(&self, path: &Path, opt: &Optimizer, done: u32) -> anyhow::Result<()> {
        save_checkpoint(path, self.cfg, self.online, self.target, opt, done)
    }
}

pub fn run(ctx: &mut JobContext<'_>, cfg: &PretrainBoxConfig) -> anyhow::Result<JobOutcome> {
    cfg.validate()?;
    let location = ctx.dataset()?;
    let split = load_split(&location, Some(&cfg.split))?;
    let pseudo = load_pseudo_boxes(ctx, cfg)?;
    let set: Arc<PretrainSet> = Arc::new(pretrain_set(&split, &pseudo)?);
    ctx.log(format!(
        "box-domain pre-training of {:?} on {:?}: {} images of split {} with {} pseudo-boxes \
         ({} without boxes and {} not covered by proposals run {} left out)",
        cfg.detector,
        cfg.backbone,
        set.images.len(),
        cfg.split,
        set.boxes,
        set.without_boxes,
        set.not_covered,
        cfg.proposals_run_id
    ));

    tch::manual_seed(cfg.optim.seed as i64);
    let mut online = build(cfg, ctx.device);
    let init = initialise(
        &mut online.vs,
        &cfg.backbone_init,
        cfg.backbone,
        ctx.inputs,
        &ctx.work_dir,
    )?;
    let body_missing: Vec<&String> = init
        .load
        .missing
        .iter()
        .filter(|n| n.starts_with(BODY_PREFIX))
        .collect();
    anyhow::ensure!(
        body_missing.is_empty(),
        "the backbone from {} lacks {} body tensors (e.g. {}): box-domain pre-training needs a complete image-domain backbone",
        init.source,
        body_missing.len(),
        body_missing[0]
    );
    super::store_init_report(ctx, &init, "backbone_load_report.json")?;

    // the backbone is frozen: no gradient, never in the optimizer
    for (name, t) in online.vs.variables() {
        if name.starts_with(BODY_PREFIX) {
            let _ = t.set_requires_grad(false);
        }
    }
    let mut target = build(cfg, ctx.device);
    copy_all(&mut target.vs, &online.vs)?;
    for (_, t) in target.vs.variables() {
        let _ = t.set_requires_grad(false);
    }
    let params = trainable_params(&online.vs, true);
    // Taken before a checkpoint is restored: the build is seeded, so this is the initialisation
    // on every attempt.
    let initial = TransferableWeights::snapshot(&params);
    let mut opt = Optimizer::for_config(&cfg.optim, params);
    ctx.log(format!("{} in the neck and heads", opt.describe_params()));

    let start_step = resume(ctx, |path| {
        let meta = checkpoint::restore(path, &mut online.vs, &mut opt)?;
        checkpoint::restore_prefixed(path, MOMENTUM_PREFIX, &mut target.vs)
            .context("restoring the momentum detector")?;
        Ok(checkpoint_step(&meta))
    })?;

    let mut job = BoxStep {
        cfg,
        online: &online,
        target: &target,
        loader: pair_loader(set.clone(), cfg, start_step as u64),
        initial,
        device: ctx.device,
    };
    let outcome = run_loop(ctx, &cfg.optim, &mut opt, &mut job, start_step)?;
    if !stores_results(outcome) {
        return Ok(outcome);
    }
    drop(job);

    let path = ctx.work_dir.join(artifacts::PRETRAINED_DETECTOR);
    let kept = export_pretrained(
        &path,
        &online.vs,
        metadata(cfg, cfg.optim.steps, "aligndet-pretrained-detector")?,
    )?;
    ctx.sink.artifact(artifacts::PRETRAINED_DETECTOR, &path)?;
    ctx.log(format!(
        "wrote {}: {} tensors (backbone, neck and heads; the pre-training predictors left out)",
        artifacts::PRETRAINED_DETECTOR,
        kept
    ));
    Ok(JobOutcome::Succeeded)
}

/// The online and momentum detectors and the optimizer state, in one resumable file.
fn save_checkpoint(
    path: &std::path::Path,
    cfg: &PretrainBoxConfig,
    online: &Detector,
    target: &Detector,
    opt: &Optimizer,
    step: u32,
) -> anyhow::Result<()> {
    let momentum: Vec<(String, Tensor)> = target
        .vs
        .variables()
        .into_iter()
        .map(|(k, v)| (format!("{MOMENTUM_PREFIX}{k}"), v))
        .collect();
    checkpoint::save_with_extra(
        path,
        &online.vs,
        Some(opt),
        momentum,
        metadata(cfg, step, "aligndet-pretrain-checkpoint")?,
    )
}

/// The contrastive loss that embeddings carrying no information would get: the mean over
/// foreground queries of ln(1 + their number of negatives). The loss itself depends on how many
/// samples a step has (Faster R-CNN's RoI count grows as its RPN learns), so charts show both.
pub fn chance_level(online: &Tensor, target: &Tensor) -> f64 {
    let fg = online.ge(0);
    if fg.sum(tch::Kind::Int64).int64_value(&[]) == 0 {
        return 0.0;
    }
    let q = online.masked_select(&fg).unsqueeze(1);
    let negatives = q
        .ne_tensor(&online.unsqueeze(0))
        .sum_dim_intlist(1, false, tch::Kind::Float)
        + q.ne_tensor(&target.unsqueeze(0))
            .sum_dim_intlist(1, false, tch::Kind::Float);
    negatives.log1p().mean(tch::Kind::Float).double_value(&[])
}

/// The transferable trainable weights (what fine-tuning will load) next to their initial values.
/// How far pre-training moved them tells whether it had time to matter: a run whose neck and
/// heads stayed within a few percent of their random initialisation transfers little more than
/// that initialisation.
struct TransferableWeights(Vec<(Tensor, Tensor)>);

impl TransferableWeights {
    fn snapshot(params: &[Param]) -> Self {
        TransferableWeights(
            params
                .iter()
                .filter(|p| !is_pretraining_only(&p.name))
                .map(|p| (p.tensor.shallow_clone(), p.tensor.detach().copy()))
                .collect(),
        )
    }

    /// ‖w − w₀‖ / ‖w₀‖ over all of them.
    fn relative_change(&self) -> f64 {
        tch::no_grad(|| {
            let (mut moved, mut size) = (0f64, 0f64);
            for (now, init) in &self.0 {
                moved += (now - init)
                    .square()
                    .sum(tch::Kind::Double)
                    .double_value(&[]);
                size += init.square().sum(tch::Kind::Double).double_value(&[]);
            }
            if size > 0.0 {
                (moved / size).sqrt()
            } else {
                0.0
            }
        })
    }
}

/// Cross-view retrieval: the share of foreground online samples whose most similar momentum
/// embedding (cosine, over every target sample, background included) has the same instance id,
/// and what a random pick would score (the mean share of same-id targets). Unlike the loss it
/// does not move with the number of samples, so it shows learning when the RoI count grows.
pub fn top1_retrieval(
    online: &Tensor,
    online_ids: &Tensor,
    target: &Tensor,
    target_ids: &Tensor,
) -> (f64, f64) {
    tch::no_grad(|| {
        let fg = online_ids.ge(0).nonzero().squeeze_dim(1);
        let n = fg.size()[0];
        if n == 0 || target.size()[0] == 0 {
            return (0.0, 0.0);
        }
        let q = normalize(&online.index_select(0, &fg));
        let k = normalize(target);
        let ids = online_ids.index_select(0, &fg);
        let (mut hits, mut chance) = (0f64, 0f64);
        // Row chunks keep the similarity matrix small (RetinaNet samples thousands per view).
        let chunk = 1024;
        for start in (0..n).step_by(chunk as usize) {
            let len = chunk.min(n - start);
            let rows = q.narrow(0, start, len);
            let row_ids = ids.narrow(0, start, len);
            let best = rows.matmul(&k.tr()).argmax(1, false);
            let same = row_ids
                .unsqueeze(1)
                .eq_tensor(&target_ids.unsqueeze(0))
                .to_kind(tch::Kind::Float);
            hits += target_ids
                .index_select(0, &best)
                .eq_tensor(&row_ids)
                .sum(tch::Kind::Float)
                .double_value(&[]);
            chance += same
                .mean_dim(1, false, tch::Kind::Float)
                .sum(tch::Kind::Float)
                .double_value(&[]);
        }
        (hits / n as f64, chance / n as f64)
    })
}

/// A collapse monitor (as SimSiam's): the per-dimension standard deviation across samples of
/// the L2-normalised online embeddings, times √d. About 1 when they spread over the sphere,
/// 0 when every sample maps to the same point, whatever the loss says.
pub fn embedding_spread(embeddings: &Tensor) -> f64 {
    let (n, d) = (embeddings.size()[0], embeddings.size()[1]);
    if n < 2 || d == 0 {
        return 0.0;
    }
    tch::no_grad(|| {
        normalize(embeddings)
            .std_dim(0, true, false)
            .mean(tch::Kind::Float)
            .double_value(&[])
            * (d as f64).sqrt()
    })
}

/// Write the online detector minus its pre-training-only modules; returns the tensor count.
pub fn export_pretrained(
    path: &std::path::Path,
    vs: &nn::VarStore,
    metadata: HashMap<String, String>,
) -> anyhow::Result<usize> {
    let mut tensors: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(k, _)| !is_pretraining_only(k))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let n = tensors.len();
    checkpoint::write_tensors(path, &tensors, metadata)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_spread_is_zero_when_collapsed_and_near_one_when_spread() {
        tch::manual_seed(0);
        let same = Tensor::ones([64, 32], (tch::Kind::Float, tch::Device::Cpu)) * 3.0;
        assert!(embedding_spread(&same) < 1e-6);
        // i.i.d. Gaussian directions are uniform on the sphere: each coordinate has std 1/√d
        let spread = Tensor::randn([4096, 32], (tch::Kind::Float, tch::Device::Cpu));
        let s = embedding_spread(&spread);
        assert!((s - 1.0).abs() < 0.05, "{s}");
        assert_eq!(embedding_spread(&spread.narrow(0, 0, 1)), 0.0);
    }

    #[test]
    fn chance_level_counts_the_negatives_of_each_query() {
        let online = Tensor::from_slice(&[0i64, 0, 1, -1]);
        let target = Tensor::from_slice(&[0i64, 1]);
        // label 0: 3 negatives (1, −1 online; 1 in the target); label 1: 4 (0, 0, −1; 0)
        let expected = (2.0 * 4f64.ln() + 5f64.ln()) / 3.0;
        assert!((chance_level(&online, &target) - expected).abs() < 1e-6);
        assert_eq!(chance_level(&Tensor::from_slice(&[-1i64]), &target), 0.0);
    }

    #[test]
    fn top1_retrieval_counts_same_instance_nearest_keys() {
        // Online samples: ids 0, 1, background; targets: ids 0, 1, background.
        let online = Tensor::from_slice(&[1f32, 0., 0., 1., 1., 1.]).view([3, 2]);
        let online_ids = Tensor::from_slice(&[0i64, 1, -1]);
        // Target 0 is nearest to online 0 (a hit); online 1's nearest is the background (a miss).
        let target = Tensor::from_slice(&[1f32, 0.1, -1., 0.2, 0.2, 1.]).view([3, 2]);
        let target_ids = Tensor::from_slice(&[0i64, 1, -1]);
        let (top1, chance) = top1_retrieval(&online, &online_ids, &target, &target_ids);
        assert!((top1 - 0.5).abs() < 1e-9, "{top1}");
        assert!((chance - 1.0 / 3.0).abs() < 1e-6, "{chance}");
        let none = Tensor::from_slice(&[-1i64, -1, -1]);
        assert_eq!(
            top1_retrieval(&online, &none, &target, &target_ids),
            (0.0, 0.0)
        );
    }
}
