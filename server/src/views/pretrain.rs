//! What a `pretrain_box` or `pretrain_image` run's page shows besides its curves
//! ([`PretrainView`]): inputs, how the backbone starts, the artifact and the next steps.

use crate::db;
use crate::db::runs::{ArtifactRow, RunRow};
use crate::error::PageError;
use crate::forms::{checkpoint_value, wire_name};
use crate::state::AppState;
use aligndet_common::train_config::InitConfig;

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
            status: r.status.to_string(),
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
        InitConfig::ImagenetBackbone => {
            ("the shipped ImageNet weights of the backbone".into(), None)
        }
        InitConfig::Checkpoint { artifact } => (
            format!("{} of run #{}", artifact.name, artifact.run_id),
            Some((
                input_run_view(s, artifact.run_id).await?,
                artifact.name.clone(),
            )),
        ),
    })
}

pub async fn pretrain_view(
    s: &AppState,
    run: &RunRow,
    artifacts: &[ArtifactRow],
) -> Result<Option<PretrainView>, PageError> {
    use aligndet_common::artifacts as names;
    use aligndet_common::jobs::JobConfig;
    let present = |name: &str| artifacts.iter().any(|a| a.name == name);
    Ok(match run.config.job() {
        Some(JobConfig::PretrainBox(c)) => {
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
        Some(JobConfig::PretrainImage(c)) => {
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
    })
}
