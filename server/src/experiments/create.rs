//! Creating an experiment: the checks that need the database (the dataset and its splits, a
//! reused proposals or pre-training run) and the one transaction that inserts the experiment and
//! all its runs, each waiting for the runs it reads (`db::runs::add_dependencies_in`).

use super::Role;
use super::plan::PlannedRun;
use super::spec::ExperimentSpec;
use crate::db;
use crate::db::datasets::DatasetRow;
use crate::forms::wire_name;
use crate::state::AppState;
use aligndet_common::artifacts;
use aligndet_common::capabilities::Requirements;
use aligndet_common::jobs::{JobConfig, RunKind, RunStatus};
use aligndet_common::train_config::InitConfig;
use serde::Serialize;

/// A created run, as the API answers it.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedRun {
    pub id: i64,
    pub role: Role,
    pub seed: Option<u64>,
    pub fraction: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CreatedExperiment {
    pub id: i64,
    pub runs: Vec<CreatedRun>,
}

/// Validate a spec against the database and create the experiment and all its runs in one
/// transaction, recorded as made by `created_by` (the experiment and each of its runs). The
/// inner error (`field: problem`) is the person's; the outer one the server's.
pub async fn create(
    s: &AppState,
    spec: &ExperimentSpec,
    created_by: Option<i64>,
) -> sqlx::Result<Result<CreatedExperiment, String>> {
    let spec = spec.resolved();
    let planned = match spec.plan() {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let Some(dataset) = db::datasets::get(&s.pool, spec.dataset_id).await? else {
        return Ok(Err(format!(
            "dataset_id: dataset {} not found",
            spec.dataset_id
        )));
    };
    if let Err(e) = check_splits(&dataset, &planned) {
        return Ok(Err(e));
    }
    if let Some(pid) = spec.proposals_run_id {
        let run = db::runs::get(&s.pool, pid).await?;
        let problem = match &run {
            None => Some(format!("run {pid} not found")),
            Some(r) if r.kind != RunKind::Proposals => {
                Some(format!("run {pid} is a {} run, not proposals", r.kind))
            }
            Some(r) if r.dataset_id != Some(dataset.id) => {
                Some(format!("run {pid} made pseudo-boxes for another dataset"))
            }
            // A queued or running proposals run is fine: the box-domain pre-training waits for
            // it, so experiments for several detectors can share one set of pseudo-boxes.
            Some(r) if r.status == RunStatus::Queued || r.status == RunStatus::Running => None,
            Some(r) if r.status != RunStatus::Succeeded => Some(format!(
                "run {pid} is {}: choose a succeeded, running or queued proposals run",
                r.status
            )),
            Some(_) => {
                let has_boxes = db::runs::artifacts(&s.pool, pid)
                    .await?
                    .iter()
                    .any(|a| a.name == artifacts::PSEUDO_BOXES);
                (!has_boxes).then(|| {
                    format!(
                        "run {pid} has no {} (it predates that artifact): choose new pseudo-boxes",
                        artifacts::PSEUDO_BOXES
                    )
                })
            }
        };
        if let Some(p) = problem {
            return Ok(Err(format!("proposals_run_id: {p}")));
        }
    }

    // A reused pre-training decides the baseline's backbone: the one it was pre-trained on.
    let reused_backbone = match spec.pretrained_run_id {
        None => None,
        Some(pid) => match reused_pretraining(s, &spec, dataset.id, pid).await? {
            Ok(init) => Some(init),
            Err(p) => return Ok(Err(format!("pretrained_run_id: {p}"))),
        },
    };

    let spec_json = serde_json::to_value(&spec).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let mut tx = s.pool.begin().await?;
    let experiment_id =
        db::experiments::create_in(&mut tx, &spec.name, &spec_json, created_by).await?;
    let mut image_run: Option<i64> = None;
    let mut proposals_run: Option<i64> = spec.proposals_run_id;
    let mut box_run: Option<i64> = spec.pretrained_run_id;
    let mut created = Vec::new();
    for p in planned {
        // Fill in the chain's run ids and say what each run waits for.
        let mut deps: Vec<(i64, String)> = Vec::new();
        let config = match p.config {
            JobConfig::PretrainBox(mut c) => {
                let proposals = proposals_run.expect("proposals run planned before");
                c.proposals_run_id = proposals;
                deps.push((proposals, "pseudo-boxes".into()));
                if let (InitConfig::Checkpoint { artifact }, Some(img)) =
                    (&mut c.backbone_init, image_run)
                {
                    artifact.run_id = img;
                    deps.push((img, "backbone".into()));
                }
                JobConfig::PretrainBox(c)
            }
            JobConfig::Finetune(mut c) => {
                if let (Role::Baseline, Some(init)) = (p.role, &reused_backbone) {
                    c.init = init.clone();
                    if let InitConfig::Checkpoint { artifact } = init {
                        deps.push((artifact.run_id, "init".into()));
                    }
                } else if let InitConfig::Checkpoint { artifact } = &mut c.init {
                    let from = if p.role == Role::Aligndet {
                        box_run
                    } else {
                        image_run
                    };
                    let from = from.expect("pre-training planned before");
                    artifact.run_id = from;
                    deps.push((from, "init".into()));
                }
                JobConfig::Finetune(c)
            }
            other => other,
        };
        let resolved =
            serde_json::to_value(&config).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let id = db::runs::create_in(
            &mut tx,
            &db::runs::NewRun {
                kind: config.kind().as_str(),
                name: &p.name,
                config: resolved,
                dataset_id: config.dataset_id(),
                max_attempts: s.cfg.max_attempts,
                parents: Vec::new(),
                experiment: Some((experiment_id, p.role.as_str())),
                requirements: &Requirements::for_config(&config),
                priority: 0,
                created_by,
            },
        )
        .await?;
        if let Err(e) = db::runs::add_dependencies_in(&mut tx, id, &deps).await? {
            // Only a reused run can have ended since it was checked.
            let field = if spec.pretrained_run_id.is_some() {
                "pretrained_run_id"
            } else {
                "proposals_run_id"
            };
            return Ok(Err(format!("{field}: {e}")));
        }
        match p.role {
            Role::PretrainImage => image_run = Some(id),
            Role::Proposals => proposals_run = Some(id),
            Role::PretrainBox => box_run = Some(id),
            _ => {}
        }
        created.push(CreatedRun {
            id,
            role: p.role,
            seed: p.seed,
            fraction: p.fraction,
        });
    }
    tx.commit().await?;
    tracing::info!(
        "experiment #{experiment_id} {:?}: {} runs queued",
        spec.name,
        created.len()
    );
    Ok(Ok(CreatedExperiment {
        id: experiment_id,
        runs: created,
    }))
}

/// Check that run `pid` is a box-domain pre-training of this dataset, detector and backbone that
/// has not failed; returns the backbone it was pre-trained on (the baseline's init).
async fn reused_pretraining(
    s: &AppState,
    spec: &ExperimentSpec,
    dataset_id: i64,
    pid: i64,
) -> sqlx::Result<Result<InitConfig, String>> {
    let Some(run) = db::runs::get(&s.pool, pid).await? else {
        return Ok(Err(format!("run {pid} not found")));
    };
    if run.kind != RunKind::PretrainBox {
        return Ok(Err(format!(
            "run {pid} is a {} run, not a box-domain pre-training (pretrain_box)",
            run.kind
        )));
    }
    if run.dataset_id != Some(dataset_id) {
        return Ok(Err(format!("run {pid} pre-trained on another dataset")));
    }
    if run.status == RunStatus::Failed || run.status == RunStatus::Cancelled {
        return Ok(Err(format!(
            "run {pid} is {}: choose a succeeded, running or queued pre-training",
            run.status
        )));
    }
    let config = match &run.config.typed {
        Ok(JobConfig::PretrainBox(c)) => c.clone(),
        Ok(_) => return Ok(Err(format!("run {pid} is not a box-domain pre-training"))),
        Err(e) => return Ok(Err(format!("run {pid}'s config cannot be read: {e}"))),
    };
    if config.detector != spec.detector {
        return Ok(Err(format!(
            "run {pid} pre-trained {}, not {}",
            wire_name(&config.detector),
            wire_name(&spec.detector)
        )));
    }
    if config.backbone != spec.backbone {
        return Ok(Err(format!(
            "run {pid} pre-trained on {}, not {}",
            wire_name(&config.backbone),
            wire_name(&spec.backbone)
        )));
    }
    Ok(Ok(config.backbone_init))
}

/// Every split the fine-tunes read must exist in the dataset (its `splits.json`).
fn check_splits(dataset: &DatasetRow, planned: &[PlannedRun]) -> Result<(), String> {
    let names = dataset.split_names();
    if names.is_empty() {
        return Err(format!(
            "dataset_id: dataset {:?} has no splits (import it again, optionally with a splits.json beside its annotations)",
            dataset.name
        ));
    }
    for p in planned {
        let (field, split) = match &p.config {
            JobConfig::Finetune(c) => {
                if !names.contains(&c.val_split) {
                    return Err(format!(
                        "dataset_id: dataset {:?} has no {:?} split",
                        dataset.name, c.val_split
                    ));
                }
                ("fractions", &c.train_split)
            }
            JobConfig::PretrainBox(c) => ("dataset_id", &c.split),
            JobConfig::PretrainImage(c) => ("dataset_id", &c.split),
            _ => continue,
        };
        if !names.contains(split) {
            return Err(format!(
                "{field}: dataset {:?} has no split {split:?} (it has {})",
                dataset.name,
                names.join(", ")
            ));
        }
    }
    Ok(())
}
