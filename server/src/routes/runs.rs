//! Run pages: the runs table, the new-run form, a run's page with live curves, cancel, artifacts.

use crate::db;
use crate::db::datasets::DatasetRow;
use crate::db::runs::{ArtifactRow, AttemptRow, LogRow, ParentRow, RunFilter, RunRow, RunSort};
use crate::error::PageError;
use crate::plots;
use crate::routes::render;
use crate::security::CsrfToken;
use crate::serving::live_series::LiveSeries;
use crate::state::{AppState, ArtifactRead};
use crate::submit;
use aligndet_common::jobs::{RunKind, RunStatus};
use aligndet_common::pretrain_config::{
    PretrainBoxConfig, PretrainImageConfig, aligned_finetune_hyperparameters,
};
use aligndet_common::train_config::{
    BackboneKind, DetectorKind, InitConfig, LrSchedule, OptimizerKind, TrainConfig,
};
use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use futures_util::Stream;
use serde::Deserialize;
use std::collections::HashMap;
use std::convert::Infallible;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

#[derive(Template)]
#[template(path = "runs.html")]
struct RunsPage {
    runs: Vec<RunRow>,
    datasets: Vec<DatasetRow>,
    kinds: Vec<String>,
    statuses: Vec<String>,
    sorts: Vec<String>,
    filter_kind: String,
    filter_status: String,
    filter_dataset: String,
    sort: String,
}

#[derive(Deserialize, Default)]
pub struct RunsQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    dataset: String,
    #[serde(default)]
    sort: String,
}

pub async fn list(
    State(s): State<AppState>,
    Query(q): Query<RunsQuery>,
) -> Result<Response, PageError> {
    // Unknown filter values are ignored rather than trusted: only known kinds/statuses reach SQL.
    let filter = RunFilter {
        kind: RunKind::parse(&q.kind).map(|k| k.as_str().to_string()),
        status: RunStatus::parse(&q.status).map(|k| k.as_str().to_string()),
        dataset_id: q.dataset.parse().ok(),
        sort: RunSort::parse(&q.sort).unwrap_or_default(),
    };
    Ok(render(&RunsPage {
        runs: db::runs::list(&s.pool, &filter).await?,
        datasets: db::datasets::list(&s.pool).await?,
        kinds: RunKind::ALL
            .iter()
            .map(|k| k.as_str().to_string())
            .collect(),
        statuses: RunStatus::ALL
            .iter()
            .map(|k| k.as_str().to_string())
            .collect(),
        sorts: [
            RunSort::Newest,
            RunSort::Oldest,
            RunSort::Name,
            RunSort::Status,
        ]
        .iter()
        .map(|k| k.as_str().to_string())
        .collect(),
        filter_kind: filter.kind.clone().unwrap_or_default(),
        filter_status: filter.status.clone().unwrap_or_default(),
        filter_dataset: filter.dataset_id.map(|d| d.to_string()).unwrap_or_default(),
        sort: filter.sort.as_str().to_string(),
    }))
}

