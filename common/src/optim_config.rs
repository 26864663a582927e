//! The optimisation and bookkeeping every training kind shares ([`OptimConfig`], nested as
//! `optim` in `TrainConfig`, `PretrainBoxConfig` and `PretrainImageConfig`): batch, steps,
//! optimizer, learning-rate schedule, clipping, checkpoint cadence, seed, loader threads, the
//! forward pass's precision and the number of data-parallel ranks.
//! One validation, one learning-rate rule ([`OptimConfig::lr_at`]) and one rule for the fields
//! that follow the number of steps ([`ScheduleDefaults`]).
//!
//! There is no `Default`: each kind has its own (fine-tuning trains 1,000 steps with a step
//! schedule, image-domain pre-training 2,000 with cosine), given by its config's `Default`. A
//! partial `optim` object in JSON is completed from the kind's defaults by
//! [`crate::jobs::JobConfig::from_json`]; deserialised on its own it must be complete.

use crate::config_error::ConfigError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Adamw,
}

impl OptimizerKind {
    pub const ALL: [OptimizerKind; 2] = [OptimizerKind::Sgd, OptimizerKind::Adamw];

    /// The name researchers write.
    pub fn label(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "SGD (momentum)",
            OptimizerKind::Adamw => "AdamW",
        }
    }
}

/// The forward pass's arithmetic. `bf16` and `fp16` autocast the forward (convolutions and
/// matrix products in 16 bits); losses, optimizer state, momentum copies and checkpoints stay
/// fp32. `fp16` needs CUDA and trains with a dynamic loss scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
    Fp16,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Bf16, Precision::Fp16];

    pub fn label(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16 autocast",
            Precision::Fp16 => "fp16 autocast + loss scaling (CUDA)",
        }
    }
}

/// Most data-parallel ranks one run may ask for.
pub const MAX_WORLD_SIZE: u32 = 64;

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// Multiply the rate by `gamma` at each milestone step.
    Step { milestones: Vec<u32>, gamma: f64 },
    /// Cosine decay from the base rate to `min_factor` × base at the last step.
    Cosine { min_factor: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Images per optimizer step over all ranks (image pairs for the pre-training kinds): the
    /// global batch, so that the learning rate does not depend on `world_size`.
    pub batch_size: u32,
    /// Optimizer steps in all.
    pub steps: u32,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    /// SGD momentum (ignored by AdamW, which uses β = (0.9, 0.999)).
    pub momentum: f64,
    pub weight_decay: f64,
    /// Linear warm-up from 0.001 × `lr` over this many steps.
    pub warmup_steps: u32,
    pub schedule: LrSchedule,
    /// Clip the global gradient norm to this value (none when absent).
    #[serde(default)]
    pub grad_clip_norm: Option<f64>,
    /// Save a resumable checkpoint (weights, optimizer and any momentum model) this often.
    pub checkpoint_every: u32,
    pub seed: u64,
    /// Data-loading threads (per rank).
    pub loader_threads: u32,
    #[serde(default)]
    pub precision: Precision,
    /// Data-parallel ranks, one process per device, each taking `batch_size / world_size` of
    /// every batch; 1 trains in one process.
    #[serde(default = "one")]
    pub world_size: u32,
}

/// The JSON key of [`OptimConfig`] in every training config; refused fields are named under it.
pub const OPTIM_KEY: &str = "optim";

fn err(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::new(&format!("{OPTIM_KEY}.{field}"), problem)
}

