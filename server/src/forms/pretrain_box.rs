//! The new-run page's box-domain pre-training form as text, and its `pretrain_box` job config
//! JSON.

use super::{
    FieldError, OptimForm, comma_list, enum_of, enum_value, init_json, init_text, number_list,
    put_number, put_real, wire_name,
};
use aligndet_common::jobs::RunKind;
use aligndet_common::pretrain_config::PretrainBoxConfig;
use aligndet_common::train_config::{BackboneKind, DetectorKind};

/// The box-domain pre-training form as text (names follow `PretrainBoxConfig`'s JSON; the
/// views' fields sit at the top level).
pub struct PretrainBoxForm {
    pub name: String,
    pub dataset_id: String,
    pub proposals_run_id: String,
    pub split: String,
    pub detector: String,
    pub backbone: String,
    /// `imagenet_backbone`, `scratch` or `checkpoint:RUN:backbone.safetensors`.
    pub backbone_init: String,
    pub max_boxes_per_image: String,
    /// `first` or `random`.
    pub box_selection: String,
    pub min_sizes: String,
    pub max_size: String,
    pub hflip: bool,
    pub color_ops: bool,
    pub embedding_dim: String,
    pub temperature: String,
    pub ema_momentum: String,
    pub samples: String,
    pub contrastive_weight: String,
    pub regression_weight: String,
    pub opt: OptimForm,
}

impl PretrainBoxForm {
    pub fn defaults() -> PretrainBoxForm {
        PretrainBoxForm::of_config(&PretrainBoxConfig::default())
    }

    pub fn of_config(c: &PretrainBoxConfig) -> PretrainBoxForm {
        let id_text = |id: i64| {
            if id > 0 {
                id.to_string()
            } else {
                String::new()
            }
        };
        PretrainBoxForm {
            name: "box-domain pre-training".into(),
            dataset_id: id_text(c.dataset_id),
            proposals_run_id: id_text(c.proposals_run_id),
            split: c.split.clone(),
            detector: wire_name(&c.detector),
            backbone: wire_name(&c.backbone),
            backbone_init: init_text(&c.backbone_init),
            max_boxes_per_image: c.max_boxes_per_image.to_string(),
            box_selection: wire_name(&c.box_selection),
            min_sizes: comma_list(&c.views.min_sizes),
            max_size: c.views.max_size.to_string(),
            hflip: c.views.hflip,
            color_ops: c.views.color_ops,
            embedding_dim: c.embedding_dim.to_string(),
            temperature: c.temperature.to_string(),
            ema_momentum: c.ema_momentum.to_string(),
            samples: c.samples.to_string(),
            contrastive_weight: c.contrastive_weight.to_string(),
            regression_weight: c.regression_weight.to_string(),
            opt: OptimForm::of_config(
                &serde_json::to_value(c).unwrap_or_default(),
                c.schedule_defaults(),
            ),
        }
    }

    /// The input a config field is shown beside.
    pub fn input_for(field: &str) -> Option<String> {
        const INPUTS: [&str; 19] = [
            "name",
            "dataset_id",
            "proposals_run_id",
            "split",
            "detector",
            "backbone",
            "backbone_init",
            "max_boxes_per_image",
            "box_selection",
            "min_sizes",
            "max_size",
            "hflip",
            "color_ops",
            "embedding_dim",
            "temperature",
            "ema_momentum",
            "samples",
            "contrastive_weight",
            "regression_weight",
        ];
        let all: Vec<&str> = INPUTS
            .iter()
            .chain(super::optim::INPUTS.iter())
            .copied()
            .collect();
        super::input_for(field, &all)
    }

