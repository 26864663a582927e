//! Which predictions of one image are true positives, false positives or ignored, and which
//! ground-truth boxes were missed, at one IoU threshold: the greedy matching of pycocotools'
//! `evaluateImg` (and so of FiftyOne's COCO-style `evaluate_detections`) for area range "all"
//! and no cap on detections. Pure: the predictions browser draws what it says, and
//! `scripts/match_parity.py` checks it against pycocotools itself.
//!
//! Rules, per image and category (classes never match each other):
//! - predictions are visited by descending score; ties keep their input order (numpy's
//!   stable mergesort);
//! - ground truth is ordered non-crowd first, each group in input order;
//! - a prediction takes the ground truth with the highest IoU ≥ the threshold (on equal IoU the
//!   later one in that order), skipping non-crowd ground truth already taken, and stops looking
//!   once it holds a non-crowd match and reaches the crowd regions;
//! - IoU with a crowd region is the intersection over the prediction's area, and a crowd region
//!   can absorb any number of predictions: those are ignored, neither true nor false;
//! - non-crowd ground truth left unmatched is a miss (false negative); crowd regions never are.
//!
//! pycocotools tests a match by the ground truth's annotation id, so an annotation with id 0
//! never counts as matched there; here matches are by position and that quirk does not exist
//! (the parity script gives ids from 1).

pub mod cli;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A ground-truth box, `[x, y, w, h]` in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Truth {
    pub category: i64,
    pub bbox: [f64; 4],
    #[serde(default)]
    pub crowd: bool,
}

/// A prediction, `[x, y, w, h]` in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Predicted {
    pub category: i64,
    pub bbox: [f64; 4],
    pub score: f64,
}

/// What a prediction turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum PredictionOutcome {
    /// Matched to the non-crowd ground truth at this index, with this IoU.
    TruePositive { truth: usize, iou: f64 },
    /// Matched to nothing.
    FalsePositive,
    /// Matched to the crowd region at this index: not counted either way.
    Ignored { truth: usize },
}

/// What a ground-truth box turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum TruthOutcome {
    /// Found by the prediction at this index.
    Matched { prediction: usize },
    /// Found by no prediction (a false negative).
    Missed,
    /// A crowd region: never a miss.
    Crowd,
}

impl PredictionOutcome {
    /// The short name the predictions browser and `aligndet-server match` write.
    pub fn name(&self) -> &'static str {
        match self {
            PredictionOutcome::TruePositive { .. } => "tp",
            PredictionOutcome::FalsePositive => "fp",
            PredictionOutcome::Ignored { .. } => "ignored",
        }
    }
}

impl TruthOutcome {
    /// The short name the predictions browser and `aligndet-server match` write.
    pub fn name(&self) -> &'static str {
        match self {
            TruthOutcome::Matched { .. } => "matched",
            TruthOutcome::Missed => "missed",
            TruthOutcome::Crowd => "crowd",
        }
    }
}

/// True positives, false positives and misses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub tp: usize,
    pub fp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
}

impl Counts {
    /// False positives and misses: what "sort by errors" sorts on.
    pub fn errors(&self) -> usize {
        self.fp + self.fn_
    }

    pub fn add(&mut self, other: Counts) {
        self.tp += other.tp;
        self.fp += other.fp;
        self.fn_ += other.fn_;
    }
}

/// One image's matching, index for index with its inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageMatch {
    pub predictions: Vec<PredictionOutcome>,
    pub truths: Vec<TruthOutcome>,
}

impl ImageMatch {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for p in &self.predictions {
            match p {
                PredictionOutcome::TruePositive { .. } => c.tp += 1,
                PredictionOutcome::FalsePositive => c.fp += 1,
                PredictionOutcome::Ignored { .. } => {}
            }
        }
        c.fn_ = self
            .truths
            .iter()
            .filter(|t| **t == TruthOutcome::Missed)
            .count();
        c
    }

    /// Counts per category id.
    pub fn counts_by_category(
        &self,
        truths: &[Truth],
        predictions: &[Predicted],
    ) -> BTreeMap<i64, Counts> {
        let mut out: BTreeMap<i64, Counts> = BTreeMap::new();
        for (p, o) in predictions.iter().zip(&self.predictions) {
            let c = out.entry(p.category).or_default();
            match o {
                PredictionOutcome::TruePositive { .. } => c.tp += 1,
                PredictionOutcome::FalsePositive => c.fp += 1,
                PredictionOutcome::Ignored { .. } => {}
            }
        }
        for (t, o) in truths.iter().zip(&self.truths) {
            let c = out.entry(t.category).or_default();
            if *o == TruthOutcome::Missed {
                c.fn_ += 1;
            }
        }
        out
    }
}

