//! Numerical parity with torchvision: the same weights (saved by torchvision as safetensors) give
//! the same pyramid features. The reference is produced at test time by
//! scripts/torchvision_reference.py with the setup's venv (torch 2.11 + torchvision 0.26).

use aligndet_trainer::models::backbone::BodyKind;
use aligndet_trainer::models::detector::{Detector, Targets};
use aligndet_trainer::models::fcos::Fcos;
use aligndet_trainer::models::fpn::{ExtraLevels, Fpn};
use aligndet_trainer::models::norm::NormKind;
use aligndet_trainer::models::resnet::{ResNet, ResNetDepth};
use std::path::{Path, PathBuf};

mod support;
use support::detections::{assert_detections_match, assert_losses_match};
use support::parity::{images, load_exact, read_tensors, relative_diff, targets};

/// Run scripts/torchvision_reference.py with `args`; returns the folder it wrote.
fn reference(tag: &str, args: &[&str]) -> PathBuf {
    support::reference("torchvision_reference.py", &format!("tv-{tag}"), args)
}

fn check(
    arch: &str,
    depth: ResNetDepth,
    extra_name: &str,
    extra: ExtraLevels,
    returned: std::ops::Range<usize>,
) {
    let dir = reference(
        &format!("{arch}-{extra_name}"),
        &["backbone", "--arch", arch, "--extra", extra_name],
    );
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let body = ResNet::new(&(vs.root() / "body"), depth, NormKind::FrozenBn);
    let chans = depth.out_channels();
    let fpn = Fpn::new(&(vs.root() / "fpn"), &chans[returned.clone()], 256, extra);
    load_exact(&mut vs, &dir.join("weights.safetensors"));
    let io = read_tensors(&dir.join("io.safetensors"));
    let outs = tch::no_grad(|| {
        let c = body.forward_t(&io["input"], false);
        fpn.forward(&c[returned])
    });
    for (i, ours) in outs.iter().enumerate() {
        let rel = relative_diff(&format!("level {i}"), ours, &io[&format!("out{i}")]);
        assert!(rel < 1e-4, "level {i}: relative difference {rel:e}");
    }
    assert_eq!(outs.len(), io.len() - 1, "same number of levels");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn resnet50_fpn_p3_p7_matches_torchvision() {
    check(
        "resnet50",
        ResNetDepth::Resnet50,
        "p6p7",
        ExtraLevels::P6P7,
        1..4,
    );
}

#[test]
fn resnet18_fpn_p2_p6_matches_torchvision() {
    check(
        "resnet18",
        ResNetDepth::Resnet18,
        "maxpool",
        ExtraLevels::MaxPool,
        0..4,
    );
}

/// torchvision's FCOS ResNet-50-FPN (5 classes) with the reference's weights, every one loaded,
/// resizing images to `(min_size, max_size)`.
fn fcos_from(dir: &Path, (min_size, max_size): (f64, f64)) -> (tch::nn::VarStore, Fcos) {
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut model = Fcos::new(&vs.root(), BodyKind::Resnet50, NormKind::FrozenBn, 5);
    (model.transform.min_size, model.transform.max_size) = (min_size, max_size);
    load_exact(&mut vs, &dir.join("weights.safetensors"));
    (vs, model)
}

#[test]
fn fcos_resnet50_fpn_detections_match_torchvision() {
    let out = reference("fcos", &["fcos"]);
    let (_vs, model) = fcos_from(&out, (256.0, 512.0));
    let io = read_tensors(&out.join("io.safetensors"));
    let dets = model.detect(&images(&io));
    assert_detections_match(&dets, &io, 10);
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn fcos_resnet50_fpn_training_losses_match_torchvision() {
    let out = reference("fcos-losses", &["fcos-losses"]);
    let (_vs, model) = fcos_from(&out, (256.0, 512.0));
    let io = read_tensors(&out.join("io.safetensors"));
    let (batch, targets) = model
        .transform
        .batch_with_targets(&images(&io), &targets(&io, ""));
    let losses = model.losses(&batch, &targets, false);
    let names = ["classification", "bbox_regression", "bbox_ctrness"];
    assert_losses_match(&losses, &io, "loss_", &names, 1e-4);
    let _ = std::fs::remove_dir_all(out);
}

/// Twelve SGD steps from torchvision's own head initialisation, on the same three batches, with
/// the fine-tune form's settings (momentum 0.9, weight decay 1e-4, clipping at 10, warm-up from
/// 0.001 × lr): every loss term of every step as torchvision's. Torchvision's box loss stays at
/// about 1.0 for the first steps too (its regression starts near zero under a ReLU): a short
/// FCOS run whose box loss has not yet moved is FCOS, not a defect of ours.
#[test]
fn fcos_resnet50_fpn_trains_step_by_step_as_torchvision() {
    use aligndet_common::optim_config::{LrSchedule, OptimConfig, OptimizerKind, Precision};
    use aligndet_trainer::train::optim::{Optimizer, trainable_params};
    const STEPS: u32 = 12;
    let out = reference(
        "fcos-train",
        &[
            "fcos-train",
            "--steps",
            "12",
            "--lr",
            "0.01",
            "--warmup",
            "2",
        ],
    );
    let (vs, model) = fcos_from(&out, (160.0, 266.0));
    let io = read_tensors(&out.join("io.safetensors"));
    let optim = OptimConfig {
        batch_size: 2,
        steps: STEPS,
        optimizer: OptimizerKind::Sgd,
        lr: 0.01,
        momentum: 0.9,
        weight_decay: 1e-4,
        warmup_steps: 2,
        schedule: LrSchedule::Cosine { min_factor: 1.0 },
        grad_clip_norm: Some(10.0),
        checkpoint_every: 100,
        seed: 0,
        loader_threads: 1,
        precision: Precision::Fp32,
        world_size: 1,
    };
    let params = trainable_params(&vs, false);
    let numel: i64 = params.iter().map(|p| p.tensor.numel() as i64).sum();
    assert_eq!(
        numel,
        io["trainable"].int64_value(&[0]),
        "trainable parameters"
    );
    let mut opt = Optimizer::new(OptimizerKind::Sgd, params, 0.9, 1e-4);
    let mut box_losses = Vec::new();
    for step in 0..STEPS {
        let b = step % 3;
        let images: Vec<tch::Tensor> = (0..2)
            .map(|i| io[&format!("image{b}_{i}")].shallow_clone())
            .collect();
        let targets: Vec<Targets> = (0..2)
            .map(|i| Targets {
                boxes: io[&format!("boxes{b}_{i}")].shallow_clone(),
                labels: io[&format!("labels{b}_{i}")].shallow_clone(),
                masks: None,
            })
            .collect();
        let (batch, targets) = model.transform.batch_with_targets(&images, &targets);
        let losses = model.losses(&batch, &targets, true);
        for (name, ours) in &losses {
            let theirs = io[&format!("loss_{name}_{step}")].double_value(&[0]);
            let ours = ours.double_value(&[]);
            let rel = (ours - theirs).abs() / theirs.abs().max(1e-12);
            // Strict while float-order differences are small; afterwards they grow as between
            // two torchvision runs on 1 and 2 threads (4e-2 by step 11 on this machine).
            let bound = match (step, name.as_str()) {
                (0..=2, _) => 1e-4,
                (_, "bbox_regression") => 5e-3,
                _ => 5e-2,
            };
            assert!(
                rel < bound,
                "step {step}, {name}: ours {ours}, torchvision {theirs} (relative difference {rel:.2e} over {bound:e})"
            );
            if name == "bbox_regression" {
                box_losses.push(ours);
            }
        }
        let lr = optim.lr_at(step);
        let theirs = io[&format!("lr_{step}")].double_value(&[0]);
        assert!((lr - theirs).abs() < 1e-12, "lr at step {step}");
        let total = losses
            .iter()
            .skip(1)
            .fold(losses[0].1.shallow_clone(), |acc, (_, t)| acc + t);
        opt.zero_grad();
        total.backward();
        let norm = opt.clip_grad_norm(10.0);
        if step == 0 {
            let theirs = io["grad_norm_0"].double_value(&[0]);
            assert!((norm - theirs).abs() < 1e-4 * theirs, "{norm} vs {theirs}");
        }
        opt.step(lr);
    }
    eprintln!("box loss per step (ours; torchvision's within 5e-3): {box_losses:.5?}");
    assert!(
        box_losses.iter().all(|&l| l > 0.9),
        "torchvision's box loss stays above 0.94 over these 12 steps, ours should too"
    );
    let _ = std::fs::remove_dir_all(out);
}
