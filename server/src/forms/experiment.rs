//! The new-experiment form as text, field by field, and its text → [`ExperimentSpec`] step.

use super::{FieldError, comma_list, enum_of, number, number_list, real, wire_name};
use crate::error::PageError;
use crate::experiments::ExperimentSpec;
use crate::experiments::spec::{
    DEFAULT_IMAGE_SIZE, default_backbone, default_detector, default_fractions, default_multipliers,
    default_seeds,
};
use aligndet_common::train_config::TrainConfig;

/// The form's fields as text (names as in [`ExperimentSpec`]).
#[derive(Default, serde::Deserialize)]
#[serde(default)]
pub struct ExperimentForm {
    pub name: String,
    pub dataset_id: String,
    pub detector: String,
    pub backbone: String,
    #[serde(deserialize_with = "super::ticked")]
    pub label_free: bool,
    pub image_steps: String,
    pub image_batch_size: String,
    pub image_lr: String,
    /// `new`, or the id of a proposals run to reuse.
    pub proposals: String,
    pub proposals_max_images: String,
    /// `new`, or the id of a `pretrain_box` run to reuse.
    pub pretrained: String,
    pub pretrain_steps: String,
    pub pretrain_batch_size: String,
    pub pretrain_lr: String,
    pub pretrain_samples: String,
    pub image_size: String,
    pub finetune_steps: String,
    pub eval_max_images: String,
    pub final_eval_max_images: String,
    pub finetune_batch_size: String,
    pub finetune_lr: String,
    pub finetune_weight_decay: String,
    pub lr_multiplier: String,
    pub wd_multiplier: String,
    pub seeds: String,
    pub fractions: String,
}

impl ExperimentForm {
    pub fn defaults() -> ExperimentForm {
        let ft = TrainConfig::default();
        let (lr_m, wd_m) = default_multipliers();
        ExperimentForm {
            name: "aligndet experiment".into(),
            dataset_id: String::new(),
            detector: wire_name(&default_detector()),
            backbone: wire_name(&default_backbone()),
            label_free: false,
            image_steps: String::new(),
            image_batch_size: String::new(),
            image_lr: String::new(),
            proposals: "new".into(),
            proposals_max_images: String::new(),
            pretrained: "new".into(),
            pretrain_steps: String::new(),
            pretrain_batch_size: String::new(),
            pretrain_lr: String::new(),
            pretrain_samples: String::new(),
            image_size: DEFAULT_IMAGE_SIZE.to_string(),
            finetune_steps: ft.optim.steps.to_string(),
            eval_max_images: ft.eval_max_images.to_string(),
            final_eval_max_images: ft.final_eval_max_images.to_string(),
            finetune_batch_size: ft.optim.batch_size.to_string(),
            finetune_lr: ft.optim.lr.to_string(),
            finetune_weight_decay: ft.optim.weight_decay.to_string(),
            lr_multiplier: lr_m.to_string(),
            wd_multiplier: wd_m.to_string(),
            seeds: comma_list(&default_seeds()),
            fractions: comma_list(&default_fractions()),
        }
    }

    /// What was posted ([`super::read_posted`]).
    pub fn posted(fields: &[(String, String)]) -> Result<ExperimentForm, PageError> {
        super::read_posted(fields)
    }

    /// The input a spec field (or the planner's) is shown beside: the spec's names, except the
    /// two reuse choices.
    pub fn input_for(field: &str) -> Option<String> {
        const INPUTS: &[&str] = &[
            "name",
            "dataset_id",
            "detector",
            "backbone",
            "label_free",
            "image_steps",
            "image_batch_size",
            "image_lr",
            "proposals",
            "proposals_max_images",
            "pretrained",
            "pretrain_steps",
            "pretrain_batch_size",
            "pretrain_lr",
            "pretrain_samples",
            "image_size",
            "finetune_steps",
            "eval_max_images",
            "final_eval_max_images",
            "finetune_batch_size",
            "finetune_lr",
            "finetune_weight_decay",
            "lr_multiplier",
            "wd_multiplier",
            "seeds",
            "fractions",
        ];
        let field = match field {
            "proposals_run_id" => "proposals",
            "pretrained_run_id" => "pretrained",
            other => other,
        };
        super::input_for(field, INPUTS)
    }

