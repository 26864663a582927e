//! Mask R-CNN parity with torchvision 0.26: mask targets (`project_masks_on_boxes`, adaptive
//! RoIAlign), eval-mode detections and their thresholded masks, and the five training losses
//! with the same weights. The references are computed at test time by
//! scripts/mask_rcnn_reference.py with the setup's venv.

use aligndet_trainer::models::backbone::BodyKind;
use aligndet_trainer::models::detector::Detector;
use aligndet_trainer::models::mask_rcnn::MaskRcnn;
use aligndet_trainer::models::mask_targets::project_masks_on_boxes;
use aligndet_trainer::models::norm::NormKind;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

mod support;

use support::detections::{assert_detections_match, assert_losses_match, sample_as_the_references};
use support::parity::{images, load_exact, max_diff, read_tensors, targets};

/// Run scripts/mask_rcnn_reference.py `cmd`; returns the folder it wrote.
fn reference(cmd: &str) -> PathBuf {
    support::reference("mask_rcnn_reference.py", &format!("mrcnn-{cmd}"), &[cmd])
}

#[test]
fn mask_targets_match_torchvision() {
    let dir = reference("project");
    let io = read_tensors(&dir.join("io.safetensors"));
    let ours = project_masks_on_boxes(&io["masks"], &io["boxes"], &io["matched"], 28);
    let d = max_diff(&ours, &io["targets"]);
    eprintln!("project_masks_on_boxes: max |diff| {d}");
    assert!(d < 1e-5, "max |diff| {d}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The model of the reference, with its weights loaded strictly.
fn model(dir: &Path) -> (tch::nn::VarStore, MaskRcnn) {
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut model = MaskRcnn::new(&vs.root(), BodyKind::Resnet50, NormKind::FrozenBn, 5);
    model.faster.transform.min_size = 256.0;
    model.faster.transform.max_size = 512.0;
    load_exact(&mut vs, &dir.join("weights.safetensors"));
    (vs, model)
}

/// Intersection over union of two binary masks `[H, W]`; two empty masks agree (1).
fn mask_iou(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_kind(Kind::Bool), b.to_kind(Kind::Bool));
    let inter = a.logical_and(&b).sum(Kind::Int64).int64_value(&[]);
    let union = a.logical_or(&b).sum(Kind::Int64).int64_value(&[]);
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

#[test]
fn mask_rcnn_detections_and_masks_match_torchvision() {
    let dir = reference("mask_rcnn");
    let (_vs, model) = model(&dir);
    let io = read_tensors(&dir.join("io.safetensors"));
    let dets = model.detect(&images(&io));
    let pairs = assert_detections_match(&dets, &io, 10);
    for (i, (d, pairs)) in dets.iter().zip(&pairs).enumerate() {
        let tm = &io[&format!("masks{i}")];
        let masks = d.masks.as_ref().expect("Mask R-CNN detections carry masks");
        assert_eq!(masks.size(), tm.size(), "image {i}: mask shape");
        let (mut worst, mut non_empty) = (1.0f64, 0);
        for (r, &j) in pairs.iter().enumerate() {
            let theirs = tm.get(r as i64);
            non_empty += i64::from(theirs.sum(Kind::Int64).int64_value(&[]) > 0);
            let iou = mask_iou(&masks.get(j as i64), &theirs);
            assert!(iou >= 0.99, "image {i}: detection {r}: mask IoU {iou}");
            worst = worst.min(iou);
        }
        eprintln!("image {i}: {non_empty} non-empty masks, lowest mask IoU {worst}");
        assert!(non_empty > 5, "the reference should have non-empty masks");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mask_rcnn_training_losses_match_torchvision() {
    let dir = reference("mask_rcnn");
    let (_vs, mut model) = model(&dir);
    // up to 4096 a box: the mask branch's positives do not depend on tied proposals either
    sample_as_the_references(&mut model.faster, 4096);
    let io = read_tensors(&dir.join("io.safetensors"));
    let (batch, targets) = model
        .transform()
        .batch_with_targets(&images(&io), &targets(&io, "target_"));
    let losses = model.losses(&batch, &targets, true);
    assert_losses_match(
        &losses,
        &io,
        "",
        &[
            "loss_classifier",
            "loss_box_reg",
            "loss_objectness",
            "loss_rpn_box_reg",
            "loss_mask",
        ],
        1e-4,
    );
    let _ = std::fs::remove_dir_all(dir);
}