#[derive(Template)]
#[template(path = "new_run.html")]
struct NewRunPage {
    csrf: String,
    error: Option<String>,
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
    /// Succeeded `proposals` runs: the pseudo-box sources of box-domain pre-training.
    proposals_runs: Vec<ProposalsChoice>,
    /// Weights a run can start from: pre-trained detectors, pre-trained backbones, fine-tuned
    /// models (succeeded runs only).
    checkpoints: Vec<CheckpointChoice>,
    /// Per-detector defaults of `PretrainBoxConfig::for_detector` that differ between detectors,
    /// as JSON (`{"fcos": {"lr": 0.01, ...}, ...}`) for the form's script.
    pb_detector_defaults: String,
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

/// The values of the three training forms, each a default or what was posted.
pub struct Forms {
    pub ft: FinetuneForm,
    pub pb: PretrainBoxForm,
    pub pi: PretrainImageForm,
}

impl Forms {
    fn defaults() -> Forms {
        Forms {
            ft: FinetuneForm::defaults(),
            pb: PretrainBoxForm::defaults(),
            pi: PretrainImageForm::defaults(),
        }
    }
}

/// Where the weights of a run's artifact come from, as the forms spell it.
fn checkpoint_value(run_id: i64, name: &str) -> String {
    format!("checkpoint:{run_id}:{name}")
}

impl NewRunPage {
    async fn new(
        s: &AppState,
        csrf: String,
        error: Option<String>,
        forms: Forms,
    ) -> Result<NewRunPage, PageError> {
        use aligndet_common::jobs::JobConfig;
        use aligndet_common::pretrain_config::artifacts;
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
                let (detector, backbone, artifact) =
                    match serde_json::from_value::<JobConfig>(run.config.clone()) {
                        Ok(JobConfig::PretrainBox(c)) => (
                            wire_name(&c.detector),
                            wire_name(&c.backbone),
                            artifacts::PRETRAINED_DETECTOR,
                        ),
                        Ok(JobConfig::PretrainImage(c)) => (
                            String::new(),
                            wire_name(&c.backbone),
                            artifacts::PRETRAINED_BACKBONE,
                        ),
                        Ok(JobConfig::Finetune(c)) => (
                            wire_name(&c.detector),
                            wire_name(&c.backbone),
                            "model.safetensors",
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
        let detector_kinds = [
            (DetectorKind::Fcos, "FCOS"),
            (DetectorKind::Retinanet, "RetinaNet"),
            (DetectorKind::FasterRcnn, "Faster R-CNN"),
        ];
        Ok(NewRunPage {
            csrf,
            error,
            datasets,
            ft: forms.ft,
            pb: forms.pb,
            pi: forms.pi,
            split_names,
            pb_detector_defaults: detector_defaults_json(&detector_kinds.map(|(k, _)| k)),
            detectors: detector_kinds
                .into_iter()
                .map(|(k, label)| (wire_name(&k), label))
                .collect(),
            backbones: [
                (BackboneKind::EfficientnetLite0, "EfficientNet-Lite0"),
                (BackboneKind::Resnet18, "ResNet-18"),
                (BackboneKind::Resnet50, "ResNet-50"),
            ]
            .into_iter()
            .map(|(k, label)| (wire_name(&k), label))
            .collect(),
            optimizers: [
                (OptimizerKind::Sgd, "SGD (momentum)"),
                (OptimizerKind::Adamw, "AdamW"),
            ]
            .into_iter()
            .map(|(k, label)| (wire_name(&k), label))
            .collect(),
            proposals_runs,
            checkpoints,
        })
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
                format!("lr {}, weight decay {}", short_number(lr), short_number(wd))
            }
            _ => "lr ×1.5, weight decay ÷2".to_string(),
        }
    }
}

/// A number at 6 significant digits, without float noise (0.015, not 0.015000000000000001).
fn short_number(x: f64) -> String {
    format!("{:.6e}", x)
        .parse::<f64>()
        .map(|v| v.to_string())
        .unwrap_or_else(|_| x.to_string())
}

/// The numeric fields of `PretrainBoxConfig::for_detector` that differ between detectors.
fn detector_defaults_json(detectors: &[DetectorKind]) -> String {
    let configs: Vec<(String, serde_json::Value)> = detectors
        .iter()
        .map(|d| {
            (
                wire_name(d),
                serde_json::to_value(PretrainBoxConfig::for_detector(*d)).unwrap_or_default(),
            )
        })
        .collect();
    let mut out = serde_json::Map::new();
    for (name, config) in &configs {
        let mut differing = serde_json::Map::new();
        if let Some(fields) = config.as_object() {
            for (key, v) in fields {
                if v.is_number() && configs.iter().any(|(_, other)| other.get(key) != Some(v)) {
                    differing.insert(key.clone(), v.clone());
                }
            }
        }
        out.insert(name.clone(), serde_json::Value::Object(differing));
    }
    serde_json::Value::Object(out).to_string()
}

/// `GET /runs/new`, optionally pre-filled: `kind` names the form, and `dataset_id`,
/// `detector`, `backbone`, `init` / `backbone_init`, `proposals_run_id` replace its defaults
/// (the run pages' "fine-tune from this" and "use as backbone" links).
pub async fn new_form(
    State(s): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let given = |k: &str| {
        query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let mut forms = Forms::defaults();
    match given("kind").as_deref().and_then(RunKind::parse) {
        Some(RunKind::Finetune) => {
            let ft = &mut forms.ft;
            for (key, slot) in [
                ("dataset_id", &mut ft.dataset_id),
                ("detector", &mut ft.detector),
                ("backbone", &mut ft.backbone),
                ("init", &mut ft.init),
            ] {
                if let Some(v) = given(key) {
                    *slot = v;
                }
            }
            if let Some((run, artifact)) = checkpoint_parts(&ft.init) {
                ft.init_run = run.to_string();
                ft.init_artifact = artifact.to_string();
            }
        }
        Some(RunKind::PretrainBox) => {
            if let Some(d) = given("detector")
                .and_then(|d| serde_json::from_value(serde_json::Value::String(d)).ok())
            {
                forms.pb = PretrainBoxForm::of_config(&PretrainBoxConfig::for_detector(d));
            }
            let pb = &mut forms.pb;
            for (key, slot) in [
                ("dataset_id", &mut pb.dataset_id),
                ("proposals_run_id", &mut pb.proposals_run_id),
                ("backbone", &mut pb.backbone),
                ("backbone_init", &mut pb.backbone_init),
            ] {
                if let Some(v) = given(key) {
                    *slot = v;
                }
            }
        }
        Some(RunKind::PretrainImage) => {
            let pi = &mut forms.pi;
            for (key, slot) in [
                ("dataset_id", &mut pi.dataset_id),
                ("backbone", &mut pi.backbone),
            ] {
                if let Some(v) = given(key) {
                    *slot = v;
                }
            }
        }
        _ => {}
    }
    Ok(render(&NewRunPage::new(&s, csrf.0, None, forms).await?))
}

/// How a config enum is spelled in JSON (and so in the form's option values).
fn wire_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Form values when the schedule is switched away from the default's kind (the configs have
/// a default for only one of them).
const FORM_STEP_GAMMA: f64 = 0.1;
const FORM_COSINE_MIN_FACTOR: f64 = 0.0;

/// A JSON value as form text: numbers as Rust prints them (0.0001, not 1e-4), null as blank.
fn json_text(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n
            .as_u64()
            .map(|u| u.to_string())
            .or_else(|| n.as_i64().map(|i| i.to_string()))
            .or_else(|| n.as_f64().map(|f| f.to_string()))
            .unwrap_or_default(),
        other => other.to_string(),
    }
}

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
    fn of_config(c: &serde_json::Value) -> OptimForm {
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

    fn posted(field: &dyn Fn(&str) -> Option<String>) -> OptimForm {
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
    fn insert_into(
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
                "milestones": number_list("schedule.milestones", &self.milestones)?,
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

/// A whole number into `c[key]` unless blank; `field` names it in the error.
fn put_number<T: std::str::FromStr + Into<serde_json::Value>>(
    c: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
    field: &str,
    v: &str,
) -> Result<(), String> {
    if let Some(n) = number::<T>(field, v)? {
        c.insert(key.into(), n.into());
    }
    Ok(())
}

/// A finite real number into `c[key]` unless blank; `field` names it in the error.
fn put_real(
    c: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
    field: &str,
    v: &str,
) -> Result<(), String> {
    if let Some(x) = real(field, v)? {
        c.insert(key.into(), x.into());
    }
    Ok(())
}

/// The run id and artifact name of a `checkpoint:RUN:ARTIFACT` choice.
fn checkpoint_parts(v: &str) -> Option<(i64, &str)> {
    let rest = v.strip_prefix("checkpoint:")?;
    let (run, name) = rest.split_once(':')?;
    Some((run.parse().ok()?, name))
}

/// An `init` field (`scratch`, `imagenet_backbone` or `checkpoint:RUN:ARTIFACT`) as the
/// config's JSON; `field` names it in errors.
fn init_json(field: &str, v: &str) -> Result<serde_json::Value, String> {
    use serde_json::json;
    match v {
        "scratch" | "imagenet_backbone" => Ok(json!({ "from": v })),
        _ => {
            let (run_id, name) = checkpoint_parts(v).ok_or_else(|| {
                format!(
                    "{field}: {v:?} is not one of scratch, imagenet_backbone or a listed checkpoint"
                )
            })?;
            aligndet_common::api::check_artifact_name(name)
                .map_err(|e| format!("{field}.artifact.name: {e}"))?;
            Ok(json!({ "from": "checkpoint", "artifact": { "run_id": run_id, "name": name } }))
        }
    }
}

/// An `InitConfig` as an init field's text.
fn init_text(init: &InitConfig) -> String {
    match init {
        InitConfig::Scratch => "scratch".into(),
        InitConfig::ImagenetBackbone => "imagenet_backbone".into(),
        InitConfig::Checkpoint { artifact } => checkpoint_value(artifact.run_id, &artifact.name),
    }
}

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

fn comma_list(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

impl FinetuneForm {
    /// `TrainConfig::default()` rendered as form values, so the form cannot drift from it.
    pub fn defaults() -> FinetuneForm {
        let c = TrainConfig::default();
        let (init_run, init_artifact) = match &c.init {
            InitConfig::Checkpoint { artifact } => {
                (artifact.run_id.to_string(), artifact.name.clone())
            }
            _ => (String::new(), "model.safetensors".to_string()),
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
    fn posted(field: &dyn Fn(&str) -> Option<String>) -> FinetuneForm {
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
    fn to_config(&self) -> Result<serde_json::Value, String> {
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
            aligndet_common::api::check_artifact_name(&self.init_artifact)
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
                number_list("augment.min_sizes", &self.min_sizes)?.into(),
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
    fn defaults() -> PretrainBoxForm {
        PretrainBoxForm::of_config(&PretrainBoxConfig::default())
    }

    fn of_config(c: &PretrainBoxConfig) -> PretrainBoxForm {
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
            opt: OptimForm::of_config(&serde_json::to_value(c).unwrap_or_default()),
        }
    }

    fn posted(field: &dyn Fn(&str) -> Option<String>) -> PretrainBoxForm {
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
            opt: OptimForm::posted(field),
        }
    }

    /// The `pretrain_box` job config as JSON: `PretrainBoxConfig::for_detector` of the chosen
    /// detector, with every non-blank field put over it (so a blank max boxes, samples or lr
    /// takes the detector's reference value).
    fn to_config(&self) -> Result<serde_json::Value, String> {
        use serde_json::Value;
        let detector: DetectorKind = enum_of("detector", &self.detector)?;
        let Ok(Value::Object(mut c)) =
            serde_json::to_value(PretrainBoxConfig::for_detector(detector))
        else {
            return Err("detector: no defaults".into());
        };
        c.insert("kind".into(), RunKind::PretrainBox.as_str().into());
        let dataset_id: i64 = self
            .dataset_id
            .parse()
            .map_err(|_| "dataset_id: choose a dataset".to_string())?;
        c.insert("dataset_id".into(), dataset_id.into());
        let proposals: i64 = self.proposals_run_id.parse().map_err(|_| {
            format!(
                "proposals_run_id: {:?} is not a run id; choose the proposals run whose pseudo-boxes to pre-train on",
                self.proposals_run_id
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
                number_list("views.min_sizes", &self.min_sizes)?.into(),
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
    fn defaults() -> PretrainImageForm {
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
            opt: OptimForm::of_config(&serde_json::to_value(&c).unwrap_or_default()),
        }
    }

    fn posted(field: &dyn Fn(&str) -> Option<String>) -> PretrainImageForm {
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
            opt: OptimForm::posted(field),
        }
    }

    /// The `pretrain_image` job config as JSON (a blank field keeps the default).
    fn to_config(&self) -> Result<serde_json::Value, String> {
        use serde_json::Value;
        let mut c = serde_json::Map::new();
        c.insert("kind".into(), RunKind::PretrainImage.as_str().into());
        let dataset_id: i64 = self
            .dataset_id
            .parse()
            .map_err(|_| "dataset_id: choose a dataset".to_string())?;
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

/// A config enum from its JSON spelling; serde's message lists the accepted values.
fn enum_of<T: serde::de::DeserializeOwned>(field: &str, v: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(v.to_string()))
        .map_err(|e| format!("{field}: {e}"))
}

/// A config enum's JSON spelling, checked.
fn enum_value<T: serde::de::DeserializeOwned + serde::Serialize>(
    field: &str,
    v: &str,
) -> Result<serde_json::Value, String> {
    let parsed: T = enum_of(field, v)?;
    serde_json::to_value(parsed).map_err(|e| format!("{field}: {e}"))
}

/// A whole number, or `None` when blank.
fn number<T: std::str::FromStr>(field: &str, v: &str) -> Result<Option<T>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("{field}: {v:?} is not a whole number in range"))
}

/// A finite real number, or `None` when blank (JSON has no NaN or infinity).
fn real(field: &str, v: &str) -> Result<Option<f64>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(Some(x)),
        _ => Err(format!("{field}: {v:?} is not a finite number")),
    }
}

/// Comma- (or space-) separated whole numbers; blank gives an empty list.
fn number_list(field: &str, v: &str) -> Result<Vec<u32>, String> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse()
                .map_err(|_| format!("{field}: {p:?} is not a whole number"))
        })
        .collect()
}

/// A person's mistake (the form comes back with it) inside a server result (500 otherwise).
type Checked<T> = Result<Result<T, String>, PageError>;

/// Form JSON → the typed job config, validated (the error names the field).
fn typed_config(json: &serde_json::Value) -> Result<aligndet_common::jobs::JobConfig, String> {
    let config = serde_json::from_value::<aligndet_common::jobs::JobConfig>(json.clone())
        .map_err(|e| format!("invalid config: {e}"))?;
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// Queue a run built from a form: the config is typed and validated, then [`submit`] makes the
/// same checks as for a script's run. The inner error is the person's ("field: problem"; the
/// form comes back with it), the outer one the server's.
async fn queue_from_form(
    s: &AppState,
    name: &str,
    config: Result<serde_json::Value, String>,
    aligned_rule: bool,
) -> Checked<i64> {
    let config = match config.and_then(|c| typed_config(&c)) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let run = submit::NewRun {
        name: name.to_string(),
        config,
        max_attempts: None,
        parents: vec![],
        depends_on: vec![],
        aligned_rule,
    };
    match submit::submit(s, run).await {
        Ok(id) => Ok(Ok(id)),
        Err(e @ submit::SubmitError::Field { .. }) => Ok(Err(e.to_string())),
        Err(submit::SubmitError::Internal(e)) => Err(e.into()),
    }
}

/// The new-run form, posted as url-encoded fields. Numbers arrive as strings; the typed config
/// (with its validation) decides what is acceptable.
pub async fn create(
    State(s): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    axum::Form(form): axum::Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
    };
    // The training forms come back with what was typed and the error naming the field.
    let kind = field("kind").as_deref().and_then(RunKind::parse);
    let training = match kind {
        Some(RunKind::Finetune) => {
            let ft = FinetuneForm::posted(&field);
            let outcome = queue_from_form(&s, &ft.name, ft.to_config(), ft.aligned_rule).await?;
            Some((
                outcome,
                Forms {
                    ft,
                    ..Forms::defaults()
                },
            ))
        }
        Some(RunKind::PretrainBox) => {
            let pb = PretrainBoxForm::posted(&field);
            let outcome = queue_from_form(&s, &pb.name, pb.to_config(), false).await?;
            Some((
                outcome,
                Forms {
                    pb,
                    ..Forms::defaults()
                },
            ))
        }
        Some(RunKind::PretrainImage) => {
            let pi = PretrainImageForm::posted(&field);
            let outcome = queue_from_form(&s, &pi.name, pi.to_config(), false).await?;
            Some((
                outcome,
                Forms {
                    pi,
                    ..Forms::defaults()
                },
            ))
        }
        _ => None,
    };
    if let Some((outcome, forms)) = training {
        return match outcome {
            Ok(id) => Ok(Redirect::to(&format!("/runs/{id}")).into_response()),
            Err(e) => Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                render(&NewRunPage::new(&s, csrf.0, Some(e), forms).await?),
            )
                .into_response()),
        };
    }
    let result = (|| {
        let kind = field("kind").unwrap_or_default();
        let mut config = serde_json::Map::new();
        config.insert("kind".into(), kind.clone().into());
        match RunKind::parse(&kind) {
            Some(RunKind::Benchmark) => {
                if let Some(b) = field("backbone") {
                    config.insert("backbone".into(), b.into());
                }
                for key in ["batch_size", "resolution", "steps", "warmup_steps"] {
                    if let Some(v) = field(key).filter(|v| !v.is_empty()) {
                        let n: u32 = v
                            .parse()
                            .map_err(|_| format!("{key}: {v:?} is not a whole number"))?;
                        config.insert(key.into(), n.into());
                    }
                }
            }
            Some(RunKind::Proposals) => {
                let dataset: i64 = field("dataset_id")
                    .and_then(|v| v.parse().ok())
                    .ok_or("choose a dataset")?;
                config.insert("dataset_id".into(), dataset.into());
                if let Some(st) = field("strategy") {
                    config.insert("strategy".into(), st.into());
                }
                for key in ["max_images", "seed"] {
                    if let Some(v) = field(key).filter(|v| !v.is_empty()) {
                        let n: u64 = v
                            .parse()
                            .map_err(|_| format!("{key}: {v:?} is not a whole number"))?;
                        config.insert(key.into(), n.into());
                    }
                }
                let mut filter = serde_json::Map::new();
                for key in ["min_side", "max_aspect", "max_relative_size", "nms_iou"] {
                    if let Some(x) = real(key, &field(key).unwrap_or_default())? {
                        filter.insert(key.into(), x.into());
                    }
                }
                if let Some(v) = field("top_k").filter(|v| !v.is_empty()) {
                    let n: u32 = v
                        .parse()
                        .map_err(|_| format!("top_k: {v:?} is not a whole number"))?;
                    filter.insert("top_k".into(), n.into());
                }
                config.insert("filter".into(), serde_json::Value::Object(filter));
            }
            Some(RunKind::Evaluate) => {
                let dataset: i64 = field("dataset_id")
                    .and_then(|v| v.parse().ok())
                    .ok_or("choose a dataset")?;
                config.insert("dataset_id".into(), dataset.into());
                if let Some(split) = field("split").filter(|v| !v.is_empty()) {
                    config.insert("split".into(), split.into());
                }
                let run_id: i64 = field("detections_run")
                    .and_then(|v| v.parse().ok())
                    .ok_or("give the run whose artifact holds the detections")?;
                let name = field("detections_artifact").unwrap_or_default();
                config.insert(
                    "detections".into(),
                    serde_json::json!({"run_id": run_id, "name": name}),
                );
            }
            // The training forms are handled above, with their own re-rendering.
            Some(RunKind::Finetune | RunKind::PretrainBox | RunKind::PretrainImage) | None => {
                return Err(format!("unknown run kind {kind:?}"));
            }
        }
        Ok((
            field("name").unwrap_or_default(),
            serde_json::Value::Object(config),
        ))
    })();
    let outcome = match result {
        Ok((name, config)) => queue_from_form(&s, &name, Ok(config), false).await?,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(id) => Ok(Redirect::to(&format!("/runs/{id}")).into_response()),
        Err(e) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            render(&NewRunPage::new(&s, csrf.0, Some(e), Forms::defaults()).await?),
        )
            .into_response()),
    }
}

