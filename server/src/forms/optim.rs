//! The optimisation and bookkeeping fields every training form has (fine-tune and both
//! pre-training kinds), as text, and how they go into a config's JSON.

use super::{comma_list, enum_value, json_text, number_list, put_number, put_real, real};
use aligndet_common::train_config::{LrSchedule, OptimizerKind};

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
}

impl OptimForm {
    /// The fields of a serialised training config (any of the three kinds) as form text.
    pub fn of_config(c: &serde_json::Value) -> OptimForm {
        let text = |k: &str| json_text(&c[k]);
        let schedule: Option<LrSchedule> = serde_json::from_value(c["schedule"].clone()).ok();
        let (schedule, milestones, gamma, min_factor) = match &schedule {
            Some(LrSchedule::Step { milestones, gamma }) => (
                "step",
                comma_list(milestones),
                *gamma,
                FORM_COSINE_MIN_FACTOR,
            ),
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
            warmup_steps: text("warmup_steps"),
            schedule: schedule.into(),
            milestones,
            gamma: gamma.to_string(),
            min_factor: min_factor.to_string(),
            grad_clip_norm: text("grad_clip_norm"),
            checkpoint_every: text("checkpoint_every"),
            seed: text("seed"),
            loader_threads: text("loader_threads"),
        }
    }

    pub fn posted(field: &dyn Fn(&str) -> Option<String>) -> OptimForm {
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
        }
    }

    /// Put the fields into a config's JSON object (a blank number keeps what is there, except
    /// `grad_clip_norm`: blank is none). Ranges are the config's `validate`'s job.
    pub fn insert_into(
        &self,
        c: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        use serde_json::{Value, json};
        c.insert(
            "optimizer".into(),
            enum_value::<OptimizerKind>("optimizer", &self.optimizer)?,
        );
        for (key, v) in [
            ("batch_size", &self.batch_size),
            ("steps", &self.steps),
            ("warmup_steps", &self.warmup_steps),
            ("checkpoint_every", &self.checkpoint_every),
            ("loader_threads", &self.loader_threads),
        ] {
            put_number::<u32>(c, key, key, v)?;
        }
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
                "milestones": number_list::<u32>("schedule.milestones", &self.milestones)?,
                "gamma": real("schedule.gamma", &self.gamma)?.unwrap_or(FORM_STEP_GAMMA),
            }),
            "cosine" => json!({
                "kind": "cosine",
                "min_factor": real("schedule.min_factor", &self.min_factor)?
                    .unwrap_or(FORM_COSINE_MIN_FACTOR),
            }),
            other => return Err(format!("schedule: {other:?} is not one of step, cosine")),
        };
        c.insert("schedule".into(), schedule);
        c.insert(
            "grad_clip_norm".into(),
            real("grad_clip_norm", &self.grad_clip_norm)?.map_or(Value::Null, Value::from),
        );
        Ok(())
    }
}
