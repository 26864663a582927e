//! The new-run page's fine-tune form as text, and its `finetune` job config JSON.

use super::{
    OptimForm, comma_list, enum_value, init_json, init_text, number_list, put_number, put_real,
    wire_name,
};
use aligndet_common::artifacts;
use aligndet_common::jobs::RunKind;
use aligndet_common::train_config::{BackboneKind, DetectorKind, InitConfig, TrainConfig};

/// The fine-tune form as text, field by field (names follow `TrainConfig`'s JSON).
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
    pub aligned_rule: bool,
    pub trainable_backbone_stages: String,
    /// Comma-separated shorter-side sizes.
    pub min_sizes: String,
    pub max_size: String,
    pub hflip: bool,
    pub color_jitter: String,
    pub no_decay_norm_and_bias: bool,
    pub eval_every: String,
    pub eval_max_images: String,
    pub opt: OptimForm,
}

impl FinetuneForm {
    /// `TrainConfig::default()` rendered as form values, so the form cannot drift from it.
    pub fn defaults() -> FinetuneForm {
        let c = TrainConfig::default();
        let (init_run, init_artifact) = match &c.init {
            InitConfig::Checkpoint { artifact } => {
                (artifact.run_id.to_string(), artifact.name.clone())
            }
            _ => (String::new(), artifacts::MODEL.to_string()),
        };
        FinetuneForm {
            name: "fine-tune".into(),
            dataset_id: String::new(),
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
            eval_every: c.eval_every.to_string(),
            eval_max_images: c.eval_max_images.to_string(),
            opt: OptimForm::of_config(&serde_json::to_value(&c).unwrap_or_default()),
        }
    }

    /// What was posted (trimmed); an unticked checkbox is absent, so absent means false.
    pub fn posted(field: &dyn Fn(&str) -> Option<String>) -> FinetuneForm {
        let text = |k: &str| field(k).unwrap_or_default();
        FinetuneForm {
            name: text("name"),
            dataset_id: text("dataset_id"),
            train_split: text("train_split"),
            val_split: text("val_split"),
            detector: text("detector"),
            backbone: text("backbone"),
            init: text("init"),
            init_run: text("init_run"),
            init_artifact: text("init_artifact"),
            aligned_rule: field("aligned_rule").is_some(),
            trainable_backbone_stages: text("trainable_backbone_stages"),
            min_sizes: text("min_sizes"),
            max_size: text("max_size"),
            hflip: field("hflip").is_some(),
            color_jitter: text("color_jitter"),
            no_decay_norm_and_bias: field("no_decay_norm_and_bias").is_some(),
            eval_every: text("eval_every"),
            eval_max_images: text("eval_max_images"),
            opt: OptimForm::posted(field),
        }
    }

    /// The `finetune` job config as JSON. Only the text → value step happens here (with the
    /// field named when it fails); ranges and combinations are `TrainConfig::validate`'s job.
    /// A blank number keeps `TrainConfig`'s default, except `grad_clip_norm` (blank: none).
    pub fn to_config(&self) -> Result<serde_json::Value, String> {
        use serde_json::{Value, json};
        let dataset_id: i64 = self
            .dataset_id
            .parse()
            .map_err(|_| "dataset_id: choose a dataset".to_string())?;
        let mut c = serde_json::Map::new();
        c.insert("kind".into(), RunKind::Finetune.as_str().into());
        c.insert("dataset_id".into(), dataset_id.into());
        c.insert("train_split".into(), self.train_split.clone().into());
        c.insert("val_split".into(), self.val_split.clone().into());
        c.insert(
            "detector".into(),
            enum_value::<DetectorKind>("detector", &self.detector)?,
        );
        c.insert(
            "backbone".into(),
            enum_value::<BackboneKind>("backbone", &self.backbone)?,
        );
        let init = if self.init == "checkpoint" {
            let run_id: i64 = self.init_run.parse().map_err(|_| {
                format!(
                    "init.artifact.run_id: {:?} is not a run id; give the run whose checkpoint to start from",
                    self.init_run
                )
            })?;
            aligndet_common::artifacts::check_artifact_name(&self.init_artifact)
                .map_err(|e| format!("init.artifact.name: {e}"))?;
            json!({ "from": "checkpoint", "artifact": { "run_id": run_id, "name": self.init_artifact } })
        } else {
            init_json("init", &self.init)?
        };
        c.insert("init".into(), init);
        put_number::<u8>(
            &mut c,
            "trainable_backbone_stages",
            "trainable_backbone_stages",
            &self.trainable_backbone_stages,
        )?;
        let mut augment = serde_json::Map::new();
        if !self.min_sizes.is_empty() {
            augment.insert(
                "min_sizes".into(),
                number_list::<u32>("augment.min_sizes", &self.min_sizes)?.into(),
            );
        }
        put_number::<u32>(&mut augment, "max_size", "augment.max_size", &self.max_size)?;
        augment.insert("hflip".into(), self.hflip.into());
        put_real(
            &mut augment,
            "color_jitter",
            "augment.color_jitter",
            &self.color_jitter,
        )?;
        c.insert("augment".into(), Value::Object(augment));
        for (key, v) in [
            ("eval_every", &self.eval_every),
            ("eval_max_images", &self.eval_max_images),
        ] {
            put_number::<u32>(&mut c, key, key, v)?;
        }
        c.insert(
            "no_decay_norm_and_bias".into(),
            self.no_decay_norm_and_bias.into(),
        );
        self.opt.insert_into(&mut c)?;
        Ok(Value::Object(c))
    }
}
