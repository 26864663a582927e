//! Run pages: the runs table, the new-run form, a run's page with live curves, cancel, artifacts.

use crate::db;
use crate::db::datasets::DatasetRow;
use crate::db::runs::{ArtifactRow, AttemptRow, LogRow, ParentRow, RunFilter, RunRow, RunSort};
use crate::error::PageError;
use crate::plots;
use crate::routes::{api, render};
use crate::security::CsrfToken;
use crate::state::{AppState, ArtifactRead};
use aligndet_common::jobs::{RunKind, RunStatus};
use aligndet_common::train_config::{
    BackboneKind, DetectorKind, InitConfig, LrSchedule, OptimizerKind, TrainConfig,
};
use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
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
    /// Split names of every dataset (train, val, labeled subsets), offered as suggestions.
    split_names: Vec<String>,
    detectors: Vec<(String, &'static str)>,
    backbones: Vec<(String, &'static str)>,
    optimizers: Vec<(String, &'static str)>,
}

impl NewRunPage {
    async fn new(
        s: &AppState,
        csrf: String,
        error: Option<String>,
        ft: FinetuneForm,
    ) -> Result<NewRunPage, PageError> {
        let datasets = db::datasets::list(&s.pool).await?;
        let mut split_names: Vec<String> = Vec::new();
        for name in datasets.iter().flat_map(|d| d.split_names()) {
            if !split_names.contains(&name) {
                split_names.push(name);
            }
        }
        Ok(NewRunPage {
            csrf,
            error,
            datasets,
            ft,
            split_names,
            detectors: [
                (DetectorKind::Fcos, "FCOS"),
                (DetectorKind::Retinanet, "RetinaNet"),
                (DetectorKind::FasterRcnn, "Faster R-CNN"),
            ]
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
        })
    }
}

pub async fn new_form(
    State(s): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
) -> Result<Response, PageError> {
    Ok(render(
        &NewRunPage::new(&s, csrf.0, None, FinetuneForm::defaults()).await?,
    ))
}

/// How a config enum is spelled in JSON (and so in the form's option values).
fn wire_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Form values when the schedule is switched away from the default's kind (TrainConfig has
/// a default for only one of them).
const FORM_STEP_GAMMA: f64 = 0.1;
const FORM_COSINE_MIN_FACTOR: f64 = 0.0;

/// The fine-tune form as text, field by field (names follow `TrainConfig`'s JSON).
pub struct FinetuneForm {
    pub name: String,
    pub dataset_id: String,
    pub train_split: String,
    pub val_split: String,
    pub detector: String,
    pub backbone: String,
    /// `scratch`, `imagenet_backbone` or `checkpoint`.
    pub init: String,
    pub init_run: String,
    pub init_artifact: String,
    pub trainable_backbone_stages: String,
    /// Comma-separated shorter-side sizes.
    pub min_sizes: String,
    pub max_size: String,
    pub hflip: bool,
    pub color_jitter: String,
    pub batch_size: String,
    pub steps: String,
    pub optimizer: String,
    pub lr: String,
    pub momentum: String,
    pub weight_decay: String,
    pub no_decay_norm_and_bias: bool,
    pub warmup_steps: String,
    /// `step` or `cosine`.
    pub schedule: String,
    /// Comma-separated milestone steps.
    pub milestones: String,
    pub gamma: String,
    pub min_factor: String,
    /// Blank: no clipping.
    pub grad_clip_norm: String,
    pub eval_every: String,
    pub checkpoint_every: String,
    pub eval_max_images: String,
    pub seed: String,
    pub loader_threads: String,
}

fn comma_list(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

impl FinetuneForm {
    /// `TrainConfig::default()` rendered as form values, so the form cannot drift from it.
    pub fn defaults() -> FinetuneForm {
        let c = TrainConfig::default();
        let (init, init_run, init_artifact) = match &c.init {
            InitConfig::Scratch => ("scratch", String::new(), "model.safetensors".to_string()),
            InitConfig::ImagenetBackbone => (
                "imagenet_backbone",
                String::new(),
                "model.safetensors".to_string(),
            ),
            InitConfig::Checkpoint { artifact } => (
                "checkpoint",
                artifact.run_id.to_string(),
                artifact.name.clone(),
            ),
        };
        let (schedule, milestones, gamma, min_factor) = match &c.schedule {
            LrSchedule::Step { milestones, gamma } => (
                "step",
                comma_list(milestones),
                *gamma,
                FORM_COSINE_MIN_FACTOR,
            ),
            LrSchedule::Cosine { min_factor } => {
                ("cosine", String::new(), FORM_STEP_GAMMA, *min_factor)
            }
        };
        FinetuneForm {
            name: "fine-tune".into(),
            dataset_id: String::new(),
            train_split: c.train_split.clone(),
            val_split: c.val_split.clone(),
            detector: wire_name(&c.detector),
            backbone: wire_name(&c.backbone),
            init: init.into(),
            init_run,
            init_artifact,
            trainable_backbone_stages: c.trainable_backbone_stages.to_string(),
            min_sizes: comma_list(&c.augment.min_sizes),
            max_size: c.augment.max_size.to_string(),
            hflip: c.augment.hflip,
            color_jitter: c.augment.color_jitter.to_string(),
            batch_size: c.batch_size.to_string(),
            steps: c.steps.to_string(),
            optimizer: wire_name(&c.optimizer),
            lr: c.lr.to_string(),
            momentum: c.momentum.to_string(),
            weight_decay: c.weight_decay.to_string(),
            no_decay_norm_and_bias: c.no_decay_norm_and_bias,
            warmup_steps: c.warmup_steps.to_string(),
            schedule: schedule.into(),
            milestones,
            gamma: gamma.to_string(),
            min_factor: min_factor.to_string(),
            grad_clip_norm: c.grad_clip_norm.map(|v| v.to_string()).unwrap_or_default(),
            eval_every: c.eval_every.to_string(),
            checkpoint_every: c.checkpoint_every.to_string(),
            eval_max_images: c.eval_max_images.to_string(),
            seed: c.seed.to_string(),
            loader_threads: c.loader_threads.to_string(),
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
            trainable_backbone_stages: text("trainable_backbone_stages"),
            min_sizes: text("min_sizes"),
            max_size: text("max_size"),
            hflip: field("hflip").is_some(),
            color_jitter: text("color_jitter"),
            batch_size: text("batch_size"),
            steps: text("steps"),
            optimizer: text("optimizer"),
            lr: text("lr"),
            momentum: text("momentum"),
            weight_decay: text("weight_decay"),
            no_decay_norm_and_bias: field("no_decay_norm_and_bias").is_some(),
            warmup_steps: text("warmup_steps"),
            schedule: text("schedule"),
            milestones: text("milestones"),
            gamma: text("gamma"),
            min_factor: text("min_factor"),
            grad_clip_norm: text("grad_clip_norm"),
            eval_every: text("eval_every"),
            checkpoint_every: text("checkpoint_every"),
            eval_max_images: text("eval_max_images"),
            seed: text("seed"),
            loader_threads: text("loader_threads"),
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
        c.insert(
            "optimizer".into(),
            enum_value::<OptimizerKind>("optimizer", &self.optimizer)?,
        );
        let init = match self.init.as_str() {
            "scratch" | "imagenet_backbone" => json!({ "from": self.init }),
            "checkpoint" => {
                let run_id: i64 = self.init_run.parse().map_err(|_| {
                    format!(
                        "init.artifact.run_id: {:?} is not a run id; give the run whose checkpoint to start from",
                        self.init_run
                    )
                })?;
                aligndet_common::api::check_artifact_name(&self.init_artifact)
                    .map_err(|e| format!("init.artifact.name: {e}"))?;
                json!({ "from": "checkpoint", "artifact": { "run_id": run_id, "name": self.init_artifact } })
            }
            other => {
                return Err(format!(
                    "init: {other:?} is not one of scratch, imagenet_backbone, checkpoint"
                ));
            }
        };
        c.insert("init".into(), init);
        if let Some(n) = number::<u8>("trainable_backbone_stages", &self.trainable_backbone_stages)?
        {
            c.insert("trainable_backbone_stages".into(), n.into());
        }
        let mut augment = serde_json::Map::new();
        if !self.min_sizes.is_empty() {
            augment.insert(
                "min_sizes".into(),
                number_list("augment.min_sizes", &self.min_sizes)?.into(),
            );
        }
        if let Some(n) = number::<u32>("augment.max_size", &self.max_size)? {
            augment.insert("max_size".into(), n.into());
        }
        augment.insert("hflip".into(), self.hflip.into());
        if let Some(x) = real("augment.color_jitter", &self.color_jitter)? {
            augment.insert("color_jitter".into(), x.into());
        }
        c.insert("augment".into(), Value::Object(augment));
        for (key, v) in [
            ("batch_size", &self.batch_size),
            ("steps", &self.steps),
            ("warmup_steps", &self.warmup_steps),
            ("eval_every", &self.eval_every),
            ("checkpoint_every", &self.checkpoint_every),
            ("eval_max_images", &self.eval_max_images),
            ("loader_threads", &self.loader_threads),
        ] {
            if let Some(n) = number::<u32>(key, v)? {
                c.insert(key.into(), n.into());
            }
        }
        if let Some(n) = number::<u64>("seed", &self.seed)? {
            c.insert("seed".into(), n.into());
        }
        for (key, v) in [
            ("lr", &self.lr),
            ("momentum", &self.momentum),
            ("weight_decay", &self.weight_decay),
        ] {
            if let Some(x) = real(key, v)? {
                c.insert(key.into(), x.into());
            }
        }
        c.insert(
            "no_decay_norm_and_bias".into(),
            self.no_decay_norm_and_bias.into(),
        );
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
        Ok(Value::Object(c))
    }
}

/// A config enum from its JSON spelling; serde's message lists the accepted values.
fn enum_value<T: serde::de::DeserializeOwned + serde::Serialize>(
    field: &str,
    v: &str,
) -> Result<serde_json::Value, String> {
    let parsed: T = serde_json::from_value(serde_json::Value::String(v.to_string()))
        .map_err(|e| format!("{field}: {e}"))?;
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

/// Validate the posted fine-tune form and queue the run. The outer error is the server's (500),
/// the inner one the person's (the form comes back with it). Beyond `TrainConfig::validate`,
/// this checks what only the database knows: the dataset, its split names, the checkpoint run.
async fn queue_finetune(
    s: &AppState,
    form: &FinetuneForm,
) -> Result<Result<i64, String>, PageError> {
    let config_json = match form.to_config() {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let config =
        match serde_json::from_value::<aligndet_common::jobs::JobConfig>(config_json.clone()) {
            Ok(aligndet_common::jobs::JobConfig::Finetune(c)) => c,
            Ok(_) => return Ok(Err("not a fine-tune config".into())),
            Err(e) => return Ok(Err(format!("invalid config: {e}"))),
        };
    if let Err(e) = config.validate() {
        return Ok(Err(e.to_string()));
    }
    let Some(dataset) = db::datasets::get(&s.pool, config.dataset_id).await? else {
        return Ok(Err(format!(
            "dataset_id: dataset {} not found",
            config.dataset_id
        )));
    };
    let names = dataset.split_names();
    if names.is_empty() {
        return Ok(Err(format!(
            "dataset_id: dataset {:?} has no splits (it was imported before default splits existed: import it again, optionally with a splits.json beside its annotations)",
            dataset.name
        )));
    }
    for (field, split) in [
        ("train_split", &config.train_split),
        ("val_split", &config.val_split),
    ] {
        if !names.contains(split) {
            return Ok(Err(format!(
                "{field}: {split:?} is not a split of dataset {:?} (it has {})",
                dataset.name,
                names.join(", ")
            )));
        }
    }
    let mut parents = Vec::new();
    if let InitConfig::Checkpoint { artifact } = &config.init {
        let Some(parent) = db::runs::get(&s.pool, artifact.run_id).await? else {
            return Ok(Err(format!(
                "init.artifact.run_id: run {} not found",
                artifact.run_id
            )));
        };
        // A run still going may yet write its checkpoint; a finished one must have it.
        let finished = RunStatus::parse(&parent.status).is_some_and(|st| st.is_terminal());
        let has_it = db::runs::artifacts(&s.pool, parent.id)
            .await?
            .iter()
            .any(|a| a.name == artifact.name);
        if finished && !has_it {
            return Ok(Err(format!(
                "init.artifact.name: run {} has no artifact {:?}",
                parent.id, artifact.name
            )));
        }
        parents.push(parent.id);
    }
    Ok(api::queue_run(s, &form.name, config_json, None, &parents)
        .await
        .map_err(|e| e.message))
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
    if field("kind").as_deref() == Some(RunKind::Finetune.as_str()) {
        let ft = FinetuneForm::posted(&field);
        return match queue_finetune(&s, &ft).await? {
            Ok(id) => Ok(Redirect::to(&format!("/runs/{id}")).into_response()),
            Err(e) => Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                render(&NewRunPage::new(&s, csrf.0, Some(e), ft).await?),
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
                    if let Some(v) = field(key).filter(|v| !v.is_empty()) {
                        let x: f64 = v
                            .parse()
                            .map_err(|_| format!("{key}: {v:?} is not a number"))?;
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
            // Fine-tune forms are handled above, with their own re-rendering.
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
        Ok((name, config)) => api::queue_run(&s, &name, config, None, &[])
            .await
            .map_err(|e| e.message),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(id) => Ok(Redirect::to(&format!("/runs/{id}")).into_response()),
        Err(e) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            render(&NewRunPage::new(&s, csrf.0, Some(e), FinetuneForm::defaults()).await?),
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
    let name = fields
        .get("name")
        .cloned()
        .unwrap_or_else(|| "evaluation".into());
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
            name: name.trim(),
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
) -> Result<(Vec<(String, String)>, Vec<(i64, Vec<String>)>, Vec<String>), PageError> {
    use aligndet_common::report::COCO_STAT_NAMES;
    let val_split = finetune_config(run)
        .map(|c| c.val_split)
        .unwrap_or_else(|| "val".into());
    let mut used: Vec<String> = Vec::new();
    let mut charts = Vec::new();
    let mut loss = Vec::new();
    // `loss/total` first so it keeps the first colour whatever the terms are called.
    let mut loss_keys: Vec<&str> = keys
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("loss/"))
        .collect();
    loss_keys.sort_by_key(|k| (*k != "loss/total", *k));
    for key in loss_keys {
        loss.push((
            key.to_string(),
            float_series(s, run.id, key, &mut used).await?,
        ));
    }
    if !loss.is_empty() {
        charts.push((
            "loss".to_string(),
            plots::line_chart("Training loss", "optimizer step", &loss),
        ));
    }
    let has = |k: &str| keys.iter().any(|(key, _)| key == k);
    let mut ap = Vec::new();
    for stat in ["AP", "AP50", "AP75"] {
        let key = format!("eval/{stat}");
        if has(&key) {
            ap.push((
                stat.to_string(),
                float_series(s, run.id, &key, &mut used).await?,
            ));
        }
    }
    if !ap.is_empty() {
        charts.push((
            "eval-ap".to_string(),
            plots::line_chart(
                &format!("COCO AP on {val_split} at each evaluation"),
                "optimizer step",
                &ap,
            ),
        ));
    }
    if has("train/lr") {
        let lr = float_series(s, run.id, "train/lr", &mut used).await?;
        charts.push((
            "lr".to_string(),
            plots::line_chart(
                "Learning rate",
                "optimizer step",
                &[("train/lr".to_string(), lr)],
            ),
        ));
    }
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

/// One metric as chart points, noting the key as drawn.
async fn float_series(
    s: &AppState,
    run_id: i64,
    key: &str,
    used: &mut Vec<String>,
) -> Result<Vec<(f64, f64)>, PageError> {
    used.push(key.to_string());
    Ok(db::runs::metric_series(&s.pool, run_id, key)
        .await?
        .into_iter()
        .map(|(x, y)| (x as f64, y))
        .collect())
}

async fn live_html(s: &AppState, run: RunRow) -> Result<String, PageError> {
    let id = run.id;
    let keys = db::runs::metric_keys(&s.pool, id).await?;
    let (mut charts, eval_history, used) = if run.kind == RunKind::Finetune.as_str() {
        finetune_charts(s, &run, &keys).await?
    } else {
        (Vec::new(), Vec::new(), Vec::new())
    };
    let mut summaries = Vec::new();
    for (key, n) in keys.into_iter().filter(|(k, _)| !used.contains(k)) {
        let series = db::runs::metric_series(&s.pool, id, &key).await?;
        if n <= 1 {
            if let Some((_, v)) = series.first() {
                summaries.push((key, *v));
            }
            continue;
        }
        let pts: Vec<(f64, f64)> = series.iter().map(|&(x, y)| (x as f64, y)).collect();
        let svg = plots::line_chart(&key, "step", &[(key.clone(), pts)]);
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
}

pub struct LoadView {
    pub source: String,
    pub loaded: Vec<String>,
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// (tensor name, model shape, file shape) as text.
    pub mismatched: Vec<(String, String, String)>,
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
                .map(|r| LoadView {
                    source: r.source,
                    loaded: r.loaded,
                    missing: r.missing,
                    unexpected: r.unexpected,
                    mismatched: r
                        .shape_mismatch
                        .into_iter()
                        .map(|(n, model, file)| (n, shape_text(&model), shape_text(&file)))
                        .collect(),
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
    Ok(FinetuneView {
        val_split,
        load,
        downloads,
    })
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    evaluation: Option<EvalView>,
    finetune: Option<FinetuneView>,
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
    Ok(render(&RunPage {
        evaluation,
        finetune,
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
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

pub async fn cancel(State(s): State<AppState>, Path(id): Path<i64>) -> Result<Response, PageError> {
    db::runs::request_cancel(&s.pool, id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("run {id} not found")))?;
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

pub async fn download_artifact(
    State(s): State<AppState>,
    Path((id, name)): Path<(i64, String)>,
) -> Result<Response, PageError> {
    let bytes = match s.read_artifact(id, &name).await? {
        ArtifactRead::BadName(why) => return Err(PageError::bad_request(why)),
        ArtifactRead::Missing(msg) => return Err(PageError::not_found(msg)),
        ArtifactRead::Found(bytes) => bytes,
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}
