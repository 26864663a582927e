//! The new-run page's model ([`NewRunPage`]): the three training forms' values, the datasets,
//! splits, pseudo-box sources and checkpoints offered, and the per-detector defaults for the
//! form's script.

use crate::db;
use crate::db::datasets::DatasetRow;
use crate::db::runs::RunFilter;
use crate::error::PageError;
use crate::forms::{
    FinetuneForm, PlacedError, PretrainBoxForm, PretrainImageForm, TrainingForms, checkpoint_value,
    choices, error_note, invalid_attrs, wire_name,
};
use crate::numbers::{filters, six_significant};
use crate::state::AppState;
use aligndet_common::artifacts;
use aligndet_common::jobs::{RunKind, RunStatus};
use aligndet_common::optim_config::{OPTIM_KEY, OptimizerKind, Precision};
use aligndet_common::pretrain_config::{
    ALIGNED_FINETUNE_LR_FACTOR, ALIGNED_FINETUNE_WD_DIVISOR, PretrainBoxConfig,
    aligned_finetune_hyperparameters,
};
use aligndet_common::train_config::{BackboneKind, DetectorKind};
use askama::Template;

#[derive(Template)]
#[template(path = "new_run.html")]
pub struct NewRunPage {
    csrf: String,
    /// A refused post's error: in the summary at the top, and beside its input when one of the
    /// training forms (`ft`, `pb`, `pi`) has it.
    error: Option<PlacedError>,
    datasets: Vec<DatasetRow>,
    /// The fine-tune form's values: defaults, or what was posted when it comes back with an error.
    ft: FinetuneForm,
    /// The box-domain pre-training form's values.
    pb: PretrainBoxForm,
    /// The image-domain pre-training form's values.
    pi: PretrainImageForm,
    /// Split names of every dataset (train, val, labeled subsets), offered as suggestions.
    split_names: Vec<String>,
    detectors: Vec<(String, &'static str)>,
    backbones: Vec<(String, &'static str)>,
    optimizers: Vec<(String, &'static str)>,
    precisions: Vec<(String, &'static str)>,
    /// Succeeded `proposals` runs: the pseudo-box sources of box-domain pre-training.
    proposals_runs: Vec<ProposalsChoice>,
    /// Weights a run can start from: pre-trained detectors, pre-trained backbones, fine-tuned
    /// models (succeeded runs only).
    checkpoints: Vec<CheckpointChoice>,
    /// Per-detector defaults of `PretrainBoxConfig::for_detector` that differ between detectors,
    /// as JSON (`{"fcos": {"lr": 0.01, ...}, ...}`) for the form's script.
    pb_detector_defaults: String,
    /// The raw JSON editor: the run name and the config text (blank on a fresh page).
    json_name: String,
    json_text: String,
    /// What the page was opened for (a clone says of which run), shown above the forms.
    notice: Option<String>,
}

/// A `proposals` run offered as the pseudo-box source.
pub struct ProposalsChoice {
    pub id: i64,
    pub name: String,
    pub dataset_id: i64,
    /// Images done and pseudo-boxes kept by the filter.
    pub images: i64,
    pub kept: i64,
}

/// A run artifact offered as initial weights; `value` is `checkpoint:RUN:ARTIFACT`.
pub struct CheckpointChoice {
    pub value: String,
    pub run_id: i64,
    pub name: String,
    /// `pretrain_box`, `pretrain_image` or `finetune`.
    pub kind: &'static str,
    pub detector: String,
    pub backbone: String,
    pub dataset_id: i64,
    pub artifact: &'static str,
}

impl NewRunPage {
    pub async fn new(
        s: &AppState,
        csrf: String,
        error: Option<PlacedError>,
        forms: TrainingForms,
    ) -> Result<NewRunPage, PageError> {
        use aligndet_common::jobs::JobConfig;
        let datasets = db::datasets::list(&s.pool).await?;
        let mut split_names: Vec<String> = Vec::new();
        for name in datasets.iter().flat_map(|d| d.split_names()) {
            if !split_names.contains(&name) {
                split_names.push(name);
            }
        }
        let succeeded = |kind: RunKind| RunFilter {
            kind: Some(kind.as_str().to_string()),
            status: Some(RunStatus::Succeeded.as_str().to_string()),
            // archived runs are hidden from lists, but their weights can still be chosen
            include_archived: true,
            ..RunFilter::default()
        };
        let mut proposals_runs = Vec::new();
        for run in db::runs::list(&s.pool, &succeeded(RunKind::Proposals))
            .await?
            .into_iter()
            .take(100)
        {
            let (images, kept, _, _) = db::proposals::summary(&s.pool, run.id).await?;
            proposals_runs.push(ProposalsChoice {
                id: run.id,
                dataset_id: run.dataset_id.unwrap_or_default(),
                name: run.name,
                images,
                kept,
            });
        }
        let mut checkpoints = Vec::new();
        for kind in [
            RunKind::PretrainBox,
            RunKind::PretrainImage,
            RunKind::Finetune,
        ] {
            for run in db::runs::list(&s.pool, &succeeded(kind)).await? {
                let (detector, backbone, artifact) = match run.config.job() {
                    Some(JobConfig::PretrainBox(c)) => (
                        wire_name(&c.detector),
                        wire_name(&c.backbone),
                        artifacts::PRETRAINED_DETECTOR,
                    ),
                    Some(JobConfig::PretrainImage(c)) => (
                        String::new(),
                        wire_name(&c.backbone),
                        artifacts::PRETRAINED_BACKBONE,
                    ),
                    Some(JobConfig::Finetune(c)) => (
                        wire_name(&c.detector),
                        wire_name(&c.backbone),
                        artifacts::MODEL,
                    ),
                    _ => continue,
                };
                checkpoints.push(CheckpointChoice {
                    value: checkpoint_value(run.id, artifact),
                    run_id: run.id,
                    name: run.name,
                    kind: kind.as_str(),
                    detector,
                    backbone,
                    dataset_id: run.dataset_id.unwrap_or_default(),
                    artifact,
                });
            }
        }
        Ok(NewRunPage {
            csrf,
            error,
            datasets,
            ft: forms.ft,
            pb: forms.pb,
            pi: forms.pi,
            split_names,
            pb_detector_defaults: detector_defaults_json(&DetectorKind::ALL),
            detectors: choices(&DetectorKind::ALL, |k| k.label()),
            backbones: choices(&BackboneKind::ALL, |k| k.label()),
            optimizers: choices(&OptimizerKind::ALL, |k| k.label()),
            precisions: choices(&Precision::ALL, |p| p.label()),
            proposals_runs,
            checkpoints,
            json_name: String::new(),
            json_text: String::new(),
            notice: None,
        })
    }

    /// The JSON editor filled with a run name and config text.
    pub fn with_json(mut self, name: &str, text: &str) -> NewRunPage {
        self.json_name = name.to_string();
        self.json_text = text.to_string();
        self
    }

    /// A line above the forms saying what the page was opened for.
    pub fn with_notice(mut self, notice: String) -> NewRunPage {
        self.notice = Some(notice);
        self
    }

    /// The attributes of input `name` of form `form` (marked invalid and focused when the
    /// error is beside it).
    fn invalid(&self, form: &str, name: &str) -> &'static str {
        invalid_attrs(self.error.as_ref(), form, name)
    }

    /// The error's message under input `name` of form `form`, when it is beside it.
    fn note(&self, form: &str, name: &str) -> String {
        error_note(self.error.as_ref(), form, name)
    }

    /// Checkpoints of one run kind, for one `<optgroup>`.
    fn checkpoints_of(&self, kind: &str) -> Vec<&CheckpointChoice> {
        self.checkpoints.iter().filter(|c| c.kind == kind).collect()
    }

    /// The fine-tune's checkpoint choices, one `<optgroup>` per kind: (label, choices).
    fn checkpoint_groups(&self) -> Vec<(&'static str, Vec<&CheckpointChoice>)> {
        vec![
            (
                "pre-trained detectors (pretrain_box: pretrained.safetensors)",
                self.checkpoints_of(RunKind::PretrainBox.as_str()),
            ),
            (
                "pre-trained backbones (pretrain_image: backbone.safetensors)",
                self.checkpoints_of(RunKind::PretrainImage.as_str()),
            ),
            (
                "fine-tuned models (finetune: model.safetensors)",
                self.checkpoints_of(RunKind::Finetune.as_str()),
            ),
        ]
    }

    /// Whether `value` (an init field's text) is one of the listed checkpoints.
    fn is_listed(&self, value: &str) -> bool {
        self.checkpoints.iter().any(|c| c.value == value)
    }

    /// The fine-tune's lr and weight decay under AlignDet's rule, as shown beside its checkbox.
    fn aligned_numbers(&self) -> String {
        match (
            self.ft.opt.lr.parse::<f64>(),
            self.ft.opt.weight_decay.parse::<f64>(),
        ) {
            (Ok(lr), Ok(wd)) => {
                let (lr, wd) = aligned_finetune_hyperparameters(lr, wd);
                format!(
                    "lr {}, weight decay {}",
                    six_significant(lr),
                    six_significant(wd)
                )
            }
            _ => format!(
                "lr ×{}, weight decay ÷{}",
                self.aligned_lr_factor(),
                self.aligned_wd_divisor()
            ),
        }
    }

    /// AlignDet's fine-tuning rule's learning-rate factor (1.5), for the page and its script.
    fn aligned_lr_factor(&self) -> String {
        six_significant(ALIGNED_FINETUNE_LR_FACTOR)
    }

    /// AlignDet's fine-tuning rule's weight-decay divisor (2).
    fn aligned_wd_divisor(&self) -> String {
        six_significant(ALIGNED_FINETUNE_WD_DIVISOR)
    }
}

/// The numeric fields of `PretrainBoxConfig::for_detector` that differ between detectors.
fn detector_defaults_json(detectors: &[DetectorKind]) -> String {
    // The form's inputs are flat: a config's own fields and its `optim` fields side by side.
    let inputs_of = |d: DetectorKind| {
        let mut fields = match serde_json::to_value(PretrainBoxConfig::for_detector(d)) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => serde_json::Map::new(),
        };
        if let Some(serde_json::Value::Object(optim)) = fields.remove(OPTIM_KEY) {
            fields.extend(optim);
        }
        (wire_name(&d), fields)
    };
    let configs: Vec<_> = detectors.iter().map(|&d| inputs_of(d)).collect();
    let mut out = serde_json::Map::new();
    for (name, fields) in &configs {
        let differing: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .filter(|(key, v)| {
                v.is_number() && configs.iter().any(|(_, other)| other.get(*key) != Some(*v))
            })
            .map(|(key, v)| (key.clone(), v.clone()))
            .collect();
        out.insert(name.clone(), serde_json::Value::Object(differing));
    }
    serde_json::Value::Object(out).to_string()
}