/// Multipart form: `name`, `dataset_id`, `split`, and the COCO results file `detections`.
/// The run and its input artifact are stored in one transaction, so no worker can claim the run
/// before its detections are in place.
pub async fn create_evaluate_upload(
    State(s): State<AppState>,
    mut multipart: axum::extract::Multipart,
) -> Result<Response, PageError> {
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut detections: Option<Vec<u8>> = None;
    let limit = (s.cfg.upload_limit_mib * 1024 * 1024) as usize;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| PageError::bad_request(format!("the upload could not be read: {e}")))?
    {
        let name = field.name().unwrap_or("").to_string();
        if name == "detections" {
            let bytes = field.bytes().await.map_err(|e| {
                PageError::bad_request(format!("the detections upload failed or is too large: {e}"))
            })?;
            if bytes.len() > limit {
                return Err(PageError::bad_request(
                    "the detections file is larger than the upload limit",
                ));
            }
            detections = Some(bytes.to_vec());
        } else {
            let text = field
                .text()
                .await
                .map_err(|e| PageError::bad_request(e.to_string()))?;
            fields.insert(name, text);
        }
    }
    let detections =
        detections.ok_or_else(|| PageError::bad_request("choose a COCO results file to upload"))?;
    // Refuse what is not JSON now, with the parser's position; the worker checks the rest.
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&detections) {
        return Err(PageError::bad_request(format!(
            "the detections file is not valid JSON: {e}"
        )));
    }
    let dataset_id: i64 = fields
        .get("dataset_id")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| PageError::bad_request("choose a dataset"))?;
    let split = fields
        .get("split")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let name = aligndet_common::names::check_display_name(
        fields.get("name").map_or("evaluation", |n| n.as_str()),
        "the run name",
        200,
    )
    .map_err(PageError::bad_request)?;
    if db::datasets::get(&s.pool, dataset_id).await?.is_none() {
        return Err(PageError::bad_request(format!(
            "dataset_id: dataset {dataset_id} not found"
        )));
    }
    let artifact = "detections.json";

    let mut tx = s.pool.begin().await?;
    // The run id is needed in the config; insert with a placeholder and set it in the same tx.
    let mut config = aligndet_common::jobs::EvaluateConfig {
        dataset_id,
        split,
        detections: aligndet_common::jobs::ArtifactRef {
            run_id: 0,
            name: artifact.into(),
        },
    };
    let config_json =
        serde_json::to_value(aligndet_common::jobs::JobConfig::Evaluate(config.clone()))?;
    let id = db::runs::create_in(
        &mut tx,
        &db::runs::NewRun {
            kind: RunKind::Evaluate.as_str(),
            name: &name,
            config: config_json,
            dataset_id: Some(dataset_id),
            max_attempts: s.cfg.max_attempts,
            parents: vec![],
        },
    )
    .await?;
    config.detections.run_id = id;
    config
        .validate()
        .map_err(|e| PageError::bad_request(e.to_string()))?;
    db::runs::set_config(
        &mut tx,
        id,
        &serde_json::to_value(aligndet_common::jobs::JobConfig::Evaluate(config))?,
    )
    .await?;
    let dir = s.artifacts_dir(id);
    tokio::fs::create_dir_all(&dir).await?;
    tokio::fs::write(dir.join(artifact), &detections).await?;
    db::runs::insert_artifact_in(&mut tx, id, artifact, detections.len() as i64).await?;
    if let Err(e) = tx.commit().await {
        let _ = tokio::fs::remove_dir_all(&dir).await;
        return Err(e.into());
    }
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