    /// Text → spec, naming the field that does not parse (ranges are `plan`'s job).
    pub fn to_spec(&self) -> Result<ExperimentSpec, FieldError> {
        let dataset_id = super::dataset_id(&self.dataset_id)?;
        let proposals_run_id =
            new_or_run_id("proposals_run_id", &self.proposals, "a proposals run id")?;
        let pretrained_run_id = new_or_run_id(
            "pretrained_run_id",
            &self.pretrained,
            "a pre-training run id",
        )?;
        Ok(ExperimentSpec {
            name: self.name.clone(),
            dataset_id,
            detector: enum_of("detector", &self.detector)?,
            backbone: enum_of("backbone", &self.backbone)?,
            label_free: self.label_free,
            image_steps: number("image_steps", &self.image_steps)?,
            image_batch_size: number("image_batch_size", &self.image_batch_size)?,
            image_lr: real("image_lr", &self.image_lr)?,
            proposals_run_id,
            proposals_max_images: number("proposals_max_images", &self.proposals_max_images)?,
            pretrained_run_id,
            pretrain_steps: number("pretrain_steps", &self.pretrain_steps)?,
            pretrain_batch_size: number("pretrain_batch_size", &self.pretrain_batch_size)?,
            pretrain_lr: real("pretrain_lr", &self.pretrain_lr)?,
            pretrain_samples: number("pretrain_samples", &self.pretrain_samples)?,
            image_size: number("image_size", &self.image_size)?,
            finetune_steps: number("finetune_steps", &self.finetune_steps)?,
            eval_max_images: number("eval_max_images", &self.eval_max_images)?,
            final_eval_max_images: number("final_eval_max_images", &self.final_eval_max_images)?,
            finetune_batch_size: number("finetune_batch_size", &self.finetune_batch_size)?,
            finetune_lr: real("finetune_lr", &self.finetune_lr)?,
            finetune_weight_decay: real("finetune_weight_decay", &self.finetune_weight_decay)?,
            lr_multiplier: real("lr_multiplier", &self.lr_multiplier)?,
            wd_multiplier: real("wd_multiplier", &self.wd_multiplier)?,
            seeds: number_list("seeds", &self.seeds)?,
            fractions: number_list("fractions", &self.fractions)?,
        })
    }
}

/// A "reuse this run" choice: blank or `new` (make the run) is `None`, else the run's id.
fn new_or_run_id(field: &str, v: &str, what: &str) -> Result<Option<i64>, FieldError> {
    match v {
        "" | "new" => Ok(None),
        v => v
            .parse::<i64>()
            .map(Some)
            .map_err(|_| FieldError::new(field, format!("{v:?} is not \"new\" or {what}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(changes: &[(&str, &str)]) -> ExperimentForm {
        let mut fields: Vec<(String, String)> = vec![
            ("name".into(), "e".into()),
            ("dataset_id".into(), "3".into()),
            ("detector".into(), "fcos".into()),
            ("backbone".into(), "efficientnet_lite0".into()),
            ("seeds".into(), "1".into()),
            ("fractions".into(), "5".into()),
        ];
        fields.extend(changes.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        ExperimentForm::posted(&fields).expect("a form of text fields")
    }

    #[test]
    fn evaluation_sizes_are_read_and_named_when_wrong() {
        let spec = posted(&[("final_eval_max_images", "50")])
            .to_spec()
            .unwrap();
        assert_eq!(spec.final_eval_max_images, Some(50));
        assert_eq!(spec.eval_max_images, None, "blank keeps the default");
        let e = posted(&[("eval_max_images", "many")])
            .to_spec()
            .unwrap_err();
        assert_eq!(e.field, "eval_max_images");
        assert_eq!(
            ExperimentForm::input_for("final_eval_max_images").as_deref(),
            Some("final_eval_max_images")
        );
        // The defaults shown are the fine-tune's: the whole split.
        assert_eq!(ExperimentForm::defaults().final_eval_max_images, "0");
    }
}
