//! Comparing detections and training losses with a reference's (the detectors' parity tests).

use aligndet_trainer::models::detector::Detections;
use aligndet_trainer::models::faster_rcnn::FasterRcnn;
use aligndet_trainer::models::sampler::DrawFn;
use std::collections::HashMap;
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

/// Our detections of each image against the reference's `boxes{i}`, `scores{i}`, `labels{i}`:
/// as many, each reference detection paired with one of ours (see [`pair_detections`]), and the
/// ranked scores within 1e-3. The reference must have more than `min_reference` detections an
/// image, so that the comparison says something. Returns, per image, the index of ours that each
/// reference detection paired with.
pub fn assert_detections_match(
    dets: &[Detections],
    io: &HashMap<String, Tensor>,
    min_reference: i64,
) -> Vec<Vec<usize>> {
    dets.iter()
        .enumerate()
        .map(|(i, d)| {
            let (tb, ts, tl) = (
                &io[&format!("boxes{i}")],
                &io[&format!("scores{i}")],
                &io[&format!("labels{i}")],
            );
            let n = ts.size()[0];
            assert!(
                n > min_reference,
                "image {i}: the reference has {n} detections"
            );
            assert_eq!(
                d.scores.size(),
                ts.size(),
                "image {i}: number of detections"
            );
            let pairs = pair_detections((&d.boxes, &d.scores, &d.labels), (tb, ts, tl));
            let rl: Vec<i64> = Vec::try_from(tl).unwrap();
            let rs: Vec<f32> = Vec::try_from(ts).unwrap();
            let unmatched: Vec<(usize, i64, f32)> = (0..pairs.len())
                .filter(|&r| pairs[r].is_none())
                .map(|r| (r, rl[r], rs[r]))
                .collect();
            assert!(
                unmatched.is_empty(),
                "image {i}: reference detections without a match (index, label, score): \
                 {unmatched:?}"
            );
            let score_diff = (&d.scores - ts).abs().max().double_value(&[]);
            eprintln!("image {i}: {n} detections, ranked scores differ by ≤ {score_diff:.2e}");
            assert!(
                score_diff < 1e-3,
                "image {i}: ranked scores differ by {score_diff}"
            );
            pairs.into_iter().flatten().collect()
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

/// Samples as the references do: both samplers take [`even_draw`], and the box branch takes up to
/// `box_samples` proposals an image (the references ask for every one, so that the losses do not
/// depend on how proposals of tied objectness are ranked).
pub fn sample_as_the_references(model: &mut FasterRcnn, box_samples: i64) {
    model.rpn.sampler = model.rpn.sampler.clone().with_draw(even_draw());
    model.roi_heads.sampler = model.roi_heads.sampler.clone().with_draw(even_draw());
    model.roi_heads.sampler.batch_size_per_image = box_samples;
}

/// Our training losses against the reference's (`io[{prefix}{name}]`, a one-element tensor): the
/// terms `names` in that order, each differentiable and within `rel` relative.
pub fn assert_losses_match(
    losses: &[(String, Tensor)],
    io: &HashMap<String, Tensor>,
    prefix: &str,
    names: &[&str],
    rel: f64,
) {
    let ours: Vec<&str> = losses.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(ours, names);
    for (name, loss) in losses {
        assert!(loss.requires_grad(), "{name} must be differentiable");
    }
    let report: Vec<(String, f64, f64)> = losses
        .iter()
        .map(|(name, ours)| {
            (
                name.clone(),
                ours.double_value(&[]),
                io[&format!("{prefix}{name}")].double_value(&[0]),
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
