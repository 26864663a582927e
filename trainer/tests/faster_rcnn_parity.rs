//! Faster R-CNN parity with torchvision 0.26: RoIAlign (values and gradients), MultiScaleRoIAlign,
//! eval-mode detections and the four training losses with the same weights. The references are
//! computed at test time by scripts/faster_rcnn_reference.py with the setup's venv.

use aligndet_trainer::models::backbone::BodyKind;
use aligndet_trainer::models::detector::{Detector, Targets};
use aligndet_trainer::models::faster_rcnn::FasterRcnn;
use aligndet_trainer::models::norm::NormKind;
use aligndet_trainer::models::roi_align::{MultiScaleRoIAlign, roi_align};
use aligndet_trainer::models::weights::load_safetensors;
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Kind, Tensor};

mod support;

use support::detections::{assert_losses_match, even_draw, pair_detections};

/// Run scripts/faster_rcnn_reference.py `cmd`; returns the folder it wrote.
fn reference(cmd: &str) -> PathBuf {
    support::reference("faster_rcnn_reference.py", &format!("frcnn-{cmd}"), &[cmd])
}

fn read(path: PathBuf) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn roi_align_matches_torchvision() {
    let dir = reference("roi_align");
    let io = read(dir.join("io.safetensors"));
    let (input, rois) = (&io["input"], &io["rois"]);
    for (i, scale) in [1.0, 0.25, 0.125].into_iter().enumerate() {
        let ours = roi_align(input, rois, (7, 7), scale, 2);
        let d = max_diff(&ours, &io[&format!("out{i}")]);
        eprintln!("roi_align scale {scale}: max |diff| {d}");
        assert!(d < 1e-5, "scale {scale}: max |diff| {d}");
    }
    let d = max_diff(&roi_align(input, rois, (5, 3), 0.25, 2), &io["out_5x3"]);
    assert!(d < 1e-5, "5×3 output: max |diff| {d}");

    // gradients flow back into the map as torchvision's backward sends them
    let x = input.copy().set_requires_grad(true);
    let loss = (roi_align(&x, rois, (7, 7), 0.25, 2) * &io["grad_weights"]).sum(Kind::Float);
    loss.backward();
    let d = max_diff(&x.grad(), &io["grad"]);
    eprintln!("roi_align gradient: max |diff| {d}");
    assert!(d < 1e-4, "gradient: max |diff| {d}");

    let levels: Vec<Tensor> = (0..4)
        .map(|i| io[&format!("level{i}")].shallow_clone())
        .collect();
    let boxes = vec![io["boxes0"].shallow_clone(), io["boxes1"].shallow_clone()];
    let sizes: Vec<i64> = Vec::try_from(io["image_sizes"].reshape([-1])).unwrap();
    let image_sizes = vec![(sizes[0], sizes[1]), (sizes[2], sizes[3])];
    let ours = MultiScaleRoIAlign::default().forward(&levels, &boxes, &image_sizes);
    let d = max_diff(&ours, &io["multiscale"]);
    eprintln!("MultiScaleRoIAlign: max |diff| {d}");
    assert!(d < 1e-5, "MultiScaleRoIAlign: max |diff| {d}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The model of the reference, with its weights loaded strictly.
fn model(dir: &std::path::Path) -> (tch::nn::VarStore, FasterRcnn) {
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut model = FasterRcnn::new(&vs.root(), BodyKind::Resnet50, NormKind::FrozenBn, 5);
    model.transform.min_size = 256.0;
    model.transform.max_size = 512.0;
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

#[test]
fn faster_rcnn_detections_match_torchvision() {
    let dir = reference("faster_rcnn");
    let (_vs, model) = model(&dir);
    let io = read(dir.join("io.safetensors"));
    let images = vec![io["image0"].shallow_clone(), io["image1"].shallow_clone()];
    let dets = model.detect(&images);
    for (i, d) in dets.iter().enumerate() {
        let (tb, ts, tl) = (
            &io[&format!("boxes{i}")],
            &io[&format!("scores{i}")],
            &io[&format!("labels{i}")],
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
        // Ranked lists can swap detections whose scores tie to within rounding, so each
        // reference detection is paired with one of ours of the same label, box and score.
        let unmatched = unmatched_detections(&d.boxes, &d.scores, &d.labels, tb, ts, tl);
        assert!(
            unmatched.is_empty(),
            "image {i}: reference detections without a match (index, label, score): {unmatched:?}"
        );
        // and the ranked scores agree
        let score_diff = max_diff(&d.scores, ts);
        eprintln!(
            "image {i}: {} detections, ranked scores differ by ≤ {score_diff}",
            ts.size()[0]
        );
        assert!(
            score_diff < 1e-3,
            "image {i}: ranked scores differ by {score_diff}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Reference detections (index, label, score) that none of ours matches (see
/// `support::detections::pair_detections`).
fn unmatched_detections(
    boxes: &Tensor,
    scores: &Tensor,
    labels: &Tensor,
    ref_boxes: &Tensor,
    ref_scores: &Tensor,
    ref_labels: &Tensor,
) -> Vec<(usize, i64, f64)> {
    let rl: Vec<i64> = Vec::try_from(ref_labels).unwrap();
    let rs: Vec<f32> = Vec::try_from(ref_scores).unwrap();
    pair_detections((boxes, scores, labels), (ref_boxes, ref_scores, ref_labels))
        .into_iter()
        .enumerate()
        .filter(|(_, p)| p.is_none())
        .map(|(i, _)| (i, rl[i], rs[i] as f64))
        .collect()
}

#[test]
fn faster_rcnn_training_losses_match_torchvision() {
    let dir = reference("faster_rcnn");
    let (_vs, mut model) = model(&dir);
    model.rpn.sampler = model.rpn.sampler.clone().with_draw(even_draw());
    // As in the reference: the box branch takes every proposal, so that its losses do not
    // depend on how proposals with tied objectness are ranked.
    model.roi_heads.sampler = model.roi_heads.sampler.clone().with_draw(even_draw());
    model.roi_heads.sampler.batch_size_per_image = 1024;
    let io = read(dir.join("io.safetensors"));
    let images = vec![io["image0"].shallow_clone(), io["image1"].shallow_clone()];
    let targets: Vec<Targets> = (0..2)
        .map(|i| Targets {
            boxes: io[&format!("target_boxes{i}")].shallow_clone(),
            labels: io[&format!("target_labels{i}")].shallow_clone(),
            masks: None,
        })
        .collect();
    let (batch, targets) = model.transform.batch_with_targets(&images, &targets);
    let losses = model.losses(&batch, &targets, true);
    assert_losses_match(
        &losses,
        &io,
        &[
            "loss_classifier",
            "loss_box_reg",
            "loss_objectness",
            "loss_rpn_box_reg",
        ],
        1e-4,
    );
    let _ = std::fs::remove_dir_all(dir);
}