#[derive(Template)]
#[template(path = "run_live.html")]
struct RunLive {
    run: RunRow,
    terminal: bool,
    attempts: Vec<AttemptRow>,
    logs: Vec<LogRow>,
    charts: Vec<(String, String)>,
    summaries: Vec<(String, f64)>,
    /// Fine-tune runs: the 12 COCO statistics at each periodic evaluation, (step, cells).
    eval_history: Vec<(i64, Vec<String>)>,
}

impl RunLive {
    fn stat_names(&self) -> &'static [&'static str] {
        &aligndet_common::report::COCO_STAT_NAMES
    }
}

/// A fine-tune run's curves, grouped (one chart for every loss term, one for AP at the periodic
/// evaluations, one for the learning rate) and its evaluation history. Returns the charts, the
/// history rows and the metric keys used, which the generic per-key charts then skip.
async fn finetune_charts(
    s: &AppState,
    run: &RunRow,
    keys: &[(String, i64)],
    curves: &LiveSeries,
) -> Result<(Vec<(String, String)>, Vec<(i64, Vec<String>)>, Vec<String>), PageError> {
    use aligndet_common::report::COCO_STAT_NAMES;
    let val_split = finetune_config(run)
        .map(|c| c.val_split)
        .unwrap_or_else(|| "val".into());
    let mut used: Vec<String> = Vec::new();
    let mut charts = grouped_charts(
        curves,
        keys,
        &[ChartGroup {
            id: "loss",
            title: "Training loss",
            prefix: "loss/",
        }],
        &mut used,
    );
    let has = |k: &str| keys.iter().any(|(key, _)| key == k);
    let mut ap = Vec::new();
    for stat in ["AP", "AP50", "AP75"] {
        let key = format!("eval/{stat}");
        if has(&key) {
            ap.push((stat.to_string(), float_series(curves, &key, &mut used)));
        }
    }
    if !ap.is_empty() {
        let title = format!("COCO AP on {val_split} at each evaluation");
        let id = format!(
            "eval-ap:{title}:{:?}",
            ap.iter().map(|a| &a.0).collect::<Vec<_>>()
        );
        charts.push((
            "eval-ap".to_string(),
            curves.chart(&id, || plots::line_chart(&title, "optimizer step", &ap)),
        ));
    }
    charts.extend(grouped_charts(curves, keys, &[LR_CHART], &mut used));
    // Every evaluation step, with whichever of the 12 statistics it reported.
    let mut history: std::collections::BTreeMap<i64, Vec<Option<f64>>> = Default::default();
    for (i, stat) in COCO_STAT_NAMES.iter().enumerate() {
        let key = format!("eval/{stat}");
        if !has(&key) {
            continue;
        }
        if !used.contains(&key) {
            used.push(key.clone());
        }
        for (step, v) in db::runs::metric_series(&s.pool, run.id, &key).await? {
            history
                .entry(step)
                .or_insert_with(|| vec![None; COCO_STAT_NAMES.len()])[i] = Some(v);
        }
    }
    let rows = history
        .into_iter()
        .map(|(step, cells)| {
            (
                step,
                cells
                    .into_iter()
                    .map(|v| v.map(format_stat).unwrap_or_default())
                    .collect(),
            )
        })
        .collect();
    Ok((charts, rows, used))
}