impl OptimConfig {
    /// Names the first field out of range (as `optim.<field>`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=256).contains(&self.batch_size) {
            return Err(err("batch_size", "must be 1..=256"));
        }
        if !(1..=10_000_000).contains(&self.steps) {
            return Err(err("steps", "must be 1..=10000000"));
        }
        if !(self.lr > 0.0 && self.lr < 10.0) {
            return Err(err("lr", "must be in (0, 10)"));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(err("momentum", "must be in [0, 1)"));
        }
        if !(0.0..1.0).contains(&self.weight_decay) {
            return Err(err("weight_decay", "must be in [0, 1)"));
        }
        if self.warmup_steps > self.steps {
            return Err(err("warmup_steps", "must not exceed steps"));
        }
        match &self.schedule {
            LrSchedule::Step { milestones, gamma } => {
                if milestones.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(err("schedule.milestones", "must be increasing"));
                }
                if !(*gamma > 0.0 && *gamma <= 1.0) {
                    return Err(err("schedule.gamma", "must be in (0, 1]"));
                }
            }
            LrSchedule::Cosine { min_factor } => {
                if !(0.0..=1.0).contains(min_factor) {
                    return Err(err("schedule.min_factor", "must be in [0, 1]"));
                }
            }
        }
        if let Some(c) = self.grad_clip_norm
            && !(c > 0.0 && c.is_finite())
        {
            return Err(err("grad_clip_norm", "must be positive"));
        }
        if self.checkpoint_every == 0 {
            return Err(err("checkpoint_every", "must be at least 1"));
        }
        if !(1..=64).contains(&self.loader_threads) {
            return Err(err("loader_threads", "must be 1..=64"));
        }
        if !(1..=MAX_WORLD_SIZE).contains(&self.world_size) {
            return Err(err("world_size", format!("must be 1..={MAX_WORLD_SIZE}")));
        }
        if !self.batch_size.is_multiple_of(self.world_size) {
            return Err(err(
                "batch_size",
                format!(
                    "{} images do not split evenly over {} ranks (world_size): use a multiple of {}",
                    self.batch_size, self.world_size, self.world_size
                ),
            ));
        }
        Ok(())
    }

    /// Learning rate at `step` (0-based): linear warm-up from 0.001 × `lr` over
    /// `warmup_steps`, then the schedule.
    pub fn lr_at(&self, step: u32) -> f64 {
        let base = self.lr;
        let lr = match &self.schedule {
            LrSchedule::Step { milestones, gamma } => {
                let passed = milestones.iter().filter(|&&m| step >= m).count() as i32;
                base * gamma.powi(passed)
            }
            LrSchedule::Cosine { min_factor } => {
                let t = step as f64 / self.steps.max(1) as f64;
                let f = min_factor
                    + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
                base * f
            }
        };
        if step < self.warmup_steps {
            let alpha = step as f64 / self.warmup_steps as f64;
            lr * (0.001 * (1.0 - alpha) + alpha)
        } else {
            lr
        }
    }

    /// Set the number of steps, with warm-up, milestones and the checkpoint interval following
    /// them by [`ScheduleDefaults`]' rule from these values; returns the kind's evaluation
    /// interval `eval_every` scaled by the same rule.
    pub fn scale_to(&mut self, steps: u32, eval_every: u32) -> u32 {
        self.schedule_defaults(eval_every)
            .scaled_to(steps)
            .apply_to(self)
    }

    /// These steps and the fields that follow them; `eval_every` is the kind's evaluation
    /// interval (0 for a kind without periodic evaluation).
    pub fn schedule_defaults(&self, eval_every: u32) -> ScheduleDefaults {
        ScheduleDefaults {
            steps: self.steps,
            warmup_steps: self.warmup_steps,
            milestones: match &self.schedule {
                LrSchedule::Step { milestones, .. } => milestones.clone(),
                LrSchedule::Cosine { .. } => Vec::new(),
            },
            eval_every,
            checkpoint_every: self.checkpoint_every,
        }
    }
}

/// The fields of a training config that follow its length (warm-up, step-schedule milestones,
/// evaluation and checkpoint intervals), and the one rule that derives them from the number of
/// steps when a form, an API call or the experiment planner leaves them out.
///
/// Each kind's defaults are stated for its default number of steps (the reference, e.g. 1000
/// steps with warm-up 100, milestones 700 and 900, evaluation every 250 and a checkpoint every
/// 100 for fine-tuning). For another number of steps [`ScheduleDefaults::scaled_to`] keeps each
/// value's fraction of the run, rounded to the nearest step:
///
/// - milestones: the same fractions (70 % and 90 % of the steps for fine-tuning), at least 1,
///   repeated ones dropped so they stay increasing;
/// - warm-up: the same fraction (a tenth), but never more than the default, since warm-up is
///   about the first iterations rather than the length of the schedule;
/// - evaluation and checkpoint intervals: the same fraction (every quarter and every tenth of
///   the run for fine-tuning), at least 1 (0 stays 0: the kind has no such interval).
///
/// At the reference steps every value is the default itself, so configs are unchanged there.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScheduleDefaults {
    pub steps: u32,
    pub warmup_steps: u32,
    /// Milestones of the step schedule (empty when the default schedule is cosine).
    pub milestones: Vec<u32>,
    /// 0 for the pre-training kinds, which have no periodic evaluation.
    pub eval_every: u32,
    pub checkpoint_every: u32,
}

