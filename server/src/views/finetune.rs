//! What a fine-tune run's page shows besides its curves ([`FinetuneView`]): what the initial
//! weights filled in per module (`load_report.json`), downloads, the run it started from.

use crate::db;
use crate::db::runs::{ArtifactRow, RunRow};
use crate::error::PageError;
use crate::state::{AppState, ArtifactRead};
use aligndet_common::artifacts;
use aligndet_common::train_config::{InitConfig, TrainConfig};
use serde::Deserialize;

/// The stored config of a fine-tune run (`None` for other kinds or an unreadable config).
pub fn finetune_config(run: &RunRow) -> Option<TrainConfig> {
    match run.config.job()? {
        aligndet_common::jobs::JobConfig::Finetune(c) => Some(c.clone()),
        _ => None,
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

pub async fn finetune_view(
    s: &AppState,
    run: &RunRow,
    artifacts: &[ArtifactRow],
) -> Result<FinetuneView, PageError> {
    let val_split = finetune_config(run)
        .map(|c| c.val_split)
        .unwrap_or_else(|| "val".into());
    let load = match s.read_artifact(run.id, artifacts::LOAD_REPORT).await? {
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
        (artifacts::MODEL, "final weights"),
        (artifacts::PREDICTIONS, "COCO results on the val split"),
        (artifacts::EVAL_REPORT, "final evaluation"),
        (artifacts::CHECKPOINT, "latest resumable checkpoint"),
    ]
    .into_iter()
    .filter(|(name, _)| artifacts.iter().any(|a| a.name == *name))
    .map(|(name, what)| (name.to_string(), what))
    .collect();
    let init_run = match finetune_config(run).map(|c| c.init) {
        Some(InitConfig::Checkpoint { artifact }) => {
            let kind = db::runs::get(&s.pool, artifact.run_id)
                .await?
                .map(|r| r.kind.as_str().to_string())
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
