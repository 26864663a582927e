//! The one training loop every training job runs through (as torchvision's
//! `references/detection/engine.py`): fine-tuning and both pre-training kinds implement
//! [`TrainStep`] (build a batch's losses; update what is not in the optimizer; save their own
//! checkpoint) and keep only model and loader construction.
//!
//! The loop owns what they share: resumption from the run's own checkpoint ([`resume`]), the
//! stop check, the learning-rate schedule, gradient clipping, the bail on a non-finite loss, the
//! metric points every run reports, timing, progress lines, the checkpoint cadence, precision
//! (autocast, fp16's loss scale: [`super::precision`]) and data-parallel ranks ([`crate::dist`]:
//! gradients averaged after backward, the stop decided by all ranks, rank 0 alone reporting and
//! checkpointing). With one rank and fp32 it is the plain loop.

use super::device;
use super::health::{Health, Warning};
use super::optim::Optimizer;
use super::precision::{Autocast, LossScaler, as_fp32, check_supported};
use crate::dist;
use crate::jobs::context::{JobContext, JobOutcome, own_checkpoint};
use aligndet_common::api::MetricPoint;
use aligndet_common::artifacts;
use aligndet_common::optim_config::OptimConfig;
use anyhow::Context;
use std::path::Path;
use std::time::Instant;
use tch::Tensor;

/// A step's losses as a job computes them.
pub struct StepLosses {
    /// The named terms, each a scalar with its graph; the loss minimised is their sum.
    pub terms: Vec<(String, Tensor)>,
    /// More points of this step (`train/accuracy`, `pretrain/...`, per-phase timings).
    pub metrics: Vec<(String, f64)>,
}

/// What a training job supplies to [`run_loop`].
pub trait TrainStep {
    type Batch;

    /// The next batch of the job's loader (the loader started at the first step to run).
    fn next_batch(&mut self) -> anyhow::Result<Self::Batch>;

    /// The losses of `batch` at `step` (0-based), with their graph.
    fn losses(&mut self, batch: Self::Batch, step: u32) -> anyhow::Result<StepLosses>;

    /// After the optimizer's update of `step`: what the job updates itself (a momentum copy,
    /// a queue of keys); returns more points of this step.
    fn after_update(&mut self, _step: u32) -> anyhow::Result<Vec<(String, f64)>> {
        Ok(Vec::new())
    }

