//! The optimisation and bookkeeping fields every training form has (fine-tune and both
//! pre-training kinds), as text, and their typed values ([`Optim`]). Warm-up, milestones and
//! the checkpoint interval are blank by default and then follow the steps
//! ([`ScheduleDefaults`]' rule).

use super::{FieldError, comma_list, enum_of, json_text, number, number_list_or, real};
use aligndet_common::train_config::{LrSchedule, OptimizerKind, ScheduleDefaults};

/// Form values when the schedule is switched away from the default's kind (the configs have
/// a default for only one of them).
pub const FORM_STEP_GAMMA: f64 = 0.1;
pub const FORM_COSINE_MIN_FACTOR: f64 = 0.0;

/// The optimisation and bookkeeping fields every training form has (fine-tune and both
/// pre-training kinds). The names are the configs' JSON names, which are the same in
/// `TrainConfig`, `PretrainBoxConfig` and `PretrainImageConfig`, and so are the checks.
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
    /// The kind's schedule at its default steps, from which blank warm-up, milestones and
    /// intervals are derived for the steps given.
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
];

impl OptimForm {
    /// The fields of a serialised training config (any of the three kinds) as form text, for a
    /// fresh form: the fields that follow the steps are left blank (their placeholders show
    /// what they will be).
    pub fn of_config(c: &serde_json::Value, reference: ScheduleDefaults) -> OptimForm {
        let text = |k: &str| json_text(&c[k]);
        let schedule: Option<LrSchedule> = serde_json::from_value(c["schedule"].clone()).ok();
        let (schedule, milestones, gamma, min_factor) = match &schedule {
            Some(LrSchedule::Step { gamma, .. }) => {
                ("step", String::new(), *gamma, FORM_COSINE_MIN_FACTOR)
            }
            Some(LrSchedule::Cosine { min_factor }) => {
                ("cosine", String::new(), FORM_STEP_GAMMA, *min_factor)
            }
            None => (
                "step",
                String::new(),
                FORM_STEP_GAMMA,
                FORM_COSINE_MIN_FACTOR,
            ),
        };
        OptimForm {
            batch_size: text("batch_size"),
            steps: text("steps"),
            optimizer: text("optimizer"),
            lr: text("lr"),
            momentum: text("momentum"),
            weight_decay: text("weight_decay"),
            warmup_steps: String::new(),
            schedule: schedule.into(),
            milestones,
            gamma: gamma.to_string(),
            min_factor: min_factor.to_string(),
            grad_clip_norm: text("grad_clip_norm"),
            checkpoint_every: String::new(),
            seed: text("seed"),
            loader_threads: text("loader_threads"),
            reference,
        }
    }

    pub fn posted(
        field: &dyn Fn(&str) -> Option<String>,
        reference: ScheduleDefaults,
    ) -> OptimForm {
        let text = |k: &str| field(k).unwrap_or_default();
        OptimForm {
            batch_size: text("batch_size"),
            steps: text("steps"),
            optimizer: text("optimizer"),
            lr: text("lr"),
            momentum: text("momentum"),
            weight_decay: text("weight_decay"),
            warmup_steps: text("warmup_steps"),
            schedule: text("schedule"),
            milestones: text("milestones"),
            gamma: text("gamma"),
            min_factor: text("min_factor"),
            grad_clip_norm: text("grad_clip_norm"),
            checkpoint_every: text("checkpoint_every"),
            seed: text("seed"),
            loader_threads: text("loader_threads"),
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
    pub fn parse(&self, d: &Optim) -> Result<Optim, FieldError> {
        let steps = number::<u32>("steps", &self.steps)?.unwrap_or(d.steps);
        let derived = self.reference.scaled_to(steps);
        let schedule = match self.schedule.as_str() {
            "step" => LrSchedule::Step {
                milestones: number_list_or(
                    "schedule.milestones",
                    &self.milestones,
                    derived.milestones,
                )?,
                gamma: real("schedule.gamma", &self.gamma)?.unwrap_or(FORM_STEP_GAMMA),
            },
            "cosine" => LrSchedule::Cosine {
                min_factor: real("schedule.min_factor", &self.min_factor)?
                    .unwrap_or(FORM_COSINE_MIN_FACTOR),
            },
            other => {
                return Err(FieldError::new(
                    "schedule",
                    format!("{other:?} is not one of step, cosine"),
                ));
            }
        };
        Ok(Optim {
            optimizer: enum_of::<OptimizerKind>("optimizer", &self.optimizer)?,
            batch_size: number("batch_size", &self.batch_size)?.unwrap_or(d.batch_size),
            steps,
            loader_threads: number("loader_threads", &self.loader_threads)?
                .unwrap_or(d.loader_threads),
            warmup_steps: number("warmup_steps", &self.warmup_steps)?
                .unwrap_or(derived.warmup_steps),
            checkpoint_every: number("checkpoint_every", &self.checkpoint_every)?
                .unwrap_or(derived.checkpoint_every),
            seed: number("seed", &self.seed)?.unwrap_or(d.seed),
            lr: real("lr", &self.lr)?.unwrap_or(d.lr),
            momentum: real("momentum", &self.momentum)?.unwrap_or(d.momentum),
            weight_decay: real("weight_decay", &self.weight_decay)?.unwrap_or(d.weight_decay),
            schedule,
            grad_clip_norm: real("grad_clip_norm", &self.grad_clip_norm)?,
        })
    }
}

/// The optimisation and bookkeeping values, typed: the same fields (and names) in
/// `TrainConfig`, `PretrainBoxConfig` and `PretrainImageConfig` ([`optim_of`] and
/// [`set_optim`] move them in and out of a config).
#[derive(Debug, Clone, PartialEq)]
pub struct Optim {
    pub batch_size: u32,
    pub steps: u32,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub warmup_steps: u32,
    pub schedule: LrSchedule,
    pub grad_clip_norm: Option<f64>,
    pub checkpoint_every: u32,
    pub seed: u64,
    pub loader_threads: u32,
}

/// A training config's [`Optim`] values.
macro_rules! optim_of {
    ($c:expr) => {
        $crate::forms::optim::Optim {
            batch_size: $c.batch_size,
            steps: $c.steps,
            optimizer: $c.optimizer,
            lr: $c.lr,
            momentum: $c.momentum,
            weight_decay: $c.weight_decay,
            warmup_steps: $c.warmup_steps,
            schedule: $c.schedule.clone(),
            grad_clip_norm: $c.grad_clip_norm,
            checkpoint_every: $c.checkpoint_every,
            seed: $c.seed,
            loader_threads: $c.loader_threads,
        }
    };
}

/// Put [`Optim`] values into a training config.
macro_rules! set_optim {
    ($c:expr, $o:expr) => {{
        let o: $crate::forms::optim::Optim = $o;
        $c.batch_size = o.batch_size;
        $c.steps = o.steps;
        $c.optimizer = o.optimizer;
        $c.lr = o.lr;
        $c.momentum = o.momentum;
        $c.weight_decay = o.weight_decay;
        $c.warmup_steps = o.warmup_steps;
        $c.schedule = o.schedule;
        $c.grad_clip_norm = o.grad_clip_norm;
        $c.checkpoint_every = o.checkpoint_every;
        $c.seed = o.seed;
        $c.loader_threads = o.loader_threads;
    }};
}

pub(crate) use {optim_of, set_optim};
