//! One path for every new run: the page forms and `POST /api/v1/runs` both end in [`submit`], so
//! they accept and refuse exactly the same runs. Beyond the config's own `validate()`, this
//! checks what only the database knows: the dataset and its split names, the runs whose
//! artifacts the config reads (they exist, are of the right kind and have succeeded, or are
//! runs this one waits for), and the listed parents. Every refusal names the field.

use crate::db;
use crate::db::datasets::DatasetRow;
use crate::db::runs::RunRow;
use crate::forms::{FieldError, wire_name};
use crate::state::AppState;
use aligndet_common::artifacts;
use aligndet_common::capabilities::Requirements;
use aligndet_common::jobs::{JobConfig, RunKind, RunStatus};
use aligndet_common::pretrain_config::aligned_finetune_hyperparameters;
use aligndet_common::train_config::{DetectorKind, InitConfig};

/// A run to queue, as a page form or a script describes it.
pub struct NewRun {
    pub name: String,
    pub config: JobConfig,
    /// `None`: the server's `--max-attempts`.
    pub max_attempts: Option<i32>,
    /// Runs this one is derived from (shown on its page), besides the ones its config names.
    pub parents: Vec<i64>,
    /// Runs it waits for: claimable once all succeeded, failed when one fails.
    pub depends_on: Vec<i64>,
    /// Fine-tuning from a box-domain pre-training takes AlignDet's lr ×1.5, wd ÷2 (the form's
    /// tick box; a script's config is taken as written).
    pub aligned_rule: bool,
    /// What the worker must have; `None`: what the config needs
    /// ([`Requirements::for_config`]).
    pub requirements: Option<Requirements>,
    /// Higher is claimed first (−100..=100; 0 by default).
    pub priority: i32,
    /// The user queueing it.
    pub created_by: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The person's mistake, in the field it names.
    #[error("{0}")]
    Field(FieldError),
    /// The server's (logged; the person sees only that it happened).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for SubmitError {
    fn from(e: sqlx::Error) -> Self {
        SubmitError::Internal(e.into())
    }
}

fn refuse<T>(field: &str, message: impl Into<String>) -> Result<T, SubmitError> {
    Err(SubmitError::Field(FieldError::new(field, message)))
}

/// Check everything and queue the run in one transaction. Returns its id.
pub async fn submit(s: &AppState, mut new: NewRun) -> Result<i64, SubmitError> {
    let name = aligndet_common::names::check_display_name(&new.name, "the run name", 200)
        .or_else(|m| refuse("name", m))?;
    new.config
        .validate()
        .or_else(|e| refuse(&e.field, e.problem))?;
    let requirements = match new.requirements.take() {
        Some(given) => given.completed_for(&new.config),
        None => Requirements::for_config(&new.config),
    };
    requirements
        .validate(&new.config)
        .or_else(|e| refuse(&e.field, e.problem))?;
    if !(-100..=100).contains(&new.priority) {
        return refuse("priority", "must be between -100 and 100");
    }
    let max_attempts = new.max_attempts.unwrap_or(s.cfg.max_attempts);
    if !(1..=20).contains(&max_attempts) {
        return refuse("max_attempts", "must be between 1 and 20");
    }
    let mut parents =
        check_inputs(s, &mut new.config, &mut new.depends_on, new.aligned_rule).await?;
    for id in &new.parents {
        if db::runs::get(&s.pool, *id).await?.is_none() {
            return refuse("parents", format!("run {id} not found"));
        }
        if !parents.contains(id) {
            parents.push(*id);
        }
    }
    let resolved = serde_json::to_value(&new.config).map_err(anyhow::Error::from)?;
    let mut tx = s.pool.begin().await?;
    let id = db::runs::create_in(
        &mut tx,
        &db::runs::NewRun {
            kind: new.config.kind().as_str(),
            name: &name,
            config: resolved,
            dataset_id: new.config.dataset_id(),
            max_attempts,
            parents: parents
                .iter()
                .filter(|p| !new.depends_on.contains(p))
                .map(|p| (*p, "parent".to_string()))
                .collect(),
            experiment: None,
            requirements: &requirements,
            priority: new.priority,
            created_by: new.created_by,
        },
    )
    .await?;
    let deps: Vec<(i64, String)> = new
        .depends_on
        .iter()
        .map(|d| (*d, "depends_on".to_string()))
        .collect();
    if let Err(e) = db::runs::add_dependencies_in(&mut tx, id, &deps).await? {
        return refuse("depends_on", e);
    }
    tx.commit().await?;
    Ok(id)
}