/// The stored config of a fine-tune run (`None` for other kinds or an unreadable config).
pub(crate) fn finetune_config(run: &RunRow) -> Option<TrainConfig> {
    match serde_json::from_value(run.config.clone()).ok()? {
        aligndet_common::jobs::JobConfig::Finetune(c) => Some(c),
        _ => None,
    }
}

/// Metrics drawn in one chart: the key `prefix`, or every key starting with it when it ends
/// in `/` (so a new loss term or diagnostic joins its chart without naming it here).
struct ChartGroup {
    id: &'static str,
    title: &'static str,
    prefix: &'static str,
}

const LR_CHART: ChartGroup = ChartGroup {
    id: "lr",
    title: "Learning rate",
    prefix: "train/lr",
};

/// `pretrain_box` curves: every loss term (contrastive, regression, centerness, RPN, …), the
/// learning rate, the momentum detector's EMA coefficient, and the `pretrain/*` diagnostics.
const PRETRAIN_BOX_CHARTS: [ChartGroup; 4] = [
    ChartGroup {
        id: "loss",
        title: "Pre-training loss (box-level contrastive, regression, …)",
        prefix: "loss/",
    },
    LR_CHART,
    ChartGroup {
        id: "ema-momentum",
        title: "EMA momentum of the momentum detector",
        prefix: "train/ema_momentum",
    },
    ChartGroup {
        id: "pretrain",
        title: "Pre-training diagnostics",
        prefix: "pretrain/",
    },
];

/// `pretrain_image` curves: the InfoNCE loss, instance-discrimination accuracy, learning rate.
const PRETRAIN_IMAGE_CHARTS: [ChartGroup; 4] = [
    ChartGroup {
        id: "loss",
        title: "Pre-training loss (InfoNCE)",
        prefix: "loss/",
    },
    ChartGroup {
        id: "accuracy",
        title: "Instance-discrimination accuracy (positive key ranked first)",
        prefix: "train/accuracy",
    },
    LR_CHART,
    ChartGroup {
        id: "pretrain",
        title: "Pre-training diagnostics",
        prefix: "pretrain/",
    },
];

/// One chart per group that has metrics, skipping keys already drawn; a group's `…/total`
/// comes first so it keeps the first colour whatever the terms are called.
fn grouped_charts(
    curves: &LiveSeries,
    keys: &[(String, i64)],
    groups: &[ChartGroup],
    used: &mut Vec<String>,
) -> Vec<(String, String)> {
    let mut charts = Vec::new();
    for g in groups {
        let mut members: Vec<&str> = keys
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| {
                if g.prefix.ends_with('/') {
                    k.starts_with(g.prefix)
                } else {
                    *k == g.prefix
                }
            })
            .filter(|k| !used.iter().any(|u| u == k))
            .collect();
        members.sort_by_key(|k| (!k.ends_with("/total"), *k));
        let mut series = Vec::new();
        for key in members {
            series.push((key.to_string(), float_series(curves, key, used)));
        }
        if !series.is_empty() {
            let members: Vec<&String> = series.iter().map(|s| &s.0).collect();
            let id = format!("group:{}:{}:{members:?}", g.id, g.title);
            charts.push((
                g.id.to_string(),
                curves.chart(&id, || {
                    plots::line_chart(g.title, "optimizer step", &series)
                }),
            ));
        }
    }
    charts
}

