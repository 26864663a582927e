//! Precision/recall tables (pycocotools' `accumulate`).
//!
//! For each category, area range and max-detections cap, all images' detections (each
//! image's best `maxDet`) are merged by descending score (stable: ties keep image order,
//! then rank), cumulative true/false positives give recall and precision after each
//! detection, precision is made monotone from the right, and it is sampled at the recall
//! points (first detection whose recall >= the point; 0 past the highest recall reached).
//! Ignored detections stay in the sequence without counting, as in pycocotools.

use std::cmp::Ordering;

use rayon::prelude::*;

use super::matching::{CategoryMatches, outcome};
use super::params::EvalParams;

/// pycocotools' `np.spacing(1)`, keeping precision finite when nothing is counted yet.
const PRECISION_EPS: f64 = f64::EPSILON;

/// pycocotools' `eval['precision']` and `eval['recall']`: -1 marks a (category, area)
/// without non-ignored ground truth.
#[derive(Clone, Debug)]
pub struct Accumulated {
    pub num_thresholds: usize,
    pub num_recall_points: usize,
    pub num_categories: usize,
    pub num_areas: usize,
    pub num_max_dets: usize,
    /// Shape `[T][R][K][A][M]`, row-major like the numpy array.
    precision: Vec<f64>,
    /// Shape `[T][K][A][M]`.
    recall: Vec<f64>,
}

impl Accumulated {
    pub fn precision(&self, t: usize, r: usize, k: usize, a: usize, m: usize) -> f64 {
        let i = (((t * self.num_recall_points + r) * self.num_categories + k) * self.num_areas + a)
            * self.num_max_dets
            + m;
        self.precision[i]
    }

    pub fn recall(&self, t: usize, k: usize, a: usize, m: usize) -> f64 {
        self.recall[((t * self.num_categories + k) * self.num_areas + a) * self.num_max_dets + m]
    }
}

/// One category's slice of the tables: precision `[T][R][A][M]`, recall `[T][A][M]`.
struct CategoryCurves {
    precision: Vec<f64>,
    recall: Vec<f64>,
}

pub fn accumulate(per_category: &[CategoryMatches], params: &EvalParams) -> Accumulated {
    let (t_n, r_n, a_n, m_n) = (
        params.iou_thresholds.len(),
        params.recall_thresholds.len(),
        params.area_ranges.len(),
        params.max_dets.len(),
    );
    let k_n = per_category.len();
    let curves: Vec<CategoryCurves> = per_category
        .par_iter()
        .map(|matches| accumulate_category(matches, params))
        .collect();

    let mut precision = vec![-1.0; t_n * r_n * k_n * a_n * m_n];
    let mut recall = vec![-1.0; t_n * k_n * a_n * m_n];
    for (k, c) in curves.iter().enumerate() {
        for t in 0..t_n {
            for a in 0..a_n {
                for m in 0..m_n {
                    recall[((t * k_n + k) * a_n + a) * m_n + m] = c.recall[(t * a_n + a) * m_n + m];
                    for r in 0..r_n {
                        precision[(((t * r_n + r) * k_n + k) * a_n + a) * m_n + m] =
                            c.precision[((t * r_n + r) * a_n + a) * m_n + m];
                    }
                }
            }
        }
    }
    Accumulated {
        num_thresholds: t_n,
        num_recall_points: r_n,
        num_categories: k_n,
        num_areas: a_n,
        num_max_dets: m_n,
        precision,
        recall,
    }
}

