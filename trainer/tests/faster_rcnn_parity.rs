//! Faster R-CNN parity with torchvision 0.26: RoIAlign (values and gradients), MultiScaleRoIAlign,
//! eval-mode detections and the four training losses with the same weights. The references are
//! computed at test time by scripts/faster_rcnn_reference.py with the setup's venv.

use aligndet_trainer::models::backbone::BodyKind;
use aligndet_trainer::models::detector::Detector;
use aligndet_trainer::models::faster_rcnn::FasterRcnn;
use aligndet_trainer::models::norm::NormKind;
use aligndet_trainer::models::roi_align::{MultiScaleRoIAlign, roi_align};
use std::path::PathBuf;
use tch::{Kind, Tensor};

mod support;

use support::detections::{assert_detections_match, assert_losses_match, sample_as_the_references};
use support::parity::{images, load_exact, max_diff, read_tensors, targets};

/// Run scripts/faster_rcnn_reference.py `cmd`; returns the folder it wrote.
fn reference(cmd: &str) -> PathBuf {
    support::reference("faster_rcnn_reference.py", &format!("frcnn-{cmd}"), &[cmd])
}

#[test]
fn roi_align_matches_torchvision() {
    let dir = reference("roi_align");
    let io = read_tensors(&dir.join("io.safetensors"));
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
    load_exact(&mut vs, &dir.join("weights.safetensors"));
    (vs, model)
}

#[test]
fn faster_rcnn_detections_match_torchvision() {
    let dir = reference("faster_rcnn");
    let (_vs, model) = model(&dir);
    let io = read_tensors(&dir.join("io.safetensors"));
    let dets = model.detect(&images(&io));
    assert_detections_match(&dets, &io, 10);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn faster_rcnn_training_losses_match_torchvision() {
    let dir = reference("faster_rcnn");
    let (_vs, mut model) = model(&dir);
    sample_as_the_references(&mut model, 1024);
    let io = read_tensors(&dir.join("io.safetensors"));
    let (batch, targets) = model
        .transform
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
        ],
        1e-4,
    );
    let _ = std::fs::remove_dir_all(dir);
}