/// One metric as chart points (downsampled: `serving::live_series`), noting the key as drawn.
fn float_series(curves: &LiveSeries, key: &str, used: &mut Vec<String>) -> Vec<(f64, f64)> {
    used.push(key.to_string());
    curves.points(key)
}

async fn live_html(s: &AppState, run: RunRow) -> Result<String, PageError> {
    let id = run.id;
    // Cached per run until it changes; never a full read of a long series per viewer.
    let curves = crate::serving::live_series::for_run(s, id).await?;
    let keys = curves.key_counts();
    let grouped = match RunKind::parse(&run.kind) {
        Some(RunKind::PretrainBox) => &PRETRAIN_BOX_CHARTS[..],
        Some(RunKind::PretrainImage) => &PRETRAIN_IMAGE_CHARTS[..],
        _ => &[],
    };
    let (mut charts, eval_history, used) = if run.kind == RunKind::Finetune.as_str() {
        finetune_charts(s, &run, &keys, &curves).await?
    } else {
        let mut used = Vec::new();
        let charts = grouped_charts(&curves, &keys, grouped, &mut used);
        (charts, Vec::new(), used)
    };
    let mut summaries = Vec::new();
    for (key, n) in keys.into_iter().filter(|(k, _)| !used.contains(k)) {
        if n <= 1 {
            if let Some(v) = curves.single_value(&key) {
                summaries.push((key, v));
            }
            continue;
        }
        let svg = curves.chart(&format!("key:{key}"), || {
            plots::line_chart(&key, "step", &[(key.clone(), curves.points(&key))])
        });
        charts.push((key, svg));
    }
    let page = RunLive {
        terminal: RunStatus::parse(&run.status).is_some_and(|st| st.is_terminal()),
        attempts: db::runs::attempts(&s.pool, id).await?,
        logs: db::runs::log_tail(&s.pool, id, 200).await?,
        charts,
        summaries,
        eval_history,
        run,
    };
    page.render()
        .map_err(|e| PageError::from(anyhow::anyhow!("template: {e}")))
}

/// What the run page shows of an `evaluate` run's `eval.json`.
pub struct EvalView {
    pub stats: Vec<(&'static str, f64)>,
    pub report: aligndet_common::report::EvaluationReport,
    pub pr_mean_chart: String,
    pub pr_class_chart: String,
    /// (class name, GT boxes, formatted AP, AP50, AP75, AR100)
    pub class_rows: Vec<(String, usize, Vec<String>)>,
    /// (area range, formatted AP, formatted AR)
    pub size_rows: Vec<(String, String, String)>,
}

/// pycocotools prints −1 for undefined statistics; show a dash instead.
fn format_stat(v: f64) -> String {
    if v < 0.0 {
        "–".to_string()
    } else {
        format!("{v:.3}")
    }
}

fn eval_view(report: aligndet_common::report::EvaluationReport) -> EvalView {
    use aligndet_common::report::COCO_STAT_NAMES;
    let recall_axis = |p: &[f64]| -> Vec<(f64, f64)> {
        p.iter()
            .enumerate()
            .filter(|(_, v)| **v >= 0.0)
            .map(|(i, v)| (i as f64 / 100.0, *v))
            .collect()
    };
    // Mean over classes (skipping undefined points, as pycocotools does for the summary).
    let mut mean_series = Vec::new();
    for (iou, label) in [
        (Some(0.5), "IoU 0.5"),
        (Some(0.75), "IoU 0.75"),
        (None, "IoU 0.5:0.95"),
    ] {
        let curves: Vec<&Vec<f64>> = report
            .pr_curves
            .iter()
            .filter(|c| c.iou == iou)
            .map(|c| &c.precision)
            .collect();
        if curves.is_empty() {
            continue;
        }
        let mean: Vec<f64> = (0..101)
            .map(|i| {
                let vals: Vec<f64> = curves
                    .iter()
                    .filter_map(|c| c.get(i).copied())
                    .filter(|v| *v >= 0.0)
                    .collect();
                if vals.is_empty() {
                    -1.0
                } else {
                    vals.iter().sum::<f64>() / vals.len() as f64
                }
            })
            .collect();
        mean_series.push((label.to_string(), recall_axis(&mean)));
    }
    let class_series: Vec<(String, Vec<(f64, f64)>)> = report
        .pr_curves
        .iter()
        .filter(|c| c.iou == Some(0.5))
        .take(6)
        .map(|c| (c.name.clone(), recall_axis(&c.precision)))
        .collect();
    let class_rows = report
        .per_class
        .iter()
        .map(|c| {
            let cells = [c.ap, c.ap50, c.ap75, c.ar100]
                .into_iter()
                .map(format_stat)
                .collect();
            (c.name.clone(), c.num_gt, cells)
        })
        .collect();
    let size_rows = report
        .per_size
        .iter()
        .map(|s| (s.area.clone(), format_stat(s.ap), format_stat(s.ar)))
        .collect();
    EvalView {
        class_rows,
        size_rows,
        stats: COCO_STAT_NAMES
            .iter()
            .copied()
            .zip(report.stats.iter().copied())
            .collect(),
        pr_mean_chart: plots::line_chart(
            "Precision-recall (mean over classes)",
            "recall",
            &mean_series,
        ),
        pr_class_chart: plots::line_chart(
            "Precision-recall at IoU 0.5 (per class)",
            "recall",
            &class_series,
        ),
        report,
    }
}

/// `load_report.json` of a fine-tune run: what the initial weights filled in.
#[derive(Deserialize)]
struct LoadReport {
    source: String,
    #[serde(default)]
    loaded: Vec<String>,
    #[serde(default)]
    missing: Vec<String>,
    #[serde(default)]
    unexpected: Vec<String>,
    /// (tensor name, shape in the model, shape in the file)
    #[serde(default)]
    shape_mismatch: Vec<(String, Vec<i64>, Vec<i64>)>,
}

/// What the run page shows of a fine-tune run besides its curves.
pub struct FinetuneView {
    pub val_split: String,
    /// The load report, or why it cannot be shown (absent while the run has not written it).
    pub load: Option<Result<LoadView, String>>,
    /// Artifacts worth a direct link, those present: (name, what it is).
    pub downloads: Vec<(String, &'static str)>,
    /// The run whose artifact gave the initial weights: (run id, its kind, artifact name).
    pub init_run: Option<(i64, String, String)>,
}

pub struct LoadView {
    pub source: String,
    pub loaded: Vec<String>,
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// (tensor name, model shape, file shape) as text.
    pub mismatched: Vec<(String, String, String)>,
    /// The same counts per module (`backbone.body`, `backbone.fpn`, `head.classification_head`,
    /// `rpn.head`, `roi_heads.box_head`, …), in name order.
    pub modules: Vec<ModuleLoad>,
}

/// What the initial weights filled in of one module.
pub struct ModuleLoad {
    pub module: String,
    pub loaded: usize,
    pub missing: usize,
    pub unexpected: usize,
    pub mismatched: usize,
}

impl ModuleLoad {
    /// `all loaded`, `partly loaded`, `fresh` (nothing from the file) or `unused` (only in the file).
    pub fn verdict(&self) -> &'static str {
        match (self.loaded, self.missing + self.mismatched) {
            (0, 0) => "unused",
            (0, _) => "fresh",
            (_, 0) => "all loaded",
            _ => "partly loaded",
        }
    }
}

impl LoadView {
    /// Modules that received every one of their tensors from the file.
    pub fn complete_modules(&self) -> usize {
        self.modules
            .iter()
            .filter(|m| m.verdict() == "all loaded")
            .count()
    }