    /// What every rank must hold the same besides the optimizer's parameters (a momentum
    /// copy's parameters, MoCo's queue), named, in the same order on every rank. Rank 0's is
    /// broadcast at the start; the ranks' copies are compared at each checkpoint. Not batch-norm
    /// buffers: with batch statistics, each rank's running statistics are its own.
    fn replicated(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Write a resumable checkpoint to `path` after `done` steps: the job's weights, whatever
    /// else it needs to continue, and `opt`'s state.
    fn save_checkpoint(&self, path: &Path, opt: &Optimizer, done: u32) -> anyhow::Result<()>;

    /// Periodic work after `done` steps (evaluation), not after the last one.
    fn after_step(&mut self, _ctx: &mut JobContext<'_>, _done: u32) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The step to start from: 0 on a first attempt; otherwise the step of the checkpoint an earlier
/// attempt of this run stored, restored by `restore` (which returns that step).
pub fn resume(
    ctx: &mut JobContext<'_>,
    restore: impl FnOnce(&Path) -> anyhow::Result<u32>,
) -> anyhow::Result<u32> {
    let Some(path) = own_checkpoint(ctx)? else {
        return Ok(0);
    };
    let step = restore(&path).context("restoring the run's checkpoint")?;
    ctx.log(format!("resumed from the checkpoint at step {step}"));
    Ok(step)
}

/// The step recorded in a checkpoint's metadata (0 when it has none).
pub fn checkpoint_step(meta: &std::collections::HashMap<String, String>) -> u32 {
    meta.get("step").and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// After [`run_loop`]: whether this process goes on to store what the run produced. Only when
/// the loop ran every step, and only on rank 0 (the other ranks hold the same weights).
pub fn stores_results(outcome: JobOutcome) -> bool {
    outcome == JobOutcome::Succeeded && dist::rank() == 0
}

/// Train from `start_step` to `optim.steps`. `Stopped` when the run was asked to stop.
pub fn run_loop<S: TrainStep>(
    ctx: &mut JobContext<'_>,
    optim: &OptimConfig,
    opt: &mut Optimizer,
    job: &mut S,
    start_step: u32,
) -> anyhow::Result<JobOutcome> {
    check_supported(optim.precision, ctx.device)?;
    device::prepare(ctx.device);
    let named: Vec<(String, Tensor)> = opt
        .params
        .iter()
        .map(|p| (p.name.clone(), p.tensor.shallow_clone()))
        .collect();
    let params: Vec<Tensor> = named.iter().map(|(_, t)| t.shallow_clone()).collect();
    // What the ranks hold the same: the parameters and what the job keeps besides.
    let replicas = |job: &S| -> Vec<(String, Tensor)> {
        let ours = named.iter().map(|(n, t)| (n.clone(), t.shallow_clone()));
        ours.chain(job.replicated()).collect()
    };
    // Ranks start from rank 0's weights whatever their own initialisation drew.
    let replicated: Vec<Tensor> = replicas(job).into_iter().map(|(_, t)| t).collect();
    dist::broadcast_from_rank0(&replicated)?;
    let primary = dist::rank() == 0;
    let mut scaler = LossScaler::for_precision(optim.precision);
    let progress_every = (optim.steps / 20).max(1);
    let mut health = Health::new(optim);
    let warnings = health.at_start();
    warn(ctx, primary, warnings);
    for step in start_step..optim.steps {
        if dist::any_rank(ctx.should_stop())? {
            return Ok(JobOutcome::Stopped);
        }
        let t0 = Instant::now();
        let batch = job.next_batch()?;
        let wait = t0.elapsed();
        let StepLosses { terms, metrics } = {
            let _autocast = Autocast::enter(optim.precision, ctx.device);
            // libtorch's errors (a CUDA out-of-memory among them) arrive as panics
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.losses(batch, step)))
                .map_err(|panic| {
                    let what = panic_text(panic.as_ref());
                    let hint = device::out_of_memory_hint(&what, step, optim);
                    anyhow::anyhow!(hint.unwrap_or_else(|| format!("step {step}: {what}")))
                })??
        };
        if let Some(lost) = dist::take_error() {
            return Err(anyhow::Error::new(lost).context(format!("step {step}")));
        }
        let forward = t0.elapsed() - wait;
        anyhow::ensure!(!terms.is_empty(), "the step computed no loss");
        let terms: Vec<(String, Tensor)> =
            terms.into_iter().map(|(k, t)| (k, as_fp32(t))).collect();
        let total = terms
            .iter()
            .skip(1)
            .fold(terms[0].1.shallow_clone(), |acc, (_, t)| acc + t);
        // Reported values are the global batch's: the mean of the ranks' (see dist::normalizer),
        // the job's own measures too.
        let mut local: Vec<f64> = terms.iter().map(|(_, t)| t.double_value(&[])).collect();
        local.extend(metrics.iter().map(|(_, v)| *v));
        let mut values = dist::mean_over_ranks(&local)?;
        let metric_values = values.split_off(terms.len());
        let metrics: Vec<(String, f64)> = metrics
            .into_iter()
            .zip(metric_values)
            .map(|((k, _), v)| (k, v))
            .collect();
        let total_value: f64 = values.iter().sum();
        if !total_value.is_finite() {
            let shown: Vec<String> = terms
                .iter()
                .zip(&values)
                .map(|((k, _), v)| format!("{k} = {v}"))
                .collect();
            anyhow::bail!(
                "the loss diverged at step {step} ({}); lower the learning rate or add gradient clipping",
                shown.join(", ")
            );
        }
        let t_update = Instant::now();
        opt.zero_grad();
        match &scaler {
            Some(s) => s.scale_loss(&total).backward(),
            None => total.backward(),
        }
        dist::average_gradients(&params)?;
        let finite = match &mut scaler {
            Some(s) => s.unscale(&params.iter().map(Tensor::grad).collect::<Vec<_>>()),
            None => true,
        };
        let grad_norm = opt.clip_grad_norm(optim.grad_clip_norm.unwrap_or(f64::INFINITY));
        let lr = optim.lr_at(step);
        let before = (primary && health.measures_update(step))
            .then(|| tch::no_grad(|| params.iter().map(|p| p.detach().copy()).collect::<Vec<_>>()));
        // fp16: a step whose gradients overflowed is skipped (the scale has halved).
        if finite {
            opt.step(lr);
        }
        let update_ratio = before.map(|before| update_ratio(&before, &params));
        let mut after = job.after_update(step)?;
        if let Some(s) = &scaler {
            after.push(("train/amp_skipped_steps".to_string(), s.skipped as f64));
            after.push(("train/loss_scale".to_string(), s.scale));
        }
        let update = t_update.elapsed();

        let done = step + 1;
        let seconds = t0.elapsed().as_secs_f64();
        let mut points = vec![
            ("train/lr".to_string(), lr),
            ("train/grad_norm".to_string(), grad_norm),
            (
                "train/images_per_s".to_string(),
                optim.batch_size as f64 / seconds.max(1e-9),
            ),
            ("train/data_wait_ms".to_string(), millis(wait)),
            ("time/forward_ms".to_string(), millis(forward)),
            ("time/backward_update_ms".to_string(), millis(update)),
        ];
        // One term is its own total (`loss/contrastive` of image-domain pre-training).
        if terms.len() > 1 {
            points.push(("loss/total".to_string(), total_value));
        }
        for ((k, _), v) in terms.iter().zip(&values) {
            points.push((format!("loss/{k}"), *v));
        }
        points.extend(metrics);
        points.extend(after);
        if let Some(ratio) = update_ratio {
            points.push(("train/update_ratio".to_string(), ratio));
        }
        let mut warnings = Vec::new();
        points.retain(|(key, value)| {
            value.is_finite() || {
                warnings.extend(health.non_finite(key, step));
                false
            }
        });
        let named: Vec<(String, f64)> = terms
            .iter()
            .zip(&values)
            .map(|((k, _), v)| (k.clone(), *v))
            .collect();
        warnings.extend(health.observe(
            step,
            &named,
            millis(wait),
            millis(forward + update),
            update_ratio,
        ));
        warn(ctx, primary, warnings);
        let now = crate::jobs::sink::now_seconds();
        ctx.sink.metrics(
            points
                .into_iter()
                .map(|(key, value)| MetricPoint {
                    key,
                    step: done as i64,
                    value,
                    wall_time: now,
                })
                .collect(),
        );
        if done % progress_every == 0 || done == optim.steps {
            ctx.log(format!(
                "step {done}/{}: loss {total_value:.4}, lr {lr:.5}, {seconds:.2} s/step",
                optim.steps
            ));
        }
        if done % optim.checkpoint_every == 0 || done == optim.steps {
            // every rank takes part; a rank that drifted is an error, not a retry
            if let Some(n) = dist::check_replicas_agree(&replicas(job))? {
                ctx.log(format!("step {done}: the {n} ranks hold the same weights"));
            }
        }
        if done < optim.steps && primary {
            if done % optim.checkpoint_every == 0 {
                let path = ctx.work_dir.join(artifacts::CHECKPOINT);
                job.save_checkpoint(&path, opt, done)?;
                ctx.sink.artifact(artifacts::CHECKPOINT, &path)?;
            }
            job.after_step(ctx, done)?;
        }
    }
    Ok(JobOutcome::Succeeded)
}

/// Send health warnings (rank 0 speaks for the run).
fn warn(ctx: &mut JobContext<'_>, primary: bool, warnings: Vec<Warning>) {
    if primary {
        for w in warnings {
            ctx.sink.warning(&w.code, w.message);
        }
    }
}

/// How far the last update moved the weights, relative to their norm: ‖after − before‖ / ‖before‖.
/// Summed on the device and read once (one read per tensor would sync a GPU hundreds of times).
fn update_ratio(before: &[Tensor], after: &[Tensor]) -> f64 {
    tch::no_grad(|| {
        let sum_sq = |t: Tensor| t.square().sum(tch::Kind::Double);
        let moved: Vec<Tensor> = before
            .iter()
            .zip(after)
            .map(|(b, a)| sum_sq(a - b))
            .collect();
        let norm: Vec<Tensor> = before.iter().map(|b| sum_sq(b.shallow_clone())).collect();
        let moved = Tensor::stack(&moved, 0)
            .sum(tch::Kind::Double)
            .double_value(&[]);
        let norm = Tensor::stack(&norm, 0)
            .sum(tch::Kind::Double)
            .double_value(&[]);
        (moved / norm.max(f64::MIN_POSITIVE)).sqrt()
    })
}

/// The message a panic carried (libtorch's errors reach Rust as panics).
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".to_string())
}

fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::context::ResumeState;
    use crate::jobs::inputs::FolderArtifacts;
    use crate::jobs::sink::{EventSink, StopFlag};
    use crate::train::optim::Param;
    use aligndet_common::api::{ImageProposals, JobSpec};
    use aligndet_common::jobs::{BenchmarkConfig, JobConfig};
    use aligndet_common::optim_config::{LrSchedule, OptimizerKind, Precision};
    use tch::{Kind, Tensor};

