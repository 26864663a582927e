//! The optimisation and bookkeeping fields every training form has (fine-tune and both
//! pre-training kinds), as text, and how they go into a config's JSON. Warm-up, milestones and
//! the checkpoint interval are blank by default and then follow the steps
//! ([`ScheduleDefaults`]' rule).

use super::{
    FieldError, comma_list, enum_value, json_text, number, number_list, put_number, put_real, real,
};
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
pub const INPUTS: [&str; 15] = [
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

    /// Put the fields into a config's JSON object (a blank number keeps what is there, except
    /// `grad_clip_norm`: blank is none, and warm-up, milestones and the checkpoint interval:
    /// blank follows the steps, [`OptimForm::derived`]). Ranges are the config's `validate`'s
    /// job.
    pub fn insert_into(
        &self,
        c: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), FieldError> {
        use serde_json::{Value, json};
        c.insert(
            "optimizer".into(),
            enum_value::<OptimizerKind>("optimizer", &self.optimizer)?,
        );
        for (key, v) in [
            ("batch_size", &self.batch_size),
            ("steps", &self.steps),
            ("loader_threads", &self.loader_threads),
        ] {
            put_number::<u32>(c, key, key, v)?;
        }
        let derived = self.derived_for_posted_steps(c);
        c.insert(
            "warmup_steps".into(),
            number::<u32>("warmup_steps", &self.warmup_steps)?
                .unwrap_or(derived.warmup_steps)
                .into(),
        );
        c.insert(
            "checkpoint_every".into(),
            number::<u32>("checkpoint_every", &self.checkpoint_every)?
                .unwrap_or(derived.checkpoint_every)
                .into(),
        );
        put_number::<u64>(c, "seed", "seed", &self.seed)?;
        for (key, v) in [
            ("lr", &self.lr),
            ("momentum", &self.momentum),
            ("weight_decay", &self.weight_decay),
        ] {
            put_real(c, key, key, v)?;
        }
        let schedule = match self.schedule.as_str() {
            "step" => json!({
                "kind": "step",
                "milestones": if self.milestones.is_empty() {
                    derived.milestones
                } else {
                    number_list::<u32>("schedule.milestones", &self.milestones)?
                },
                "gamma": real("schedule.gamma", &self.gamma)?.unwrap_or(FORM_STEP_GAMMA),
            }),
            "cosine" => json!({
                "kind": "cosine",
                "min_factor": real("schedule.min_factor", &self.min_factor)?
                    .unwrap_or(FORM_COSINE_MIN_FACTOR),
            }),
            other => {
                return Err(FieldError::new(
                    "schedule",
                    format!("{other:?} is not one of step, cosine"),
                ));
            }
        };
        c.insert("schedule".into(), schedule);
        c.insert(
            "grad_clip_norm".into(),
            real("grad_clip_norm", &self.grad_clip_norm)?.map_or(Value::Null, Value::from),
        );
        Ok(())
    }

    /// [`OptimForm::derived`] for the steps the config ends up with (typed, or the kind's
    /// default when blank).
    pub fn derived_for_posted_steps(
        &self,
        c: &serde_json::Map<String, serde_json::Value>,
    ) -> ScheduleDefaults {
        let steps = c
            .get("steps")
            .and_then(|v| v.as_u64())
            .and_then(|s| u32::try_from(s).ok())
            .filter(|&s| s > 0)
            .unwrap_or(self.reference.steps);
        self.reference.scaled_to(steps)
    }
}
