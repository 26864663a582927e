//! The new-run page's fine-tune form as text (what was typed, kept for the form's return), and
//! the typed `TrainConfig` it describes.

use super::{
    FieldError, OptimForm, PlacementForm, checkpoint_init, comma_list, enum_of, id_text,
    init_config, init_text, number, real, resize_sizes, wire_name,
};
use aligndet_common::artifacts;
use aligndet_common::train_config::{AugmentConfig, InitConfig, TrainConfig};

/// The fine-tune form as text, field by field (names follow `TrainConfig`'s JSON).
#[derive(Default, serde::Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default)]
pub struct FinetuneForm {
    pub name: String,
    pub dataset_id: String,
    pub train_split: String,
    pub val_split: String,
    pub detector: String,
    pub backbone: String,
    /// `scratch`, `imagenet_backbone`, `checkpoint:RUN:ARTIFACT` (a listed checkpoint) or
    /// `checkpoint` (the run id and artifact typed in `init_run` and `init_artifact`).
    pub init: String,
    pub init_run: String,
    pub init_artifact: String,
    /// Apply AlignDet's fine-tuning rule (lr ×1.5, weight decay ÷2) when the init is a
    /// `pretrain_box` run's pre-trained detector.
    #[serde(deserialize_with = "super::ticked")]
    pub aligned_rule: bool,
    pub trainable_backbone_stages: String,
    /// Comma-separated shorter-side sizes.
    pub min_sizes: String,
    pub max_size: String,
    #[serde(deserialize_with = "super::ticked")]
    pub hflip: bool,
    pub color_jitter: String,
    #[serde(deserialize_with = "super::ticked")]
    pub no_decay_norm_and_bias: bool,
    pub eval_every: String,
    pub eval_max_images: String,
    pub final_eval_max_images: String,
    #[serde(flatten)]
    pub opt: OptimForm,
    /// Worker requirements and priority.
    #[serde(flatten)]
    pub place: PlacementForm,
}

impl FinetuneForm {
    /// `TrainConfig::default()` rendered as form values, so the form cannot drift from it; the
    /// fields that follow the steps are blank.
    pub fn defaults() -> FinetuneForm {
        FinetuneForm::of_config(&TrainConfig::default())
    }

    /// A fresh form with `c`'s values (the fields that follow the steps blank, AlignDet's rule
    /// ticked): the defaults' form, and the start of a clone's.
    pub fn of_config(c: &TrainConfig) -> FinetuneForm {
        let (init_run, init_artifact) = match &c.init {
            InitConfig::Checkpoint { artifact } => {
                (artifact.run_id.to_string(), artifact.name.clone())
            }
            _ => (String::new(), artifacts::MODEL.to_string()),
        };
        FinetuneForm {
            name: "fine-tune".into(),
            dataset_id: id_text(c.dataset_id),
            train_split: c.train_split.clone(),
            val_split: c.val_split.clone(),
            detector: wire_name(&c.detector),
            backbone: wire_name(&c.backbone),
            init: init_text(&c.init),
            init_run,
            init_artifact,
            aligned_rule: true,
            trainable_backbone_stages: c.trainable_backbone_stages.to_string(),
            min_sizes: comma_list(&c.augment.min_sizes),
            max_size: c.augment.max_size.to_string(),
            hflip: c.augment.hflip,
            color_jitter: c.augment.color_jitter.to_string(),
            no_decay_norm_and_bias: c.no_decay_norm_and_bias,
            eval_every: String::new(),
            eval_max_images: c.eval_max_images.to_string(),
            final_eval_max_images: c.final_eval_max_images.to_string(),
            opt: OptimForm::of_config(&c.optim, c.schedule_defaults()),
            place: PlacementForm::default(),
        }
    }