    /// Everything a job reported.
    #[derive(Default)]
    struct Recorded {
        points: Vec<MetricPoint>,
        artifacts: Vec<String>,
        warnings: Vec<String>,
    }

    impl EventSink for Recorded {
        fn metrics(&mut self, points: Vec<MetricPoint>) {
            self.points.extend(points);
        }
        fn log_line(&mut self, level: &str, code: Option<&str>, _text: String) {
            if let Some(code) = code {
                assert_eq!(level, "warning");
                self.warnings.push(code.to_string());
            }
        }
        fn artifact(&mut self, name: &str, _path: &Path) -> anyhow::Result<()> {
            self.artifacts.push(name.to_string());
            Ok(())
        }
        fn proposals(&mut self, _images: Vec<ImageProposals>) {}
    }

    /// Fit w to 3: loss (w − 3)², a second term 0 · w, and a NaN at `nan_at`.
    struct Toy {
        w: Tensor,
        nan_at: Option<u32>,
        updates: u32,
    }

    impl TrainStep for Toy {
        type Batch = ();
        fn next_batch(&mut self) -> anyhow::Result<()> {
            Ok(())
        }
        fn losses(&mut self, _: (), step: u32) -> anyhow::Result<StepLosses> {
            let fit = (&self.w - 3.0).square().sum(Kind::Float);
            let bad = if self.nan_at == Some(step) {
                f64::NAN
            } else {
                0.0
            };
            Ok(StepLosses {
                terms: vec![
                    ("fit".into(), fit),
                    ("zero".into(), &self.w.sum(Kind::Float) * bad),
                ],
                metrics: vec![("toy/w".into(), self.w.double_value(&[0]))],
            })
        }
        fn after_update(&mut self, _step: u32) -> anyhow::Result<Vec<(String, f64)>> {
            self.updates += 1;
            Ok(vec![("toy/updates".into(), self.updates as f64)])
        }
        fn save_checkpoint(&self, _: &Path, _: &Optimizer, _done: u32) -> anyhow::Result<()> {
            Ok(())
        }
    }