impl ScheduleDefaults {
    /// The same schedule for a run of `steps` steps (the rule above).
    pub fn scaled_to(&self, steps: u32) -> ScheduleDefaults {
        let reference = u64::from(self.steps.max(1));
        let scale = |v: u32| -> u32 {
            let scaled = (u64::from(v) * u64::from(steps) + reference / 2) / reference;
            u32::try_from(scaled).unwrap_or(u32::MAX)
        };
        let interval = |v: u32| if v == 0 { 0 } else { scale(v).max(1) };
        let mut milestones: Vec<u32> = self.milestones.iter().map(|&m| scale(m).max(1)).collect();
        milestones.dedup();
        ScheduleDefaults {
            steps,
            warmup_steps: scale(self.warmup_steps).min(self.warmup_steps),
            milestones,
            eval_every: interval(self.eval_every),
            checkpoint_every: interval(self.checkpoint_every),
        }
    }

    /// Put these values into `optim` (the milestones only where its schedule is a step
    /// schedule); returns the evaluation interval for the caller's config.
    pub fn apply_to(&self, optim: &mut OptimConfig) -> u32 {
        optim.steps = self.steps;
        optim.warmup_steps = self.warmup_steps;
        optim.checkpoint_every = self.checkpoint_every;
        if let LrSchedule::Step { milestones, .. } = &mut optim.schedule {
            milestones.clone_from(&self.milestones);
        }
        self.eval_every
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn optim() -> OptimConfig {
        OptimConfig {
            batch_size: 4,
            steps: 100,
            optimizer: OptimizerKind::Sgd,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            warmup_steps: 10,
            schedule: LrSchedule::Step {
                milestones: vec![50, 80],
                gamma: 0.1,
            },
            grad_clip_norm: None,
            checkpoint_every: 10,
            seed: 0,
            loader_threads: 1,
            precision: Precision::Fp32,
            world_size: 1,
        }
    }

    /// [`optim`] with a cosine schedule and no warm-up.
    fn cosine_without_warmup(min_factor: f64) -> OptimConfig {
        OptimConfig {
            warmup_steps: 0,
            schedule: LrSchedule::Cosine { min_factor },
            ..optim()
        }
    }

    /// `c`'s learning rate at each (step, lr) given, to 1e-12.
    fn assert_lrs(c: &OptimConfig, expected: &[(u32, f64)]) {
        for &(step, lr) in expected {
            assert!((c.lr_at(step) - lr).abs() < 1e-12, "lr at step {step}");
        }
    }

    #[test]
    fn warmup_then_step_schedule() {
        assert_lrs(&optim(), &[(0, 0.0001), (10, 0.1), (50, 0.01), (99, 0.001)]);
    }

    #[test]
    fn cosine_ends_at_min_factor() {
        let c = OptimConfig {
            lr: 1.0,
            ..cosine_without_warmup(0.05)
        };
        assert_lrs(&c, &[(0, 1.0), (100, 0.05)]);
    }

    #[test]
    fn bad_fields_are_named_under_optim() {
        let c = OptimConfig {
            warmup_steps: 101,
            ..optim()
        };
        assert_eq!(c.validate().unwrap_err().field, "optim.warmup_steps");
        let c = OptimConfig {
            grad_clip_norm: Some(f64::NAN),
            ..optim()
        };
        assert_eq!(c.validate().unwrap_err().field, "optim.grad_clip_norm");
        assert!(serde_json::from_str::<OptimConfig>(r#"{"lr": 0.1}"#).is_err());
    }

    #[test]
    fn a_kind_without_evaluation_keeps_none() {
        let no_eval = OptimConfig {
            steps: 2000,
            checkpoint_every: 200,
            ..cosine_without_warmup(0.0)
        }
        .schedule_defaults(0);
        assert_eq!(no_eval.scaled_to(2000), no_eval);
        let s = no_eval.scaled_to(50);
        assert_eq!(
            (s.warmup_steps, s.eval_every, s.checkpoint_every),
            (0, 0, 5)
        );
        assert!(s.milestones.is_empty());
    }

    #[test]
    fn apply_to_keeps_a_cosine_schedule() {
        let mut c = OptimConfig {
            schedule: LrSchedule::Cosine { min_factor: 0.0 },
            ..optim()
        };
        let s = optim().schedule_defaults(25).scaled_to(20);
        assert_eq!(s.apply_to(&mut c), 5);
        assert_eq!((c.steps, c.warmup_steps, c.checkpoint_every), (20, 2, 2));
        assert_eq!(c.schedule, LrSchedule::Cosine { min_factor: 0.0 });
    }
}