/// Intersection over union of `[x, y, w, h]` boxes as pycocotools' `bbIou` computes it: over
/// the prediction's own area when the ground truth is a crowd region; 0 without overlap. The
/// trainer's COCO evaluation uses the same function.
pub use aligndet_common::mask::box_iou as iou;

/// Matches one image's predictions to its ground truth at `threshold` (IoU, e.g. 0.5).
pub fn match_image(truths: &[Truth], predictions: &[Predicted], threshold: f64) -> ImageMatch {
    let mut out = ImageMatch {
        predictions: vec![PredictionOutcome::FalsePositive; predictions.len()],
        truths: truths
            .iter()
            .map(|t| {
                if t.crowd {
                    TruthOutcome::Crowd
                } else {
                    TruthOutcome::Missed
                }
            })
            .collect(),
    };
    let mut categories: Vec<i64> = predictions.iter().map(|p| p.category).collect();
    categories.sort_unstable();
    categories.dedup();
    for category in categories {
        match_category(truths, predictions, category, threshold, &mut out);
    }
    out
}

/// The matching of one category's cell (pycocotools' inner loop for one IoU threshold).
fn match_category(
    truths: &[Truth],
    predictions: &[Predicted],
    category: i64,
    threshold: f64,
    out: &mut ImageMatch,
) {
    let mut preds: Vec<usize> = (0..predictions.len())
        .filter(|&i| predictions[i].category == category)
        .collect();
    // Stable: equal scores keep their input order.
    preds.sort_by(|&a, &b| predictions[b].score.total_cmp(&predictions[a].score));
    let mut gts: Vec<usize> = (0..truths.len())
        .filter(|&g| truths[g].category == category)
        .collect();
    gts.sort_by_key(|&g| truths[g].crowd);
    let mut taken = vec![false; gts.len()];
    let limit = threshold.min(1.0 - 1e-10);
    for &p in &preds {
        let mut best = limit;
        let mut found: Option<(usize, f64)> = None;
        for (k, &g) in gts.iter().enumerate() {
            let crowd = truths[g].crowd;
            if taken[k] && !crowd {
                continue;
            }
            if let Some((m, _)) = found
                && !truths[gts[m]].crowd
                && crowd
            {
                break;
            }
            let v = iou(&predictions[p].bbox, &truths[g].bbox, crowd);
            if v < best {
                continue;
            }
            best = v;
            found = Some((k, v));
        }
        let Some((k, v)) = found else { continue };
        taken[k] = true;
        let g = gts[k];
        if truths[g].crowd {
            out.predictions[p] = PredictionOutcome::Ignored { truth: g };
        } else {
            out.predictions[p] = PredictionOutcome::TruePositive { truth: g, iou: v };
            out.truths[g] = TruthOutcome::Matched { prediction: p };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gt(category: i64, bbox: [f64; 4]) -> Truth {
        Truth {
            category,
            bbox,
            crowd: false,
        }
    }
    fn crowd(category: i64, bbox: [f64; 4]) -> Truth {
        Truth {
            category,
            bbox,
            crowd: true,
        }
    }
    fn counts(tp: usize, fp: usize, fn_: usize) -> Counts {
        Counts { tp, fp, fn_ }
    }
    fn dt(category: i64, bbox: [f64; 4], score: f64) -> Predicted {
        Predicted {
            category,
            bbox,
            score,
        }
    }

    #[test]
    fn iou_is_pycocotools_bbiou() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a, false), 1.0);
        assert_eq!(iou(&a, &[5.0, 0.0, 10.0, 10.0], false), 50.0 / 150.0);
        assert_eq!(iou(&a, &[10.0, 0.0, 10.0, 10.0], false), 0.0, "touching");
        // A crowd region: intersection over the prediction's area.
        assert_eq!(iou(&a, &[5.0, 0.0, 100.0, 100.0], true), 0.5);
        assert_eq!(iou(&[0.0, 0.0, 0.0, 0.0], &a, false), 0.0, "empty box");
    }

    #[test]
    fn the_higher_score_takes_the_box_and_the_other_is_a_false_positive() {
        let truths = [gt(1, [0.0, 0.0, 10.0, 10.0])];
        let preds = [
            dt(1, [0.0, 0.0, 10.0, 10.0], 0.4),
            dt(1, [1.0, 0.0, 10.0, 10.0], 0.9),
        ];
        let m = match_image(&truths, &preds, 0.5);
        assert_eq!(m.predictions[0], PredictionOutcome::FalsePositive);
        assert!(matches!(
            m.predictions[1],
            PredictionOutcome::TruePositive { truth: 0, .. }
        ));
        assert_eq!(m.truths[0], TruthOutcome::Matched { prediction: 1 });
        assert_eq!(m.counts(), counts(1, 1, 0));
    }

    #[test]
    fn classes_do_not_match_each_other_and_unfound_truth_is_a_miss() {
        let truths = [
            gt(1, [0.0, 0.0, 10.0, 10.0]),
            gt(2, [50.0, 50.0, 10.0, 10.0]),
        ];
        let preds = [dt(2, [0.0, 0.0, 10.0, 10.0], 0.9)];
        let m = match_image(&truths, &preds, 0.5);
        assert_eq!(m.counts(), counts(0, 1, 2));
        let by = m.counts_by_category(&truths, &preds);
        assert_eq!(by[&1], counts(0, 0, 1));
        assert_eq!(by[&2], counts(0, 1, 1));
    }

    #[test]
    fn the_threshold_is_inclusive_and_the_best_iou_wins() {
        // IoU exactly 0.5: half of the box.
        let truths = [gt(1, [0.0, 0.0, 10.0, 10.0])];
        let half = dt(1, [0.0, 0.0, 10.0, 5.0], 0.9);
        assert_eq!(iou(&half.bbox, &truths[0].bbox, false), 0.5);
        assert_eq!(match_image(&truths, &[half], 0.5).counts().tp, 1);
        assert_eq!(match_image(&truths, &[half], 0.51).counts().fp, 1);
        // Two truths: the prediction takes the one it overlaps most.
        let truths = [gt(1, [0.0, 0.0, 10.0, 10.0]), gt(1, [2.0, 0.0, 10.0, 10.0])];
        let m = match_image(&truths, &[dt(1, [2.0, 0.0, 10.0, 10.0], 0.5)], 0.5);
        assert!(matches!(
            m.predictions[0],
            PredictionOutcome::TruePositive { truth: 1, .. }
        ));
        assert_eq!(m.truths[0], TruthOutcome::Missed);
    }

    #[test]
    fn crowd_regions_absorb_predictions_and_are_never_missed() {
        let truths = [
            crowd(1, [0.0, 0.0, 100.0, 100.0]),
            gt(1, [200.0, 0.0, 10.0, 10.0]),
        ];
        let preds = [
            dt(1, [10.0, 10.0, 10.0, 10.0], 0.9),
            dt(1, [30.0, 30.0, 10.0, 10.0], 0.8),
        ];
        let m = match_image(&truths, &preds, 0.5);
        assert_eq!(m.predictions[0], PredictionOutcome::Ignored { truth: 0 });
        assert_eq!(m.predictions[1], PredictionOutcome::Ignored { truth: 0 });
        assert_eq!(m.truths[0], TruthOutcome::Crowd);
        assert_eq!(m.counts(), counts(0, 0, 1));
    }

    #[test]
    fn a_regular_match_is_preferred_to_a_crowd_region() {
        // The crowd comes first in the input but is visited after the regular box.
        let truths = [
            crowd(1, [0.0, 0.0, 10.0, 10.0]),
            gt(1, [0.0, 0.0, 10.0, 8.0]),
        ];
        let m = match_image(&truths, &[dt(1, [0.0, 0.0, 10.0, 10.0], 0.9)], 0.5);
        assert!(matches!(
            m.predictions[0],
            PredictionOutcome::TruePositive { truth: 1, .. }
        ));
        assert_eq!(m.truths[1], TruthOutcome::Matched { prediction: 0 });
    }

    #[test]
    fn equal_scores_keep_input_order_and_equal_ious_take_the_later_truth() {
        let truths = [gt(1, [0.0, 0.0, 10.0, 10.0])];
        let preds = [
            dt(1, [0.0, 0.0, 10.0, 10.0], 0.5),
            dt(1, [0.0, 0.0, 10.0, 10.0], 0.5),
        ];
        let m = match_image(&truths, &preds, 0.5);
        assert_eq!(m.truths[0], TruthOutcome::Matched { prediction: 0 });
        let truths = [gt(1, [0.0, 0.0, 10.0, 10.0]), gt(1, [0.0, 0.0, 10.0, 10.0])];
        let m = match_image(&truths, &preds[..1], 0.5);
        assert_eq!(m.truths[1], TruthOutcome::Matched { prediction: 0 });
    }

    #[test]
    fn nothing_to_match_is_all_misses_or_all_false_positives() {
        let truths = [gt(3, [0.0, 0.0, 5.0, 5.0])];
        assert_eq!(match_image(&truths, &[], 0.5).counts(), counts(0, 0, 1));
        let preds = [dt(3, [0.0, 0.0, 5.0, 5.0], 0.1)];
        assert_eq!(match_image(&[], &preds, 0.5).counts(), counts(0, 1, 0));
        assert_eq!(match_image(&[], &[], 0.5).counts(), Counts::default());
    }
}
