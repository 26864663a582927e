//! Arms named by their role in the AlignDet comparison: how the detector started, or the role
//! the run was given in an experiment (`runs.experiment_role`), which wins where present.

use aligndet_common::artifacts::{PRETRAINED_BACKBONE, PRETRAINED_DETECTOR};
use serde::Serialize;
use serde_json::Value;

/// What an arm is in the AlignDet question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArmRole {
    /// Fine-tuned from a `pretrain_box` run's pre-trained detector (`pretrained.safetensors`).
    Aligndet,
    /// From the image-domain backbone alone: the shipped ImageNet weights (or, inside an
    /// experiment, whatever backbone the experiment's baseline arm uses).
    Baseline,
    /// From a `pretrain_image` run's label-free backbone (`backbone.safetensors`).
    LabelFree,
    /// Every module random.
    Scratch,
    /// Any other checkpoint (a fine-tuned model, a checkpoint of a run's own).
    Checkpoint,
}

impl ArmRole {
    /// The name a person reads.
    pub fn name(self) -> &'static str {
        match self {
            ArmRole::Aligndet => "AlignDet",
            ArmRole::Baseline => "baseline",
            ArmRole::LabelFree => "label-free",
            ArmRole::Scratch => "scratch",
            ArmRole::Checkpoint => "from checkpoint",
        }
    }

    /// What the role means, for the page's legend.
    pub fn meaning(self) -> &'static str {
        match self {
            ArmRole::Aligndet => "fine-tuned from a box-domain pre-trained detector (pretrain_box)",
            ArmRole::Baseline => "fine-tuned from the image-domain backbone alone",
            ArmRole::LabelFree => {
                "fine-tuned from a label-free pre-trained backbone (pretrain_image)"
            }
            ArmRole::Scratch => "trained from random initialisation",
            ArmRole::Checkpoint => "fine-tuned from another run's checkpoint",
        }
    }
}

/// A run's role: its experiment role when it has one (`aligndet`, `baseline`), else read from
/// its `init`.
pub fn arm_role(config: &Value, experiment_role: Option<&str>) -> ArmRole {
    match experiment_role {
        Some("aligndet") => return ArmRole::Aligndet,
        Some("baseline") => return ArmRole::Baseline,
        _ => {}
    }
    let init = config.get("init");
    match init.and_then(|i| i.get("from")).and_then(Value::as_str) {
        Some("imagenet_backbone") => ArmRole::Baseline,
        Some("scratch") => ArmRole::Scratch,
        Some("checkpoint") => {
            match init
                .and_then(|i| i.pointer("/artifact/name"))
                .and_then(Value::as_str)
            {
                Some(PRETRAINED_DETECTOR) => ArmRole::Aligndet,
                Some(PRETRAINED_BACKBONE) => ArmRole::LabelFree,
                _ => ArmRole::Checkpoint,
            }
        }
        _ => ArmRole::Checkpoint,
    }
}

/// Arm names from their roles: the role's name where one arm has it, numbered where several
/// do ("AlignDet 1", "AlignDet 2").
pub fn role_labels(roles: &[ArmRole]) -> Vec<String> {
    roles
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if roles.iter().filter(|x| *x == r).count() == 1 {
                r.name().to_string()
            } else {
                let k = roles[..=i].iter().filter(|x| *x == r).count();
                format!("{} {k}", r.name())
            }
        })
        .collect()
}

/// The refusal of a comparison across run kinds (a proposals run beside fine-tunes has no AP
/// to compare and would become the baseline); `None` when every run is of one kind.
pub fn mixed_kinds(kinds: &[(i64, &str)]) -> Option<String> {
    let first = kinds.first()?.1;
    if kinds.iter().all(|(_, k)| *k == first) {
        return None;
    }
    let mut by_kind: Vec<(&str, Vec<String>)> = Vec::new();
    for &(id, k) in kinds {
        match by_kind.iter_mut().find(|(x, _)| *x == k) {
            Some((_, ids)) => ids.push(format!("#{id}")),
            None => by_kind.push((k, vec![format!("#{id}")])),
        }
    }
    let parts: Vec<String> = by_kind
        .iter()
        .map(|(k, ids)| format!("{k}: {}", ids.join(", ")))
        .collect();
    Some(format!(
        "runs of different kinds cannot be compared ({}): compare runs of one kind, e.g. the \
         fine-tunes only",
        parts.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn init(v: Value) -> Value {
        json!({"kind": "finetune", "init": v})
    }

    #[test]
    fn roles_come_from_the_init_or_the_experiment() {
        let ckpt = |name: &str| {
            init(json!({"from": "checkpoint", "artifact": {"run_id": 4, "name": name}}))
        };
        assert_eq!(
            arm_role(&ckpt("pretrained.safetensors"), None),
            ArmRole::Aligndet
        );
        assert_eq!(
            arm_role(&ckpt("backbone.safetensors"), None),
            ArmRole::LabelFree
        );
        assert_eq!(
            arm_role(&ckpt("model.safetensors"), None),
            ArmRole::Checkpoint
        );
        let imagenet = init(json!({"from": "imagenet_backbone"}));
        assert_eq!(arm_role(&imagenet, None), ArmRole::Baseline);
        assert_eq!(
            arm_role(&init(json!({"from": "scratch"})), None),
            ArmRole::Scratch
        );
        // An experiment's baseline on a label-free backbone is its baseline.
        assert_eq!(
            arm_role(&ckpt("backbone.safetensors"), Some("baseline")),
            ArmRole::Baseline
        );
        assert_eq!(arm_role(&imagenet, Some("aligndet")), ArmRole::Aligndet);
        assert_eq!(ArmRole::Aligndet.name(), "AlignDet");
    }

    #[test]
    fn labels_number_repeated_roles_only() {
        use ArmRole::*;
        assert_eq!(
            role_labels(&[Aligndet, Baseline]),
            vec!["AlignDet", "baseline"]
        );
        assert_eq!(
            role_labels(&[Aligndet, Baseline, Aligndet]),
            vec!["AlignDet 1", "baseline", "AlignDet 2"]
        );
    }

    #[test]
    fn mixed_kinds_are_named() {
        assert_eq!(mixed_kinds(&[(1, "finetune"), (2, "finetune")]), None);
        let msg = mixed_kinds(&[(1, "finetune"), (2, "finetune"), (4, "proposals")]).unwrap();
        assert!(msg.contains("finetune: #1, #2; proposals: #4"), "{msg}");
    }
}
