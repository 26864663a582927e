//! RetinaNet parity with torchvision 0.26: the same weights (torchvision's `retinanet_resnet50_fpn`
//! state dict, saved as safetensors) give the same eval-mode detections and the same training
//! losses. The reference is produced at test time by scripts/retinanet_reference.py with the
//! setup's venv (torch 2.11 + torchvision 0.26).

use aligndet_trainer::models::backbone::BodyKind;
use aligndet_trainer::models::detector::{Detector, Targets};
use aligndet_trainer::models::norm::NormKind;
use aligndet_trainer::models::retinanet::RetinaNet;
use aligndet_trainer::models::weights::load_safetensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

mod support;

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
    let report = load_safetensors(&mut vs, &dir.join("weights.safetensors"), None)
        .expect("read the reference weights");
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

fn read_io(dir: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("io.safetensors"))
        .expect("read the reference outputs")
        .into_iter()
        .collect()
}

#[test]
fn retinanet_resnet50_fpn_detections_match_torchvision() {
    let dir = reference("detect");
    let (_vs, model) = model_from(&dir);
    let io = read_io(&dir);
    let images = vec![io["image0"].shallow_clone(), io["image1"].shallow_clone()];
    let dets = model.detect(&images);
    for (i, d) in dets.iter().enumerate() {
        let (tb, ts, tl) = (
            &io[&format!("boxes{i}")],
            &io[&format!("scores{i}")],
            &io[&format!("labels{i}")],
        );
        assert!(
            ts.size()[0] > 20,
            "the reference should have many detections"
        );
        assert_eq!(
            d.scores.size(),
            ts.size(),
            "image {i}: number of detections"
        );
        assert!(
            d.labels.eq_tensor(tl).all().int64_value(&[]) == 1,
            "image {i}: labels differ"
        );
        let box_diff = (&d.boxes - tb).abs().max().double_value(&[]);
        let score_diff = (&d.scores - ts).abs().max().double_value(&[]);
        eprintln!(
            "image {i}: {} detections, max box diff {box_diff:.2e} px, max score diff {score_diff:.2e}",
            ts.size()[0]
        );
        assert!(box_diff < 0.5, "image {i}: boxes differ by {box_diff} px");
        assert!(
            score_diff < 1e-3,
            "image {i}: scores differ by {score_diff}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn retinanet_resnet50_fpn_losses_match_torchvision() {
    let dir = reference("losses");
    let (_vs, model) = model_from(&dir);
    let io = read_io(&dir);
    let n = io.keys().filter(|k| k.starts_with("image")).count();
    let images: Vec<Tensor> = (0..n)
        .map(|i| io[&format!("image{i}")].shallow_clone())
        .collect();
    let targets: Vec<Targets> = (0..n)
        .map(|i| Targets {
            boxes: io[&format!("boxes{i}")].shallow_clone(),
            labels: io[&format!("labels{i}")].shallow_clone(),
            masks: None,
        })
        .collect();
    let (batch, targets) = model.transform.batch_with_targets(&images, &targets);
    let losses = model.losses(&batch, &targets, true);
    let names: Vec<&str> = losses.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["classification", "bbox_regression"]);
    for (name, ours) in &losses {
        assert!(ours.requires_grad(), "{name} must be differentiable");
        let ours = ours.double_value(&[]);
        let theirs = io[&format!("loss_{name}")].double_value(&[0]);
        let rel = (ours - theirs).abs() / theirs.abs().max(1e-12);
        eprintln!("{name}: ours {ours}, torchvision {theirs}, relative {rel:.2e}");
        assert!(
            rel < 1e-4,
            "{name}: ours {ours}, torchvision {theirs} (relative {rel:e})"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
