//! A job config as a person or a script writes it (`POST /api/v1/runs`): the `kind` and only the
//! fields that differ from that kind's defaults. [`JobConfig::from_written`] completes it the way
//! the new-run form does, so the API and the page accept and refuse the same runs:
//!
//! - nested settings (`optim`, `augment`, `views`) may be partial: what is not given keeps the
//!   kind's default (an object with a tag, such as `schedule` or `init`, is taken whole, since
//!   its fields depend on the tag);
//! - when `optim.steps` is given, the fields that follow the number of steps and are not given
//!   (warm-up, step-schedule milestones, evaluation and checkpoint intervals) follow it by
//!   [`crate::optim_config::ScheduleDefaults`]' rule.

use crate::jobs::{JobConfig, RunKind};
use crate::optim_config::{LrSchedule, OPTIM_KEY, OptimConfig, ScheduleDefaults};
use crate::pretrain_config::{PretrainBoxConfig, PretrainImageConfig};
use crate::train_config::TrainConfig;
use serde_json::{Map, Value};

/// Keys whose presence makes an object a tagged enum value (taken whole, never merged).
const TAG_KEYS: [&str; 2] = ["kind", "from"];

impl JobConfig {
    /// The complete config a written one stands for (see the module notes); serde's error
    /// when it does not describe one (unknown kind, unknown field, wrong type).
    pub fn from_written(written: Value) -> Result<JobConfig, serde_json::Error> {
        let kind = written
            .get("kind")
            .and_then(Value::as_str)
            .and_then(RunKind::parse);
        let defaults = match kind {
            Some(RunKind::Finetune) => JobConfig::Finetune(TrainConfig::default()),
            Some(RunKind::PretrainBox) => JobConfig::PretrainBox(PretrainBoxConfig::default()),
            Some(RunKind::PretrainImage) => {
                JobConfig::PretrainImage(PretrainImageConfig::default())
            }
            // The other kinds have no nested settings: serde's own defaults apply.
            _ => return serde_json::from_value(written),
        };
        let mut merged = serde_json::to_value(&defaults)?;
        merge_fields(&mut merged, &written);
        let mut config: JobConfig = serde_json::from_value(merged)?;
        follow_written_steps(&mut config, &written);
        Ok(config)
    }
}

/// Every field of `written` into `base`; untagged objects merged field by field.
fn merge_fields(base: &mut Value, written: &Value) {
    let (Value::Object(base), Value::Object(written)) = (base, written) else {
        return;
    };
    for (key, value) in written {
        match (base.get_mut(key), value) {
            (Some(slot @ Value::Object(_)), Value::Object(fields)) if !is_tagged(fields) => {
                merge_fields(slot, value)
            }
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

fn is_tagged(fields: &Map<String, Value>) -> bool {
    TAG_KEYS.iter().any(|k| fields.contains_key(*k))
}

/// Where the written config gives `optim.steps`, the schedule fields it leaves out follow them.
fn follow_written_steps(config: &mut JobConfig, written: &Value) {
    let optim = written.get(OPTIM_KEY);
    let given = |key: &str| optim.and_then(|o| o.get(key)).is_some();
    if !given("steps") {
        return;
    }
    let (optim, eval_every, reference) = match config {
        JobConfig::Finetune(c) => (
            &mut c.optim,
            Some(&mut c.eval_every),
            TrainConfig::default().schedule_defaults(),
        ),
        JobConfig::PretrainBox(c) => (
            &mut c.optim,
            None,
            PretrainBoxConfig::default().schedule_defaults(),
        ),
        JobConfig::PretrainImage(c) => (
            &mut c.optim,
            None,
            PretrainImageConfig::default().schedule_defaults(),
        ),
        _ => return,
    };
    let derived: ScheduleDefaults = reference.scaled_to(optim.steps);
    if !given("warmup_steps") {
        optim.warmup_steps = derived.warmup_steps;
    }
    if !given("checkpoint_every") {
        optim.checkpoint_every = derived.checkpoint_every;
    }
    if !given("schedule") {
        set_milestones(optim, &derived.milestones);
    }
    if let Some(eval_every) = eval_every
        && written.get("eval_every").is_none()
    {
        *eval_every = derived.eval_every;
    }
}

fn set_milestones(optim: &mut OptimConfig, derived: &[u32]) {
    if let LrSchedule::Step { milestones, .. } = &mut optim.schedule {
        *milestones = derived.to_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn finetune(written: Value) -> TrainConfig {
        match JobConfig::from_written(written).unwrap() {
            JobConfig::Finetune(c) => c,
            other => panic!("not a fine-tune: {other:?}"),
        }
    }

    #[test]
    fn partial_nested_settings_keep_the_kinds_defaults() {
        let c = finetune(json!({"kind": "finetune", "dataset_id": 3, "optim": {"lr": 0.02}}));
        assert_eq!(c.optim.lr, 0.02);
        assert_eq!(c.optim.steps, TrainConfig::default().optim.steps);
        let image = JobConfig::from_written(json!({
            "kind": "pretrain_image", "dataset_id": 1, "optim": {"lr": 0.1}
        }))
        .unwrap();
        let JobConfig::PretrainImage(image) = image else {
            panic!("kind")
        };
        // The kind's own defaults, not another kind's: batch 32, cosine.
        assert_eq!(image.optim.batch_size, 32);
        assert_eq!(image.optim.schedule, LrSchedule::Cosine { min_factor: 0.0 });
    }

    #[test]
    fn tagged_values_are_taken_whole() {
        let c = finetune(json!({
            "kind": "finetune", "dataset_id": 3,
            "optim": {"schedule": {"kind": "cosine", "min_factor": 0.1}}
        }));
        assert_eq!(c.optim.schedule, LrSchedule::Cosine { min_factor: 0.1 });
    }

    #[test]
    fn the_schedule_follows_written_steps_unless_given() {
        let c = finetune(json!({"kind": "finetune", "dataset_id": 3, "optim": {"steps": 20}}));
        assert_eq!(c.schedule_defaults(), TrainConfig::schedule_for_steps(20));
        c.validate().unwrap();
        let c = finetune(json!({
            "kind": "finetune", "dataset_id": 3, "eval_every": 7,
            "optim": {"steps": 20, "warmup_steps": 0}
        }));
        assert_eq!((c.eval_every, c.optim.warmup_steps), (7, 0));
        assert_eq!(c.optim.checkpoint_every, 2);
        // Without written steps nothing is derived.
        let c = finetune(json!({"kind": "finetune", "dataset_id": 3}));
        assert_eq!(
            c,
            TrainConfig {
                dataset_id: 3,
                ..TrainConfig::default()
            }
        );
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused_by_name() {
        let e = JobConfig::from_written(json!({"kind": "finetune", "optim": {"stepz": 1}}))
            .unwrap_err();
        assert!(e.to_string().contains("stepz"), "{e}");
        let e = JobConfig::from_written(json!({"kind": "finetune", "lr": 0.1})).unwrap_err();
        assert!(e.to_string().contains("lr"), "{e}");
        assert!(JobConfig::from_written(json!({"kind": "nope"})).is_err());
    }
}