    fn optim(steps: u32) -> OptimConfig {
        OptimConfig {
            batch_size: 1,
            steps,
            optimizer: OptimizerKind::Sgd,
            lr: 0.1,
            momentum: 0.0,
            weight_decay: 0.0,
            warmup_steps: 0,
            schedule: LrSchedule::Cosine { min_factor: 1.0 },
            grad_clip_norm: None,
            checkpoint_every: 4,
            seed: 0,
            loader_threads: 1,
            precision: Precision::Fp32,
            world_size: 1,
        }
    }

    fn train(toy: &mut Toy, steps: u32, stop: bool) -> (anyhow::Result<JobOutcome>, Recorded) {
        let config = serde_json::from_str::<BenchmarkConfig>("{}").unwrap();
        let spec = JobSpec::standalone(1, "toy", JobConfig::Benchmark(config));
        let mut sink = Recorded::default();
        let flag = StopFlag::default();
        if stop {
            flag.set();
        }
        let work = std::env::temp_dir().join(format!("aligndet-engine-{}", std::process::id()));
        std::fs::create_dir_all(&work).unwrap();
        let inputs = FolderArtifacts(None);
        let mut ctx = JobContext {
            spec: &spec,
            device: tch::Device::Cpu,
            rank_devices: Vec::new(),
            sink: &mut sink,
            work_dir: work,
            stop: flag,
            resume: ResumeState::default(),
            inputs: &inputs,
        };
        let param = Param {
            name: "w".into(),
            tensor: toy.w.shallow_clone(),
            decay: false,
        };
        let mut opt = Optimizer::new(OptimizerKind::Sgd, vec![param], 0.0, 0.0);
        let outcome = run_loop(&mut ctx, &optim(steps), &mut opt, toy, 0);
        (outcome, sink)
    }

