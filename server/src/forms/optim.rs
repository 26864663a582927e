//! The optimisation and bookkeeping fields every training form has (fine-tune and both
//! pre-training kinds), as text, and their typed values (the config's nested [`OptimConfig`]).
//! Warm-up, milestones and
//! the checkpoint interval are blank by default and then follow the steps
//! ([`ScheduleDefaults`]' rule).

use super::{FieldError, comma_list, enum_of, number, number_list_or, real, wire_name};
use aligndet_common::optim_config::{
    LrSchedule, OptimConfig, OptimizerKind, Precision, ScheduleDefaults,
};

/// Form values when the schedule is switched away from the default's kind (the configs have
/// a default for only one of them).
pub const FORM_STEP_GAMMA: f64 = 0.1;
pub const FORM_COSINE_MIN_FACTOR: f64 = 0.0;

/// The optimisation and bookkeeping fields every training form has (fine-tune and both
/// pre-training kinds): the config's `optim`, whose field names the inputs carry.
#[derive(Default, serde::Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default)]
pub struct OptimForm {
    pub batch_size: String,
    pub steps: String,
    pub optimizer: String,
    pub lr: String,
    pub momentum: String,
    pub weight_decay: String,
    pub warmup_steps: String,
    /// `step` or `cosine`.
    pub schedule: String,
    /// Comma-separated milestone steps.
    pub milestones: String,
    pub gamma: String,
    pub min_factor: String,
    /// Blank: no clipping.
    pub grad_clip_norm: String,
    pub checkpoint_every: String,
    pub seed: String,
    pub loader_threads: String,
    /// `fp32`, `bf16` or `fp16`.
    pub precision: String,
    pub world_size: String,
    /// The kind's schedule at its default steps, from which blank warm-up, milestones and
    /// intervals are derived for the steps given (set by the kind's form, not posted).
    #[serde(skip)]
    pub reference: ScheduleDefaults,
}

/// The inputs of [`OptimForm`] (their `name`s).
pub const INPUTS: &[&str] = &[
    "batch_size",
    "steps",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "warmup_steps",
    "schedule",
    "milestones",
    "gamma",
    "min_factor",
    "grad_clip_norm",
    "checkpoint_every",
    "seed",
    "loader_threads",
    "precision",
    "world_size",
];

impl OptimForm {
    /// A training config's `optim` as form text, for a fresh form: the fields that follow the
    /// steps are left blank (their placeholders show what they will be).
    pub fn of_config(c: &OptimConfig, reference: ScheduleDefaults) -> OptimForm {
        let (schedule, gamma, min_factor) = match &c.schedule {
            LrSchedule::Step { gamma, .. } => ("step", *gamma, FORM_COSINE_MIN_FACTOR),
            LrSchedule::Cosine { min_factor } => ("cosine", FORM_STEP_GAMMA, *min_factor),
        };
        OptimForm {
            batch_size: c.batch_size.to_string(),
            steps: c.steps.to_string(),
            optimizer: wire_name(&c.optimizer),
            lr: c.lr.to_string(),
            momentum: c.momentum.to_string(),
            weight_decay: c.weight_decay.to_string(),
            warmup_steps: String::new(),
            schedule: schedule.into(),
            milestones: String::new(),
            gamma: gamma.to_string(),
            min_factor: min_factor.to_string(),
            grad_clip_norm: c.grad_clip_norm.map(|v| v.to_string()).unwrap_or_default(),
            checkpoint_every: String::new(),
            seed: c.seed.to_string(),
            loader_threads: c.loader_threads.to_string(),
            precision: wire_name(&c.precision),
            world_size: c.world_size.to_string(),
            reference,
        }
    }

    /// What blank warm-up, milestones and intervals become for the steps typed (the default
    /// steps when blank or not a number).
    pub fn derived(&self) -> ScheduleDefaults {
        let steps = self
            .steps
            .parse::<u32>()
            .ok()
            .filter(|&s| s > 0)
            .unwrap_or(self.reference.steps);
        self.reference.scaled_to(steps)
    }

    /// The milestones a blank field becomes, as list text (the field's placeholder; `none`
    /// when the kind's default schedule has none).
    pub fn milestones_placeholder(&self) -> String {
        let milestones = self.derived().milestones;
        if milestones.is_empty() {
            "none".into()
        } else {
            comma_list(&milestones)
        }
    }

    /// The reference milestones as list text (for the page's script).
    pub fn reference_milestones(&self) -> String {
        comma_list(&self.reference.milestones)
    }

    /// The typed values: a blank number keeps `d`'s (the config's default), except
    /// `grad_clip_norm` (blank: none) and warm-up, milestones and the checkpoint interval (blank:
    /// derived from the steps, [`ScheduleDefaults`]' rule). Ranges are the config's
    /// `validate`'s job.
    pub fn parse(&self, d: &OptimConfig) -> Result<OptimConfig, FieldError> {
        let steps = number::<u32>("optim.steps", &self.steps)?.unwrap_or(d.steps);
        let derived = self.reference.scaled_to(steps);
        let schedule = match self.schedule.as_str() {
            "step" => LrSchedule::Step {
                milestones: number_list_or(
                    "optim.schedule.milestones",
                    &self.milestones,
                    derived.milestones,
                )?,
                gamma: real("optim.schedule.gamma", &self.gamma)?.unwrap_or(FORM_STEP_GAMMA),
            },
            "cosine" => LrSchedule::Cosine {
                min_factor: real("optim.schedule.min_factor", &self.min_factor)?
                    .unwrap_or(FORM_COSINE_MIN_FACTOR),
            },
            other => {
                return Err(FieldError::new(
                    "optim.schedule",
                    format!("{other:?} is not one of step, cosine"),
                ));
            }
        };
        Ok(OptimConfig {
            optimizer: enum_of::<OptimizerKind>("optim.optimizer", &self.optimizer)?,
            batch_size: number("optim.batch_size", &self.batch_size)?.unwrap_or(d.batch_size),
            steps,
            loader_threads: number("optim.loader_threads", &self.loader_threads)?
                .unwrap_or(d.loader_threads),
            warmup_steps: number("optim.warmup_steps", &self.warmup_steps)?
                .unwrap_or(derived.warmup_steps),
            checkpoint_every: number("optim.checkpoint_every", &self.checkpoint_every)?
                .unwrap_or(derived.checkpoint_every),
            seed: number("optim.seed", &self.seed)?.unwrap_or(d.seed),
            lr: real("optim.lr", &self.lr)?.unwrap_or(d.lr),
            momentum: real("optim.momentum", &self.momentum)?.unwrap_or(d.momentum),
            weight_decay: real("optim.weight_decay", &self.weight_decay)?.unwrap_or(d.weight_decay),
            schedule,
            grad_clip_norm: real("optim.grad_clip_norm", &self.grad_clip_norm)?,
            precision: match self.precision.as_str() {
                "" => d.precision,
                text => enum_of::<Precision>("optim.precision", text)?,
            },
            world_size: number("optim.world_size", &self.world_size)?.unwrap_or(d.world_size),
        })
    }
}
