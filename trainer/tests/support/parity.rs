//! What the parity tests share: loading a reference's weights strictly, reading its outputs, and
//! measuring how far ours are from them.

use aligndet_trainer::models::backbone::Body;
use aligndet_trainer::models::detector::Targets;
use aligndet_trainer::models::weights::load_safetensors;
use std::collections::HashMap;
use std::path::Path;
use tch::Tensor;
use tch::nn::VarStore;

/// Load `file` into `vs`: every variable of the model must load, and every tensor of the file
/// must be used, with the same shapes.
pub fn load_exact(vs: &mut VarStore, file: &Path) {
    let report = load_safetensors(vs, file, None).expect("read the reference weights");
    assert!(report.missing.is_empty(), "missing: {:?}", report.missing);
    assert!(
        report.unexpected.is_empty(),
        "unexpected: {:?}",
        report.unexpected
    );
    assert!(
        report.shape_mismatch.is_empty(),
        "shape mismatch: {:?}",
        report.shape_mismatch
    );
}

/// A reference's outputs (a safetensors file) by name.
pub fn read_tensors(file: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(file)
        .expect("read the reference outputs")
        .into_iter()
        .collect()
}

/// The reference's `image0`, `image1`, … in order.
pub fn images(io: &HashMap<String, Tensor>) -> Vec<Tensor> {
    (0..)
        .map_while(|i| io.get(&format!("image{i}")).map(Tensor::shallow_clone))
        .collect()
}

/// One target per reference image from `{prefix}boxes{i}`, `{prefix}labels{i}` and, where the
/// reference has them, `{prefix}masks{i}`.
pub fn targets(io: &HashMap<String, Tensor>, prefix: &str) -> Vec<Targets> {
    (0..images(io).len())
        .map(|i| Targets {
            boxes: io[&format!("{prefix}boxes{i}")].shallow_clone(),
            labels: io[&format!("{prefix}labels{i}")].shallow_clone(),
            masks: io
                .get(&format!("{prefix}masks{i}"))
                .map(Tensor::shallow_clone),
        })
        .collect()
}

/// Largest absolute difference of two tensors of the same shape.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a - b).abs().max().double_value(&[])
}

/// max |ours − theirs| relative to max |theirs| (shapes must agree); printed under `tag`.
pub fn relative_diff(tag: &str, ours: &Tensor, theirs: &Tensor) -> f64 {
    assert_eq!(ours.size(), theirs.size(), "{tag}: shape");
    let diff = max_diff(ours, theirs);
    let scale = theirs.abs().max().double_value(&[]).max(1e-6);
    println!(
        "{tag}: max |diff| {diff:.2e}, max |ref| {scale:.2e}, relative {:.2e}",
        diff / scale
    );
    diff / scale
}

/// A body's values without its batch-norm running statistics (what a reference counts as the
/// module's parameters).
pub fn values_without_running_stats(vs: &VarStore) -> i64 {
    vs.variables()
        .iter()
        .filter(|(name, _)| !name.contains("running_"))
        .map(|(_, t)| t.numel() as i64)
        .sum()
}

/// A body's four feature maps (C2–C5) on the reference's `input` and `odd_input` against its
/// `out{i}` and `odd_out{i}`, each within `tolerance` relative; returns the worst relative
/// difference.
pub fn assert_body_levels(
    tag: &str,
    body: &dyn Body,
    io: &HashMap<String, Tensor>,
    tolerance: f64,
) -> f64 {
    let mut worst: f64 = 0.0;
    for prefix in ["", "odd_"] {
        let outs = tch::no_grad(|| body.forward_t(&io[&format!("{prefix}input")], false));
        assert_eq!(outs.len(), 4, "{tag}: four levels");
        for (i, ours) in outs.iter().enumerate() {
            let level = format!("{tag} {prefix}C{}", i + 2);
            let rel = relative_diff(&level, ours, &io[&format!("{prefix}out{i}")]);
            assert!(rel < tolerance, "{level}: relative difference {rel:e}");
            worst = worst.max(rel);
        }
    }
    worst
}