    pub fn posted(field: &dyn Fn(&str) -> Option<String>) -> PretrainBoxForm {
        let text = |k: &str| field(k).unwrap_or_default();
        PretrainBoxForm {
            name: text("name"),
            dataset_id: text("dataset_id"),
            proposals_run_id: text("proposals_run_id"),
            split: text("split"),
            detector: text("detector"),
            backbone: text("backbone"),
            backbone_init: text("backbone_init"),
            max_boxes_per_image: text("max_boxes_per_image"),
            box_selection: text("box_selection"),
            min_sizes: text("min_sizes"),
            max_size: text("max_size"),
            hflip: field("hflip").is_some(),
            color_ops: field("color_ops").is_some(),
            embedding_dim: text("embedding_dim"),
            temperature: text("temperature"),
            ema_momentum: text("ema_momentum"),
            samples: text("samples"),
            contrastive_weight: text("contrastive_weight"),
            regression_weight: text("regression_weight"),
            opt: OptimForm::posted(field, PretrainBoxConfig::default().schedule_defaults()),
        }
    }

    /// The `pretrain_box` job config as JSON: `PretrainBoxConfig::for_detector` of the chosen
    /// detector, with every non-blank field put over it (so a blank max boxes, samples or lr
    /// takes the detector's reference value).
    pub fn to_config(&self) -> Result<serde_json::Value, FieldError> {
        use serde_json::Value;
        let detector: DetectorKind = enum_of("detector", &self.detector)?;
        let Ok(Value::Object(mut c)) =
            serde_json::to_value(PretrainBoxConfig::for_detector(detector))
        else {
            return Err(FieldError::new("detector", "no defaults"));
        };
        c.insert("kind".into(), RunKind::PretrainBox.as_str().into());
        let dataset_id: i64 = self
            .dataset_id
            .parse()
            .map_err(|_| FieldError::new("dataset_id", "choose a dataset"))?;
        c.insert("dataset_id".into(), dataset_id.into());
        let proposals: i64 = self.proposals_run_id.parse().map_err(|_| {
            FieldError::new(
                "proposals_run_id",
                format!(
                    "{:?} is not a run id; choose the proposals run whose pseudo-boxes to pre-train on",
                    self.proposals_run_id
                ),
            )
        })?;
        c.insert("proposals_run_id".into(), proposals.into());
        if !self.split.is_empty() {
            c.insert("split".into(), self.split.clone().into());
        }
        c.insert(
            "backbone".into(),
            enum_value::<BackboneKind>("backbone", &self.backbone)?,
        );
        if !self.backbone_init.is_empty() {
            c.insert(
                "backbone_init".into(),
                init_json("backbone_init", &self.backbone_init)?,
            );
        }
        if !self.box_selection.is_empty() {
            c.insert(
                "box_selection".into(),
                enum_value::<aligndet_common::pretrain_config::BoxSelection>(
                    "box_selection",
                    &self.box_selection,
                )?,
            );
        }
        for (key, v) in [
            ("max_boxes_per_image", &self.max_boxes_per_image),
            ("embedding_dim", &self.embedding_dim),
            ("samples", &self.samples),
        ] {
            put_number::<u32>(&mut c, key, key, v)?;
        }
        for (key, v) in [
            ("temperature", &self.temperature),
            ("ema_momentum", &self.ema_momentum),
            ("contrastive_weight", &self.contrastive_weight),
            ("regression_weight", &self.regression_weight),
        ] {
            put_real(&mut c, key, key, v)?;
        }
        let mut views = match c.remove("views") {
            Some(Value::Object(v)) => v,
            _ => serde_json::Map::new(),
        };
        if !self.min_sizes.is_empty() {
            views.insert(
                "min_sizes".into(),
                number_list::<u32>("views.min_sizes", &self.min_sizes)?.into(),
            );
        }
        put_number::<u32>(&mut views, "max_size", "views.max_size", &self.max_size)?;
        views.insert("hflip".into(), self.hflip.into());
        views.insert("color_ops".into(), self.color_ops.into());
        c.insert("views".into(), Value::Object(views));
        self.opt.insert_into(&mut c)?;
        Ok(Value::Object(c))
    }
}