/// The database checks of each kind; returns the runs the config reads from (its parents).
async fn check_inputs(
    s: &AppState,
    config: &mut JobConfig,
    waits_for: &mut Vec<i64>,
    aligned_rule: bool,
) -> Result<Vec<i64>, SubmitError> {
    let mut parents = Vec::new();
    match config {
        JobConfig::Benchmark(_) => {}
        JobConfig::Proposals(c) => {
            dataset(s, c.dataset_id, &[]).await?;
        }
        JobConfig::Evaluate(c) => {
            let split: Vec<(&str, &str)> = c.split.iter().map(|v| ("split", v.as_str())).collect();
            dataset(s, c.dataset_id, &split).await?;
            let run = input_run(s, "detections.run_id", c.detections.run_id, None, waits_for)
                .await?
                .0;
            has_artifact(s, "detections.name", &run, &c.detections.name).await?;
            parents.push(run.id);
        }
        JobConfig::Finetune(c) => {
            let data = dataset(
                s,
                c.dataset_id,
                &[("train_split", &c.train_split), ("val_split", &c.val_split)],
            )
            .await?;
            if c.detector.has_masks() {
                every_object_masked(s, &data, &c.train_split, c.detector).await?;
            }
            if let InitConfig::Checkpoint { artifact } = &c.init {
                let field = "init.artifact.run_id";
                let (run, parent) = input_run(s, field, artifact.run_id, None, waits_for).await?;
                has_artifact(s, "init.artifact.name", &run, &artifact.name).await?;
                match parent {
                    Some(JobConfig::PretrainBox(p))
                        if artifact.name == artifacts::PRETRAINED_DETECTOR =>
                    {
                        if p.detector.pretraining_form() != c.detector.pretraining_form()
                            || p.backbone != c.backbone
                        {
                            return refuse(
                                "init",
                                format!(
                                    "run #{} pre-trained {}; this fine-tune is {}: choose the same detector (Mask R-CNN and Faster R-CNN share one pre-training) and backbone",
                                    run.id,
                                    describe(&p.detector, &p.backbone),
                                    describe(&c.detector, &c.backbone)
                                ),
                            );
                        }
                        if aligned_rule {
                            (c.optim.lr, c.optim.weight_decay) =
                                aligned_finetune_hyperparameters(c.optim.lr, c.optim.weight_decay);
                        }
                    }
                    Some(JobConfig::PretrainImage(p)) if p.backbone != c.backbone => {
                        return refuse(
                            "init",
                            format!(
                                "run #{} pre-trained a {} backbone; this fine-tune uses {}",
                                run.id,
                                wire_name(&p.backbone),
                                wire_name(&c.backbone)
                            ),
                        );
                    }
                    _ => {}
                }
                parents.push(run.id);
            }
        }
        JobConfig::PretrainBox(c) => {
            let data = dataset(s, c.dataset_id, &[("split", &c.split)]).await?;
            let kind = Some(RunKind::Proposals);
            let field = "proposals_run_id";
            let (proposals, _) = input_run(s, field, c.proposals_run_id, kind, waits_for).await?;
            if proposals.dataset_id != Some(data.id) {
                return refuse(
                    field,
                    format!(
                        "proposals run #{} made pseudo-boxes for another dataset ({}), not for {:?}",
                        proposals.id,
                        proposals
                            .dataset_id
                            .map_or("none".to_string(), |d| format!("#{d}")),
                        data.name
                    ),
                );
            }
            parents.push(proposals.id);
            if let InitConfig::Checkpoint { artifact } = &c.backbone_init {
                let kind = Some(RunKind::PretrainImage);
                let field = "backbone_init";
                let (run, image) = input_run(s, field, artifact.run_id, kind, waits_for).await?;
                if let Some(JobConfig::PretrainImage(p)) = image
                    && p.backbone != c.backbone
                {
                    return refuse(
                        field,
                        format!(
                            "run #{} pre-trained a {} backbone, not {}",
                            run.id,
                            wire_name(&p.backbone),
                            wire_name(&c.backbone)
                        ),
                    );
                }
                if artifact.name != artifacts::PRETRAINED_BACKBONE {
                    return refuse(
                        "backbone_init.artifact.name",
                        format!(
                            "a pretrain_image run leaves {:?}, not {:?}",
                            artifacts::PRETRAINED_BACKBONE,
                            artifact.name
                        ),
                    );
                }
                parents.push(run.id);
            }
        }
        JobConfig::PretrainImage(c) => {
            dataset(s, c.dataset_id, &[("split", &c.split)]).await?;
            if let InitConfig::Checkpoint { artifact } = &c.init {
                let field = "init.artifact.run_id";
                let (run, _) = input_run(s, field, artifact.run_id, None, waits_for).await?;
                has_artifact(s, "init.artifact.name", &run, &artifact.name).await?;
                parents.push(run.id);
            }
        }
    }
    Ok(parents)
}