fn accumulate_category(matches: &CategoryMatches, params: &EvalParams) -> CategoryCurves {
    let (t_n, r_n, a_n, m_n) = (
        params.iou_thresholds.len(),
        params.recall_thresholds.len(),
        params.area_ranges.len(),
        params.max_dets.len(),
    );
    let mut curves = CategoryCurves {
        precision: vec![-1.0; t_n * r_n * a_n * m_n],
        recall: vec![-1.0; t_n * a_n * m_n],
    };
    if matches.non_ignored_gt.iter().all(|&n| n == 0) {
        return curves;
    }

    // Sorting once suffices: the stable order restricted to rank < maxDet equals the stable
    // sort of that subset (its concatenation order is a subsequence of the full one).
    let mut by_score: Vec<u32> = (0..matches.len() as u32).collect();
    by_score.sort_by(|&a, &b| {
        matches.scores[b as usize]
            .partial_cmp(&matches.scores[a as usize])
            .unwrap_or(Ordering::Equal)
    });

    // Outcomes regrouped as [area][threshold][score order], so that every pass below reads
    // memory sequentially.
    let n = by_score.len();
    let per_det = a_n * t_n;
    let mut sorted_outcomes = vec![0u8; per_det * n];
    for (pos, &d) in by_score.iter().enumerate() {
        let det_outcomes = &matches.outcomes[d as usize * per_det..(d as usize + 1) * per_det];
        for (at, &o) in det_outcomes.iter().enumerate() {
            sorted_outcomes[at * n + pos] = o;
        }
    }

    let mut kept: Vec<u32> = Vec::with_capacity(n); // positions in score order with rank < maxDet
    let mut tp_precision: Vec<f64> = Vec::new();
    let mut sampled = vec![0.0; r_n];
    for (m, &max_det) in params.max_dets.iter().enumerate() {
        kept.clear();
        kept.extend(
            (0..n as u32)
                .filter(|&pos| (matches.ranks[by_score[pos as usize] as usize] as usize) < max_det),
        );
        for (a, &npig) in matches.non_ignored_gt.iter().enumerate() {
            if npig == 0 {
                continue;
            }
            for t in 0..t_n {
                let row = &sorted_outcomes[(a * t_n + t) * n..(a * t_n + t + 1) * n];
                let outcomes = kept.iter().map(|&pos| row[pos as usize]);
                let recall = sample_precision(
                    outcomes,
                    npig,
                    &params.recall_thresholds,
                    &mut tp_precision,
                    &mut sampled,
                );
                curves.recall[(t * a_n + a) * m_n + m] = recall;
                for (r, &p) in sampled.iter().enumerate() {
                    curves.precision[((t * r_n + r) * a_n + a) * m_n + m] = p;
                }
            }
        }
    }
    curves
}

/// Interpolated precision at each recall point (into `sampled`) and final recall of one
/// ranked sequence of detection outcomes, with `npig` non-ignored ground truth.
///
/// Equal, bit for bit, to pycocotools' per-detection recall/precision arrays, envelope and
/// `searchsorted` (see [`reference_curve`] in the tests), but divides only at true
/// positives: precision rises only at a true positive, and a recall point is first reached
/// at one (or at the first detection, for recall 0), so the envelope over true positives
/// plus the first detection's precision determine every sampled value.
fn sample_precision(
    outcomes: impl Iterator<Item = u8>,
    npig: usize,
    points: &[f64],
    tp_precision: &mut Vec<f64>,
    sampled: &mut [f64],
) -> f64 {
    let npig = npig as f64;
    let precision = |tp: u64, fp: u64| tp as f64 / (fp as f64 + tp as f64 + PRECISION_EPS);
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut first: Option<(f64, f64)> = None; // (recall, precision) after the first detection
    tp_precision.clear(); // precision right after each true positive, in rank order
    for o in outcomes {
        match o {
            outcome::TRUE_POSITIVE => {
                tp += 1;
                tp_precision.push(precision(tp, fp));
            }
            outcome::FALSE_POSITIVE => fp += 1,
            _ => {}
        }
        if first.is_none() {
            first = Some((tp as f64 / npig, precision(tp, fp)));
        }
    }
    sampled.fill(0.0);
    let Some((first_recall, first_precision)) = first else {
        return 0.0; // no detections: recall 0, precision 0 everywhere
    };
    make_monotone_from_right(tp_precision);
    // Envelope at the first detection: its own precision or a later true positive's.
    let first_envelope = match tp_precision.first() {
        Some(&p) if p > first_precision => p,
        _ => first_precision,
    };
    let mut k = 0; // candidate true positive; the k-th one brings recall to (k + 1) / npig
    for (slot, &point) in sampled.iter_mut().zip(points) {
        if first_recall >= point {
            *slot = first_envelope;
            continue;
        }
        while k < tp_precision.len() && ((k + 1) as f64 / npig) < point {
            k += 1;
        }
        match tp_precision.get(k) {
            Some(&p) => *slot = p,
            None => break, // recall never reaches this point (nor the later ones)
        }
    }
    tp as f64 / npig
}

