//! The new-run page's image-domain pre-training form as text, and its `pretrain_image` job
//! config JSON.

use super::{
    FieldError, OptimForm, enum_value, init_json, init_text, put_number, put_real, wire_name,
};
use aligndet_common::jobs::RunKind;
use aligndet_common::pretrain_config::PretrainImageConfig;
use aligndet_common::train_config::BackboneKind;

/// The image-domain pre-training form as text (names follow `PretrainImageConfig`'s JSON).
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
    pub opt: OptimForm,
}

impl PretrainImageForm {
    pub fn defaults() -> PretrainImageForm {
        let c = PretrainImageConfig::default();
        PretrainImageForm {
            name: "image-domain pre-training".into(),
            dataset_id: String::new(),
            split: c.split.clone(),
            backbone: wire_name(&c.backbone),
            init: init_text(&c.init),
            crop_size: c.crop_size.to_string(),
            queue_size: c.queue_size.to_string(),
            embedding_dim: c.embedding_dim.to_string(),
            hidden_dim: c.hidden_dim.to_string(),
            temperature: c.temperature.to_string(),
            key_momentum: c.key_momentum.to_string(),
            opt: OptimForm::of_config(
                &serde_json::to_value(&c).unwrap_or_default(),
                c.schedule_defaults(),
            ),
        }
    }

    /// The input a config field is shown beside.
    pub fn input_for(field: &str) -> Option<String> {
        const INPUTS: [&str; 11] = [
            "name",
            "dataset_id",
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
        let all: Vec<&str> = INPUTS
            .iter()
            .chain(super::optim::INPUTS.iter())
            .copied()
            .collect();
        super::input_for(field, &all)
    }

    pub fn posted(field: &dyn Fn(&str) -> Option<String>) -> PretrainImageForm {
        let text = |k: &str| field(k).unwrap_or_default();
        PretrainImageForm {
            name: text("name"),
            dataset_id: text("dataset_id"),
            split: text("split"),
            backbone: text("backbone"),
            init: text("init"),
            crop_size: text("crop_size"),
            queue_size: text("queue_size"),
            embedding_dim: text("embedding_dim"),
            hidden_dim: text("hidden_dim"),
            temperature: text("temperature"),
            key_momentum: text("key_momentum"),
            opt: OptimForm::posted(field, PretrainImageConfig::default().schedule_defaults()),
        }
    }

    /// The `pretrain_image` job config as JSON (a blank field keeps the default).
    pub fn to_config(&self) -> Result<serde_json::Value, FieldError> {
        use serde_json::Value;
        let mut c = serde_json::Map::new();
        c.insert("kind".into(), RunKind::PretrainImage.as_str().into());
        let dataset_id: i64 = self
            .dataset_id
            .parse()
            .map_err(|_| FieldError::new("dataset_id", "choose a dataset"))?;
        c.insert("dataset_id".into(), dataset_id.into());
        if !self.split.is_empty() {
            c.insert("split".into(), self.split.clone().into());
        }
        c.insert(
            "backbone".into(),
            enum_value::<BackboneKind>("backbone", &self.backbone)?,
        );
        if !self.init.is_empty() {
            c.insert("init".into(), init_json("init", &self.init)?);
        }
        for (key, v) in [
            ("crop_size", &self.crop_size),
            ("queue_size", &self.queue_size),
            ("embedding_dim", &self.embedding_dim),
            ("hidden_dim", &self.hidden_dim),
        ] {
            put_number::<u32>(&mut c, key, key, v)?;
        }
        for (key, v) in [
            ("temperature", &self.temperature),
            ("key_momentum", &self.key_momentum),
        ] {
            put_real(&mut c, key, key, v)?;
        }
        self.opt.insert_into(&mut c)?;
        Ok(Value::Object(c))
    }
}