    /// Modules that start fresh: none of their tensors came from the file.
    pub fn fresh_modules(&self) -> usize {
        self.modules
            .iter()
            .filter(|m| m.verdict() == "fresh")
            .count()
    }
}

/// The module a tensor belongs to: its first two name parts (`backbone.body.conv1.weight` →
/// `backbone.body`, `rpn.head.conv.0.0.weight` → `rpn.head`), or the first of two.
fn module_of(tensor: &str) -> String {
    let parts: Vec<&str> = tensor.split('.').collect();
    let depth = if parts.len() >= 3 { 2 } else { 1 };
    parts[..depth].join(".")
}

fn module_loads(
    loaded: &[String],
    missing: &[String],
    unexpected: &[String],
    mismatched: &[(String, String, String)],
) -> Vec<ModuleLoad> {
    let mut by_module: std::collections::BTreeMap<String, [usize; 4]> = Default::default();
    let lists: [Vec<&str>; 4] = [
        loaded.iter().map(String::as_str).collect(),
        missing.iter().map(String::as_str).collect(),
        unexpected.iter().map(String::as_str).collect(),
        mismatched.iter().map(|(n, _, _)| n.as_str()).collect(),
    ];
    for (i, names) in lists.iter().enumerate() {
        for name in names {
            by_module.entry(module_of(name)).or_default()[i] += 1;
        }
    }
    by_module
        .into_iter()
        .map(
            |(module, [loaded, missing, unexpected, mismatched])| ModuleLoad {
                module,
                loaded,
                missing,
                unexpected,
                mismatched,
            },
        )
        .collect()
}

fn shape_text(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

async fn finetune_view(
    s: &AppState,
    run: &RunRow,
    artifacts: &[ArtifactRow],
) -> Result<FinetuneView, PageError> {
    let val_split = finetune_config(run)
        .map(|c| c.val_split)
        .unwrap_or_else(|| "val".into());
    let load = match s.read_artifact(run.id, "load_report.json").await? {
        ArtifactRead::Found(bytes) => Some(
            serde_json::from_slice::<LoadReport>(&bytes)
                .map(|r| {
                    let mismatched: Vec<(String, String, String)> = r
                        .shape_mismatch
                        .into_iter()
                        .map(|(n, model, file)| (n, shape_text(&model), shape_text(&file)))
                        .collect();
                    LoadView {
                        modules: module_loads(&r.loaded, &r.missing, &r.unexpected, &mismatched),
                        source: r.source,
                        loaded: r.loaded,
                        missing: r.missing,
                        unexpected: r.unexpected,
                        mismatched,
                    }
                })
                .map_err(|e| format!("load_report.json could not be read: {e}")),
        ),
        ArtifactRead::Missing(_) | ArtifactRead::BadName(_) => None,
    };
    let downloads = [
        ("model.safetensors", "final weights"),
        ("predictions.json", "COCO results on the val split"),
        ("eval.json", "final evaluation"),
        ("checkpoint.safetensors", "latest resumable checkpoint"),
    ]
    .into_iter()
    .filter(|(name, _)| artifacts.iter().any(|a| a.name == *name))
    .map(|(name, what)| (name.to_string(), what))
    .collect();
    let init_run = match finetune_config(run).map(|c| c.init) {
        Some(InitConfig::Checkpoint { artifact }) => {
            let kind = db::runs::get(&s.pool, artifact.run_id)
                .await?
                .map(|r| r.kind)
                .unwrap_or_else(|| "deleted".into());
            Some((artifact.run_id, kind, artifact.name))
        }
        _ => None,
    };
    Ok(FinetuneView {
        val_split,
        load,
        downloads,
        init_run,
    })
}

/// A run another run's page links to as its input.
pub struct InputRun {
    pub id: i64,
    /// Empty when the run no longer exists.
    pub name: String,
    pub status: String,
}

/// What the run page shows of a `pretrain_box` or `pretrain_image` run besides its curves.
pub struct PretrainView {
    pub dataset_id: i64,
    pub split: String,
    /// Empty for `pretrain_image`.
    pub detector: String,
    pub backbone: String,
    /// `pretrain_box`: the proposals run whose pseudo-boxes are the targets, and its kept boxes
    /// over the images done.
    pub proposals: Option<(InputRun, i64, i64)>,
    /// How the (frozen, for `pretrain_box`) backbone starts, in words.
    pub init_text: String,
    /// The run whose artifact the backbone starts from.
    pub init_run: Option<(InputRun, String)>,
    /// The artifact fine-tuning reads, what it holds, and whether the run has written it.
    pub artifact: &'static str,
    pub artifact_note: &'static str,
    pub artifact_present: bool,
    /// Pre-filled forms that start from this run's artifact: (link id, label, URL).
    pub next_steps: Vec<(&'static str, &'static str, String)>,
}

async fn input_run_view(s: &AppState, id: i64) -> Result<InputRun, PageError> {
    Ok(match db::runs::get(&s.pool, id).await? {
        Some(r) => InputRun {
            id,
            name: r.name,
            status: r.status,
        },
        None => InputRun {
            id,
            name: String::new(),
            status: "deleted".into(),
        },
    })
}

/// How an init reads on a run page, and the run it names.
async fn init_view(
    s: &AppState,
    init: &InitConfig,
) -> Result<(String, Option<(InputRun, String)>), PageError> {
    Ok(match init {
        InitConfig::Scratch => (
            "random initialisation (no pre-trained weights)".into(),
            None,
        ),
        InitConfig::ImagenetBackbone => (
            "the shipped ImageNet weights (EfficientNet-Lite0)".into(),
            None,
        ),
        InitConfig::Checkpoint { artifact } => (
            format!("{} of run #{}", artifact.name, artifact.run_id),
            Some((
                input_run_view(s, artifact.run_id).await?,
                artifact.name.clone(),
            )),
        ),
    })
}

async fn pretrain_view(
    s: &AppState,
    run: &RunRow,
    artifacts: &[ArtifactRow],
) -> Result<Option<PretrainView>, PageError> {
    use aligndet_common::jobs::JobConfig;
    use aligndet_common::pretrain_config::artifacts as names;
    let present = |name: &str| artifacts.iter().any(|a| a.name == name);
    Ok(
        match serde_json::from_value::<JobConfig>(run.config.clone()) {
            Ok(JobConfig::PretrainBox(c)) => {
                let (kept_images, kept, _, _) =
                    db::proposals::summary(&s.pool, c.proposals_run_id).await?;
                let (init_text, init_run) = init_view(s, &c.backbone_init).await?;
                let (detector, backbone) = (wire_name(&c.detector), wire_name(&c.backbone));
                let init = checkpoint_value(run.id, names::PRETRAINED_DETECTOR);
                Some(PretrainView {
                    dataset_id: c.dataset_id,
                    split: c.split.clone(),
                    proposals: Some((
                        input_run_view(s, c.proposals_run_id).await?,
                        kept,
                        kept_images,
                    )),
                    init_text,
                    init_run,
                    artifact: names::PRETRAINED_DETECTOR,
                    artifact_note: "the online detector after pre-training: the frozen backbone, the FPN and the heads (RetinaNet and FCOS towers, or the RPN and the RoI box head), named as the fine-tuning detector names them, without the pre-training predictors (projector, regression and centerness convs), which fine-tuning initialises fresh",
                    artifact_present: present(names::PRETRAINED_DETECTOR),
                    next_steps: vec![(
                        "finetune-from-this",
                        "Fine-tune from this pre-trained detector",
                        format!(
                            "/runs/new?kind=finetune&dataset_id={}&detector={detector}&backbone={backbone}&init={init}#finetune-form",
                            c.dataset_id
                        ),
                    )],
                    detector,
                    backbone,
                })
            }
            Ok(JobConfig::PretrainImage(c)) => {
                let (init_text, init_run) = init_view(s, &c.init).await?;
                let backbone = wire_name(&c.backbone);
                let init = checkpoint_value(run.id, names::PRETRAINED_BACKBONE);
                Some(PretrainView {
                    dataset_id: c.dataset_id,
                    split: c.split.clone(),
                    detector: String::new(),
                    proposals: None,
                    init_text,
                    init_run,
                    artifact: names::PRETRAINED_BACKBONE,
                    artifact_note: "the query encoder's backbone under backbone.body.* (no projector): the image-domain weights a box-domain pre-training or a fine-tuning starts from",
                    artifact_present: present(names::PRETRAINED_BACKBONE),
                    next_steps: vec![
                        (
                            "use-as-backbone",
                            "Use as backbone of a box-domain pre-training",
                            format!(
                                "/runs/new?kind=pretrain_box&dataset_id={}&backbone={backbone}&backbone_init={init}#pretrain-box-form",
                                c.dataset_id
                            ),
                        ),
                        (
                            "finetune-from-backbone",
                            "Fine-tune a detector on this backbone",
                            format!(
                                "/runs/new?kind=finetune&dataset_id={}&backbone={backbone}&init={init}#finetune-form",
                                c.dataset_id
                            ),
                        ),
                    ],
                    backbone,
                })
            }
            _ => None,
        },
    )
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    evaluation: Option<EvalView>,
    finetune: Option<FinetuneView>,
    pretrain: Option<PretrainView>,
    run: RunRow,
    terminal: bool,
    csrf: String,
    live: String,
    config_pretty: String,
    artifacts: Vec<ArtifactRow>,
    parents: Vec<ParentRow>,
}

impl RunPage {
    fn stat(&self, v: &f64) -> String {
        format_stat(*v)
    }
}

async fn get_run(s: &AppState, id: i64) -> Result<RunRow, PageError> {
    db::runs::get(&s.pool, id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("run {id} not found")))
}

pub async fn show(
    State(s): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    let run = get_run(&s, id).await?;
    let live = live_html(&s, run.clone()).await?;
    let is_finetune = run.kind == RunKind::Finetune.as_str();
    // A fine-tune run's final evaluation has the evaluate job's schema: same section.
    let evaluation = if run.kind == RunKind::Evaluate.as_str() || is_finetune {
        tokio::fs::read(s.artifacts_dir(id).join("eval.json"))
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .map(eval_view)
    } else {
        None
    };
    let artifacts = db::runs::artifacts(&s.pool, id).await?;
    let finetune = if is_finetune {
        Some(finetune_view(&s, &run, &artifacts).await?)
    } else {
        None
    };
    let pretrain = pretrain_view(&s, &run, &artifacts).await?;
    Ok(render(&RunPage {
        evaluation,
        finetune,
        pretrain,
        terminal: RunStatus::parse(&run.status).is_some_and(|st| st.is_terminal()),
        config_pretty: serde_json::to_string_pretty(&run.config)?,
        artifacts,
        parents: db::runs::parents(&s.pool, id).await?,
        csrf: csrf.0,
        live,
        run,
    }))
}

pub async fn live_fragment(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    let run = get_run(&s, id).await?;
    Ok(Html(live_html(&s, run).await?).into_response())
}

/// Server-sent events: one `changed` event whenever the run's data changes (Postgres NOTIFY).
pub async fn events(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, PageError> {
    get_run(&s, id).await?;
    let stream = BroadcastStream::new(s.run_changed.subscribe()).filter_map(move |msg| match msg {
        Ok(run_id) if run_id == id => {
            Some(Ok(Event::default().event("changed").data(id.to_string())))
        }
        // Lagged: we missed notifications, so tell the page to refresh anyway.
        Err(_) => Some(Ok(Event::default().event("changed").data(id.to_string()))),
        _ => None,
    });
    // The stream would otherwise outlive a shutdown for as long as the page stays open; the
    // page's EventSource reconnects to the restarted server by itself.
    let stream = futures_util::StreamExt::take_until(stream, s.shutdown.wait());
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

pub async fn cancel(State(s): State<AppState>, Path(id): Path<i64>) -> Result<Response, PageError> {
    db::runs::request_cancel(&s.pool, id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("run {id} not found")))?;
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

/// Streamed from the file, with Range and ETag (`serving::artifacts`).
pub async fn download_artifact(
    State(s): State<AppState>,
    Path((id, name)): Path<(i64, String)>,
    req: axum::extract::Request,
) -> Result<Response, PageError> {
    use crate::serving::artifacts::{ArtifactFile, locate, serve};
    let path = match locate(&s, &s.pool, id, &name).await? {
        ArtifactFile::BadName(why) => return Err(PageError::bad_request(why)),
        ArtifactFile::Missing(msg) => return Err(PageError::not_found(msg)),
        ArtifactFile::Found(path) => path,
    };
    // The name passed the artifact rules (A-Z a-z 0-9 . _ -): safe inside the quotes.
    let disposition = format!("attachment; filename=\"{name}\"");
    Ok(serve(path, req, Some(&disposition)).await?)
}
