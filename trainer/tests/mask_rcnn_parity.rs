//! Mask R-CNN parity with torchvision 0.26: mask targets (`project_masks_on_boxes`, adaptive
//! RoIAlign), eval-mode detections and their thresholded masks, and the five training losses
//! with the same weights. The references are computed at test time by
//! scripts/mask_rcnn_reference.py with the setup's venv.

use aligndet_trainer::models::backbone::BodyKind;
use aligndet_trainer::models::detector::{Detector, Targets};
use aligndet_trainer::models::mask_rcnn::MaskRcnn;
use aligndet_trainer::models::mask_targets::project_masks_on_boxes;
use aligndet_trainer::models::norm::NormKind;
use aligndet_trainer::models::weights::load_safetensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

mod support;

use support::detections::{assert_losses_match, even_draw, pair_detections};

/// Run scripts/mask_rcnn_reference.py `cmd`; returns the folder it wrote.
fn reference(cmd: &str) -> PathBuf {
    support::reference("mask_rcnn_reference.py", &format!("mrcnn-{cmd}"), &[cmd])
}

fn read(path: PathBuf) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn mask_targets_match_torchvision() {
    let dir = reference("project");
    let io = read(dir.join("io.safetensors"));
    let ours = project_masks_on_boxes(&io["masks"], &io["boxes"], &io["matched"], 28);
    assert_eq!(ours.size(), io["targets"].size());
    let d = (&ours - &io["targets"]).abs().max().double_value(&[]);
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
    let report = load_safetensors(&mut vs, &dir.join("weights.safetensors"), None).unwrap();
    assert!(report.missing.is_empty(), "missing: {:?}", report.missing);
    assert!(
        report.unexpected.is_empty(),
        "unexpected: {:?}",
        report.unexpected
    );
    assert!(
        report.shape_mismatch.is_empty(),
        "{:?}",
        report.shape_mismatch
    );
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
    let io = read(dir.join("io.safetensors"));
    let images = vec![io["image0"].shallow_clone(), io["image1"].shallow_clone()];
    let dets = model.detect(&images);
    for (i, d) in dets.iter().enumerate() {
        let (tb, ts, tl, tm) = (
            &io[&format!("boxes{i}")],
            &io[&format!("scores{i}")],
            &io[&format!("labels{i}")],
            &io[&format!("masks{i}")],
        );
        assert!(
            ts.size()[0] > 10,
            "the reference should have many detections"
        );
        assert_eq!(
            d.scores.size(),
            ts.size(),
            "image {i}: number of detections"
        );
        let masks = d.masks.as_ref().expect("Mask R-CNN detections carry masks");
        assert_eq!(masks.size(), tm.size(), "image {i}: mask shape");
        let pairs = pair_detections((&d.boxes, &d.scores, &d.labels), (tb, ts, tl));
        let (mut worst, mut non_empty) = (1.0f64, 0);
        for (r, p) in pairs.iter().enumerate() {
            let j = p.unwrap_or_else(|| panic!("image {i}: reference detection {r} unmatched"));
            let theirs = tm.get(r as i64);
            non_empty += i64::from(theirs.sum(Kind::Int64).int64_value(&[]) > 0);
            let iou = mask_iou(&masks.get(j as i64), &theirs);
            assert!(iou >= 0.99, "image {i}: detection {r}: mask IoU {iou}");
            worst = worst.min(iou);
        }
        eprintln!(
            "image {i}: {} detections ({non_empty} non-empty masks), lowest mask IoU {worst}",
            ts.size()[0]
        );
        assert!(non_empty > 5, "the reference should have non-empty masks");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mask_rcnn_training_losses_match_torchvision() {
    let dir = reference("mask_rcnn");
    let (_vs, mut model) = model(&dir);
    let f = &mut model.faster;
    f.rpn.sampler = f.rpn.sampler.clone().with_draw(even_draw());
    // As in the reference: the box branch takes every proposal (up to 4096), so that its
    // losses and the mask branch's positives do not depend on how tied proposals are ranked.
    f.roi_heads.sampler = f.roi_heads.sampler.clone().with_draw(even_draw());
    f.roi_heads.sampler.batch_size_per_image = 4096;
    let io = read(dir.join("io.safetensors"));
    let images = vec![io["image0"].shallow_clone(), io["image1"].shallow_clone()];
    let targets: Vec<Targets> = (0..2)
        .map(|i| Targets {
            boxes: io[&format!("target_boxes{i}")].shallow_clone(),
            labels: io[&format!("target_labels{i}")].shallow_clone(),
            masks: Some(io[&format!("target_masks{i}")].shallow_clone()),
        })
        .collect();
    let (batch, targets) = model.transform().batch_with_targets(&images, &targets);
    let losses = model.losses(&batch, &targets, true);
    assert_losses_match(
        &losses,
        &io,
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
