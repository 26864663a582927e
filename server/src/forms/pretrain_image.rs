//! The new-run page's image-domain pre-training form as text, and the typed
//! `PretrainImageConfig` it describes.

use super::{
    FieldError, OptimForm, PlacementForm, enum_of, id_text, init_or, init_text, number, real,
    text_or, wire_name,
};
use aligndet_common::pretrain_config::PretrainImageConfig;
use aligndet_common::train_config::BackboneKind;

/// The image-domain pre-training form as text (names follow `PretrainImageConfig`'s JSON).
#[derive(Default, serde::Deserialize)]
#[serde(default)]
pub struct PretrainImageForm {
    pub name: String,
    pub dataset_id: String,
    pub split: String,
    pub backbone: String,
    /// `scratch` or `imagenet_backbone`.
    pub init: String,
    pub crop_size: String,
    pub queue_size: String,
    pub embedding_dim: String,
    pub hidden_dim: String,
    pub temperature: String,
    pub key_momentum: String,
    #[serde(flatten)]
    pub opt: OptimForm,
    /// Worker requirements and priority.
    #[serde(flatten)]
    pub place: PlacementForm,
}

impl PretrainImageForm {
    pub fn defaults() -> PretrainImageForm {
        PretrainImageForm::of_config(&PretrainImageConfig::default())
    }

    /// A fresh form with `c`'s values (the fields that follow the steps blank): the defaults'
    /// form, and the start of a clone's.
    pub fn of_config(c: &PretrainImageConfig) -> PretrainImageForm {
        PretrainImageForm {
            name: "image-domain pre-training".into(),
            dataset_id: id_text(c.dataset_id),
            split: c.split.clone(),
            backbone: wire_name(&c.backbone),
            init: init_text(&c.init),
            crop_size: c.crop_size.to_string(),
            queue_size: c.queue_size.to_string(),
            embedding_dim: c.embedding_dim.to_string(),
            hidden_dim: c.hidden_dim.to_string(),
            temperature: c.temperature.to_string(),
            key_momentum: c.key_momentum.to_string(),
            opt: OptimForm::of_config(&c.optim, c.schedule_defaults()),
            place: PlacementForm::default(),
        }
    }

    /// The input a config field is shown beside.
    pub fn input_for(field: &str) -> Option<String> {
        const INPUTS: &[&str] = &[
            "split",
            "backbone",
            "init",
            "crop_size",
            "queue_size",
            "embedding_dim",
            "hidden_dim",
            "temperature",
            "key_momentum",
        ];
        super::training_input_for(field, INPUTS)
    }

    /// The `pretrain_image` job config (a blank field keeps the default; blank warm-up,
    /// milestones and checkpoint interval follow the steps).
    pub fn to_config(&self) -> Result<PretrainImageConfig, FieldError> {
        let d = PretrainImageConfig::default();
        let dataset_id = super::dataset_id(&self.dataset_id)?;
        let split = text_or(&self.split, &d.split);
        let backbone: BackboneKind = enum_of("backbone", &self.backbone)?;
        let init = init_or("init", &self.init, &d.init)?;
        let crop_size = number("crop_size", &self.crop_size)?.unwrap_or(d.crop_size);
        let queue_size = number("queue_size", &self.queue_size)?.unwrap_or(d.queue_size);
        let embedding_dim =
            number("embedding_dim", &self.embedding_dim)?.unwrap_or(d.embedding_dim);
        let hidden_dim = number("hidden_dim", &self.hidden_dim)?.unwrap_or(d.hidden_dim);
        let temperature = real("temperature", &self.temperature)?.unwrap_or(d.temperature);
        let key_momentum = real("key_momentum", &self.key_momentum)?.unwrap_or(d.key_momentum);
        let optim = self.opt.parse(&d.optim)?;
        let c = PretrainImageConfig {
            dataset_id,
            split,
            backbone,
            init,
            crop_size,
            queue_size,
            embedding_dim,
            hidden_dim,
            temperature,
            key_momentum,
            optim,
        };
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_untouched_form_is_the_default_config() {
        let mut form = PretrainImageForm::defaults();
        form.dataset_id = "2".into();
        assert_eq!(
            form.to_config().unwrap(),
            PretrainImageConfig {
                dataset_id: 2,
                ..PretrainImageConfig::default()
            }
        );
        form.opt.steps = "100".into();
        let c = form.to_config().unwrap();
        assert_eq!((c.optim.warmup_steps, c.optim.checkpoint_every), (0, 10));
        form.opt.lr = "fast".into();
        assert_eq!(
            form.to_config().unwrap_err().to_string(),
            "optim.lr: \"fast\" is not a finite number"
        );
    }
}
