//! Numerical parity with torchvision: the same weights (saved by torchvision as safetensors) give
//! the same pyramid features. The reference is produced at test time by
//! scripts/torchvision_reference.py with the setup's venv (torch 2.11 + torchvision 0.26).

use aligndet_trainer::models::fpn::{ExtraLevels, Fpn};
use aligndet_trainer::models::norm::NormKind;
use aligndet_trainer::models::resnet::{ResNet, ResNetDepth};
use aligndet_trainer::models::weights::load_safetensors;
use std::path::PathBuf;

mod support;

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
    let io: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(dir.join("io.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let outs = tch::no_grad(|| {
        let c = body.forward_t(&io["input"], false);
        fpn.forward(&c[returned])
    });
    for (i, ours) in outs.iter().enumerate() {
        let theirs = &io[&format!("out{i}")];
        assert_eq!(ours.size(), theirs.size(), "level {i} shape");
        let diff = (ours - theirs).abs().max().double_value(&[]);
        let scale = theirs.abs().max().double_value(&[]).max(1e-6);
        assert!(
            diff / scale < 1e-4,
            "level {i}: max |diff| {diff} (scale {scale})"
        );
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

#[test]
fn fcos_resnet50_fpn_detections_match_torchvision() {
    use aligndet_trainer::models::backbone::BodyKind;
    use aligndet_trainer::models::detector::Detector;
    use aligndet_trainer::models::fcos::Fcos;
    let out = reference("fcos", &["fcos"]);
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut model = Fcos::new(&vs.root(), BodyKind::Resnet50, NormKind::FrozenBn, 5);
    model.transform.min_size = 256.0;
    model.transform.max_size = 512.0;
    let report = load_safetensors(&mut vs, &out.join("weights.safetensors"), None).unwrap();
    assert!(report.missing.is_empty(), "missing: {:?}", report.missing);
    assert!(
        report.unexpected.is_empty(),
        "unexpected: {:?}",
        report.unexpected
    );
    let io: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(out.join("io.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
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
        if std::env::var("DEBUG_PARITY").is_ok() {
            d.boxes.narrow(0, 0, 5).print();
            tb.narrow(0, 0, 5).print();
            d.scores.narrow(0, 0, 5).print();
            ts.narrow(0, 0, 5).print();
        }
        // Scores are sorted; detections whose scores tie within float noise may come out in
        // either order (this differs between CPUs), so each detection is compared with the
        // reference detection of the same label and a score within 1e-3 that is nearest to it.
        let score_ok = (d.scores.unsqueeze(1) - ts.unsqueeze(0)).abs().lt(1e-3);
        let label_ok = d.labels.unsqueeze(1).eq_tensor(&tl.unsqueeze(0));
        let box_d = (d.boxes.unsqueeze(1) - tb.unsqueeze(0))
            .abs()
            .amax(2, false);
        let candidates = score_ok.logical_and(&label_ok);
        let nearest = box_d
            .masked_fill(&candidates.logical_not(), f64::INFINITY)
            .amin(1, false);
        let box_diff = nearest.max().double_value(&[]);
        let score_diff = (&d.scores - ts).abs().max().double_value(&[]);
        assert!(box_diff < 0.5, "image {i}: boxes differ by {box_diff} px");
        assert!(
            score_diff < 1e-3,
            "image {i}: scores differ by {score_diff}"
        );
        let same_labels = (d.labels.bincount::<tch::Tensor>(None, 8)
            - tl.bincount::<tch::Tensor>(None, 8))
        .abs()
        .sum(tch::Kind::Int64)
        .int64_value(&[]);
        assert_eq!(same_labels, 0, "image {i}: label counts differ");
    }
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn fcos_resnet50_fpn_training_losses_match_torchvision() {
    use aligndet_trainer::models::backbone::BodyKind;
    use aligndet_trainer::models::detector::{Detector, Targets};
    use aligndet_trainer::models::fcos::Fcos;
    let out = reference("fcos-losses", &["fcos-losses"]);
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut model = Fcos::new(&vs.root(), BodyKind::Resnet50, NormKind::FrozenBn, 5);
    model.transform.min_size = 256.0;
    model.transform.max_size = 512.0;
    let report = load_safetensors(&mut vs, &out.join("weights.safetensors"), None).unwrap();
    assert!(report.missing.is_empty(), "missing: {:?}", report.missing);
    let io: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(out.join("io.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let images = vec![io["image0"].shallow_clone(), io["image1"].shallow_clone()];
    let targets: Vec<Targets> = (0..2)
        .map(|i| Targets {
            boxes: io[&format!("boxes{i}")].shallow_clone(),
            labels: io[&format!("labels{i}")].shallow_clone(),
            masks: None,
        })
        .collect();
    let (batch, targets) = model.transform.batch_with_targets(&images, &targets);
    let losses = model.losses(&batch, &targets, false);
    assert_eq!(losses.len(), 3);
    for (name, ours) in &losses {
        let theirs = io[&format!("loss_{name}")].double_value(&[0]);
        let ours = ours.double_value(&[]);
        let rel = (ours - theirs).abs() / theirs.abs().max(1e-12);
        assert!(
            rel < 1e-4,
            "{name}: ours {ours}, torchvision {theirs} (relative difference {rel})"
        );
        assert!(theirs > 0.0, "{name}: the reference loss should not vanish");
    }
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
    use aligndet_trainer::models::backbone::BodyKind;
    use aligndet_trainer::models::detector::{Detector, Targets};
    use aligndet_trainer::models::fcos::Fcos;
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
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut model = Fcos::new(&vs.root(), BodyKind::Resnet50, NormKind::FrozenBn, 5);
    model.transform.min_size = 160.0;
    model.transform.max_size = 266.0;
    let report = load_safetensors(&mut vs, &out.join("weights.safetensors"), None).unwrap();
    assert!(report.missing.is_empty(), "missing: {:?}", report.missing);
    let io: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(out.join("io.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
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
