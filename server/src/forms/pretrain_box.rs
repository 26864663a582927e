//! The new-run page's box-domain pre-training form as text, and the typed
//! `PretrainBoxConfig` it describes.

use super::{
    FieldError, OptimForm, PlacementForm, comma_list, enum_of, id_text, init_or, init_text, number,
    real, resize_sizes, text_or, wire_name,
};
use aligndet_common::pretrain_config::{BoxSelection, PretrainBoxConfig, ViewsConfig};
use aligndet_common::train_config::{BackboneKind, DetectorKind};

/// The box-domain pre-training form as text (names follow `PretrainBoxConfig`'s JSON; the
/// views' fields sit at the top level).
#[derive(Default, serde::Deserialize)]
#[serde(default)]
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
    #[serde(deserialize_with = "super::ticked")]
    pub hflip: bool,
    #[serde(deserialize_with = "super::ticked")]
    pub color_ops: bool,
    pub embedding_dim: String,
    pub temperature: String,
    pub ema_momentum: String,
    pub samples: String,
    pub group_size: String,
    pub contrastive_weight: String,
    pub regression_weight: String,
    #[serde(flatten)]
    pub opt: OptimForm,
    /// Worker requirements and priority.
    #[serde(flatten)]
    pub place: PlacementForm,
}

impl PretrainBoxForm {
    pub fn defaults() -> PretrainBoxForm {
        PretrainBoxForm::of_config(&PretrainBoxConfig::default())
    }

    pub fn of_config(c: &PretrainBoxConfig) -> PretrainBoxForm {
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
            group_size: c.group_size.to_string(),
            contrastive_weight: c.contrastive_weight.to_string(),
            regression_weight: c.regression_weight.to_string(),
            opt: OptimForm::of_config(&c.optim, c.schedule_defaults()),
            place: PlacementForm::default(),
        }
    }

    /// The input a config field is shown beside.
    pub fn input_for(field: &str) -> Option<String> {
        const INPUTS: &[&str] = &[
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
            "group_size",
            "contrastive_weight",
            "regression_weight",
        ];
        super::training_input_for(field, INPUTS)
    }

    /// The `pretrain_box` job config: `PretrainBoxConfig::for_detector` of the chosen
    /// detector, with every non-blank field put over it (so a blank max boxes, samples or lr
    /// takes the detector's reference value; blank warm-up, milestones and checkpoint interval
    /// follow the steps).
    pub fn to_config(&self) -> Result<PretrainBoxConfig, FieldError> {
        let detector: DetectorKind = enum_of("detector", &self.detector)?;
        let d = PretrainBoxConfig::for_detector(detector);
        let dataset_id = super::dataset_id(&self.dataset_id)?;
        let proposals_run_id: i64 = self.proposals_run_id.parse().map_err(|_| {
            FieldError::new(
                "proposals_run_id",
                format!(
                    "{:?} is not a run id; choose the proposals run whose pseudo-boxes to pre-train on",
                    self.proposals_run_id
                ),
            )
        })?;
        let split = text_or(&self.split, &d.split);
        let backbone: BackboneKind = enum_of("backbone", &self.backbone)?;
        let backbone_init = init_or("backbone_init", &self.backbone_init, &d.backbone_init)?;
        let box_selection: BoxSelection = if self.box_selection.is_empty() {
            d.box_selection
        } else {
            enum_of("box_selection", &self.box_selection)?
        };
        let max_boxes_per_image = number("max_boxes_per_image", &self.max_boxes_per_image)?
            .unwrap_or(d.max_boxes_per_image);
        let embedding_dim =
            number("embedding_dim", &self.embedding_dim)?.unwrap_or(d.embedding_dim);
        let samples = number("samples", &self.samples)?.unwrap_or(d.samples);
        let group_size = number("group_size", &self.group_size)?.unwrap_or(d.group_size);
        let temperature = real("temperature", &self.temperature)?.unwrap_or(d.temperature);
        let ema_momentum = real("ema_momentum", &self.ema_momentum)?.unwrap_or(d.ema_momentum);
        let contrastive_weight =
            real("contrastive_weight", &self.contrastive_weight)?.unwrap_or(d.contrastive_weight);
        let regression_weight =
            real("regression_weight", &self.regression_weight)?.unwrap_or(d.regression_weight);
        let (min_sizes, max_size) = resize_sizes(
            "views",
            &self.min_sizes,
            &self.max_size,
            (&d.views.min_sizes, d.views.max_size),
        )?;
        let views = ViewsConfig {
            min_sizes,
            max_size,
            hflip: self.hflip,
            color_ops: self.color_ops,
        };
        let optim = self.opt.parse(&d.optim)?;
        let c = PretrainBoxConfig {
            dataset_id,
            proposals_run_id,
            split,
            detector,
            backbone,
            backbone_init,
            max_boxes_per_image,
            box_selection,
            views,
            embedding_dim,
            temperature,
            ema_momentum,
            samples,
            group_size,
            contrastive_weight,
            regression_weight,
            optim,
        };
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_untouched_form_is_the_detectors_config_and_blank_schedule_fields_follow_the_steps() {
        for detector in [
            DetectorKind::Fcos,
            DetectorKind::Retinanet,
            DetectorKind::FasterRcnn,
        ] {
            let mut form = PretrainBoxForm::of_config(&PretrainBoxConfig::for_detector(detector));
            form.dataset_id = "3".into();
            form.proposals_run_id = "4".into();
            assert_eq!(
                form.to_config().unwrap(),
                PretrainBoxConfig {
                    dataset_id: 3,
                    proposals_run_id: 4,
                    ..PretrainBoxConfig::for_detector(detector)
                }
            );
            form.opt.steps = "20".into();
            let c = form.to_config().unwrap();
            assert_eq!((c.optim.warmup_steps, c.optim.checkpoint_every), (2, 2));
            assert_eq!(
                c.optim.schedule,
                aligndet_common::optim_config::LrSchedule::Step {
                    milestones: vec![13, 18],
                    gamma: 0.1
                }
            );
        }
        let mut form = PretrainBoxForm::defaults();
        form.dataset_id = "3".into();
        form.proposals_run_id = "x".into();
        assert_eq!(form.to_config().unwrap_err().field, "proposals_run_id");
        assert_eq!(
            PretrainBoxForm::input_for("views.max_size").as_deref(),
            Some("max_size")
        );
    }
}