/// A mask detector's training split has a mask on every object it trains on (else the job
/// would fail at start naming the same annotation).
async fn every_object_masked(
    s: &AppState,
    data: &DatasetRow,
    split: &str,
    detector: DetectorKind,
) -> Result<(), SubmitError> {
    let ids = data.split_ids(split).unwrap_or_default();
    let Some(a) = db::datasets::first_unmasked_annotation(&s.pool, data.id, &ids).await? else {
        return Ok(());
    };
    refuse(
        "detector",
        format!(
            "{} needs a mask (`segmentation`) on every object, and {} annotation(s) of split {split:?} of dataset {:?} have none, the first annotation {} on image {:?} (a dataset imported before masks were stored must be imported again)",
            detector.label(),
            a.total,
            data.name,
            a.id,
            a.file_name
        ),
    )
}

/// The dataset exists, holds images, and each `(field, split)` is one of its splits.
async fn dataset(
    s: &AppState,
    dataset_id: i64,
    splits: &[(&str, &str)],
) -> Result<DatasetRow, SubmitError> {
    let Some(dataset) = db::datasets::get(&s.pool, dataset_id).await? else {
        return refuse("dataset_id", format!("dataset {dataset_id} not found"));
    };
    if dataset.num_images == 0 {
        return refuse(
            "dataset_id",
            format!("dataset {:?} has no images", dataset.name),
        );
    }
    if splits.is_empty() {
        return Ok(dataset);
    }
    let names = dataset.split_names();
    if names.is_empty() {
        return refuse(
            "dataset_id",
            format!(
                "dataset {:?} has no splits (it was imported before default splits existed: import it again, optionally with a splits.json beside its annotations)",
                dataset.name
            ),
        );
    }
    for (field, split) in splits {
        if !names.iter().any(|n| n == split) {
            return refuse(
                field,
                format!(
                    "{split:?} is not a split of dataset {:?} (it has {})",
                    dataset.name,
                    names.join(", ")
                ),
            );
        }
    }
    Ok(dataset)
}

/// The run `run_id`, which `field` names as an input: it exists, is of `kind` (when given), and
/// has succeeded or is still queued or running, in which case this run waits for it (added to
/// `waits_for`). Returns it with its config.
async fn input_run(
    s: &AppState,
    field: &str,
    run_id: i64,
    kind: Option<RunKind>,
    waits_for: &mut Vec<i64>,
) -> Result<(RunRow, Option<JobConfig>), SubmitError> {
    let Some(run) = db::runs::get(&s.pool, run_id).await? else {
        return refuse(field, format!("run {run_id} not found"));
    };
    if let Some(kind) = kind
        && run.kind != kind
    {
        return refuse(
            field,
            format!("run #{run_id} is a {} run, not a {kind} run", run.kind),
        );
    }
    match run.status {
        RunStatus::Succeeded => {}
        RunStatus::Failed | RunStatus::Cancelled => {
            return refuse(
                field,
                format!(
                    "run #{run_id} is {}: it will never produce its output",
                    run.status
                ),
            );
        }
        RunStatus::Queued | RunStatus::Running if !waits_for.contains(&run_id) => {
            waits_for.push(run_id)
        }
        RunStatus::Queued | RunStatus::Running => {}
    }
    let config = run.config.job().cloned();
    Ok((run, config))
}

/// A finished run must hold the artifact; one still to run may yet write it.
async fn has_artifact(
    s: &AppState,
    field: &str,
    run: &RunRow,
    name: &str,
) -> Result<(), SubmitError> {
    if run.status != RunStatus::Succeeded {
        return Ok(());
    }
    let artifacts = db::runs::artifacts(&s.pool, run.id).await?;
    if artifacts.iter().any(|a| a.name == name) {
        Ok(())
    } else {
        refuse(field, format!("run #{} has no artifact {name:?}", run.id))
    }
}

fn describe<D: serde::Serialize, B: serde::Serialize>(detector: &D, backbone: &B) -> String {
    format!("{} on {}", wire_name(detector), wire_name(backbone))
}
