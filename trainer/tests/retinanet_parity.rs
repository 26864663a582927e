//! RetinaNet parity with torchvision 0.26: the same weights (torchvision's `retinanet_resnet50_fpn`
//! state dict, saved as safetensors) give the same eval-mode detections and the same training
//! losses. The reference is produced at test time by scripts/retinanet_reference.py with the
//! setup's venv (torch 2.11 + torchvision 0.26).

use aligndet_trainer::models::backbone::BodyKind;
use aligndet_trainer::models::detector::Detector;
use aligndet_trainer::models::norm::NormKind;
use aligndet_trainer::models::retinanet::RetinaNet;
use std::path::{Path, PathBuf};

mod support;
use support::detections::{assert_detections_match, assert_losses_match};
use support::parity::{images, load_exact, read_tensors, targets};

/// Run scripts/retinanet_reference.py `cmd`; returns the folder it wrote.
fn reference(cmd: &str) -> PathBuf {
    support::reference(
        "retinanet_reference.py",
        &format!("retinanet-{cmd}"),
        &[cmd],
    )
}

/// torchvision's model with the reference weights; every parameter and buffer must load.
fn model_from(dir: &Path) -> (tch::nn::VarStore, RetinaNet) {
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut model = RetinaNet::new(&vs.root(), BodyKind::Resnet50, NormKind::FrozenBn, 5);
    model.transform.min_size = 256.0;
    model.transform.max_size = 512.0;
    load_exact(&mut vs, &dir.join("weights.safetensors"));
    (vs, model)
}

#[test]
fn retinanet_resnet50_fpn_detections_match_torchvision() {
    let dir = reference("detect");
    let (_vs, model) = model_from(&dir);
    let io = read_tensors(&dir.join("io.safetensors"));
    let dets = model.detect(&images(&io));
    assert_detections_match(&dets, &io, 20);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn retinanet_resnet50_fpn_losses_match_torchvision() {
    let dir = reference("losses");
    let (_vs, model) = model_from(&dir);
    let io = read_tensors(&dir.join("io.safetensors"));
    let (batch, targets) = model
        .transform
        .batch_with_targets(&images(&io), &targets(&io, ""));
    let losses = model.losses(&batch, &targets, true);
    let names = ["classification", "bbox_regression"];
    assert_losses_match(&losses, &io, "loss_", &names, 1e-4);
    let _ = std::fs::remove_dir_all(dir);
}
