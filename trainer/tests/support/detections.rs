//! Comparing detections with a reference's (parity tests of the two-stage detectors).

use aligndet_trainer::models::sampler::DrawFn;
use std::sync::Arc;
use tch::{Kind, Tensor};

/// For each reference detection, the index of one of ours with the same label, every box
/// coordinate within 0.5 px and the score within 1e-3 (each of ours pairs at most once); `None`
/// where none does. Ranked lists can swap detections whose scores tie to within rounding, so
/// detections are paired rather than compared rank by rank.
pub fn pair_detections(
    (boxes, scores, labels): (&Tensor, &Tensor, &Tensor),
    (ref_boxes, ref_scores, ref_labels): (&Tensor, &Tensor, &Tensor),
) -> Vec<Option<usize>> {
    let rows = |t: &Tensor| -> Vec<Vec<f32>> {
        Vec::<f32>::try_from(t.reshape([-1]))
            .unwrap()
            .chunks(4)
            .map(|c| c.to_vec())
            .collect()
    };
    let (b, rb) = (rows(boxes), rows(ref_boxes));
    let s: Vec<f32> = Vec::try_from(scores).unwrap();
    let rs: Vec<f32> = Vec::try_from(ref_scores).unwrap();
    let l: Vec<i64> = Vec::try_from(labels).unwrap();
    let rl: Vec<i64> = Vec::try_from(ref_labels).unwrap();
    let mut used = vec![false; b.len()];
    (0..rb.len())
        .map(|i| {
            let found = (0..b.len()).find(|&j| {
                !used[j]
                    && l[j] == rl[i]
                    && (s[j] - rs[i]).abs() < 1e-3
                    && b[j].iter().zip(&rb[i]).all(|(x, y)| (x - y).abs() < 0.5)
            });
            if let Some(j) = found {
                used[j] = true;
            }
            found
        })
        .collect()
}

/// The references' deterministic sampler draw (`even_draw`): candidates k·num / n, k < n.
pub fn even_draw() -> Arc<DrawFn> {
    Arc::new(|num: i64, n: i64, device: tch::Device| {
        if n == 0 {
            return Tensor::zeros([0], (Kind::Int64, device));
        }
        (Tensor::arange(n, (Kind::Int64, device)) * num).divide_scalar_mode(n, "floor")
    })
}

/// Our training losses against the reference's (`io[name]`, a one-element tensor): the terms
/// `names` in that order, each within `rel` relative.
pub fn assert_losses_match(
    losses: &[(String, Tensor)],
    io: &std::collections::HashMap<String, Tensor>,
    names: &[&str],
    rel: f64,
) {
    let ours: Vec<&str> = losses.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(ours, names);
    let report: Vec<(String, f64, f64)> = losses
        .iter()
        .map(|(name, ours)| {
            (
                name.clone(),
                ours.double_value(&[]),
                io[name].double_value(&[0]),
            )
        })
        .collect();
    eprintln!("losses (name, ours, reference): {report:?}");
    for (name, ours, theirs) in &report {
        assert!(
            ((ours - theirs) / theirs).abs() < rel,
            "{name}: ours {ours}, reference {theirs} (all terms: {report:?})"
        );
    }
}