    /// The input a config field is shown beside (a typed checkpoint's run id and artifact
    /// name beside their own inputs).
    pub fn input_for(&self, field: &str) -> Option<String> {
        const INPUTS: &[&str] = &[
            "train_split",
            "val_split",
            "detector",
            "backbone",
            "init",
            "trainable_backbone_stages",
            "min_sizes",
            "max_size",
            "color_jitter",
            "hflip",
            "no_decay_norm_and_bias",
            "aligned_rule",
            "eval_every",
            "eval_max_images",
            "final_eval_max_images",
        ];
        if self.init == "checkpoint" {
            match field {
                "init.artifact.run_id" => return Some("init_run".into()),
                "init.artifact.name" => return Some("init_artifact".into()),
                _ => {}
            }
        }
        super::training_input_for(field, INPUTS)
    }

    /// The `finetune` job config. Only the text → value step happens here (with the field
    /// named when it fails); ranges and combinations are `TrainConfig::validate`'s job. A blank
    /// number keeps `TrainConfig`'s default, except `grad_clip_norm` (blank: none) and the
    /// fields that follow the steps (warm-up, milestones, evaluation and checkpoint intervals:
    /// blank is derived from the steps, [`OptimForm::derived`]).
    pub fn to_config(&self) -> Result<TrainConfig, FieldError> {
        let d = TrainConfig::default();
        let dataset_id = super::dataset_id(&self.dataset_id)?;
        let detector = enum_of("detector", &self.detector)?;
        let backbone = enum_of("backbone", &self.backbone)?;
        let init = if self.init == "checkpoint" {
            let run_id: i64 = self.init_run.parse().map_err(|_| {
                FieldError::new(
                    "init.artifact.run_id",
                    format!(
                        "{:?} is not a run id; give the run whose checkpoint to start from",
                        self.init_run
                    ),
                )
            })?;
            checkpoint_init("init.artifact.name", run_id, &self.init_artifact)?
        } else {
            init_config("init", &self.init)?
        };
        let trainable_backbone_stages =
            number("trainable_backbone_stages", &self.trainable_backbone_stages)?
                .unwrap_or(d.trainable_backbone_stages);
        let (min_sizes, max_size) = resize_sizes(
            "augment",
            &self.min_sizes,
            &self.max_size,
            (&d.augment.min_sizes, d.augment.max_size),
        )?;
        let augment = AugmentConfig {
            min_sizes,
            max_size,
            hflip: self.hflip,
            color_jitter: real("augment.color_jitter", &self.color_jitter)?
                .unwrap_or(d.augment.color_jitter),
        };
        let eval_max_images =
            number("eval_max_images", &self.eval_max_images)?.unwrap_or(d.eval_max_images);
        let final_eval_max_images = number("final_eval_max_images", &self.final_eval_max_images)?
            .unwrap_or(d.final_eval_max_images);
        let optim = self.opt.parse(&d.optim)?;
        let eval_every = number("eval_every", &self.eval_every)?
            .unwrap_or(self.opt.reference.scaled_to(optim.steps).eval_every);
        let c = TrainConfig {
            dataset_id,
            train_split: self.train_split.clone(),
            val_split: self.val_split.clone(),
            detector,
            backbone,
            init,
            trainable_backbone_stages,
            augment,
            no_decay_norm_and_bias: self.no_decay_norm_and_bias,
            eval_every,
            eval_max_images,
            final_eval_max_images,
            optim,
        };
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forms::TrainingForm;
    use aligndet_common::optim_config::LrSchedule;

    /// The default form with some fields replaced, as posted: its text fields, the ticked boxes
    /// as `on` (AlignDet's rule unticked), dataset 1.
    fn posted(changes: &[(&str, &str)]) -> FinetuneForm {
        let d = FinetuneForm {
            dataset_id: "1".into(),
            aligned_rule: false,
            ..FinetuneForm::defaults()
        };
        let serde_json::Value::Object(text) = serde_json::to_value(&d).unwrap() else {
            panic!("a form is an object of fields")
        };
        let mut fields: Vec<(String, String)> = text
            .into_iter()
            .filter_map(|(name, v)| match v {
                serde_json::Value::String(s) => Some((name, s)),
                serde_json::Value::Bool(true) => Some((name, "on".into())),
                _ => None,
            })
            .collect();
        for (k, v) in changes {
            match fields.iter_mut().find(|(n, _)| n == k) {
                Some(f) => f.1 = v.to_string(),
                None => fields.push((k.to_string(), v.to_string())),
            }
        }
        FinetuneForm::posted(&fields).expect("a form of text fields")
    }

    fn config(form: &FinetuneForm) -> TrainConfig {
        let c = form.to_config().unwrap();
        c.validate().unwrap();
        c
    }

    #[test]
    fn the_fields_that_follow_the_steps_are_blank_by_default() {
        let d = FinetuneForm::defaults();
        assert_eq!(d.opt.steps, "1000");
        for blank in [
            &d.opt.warmup_steps,
            &d.opt.milestones,
            &d.opt.checkpoint_every,
            &d.eval_every,
        ] {
            assert!(blank.is_empty());
        }
        assert_eq!(d.opt.milestones_placeholder(), "700, 900");
        // Untouched, the form gives exactly the default config.
        let c = config(&posted(&[]));
        assert_eq!(
            c,
            TrainConfig {
                dataset_id: 1,
                ..TrainConfig::default()
            }
        );
    }

    #[test]
    fn the_final_evaluation_is_sized_by_its_own_field() {
        assert_eq!(config(&posted(&[])).final_eval_max_images, 0);
        let c = config(&posted(&[("final_eval_max_images", "50")]));
        assert_eq!((c.final_eval_max_images, c.eval_max_images), (50, 0));
        let e = posted(&[("final_eval_max_images", "-3")])
            .to_config()
            .unwrap_err();
        assert_eq!(e.field, "final_eval_max_images");
    }

    #[test]
    fn blank_schedule_fields_follow_the_steps_and_typed_ones_are_kept() {
        let c = config(&posted(&[("steps", "20")]));
        let s = TrainConfig::schedule_for_steps(20);
        assert_eq!(c.optim.steps, 20);
        assert_eq!(c.optim.warmup_steps, s.warmup_steps);
        assert_eq!(
            c.optim.schedule,
            LrSchedule::Step {
                milestones: s.milestones.clone(),
                gamma: 0.1
            }
        );
        assert_eq!((c.eval_every, c.optim.checkpoint_every), (5, 2));
        assert_eq!(
            posted(&[("steps", "20")]).opt.milestones_placeholder(),
            "14, 18"
        );

        let c = config(&posted(&[
            ("steps", "20"),
            ("warmup_steps", "0"),
            ("milestones", "10"),
            ("eval_every", "20"),
            ("checkpoint_every", "7"),
        ]));
        assert_eq!(c.optim.warmup_steps, 0);
        assert_eq!(
            c.optim.schedule,
            LrSchedule::Step {
                milestones: vec![10],
                gamma: 0.1
            }
        );
        assert_eq!((c.eval_every, c.optim.checkpoint_every), (20, 7));
    }

    #[test]
    fn errors_name_the_field_and_its_input() {
        let form = posted(&[("lr", "abc")]);
        let e = form.to_config().unwrap_err();
        assert_eq!(e.to_string(), "optim.lr: \"abc\" is not a finite number");
        assert_eq!(form.input_for(&e.field).as_deref(), Some("lr"));
        let e = posted(&[("min_sizes", "512, big")])
            .to_config()
            .unwrap_err();
        assert_eq!(e.field, "augment.min_sizes");
        assert_eq!(form.input_for(&e.field).as_deref(), Some("min_sizes"));
        assert_eq!(
            form.input_for("optim.schedule.milestones").as_deref(),
            Some("milestones")
        );
        assert_eq!(
            form.input_for("init.artifact.run_id").as_deref(),
            Some("init")
        );
        let typed = posted(&[("init", "checkpoint")]);
        assert_eq!(
            typed.input_for("init.artifact.run_id").as_deref(),
            Some("init_run")
        );
        assert_eq!(form.input_for("max_attempts"), None);
        assert_eq!(form.input_for(""), None);
        // A range check: the config's validate names the field.
        let c = posted(&[("lr", "-1")]).to_config().unwrap();
        let e = super::super::FieldError::from(c.validate().unwrap_err());
        assert_eq!(e.to_string(), "optim.lr: must be in (0, 10)");
    }
}