    fn toy(nan_at: Option<u32>) -> Toy {
        Toy {
            w: Tensor::zeros([1], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true),
            nan_at,
            updates: 0,
        }
    }

    #[test]
    fn the_loop_trains_reports_and_checkpoints_on_its_cadence() {
        let mut t = toy(None);
        let (outcome, sink) = train(&mut t, 10, false);
        assert_eq!(outcome.unwrap(), JobOutcome::Succeeded);
        // SGD at lr 0.1 on (w − 3)²: w ← w + 0.2 (3 − w), ten times from 0.
        let expected = 3.0 * (1.0 - 0.8f64.powi(10));
        assert!((t.w.double_value(&[0]) - expected).abs() < 1e-5);
        assert_eq!(t.updates, 10);
        let keys = |step: i64| -> Vec<&str> {
            let mut k: Vec<&str> = sink
                .points
                .iter()
                .filter(|p| p.step == step)
                .map(|p| p.key.as_str())
                .collect();
            k.sort();
            k
        };
        for key in [
            "loss/total",
            "loss/fit",
            "loss/zero",
            "train/lr",
            "train/grad_norm",
            "train/images_per_s",
            "train/data_wait_ms",
            "time/forward_ms",
            "time/backward_update_ms",
            "toy/w",
            "toy/updates",
        ] {
            assert!(keys(1).contains(&key), "{key} at step 1: {:?}", keys(1));
        }
        // Checkpoints after steps 4 and 8, not after the last.
        assert_eq!(sink.artifacts, vec![artifacts::CHECKPOINT; 2]);
        // `zero` is 0 at every step, a flat term; `fit` falls.
        assert_eq!(sink.warnings, vec!["flat_loss/zero"]);
        assert!(keys(1).contains(&"train/update_ratio"));
    }

    #[test]
    fn a_non_finite_loss_names_its_terms_and_a_stop_stops() {
        let mut t = toy(Some(2));
        let (outcome, _) = train(&mut t, 10, false);
        let e = outcome.unwrap_err().to_string();
        assert!(
            e.contains("diverged at step 2") && e.contains("zero = NaN"),
            "{e}"
        );
        let mut t = toy(None);
        let (outcome, sink) = train(&mut t, 10, true);
        assert_eq!(outcome.unwrap(), JobOutcome::Stopped);
        assert!(sink.points.is_empty());
    }
}