/// `pr[i-1] = max(pr[i-1], pr[i])` from the end: the interpolated precision envelope.
fn make_monotone_from_right(precision: &mut [f64]) {
    for i in (1..precision.len()).rev() {
        if precision[i] > precision[i - 1] {
            precision[i - 1] = precision[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::coco::params::coco_recall_thresholds;
    use outcome::{FALSE_POSITIVE as FP, IGNORED as IG, TRUE_POSITIVE as TP};

    /// pycocotools' algorithm written out literally: recall and precision after every
    /// detection, envelope, then `searchsorted(side="left")` per recall point.
    fn reference_curve(outcomes: &[u8], npig: usize, points: &[f64]) -> (f64, Vec<f64>) {
        let (mut tp, mut fp) = (0.0, 0.0);
        let (mut rc, mut pr) = (Vec::new(), Vec::new());
        for &o in outcomes {
            tp += f64::from(o == TP);
            fp += f64::from(o == FP);
            rc.push(tp / npig as f64);
            pr.push(tp / (fp + tp + PRECISION_EPS));
        }
        make_monotone_from_right(&mut pr);
        let mut q = vec![0.0; points.len()];
        for (slot, &point) in q.iter_mut().zip(points) {
            match rc.iter().position(|&r| r >= point) {
                Some(i) => *slot = pr[i],
                None => break,
            }
        }
        (rc.last().copied().unwrap_or(0.0), q)
    }

    fn fast_curve(outcomes: &[u8], npig: usize, points: &[f64]) -> (f64, Vec<f64>) {
        let mut sampled = vec![0.0; points.len()];
        let recall = sample_precision(
            outcomes.iter().copied(),
            npig,
            points,
            &mut Vec::new(),
            &mut sampled,
        );
        (recall, sampled)
    }

    #[test]
    fn envelope_takes_the_max_to_the_right() {
        let mut p = vec![1.0, 0.5, 0.6667, 0.5, 0.6];
        make_monotone_from_right(&mut p);
        assert_eq!(p, vec![1.0, 0.6667, 0.6667, 0.6, 0.6]);
    }

    #[test]
    fn interpolated_ap_of_a_hand_made_ranking() {
        // 2 ground truths; ranking TP, FP, TP: recall [0.5, 0.5, 1.0], precision
        // ~[1, 0.5, 2/3], envelope [1, 2/3, 2/3]. Recall points 0..=0.5 (51 of them) take
        // ~1, points 0.51..=1.0 (50) take ~2/3.
        let (recall, sampled) = fast_curve(&[TP, FP, TP], 2, &coco_recall_thresholds());
        assert_eq!(recall, 1.0);
        assert_eq!(sampled[50], 1.0 / (1.0 + f64::EPSILON));
        assert_eq!(sampled[51], 2.0 / (3.0 + f64::EPSILON));
        let ap = sampled.iter().sum::<f64>() / 101.0;
        assert!((ap - (51.0 + 50.0 * 2.0 / 3.0) / 101.0).abs() < 1e-12);
    }

    #[test]
    fn recall_points_beyond_reach_get_zero() {
        let (recall, sampled) = fast_curve(&[TP, FP], 4, &[0.0, 0.25, 0.26, 1.0]);
        assert_eq!(recall, 0.25);
        assert_eq!(
            sampled,
            vec![1.0 / (1.0 + f64::EPSILON); 2]
                .into_iter()
                .chain([0.0, 0.0])
                .collect::<Vec<_>>()
        );
        assert_eq!(fast_curve(&[], 3, &[0.0, 0.5]), (0.0, vec![0.0, 0.0]));
    }

    #[test]
    fn fast_curve_equals_the_literal_algorithm() {
        // Deterministic xorshift so the test needs no extra crate.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let points = coco_recall_thresholds();
        for _ in 0..2000 {
            let len = (next() % 40) as usize;
            let outcomes: Vec<u8> = (0..len)
                .map(|_| [TP, FP, FP, IG][(next() % 4) as usize])
                .collect();
            let true_positives = outcomes.iter().filter(|&&o| o == TP).count();
            let npig = true_positives + (next() % 5) as usize;
            if npig == 0 {
                continue;
            }
            assert_eq!(
                fast_curve(&outcomes, npig, &points),
                reference_curve(&outcomes, npig, &points),
                "{outcomes:?}"
            );
        }
    }

    #[test]
    fn accumulate_merges_images_by_score_and_caps_per_image() {
        // One area range, one threshold. Image A: TP (0.9), FP (0.3); image B: TP (0.5).
        // Merged: TP .9, TP .5, FP .3; with maxDet 1 the FP (rank 1) is dropped.
        let params = EvalParams {
            iou_thresholds: vec![0.5],
            area_ranges: vec![EvalParams::default().area_ranges[0].clone()],
            max_dets: vec![1, 2],
            ..EvalParams::default()
        };
        let matches = CategoryMatches {
            non_ignored_gt: vec![3],
            scores: vec![0.9, 0.3, 0.5],
            ranks: vec![0, 1, 0],
            outcomes: vec![TP, FP, TP],
        };
        let acc = accumulate(&[matches], &params);
        // 2 of 3 gt found with perfect precision: recall points <= 2/3 take ~1, the rest 0.
        assert_eq!(acc.recall(0, 0, 0, 0), 2.0 / 3.0);
        assert_eq!(acc.recall(0, 0, 0, 1), 2.0 / 3.0);
        assert!((acc.precision(0, 66, 0, 0, 1) - 1.0).abs() < 1e-12);
        assert_eq!(acc.precision(0, 67, 0, 0, 1), 0.0);
    }
}
