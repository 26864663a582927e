//! Per-image greedy matching (pycocotools' `evaluateImg`), for every area range and IoU
//! threshold of one (category, image) cell.
//!
//! Rules, in pycocotools' terms:
//! - detections are visited by descending score (stable: ties keep file order), at most
//!   `maxDets[-1]` of them;
//! - ground truth is ordered "not ignored" first (stable), where ignored means crowd or
//!   `area` outside the area range;
//! - a detection takes the ground truth with the highest IoU >= threshold (on equal IoU the
//!   later one in that order), skipping already-matched non-crowd ground truth, and stops
//!   looking once it holds a non-ignored match and reaches the ignored ones;
//! - a detection matched to ignored ground truth is ignored; an unmatched detection whose
//!   area (box `w * h`, or as [`IouMeasure::detection_area`] says) is outside the area
//!   range is ignored.
//!
//! pycocotools records a match as the ground truth's `id` and tests it for truthiness, so a
//! match with a ground-truth annotation whose id is 0 counts as unmatched; this is reproduced.

use std::cmp::Ordering;
use std::ops::Range;

use super::cells::Cells;
use super::iou::IouMeasure;
use super::load::{Detection, GroundTruth};
use super::params::EvalParams;

/// What one detection counts as at one IoU threshold and area range.
pub mod outcome {
    pub const FALSE_POSITIVE: u8 = 0;
    pub const TRUE_POSITIVE: u8 = 1;
    pub const IGNORED: u8 = 2;
}

/// Matching results of one category over a run of images.
///
/// Detections are stored image by image (in sorted image-id order) and, within an image, by
/// descending score: exactly the concatenation order pycocotools' `accumulate` sorts.
#[derive(Clone, Debug, Default)]
pub struct CategoryMatches {
    /// Per area range: number of ground truth that is not ignored (pycocotools' `npig`).
    pub non_ignored_gt: Vec<usize>,
    pub scores: Vec<f64>,
    /// Position of each detection within its image's score order (0 = best).
    pub ranks: Vec<u32>,
    /// `outcomes[(det * num_areas + area) * num_thresholds + threshold]`, see [`outcome`].
    pub outcomes: Vec<u8>,
}

impl CategoryMatches {
    fn new(num_areas: usize) -> Self {
        Self {
            non_ignored_gt: vec![0; num_areas],
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Appends the results of the images that follow `self`'s.
    pub fn append(&mut self, mut later: CategoryMatches) {
        if self.scores.is_empty() && self.non_ignored_gt.iter().all(|&n| n == 0) {
            *self = later;
            return;
        }
        for (mine, theirs) in self.non_ignored_gt.iter_mut().zip(&later.non_ignored_gt) {
            *mine += theirs;
        }
        self.scores.append(&mut later.scores);
        self.ranks.append(&mut later.ranks);
        self.outcomes.append(&mut later.outcomes);
    }
}

/// Everything matching reads, shared by all worker threads.
pub struct MatchInput<'a, M: IouMeasure> {
    pub params: &'a EvalParams,
    pub cells: &'a Cells,
    pub ground_truth: &'a GroundTruth,
    pub detections: &'a [Detection],
    pub measure: &'a M,
}

/// Buffers reused across cells so the hot loop does not allocate.
#[derive(Default)]
struct Scratch {
    dets_by_score: Vec<u32>,
    ious: Vec<f64>,
    det_out_of_range: Vec<bool>,
    gt_ignored: Vec<bool>,
    gt_order: Vec<usize>,
    gt_taken: Vec<bool>,
}

impl<M: IouMeasure> MatchInput<'_, M> {
    /// Matches category `category` on the images `images` (indices into `cells.image_ids`).
    pub fn match_images(&self, category: usize, images: Range<usize>) -> CategoryMatches {
        let mut out = CategoryMatches::new(self.params.area_ranges.len());
        let mut scratch = Scratch::default();
        for image in images {
            self.match_cell(
                self.cells.ground_truth(category, image),
                self.cells.detections(category, image),
                &mut scratch,
                &mut out,
            );
        }
        out
    }

    fn match_cell(&self, gts: &[u32], dets: &[u32], s: &mut Scratch, out: &mut CategoryMatches) {
        if gts.is_empty() && dets.is_empty() {
            return;
        }
        let p = self.params;
        let detections = self.detections;

        // Stable sort by descending score = numpy's mergesort on -score.
        s.dets_by_score.clear();
        s.dets_by_score.extend_from_slice(dets);
        s.dets_by_score.sort_by(|&a, &b| {
            let (a, b) = (detections[a as usize].score, detections[b as usize].score);
            b.partial_cmp(&a).unwrap_or(Ordering::Equal)
        });
        s.dets_by_score.truncate(p.max_dets_per_image());
        let num_dets = s.dets_by_score.len();
        let num_gts = gts.len();
        if num_dets > 0 && num_gts > 0 {
            self.measure.iou_matrix(&s.dets_by_score, gts, &mut s.ious);
        }

        let first = out.scores.len();
        for (rank, &d) in s.dets_by_score.iter().enumerate() {
            out.scores.push(detections[d as usize].score);
            out.ranks.push(rank as u32);
        }
        let num_areas = p.area_ranges.len();
        let num_thresholds = p.iou_thresholds.len();
        out.outcomes.resize(
            out.scores.len() * num_areas * num_thresholds,
            outcome::FALSE_POSITIVE,
        );

        for (area_index, range) in p.area_ranges.iter().enumerate() {
            let annotation = |g: usize| &self.ground_truth.annotations[gts[g] as usize];
            s.gt_ignored.clear();
            s.gt_ignored.extend((0..num_gts).map(|g| {
                let a = annotation(g);
                a.iscrowd || range.excludes(a.area)
            }));
            // Not-ignored ground truth first, each group in file order.
            s.gt_order.clear();
            s.gt_order
                .extend((0..num_gts).filter(|&g| !s.gt_ignored[g]));
            out.non_ignored_gt[area_index] += s.gt_order.len();
            s.gt_order.extend((0..num_gts).filter(|&g| s.gt_ignored[g]));
            s.det_out_of_range.clear();
            s.det_out_of_range.extend(
                s.dets_by_score
                    .iter()
                    .map(|&d| range.excludes(self.measure.detection_area(d))),
            );

            for (t, &threshold) in p.iou_thresholds.iter().enumerate() {
                s.gt_taken.clear();
                s.gt_taken.resize(num_gts, false);
                for det in 0..num_dets {
                    let ious = &s.ious[det * num_gts..(det + 1) * num_gts];
                    let matched = best_match(
                        threshold,
                        ious,
                        &s.gt_order,
                        &s.gt_ignored,
                        &s.gt_taken,
                        |g| annotation(g).iscrowd,
                    );
                    let result = match matched {
                        Some(g) => {
                            s.gt_taken[g] = true;
                            // pycocotools stores the match as the gt id and tests it for truthiness.
                            let id_is_truthy = annotation(g).id != 0;
                            if s.gt_ignored[g] || (!id_is_truthy && s.det_out_of_range[det]) {
                                outcome::IGNORED
                            } else if id_is_truthy {
                                outcome::TRUE_POSITIVE
                            } else {
                                outcome::FALSE_POSITIVE
                            }
                        }
                        None if s.det_out_of_range[det] => outcome::IGNORED,
                        None => outcome::FALSE_POSITIVE,
                    };
                    out.outcomes[((first + det) * num_areas + area_index) * num_thresholds + t] =
                        result;
                }
            }
        }
    }
}

/// The ground truth (index into the cell's list) one detection matches at `threshold`, given
/// its IoUs with every ground truth of the cell, or `None`.
fn best_match(
    threshold: f64,
    ious: &[f64],
    gt_order: &[usize],
    gt_ignored: &[bool],
    gt_taken: &[bool],
    is_crowd: impl Fn(usize) -> bool,
) -> Option<usize> {
    let mut best_iou = threshold.min(1.0 - 1e-10);
    let mut best: Option<usize> = None;
    for &g in gt_order {
        if gt_taken[g] && !is_crowd(g) {
            continue;
        }
        // Holding a real match, stop at the first ignored ground truth.
        if best.is_some_and(|b| !gt_ignored[b]) && gt_ignored[g] {
            break;
        }
        if ious[g] < best_iou {
            continue;
        }
        best_iou = ious[g];
        best = Some(g);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::coco::iou::BoxIou;
    use crate::eval::coco::load::{Category, GtAnnotation};

    fn gt_box(id: i64, bbox: [f64; 4], iscrowd: bool) -> GtAnnotation {
        GtAnnotation {
            id,
            image_id: 1,
            category_id: 1,
            bbox,
            area: bbox[2] * bbox[3],
            iscrowd,
        }
    }

    fn det(bbox: [f64; 4], score: f64) -> Detection {
        Detection {
            image_id: 1,
            category_id: 1,
            bbox,
            score,
        }
    }

    /// Runs matching on a single image with one category; returns outcomes for area "all"
    /// as `[det][threshold]` in score order, and the non-ignored gt count.
    fn run(gts: Vec<GtAnnotation>, dets: Vec<Detection>) -> (Vec<Vec<u8>>, usize) {
        let gt = GroundTruth {
            images: vec![1],
            categories: vec![Category {
                id: 1,
                name: "thing".into(),
            }],
            annotations: gts,
        };
        let params = EvalParams::default();
        let cells = Cells::build(&gt, &dets).ok().unwrap();
        let measure = BoxIou {
            detections: &dets,
            ground_truth: &gt,
        };
        let input = MatchInput {
            params: &params,
            cells: &cells,
            ground_truth: &gt,
            detections: &dets,
            measure: &measure,
        };
        let m = input.match_images(0, 0..1);
        let (na, nt) = (params.area_ranges.len(), params.iou_thresholds.len());
        let rows = (0..m.len())
            .map(|d| m.outcomes[d * na * nt..d * na * nt + nt].to_vec())
            .collect();
        (rows, m.non_ignored_gt[0])
    }

    use outcome::{FALSE_POSITIVE as FP, IGNORED as IG, TRUE_POSITIVE as TP};

    #[test]
    fn higher_score_takes_the_ground_truth_first() {
        // Both detections overlap the single gt perfectly; the 0.9 one (listed second) wins.
        let (rows, npig) = run(
            vec![gt_box(1, [0.0, 0.0, 10.0, 10.0], false)],
            vec![
                det([0.0, 0.0, 10.0, 10.0], 0.5),
                det([0.0, 0.0, 10.0, 10.0], 0.9),
            ],
        );
        assert_eq!(npig, 1);
        assert_eq!(rows, vec![vec![TP; 10], vec![FP; 10]]);
    }

    #[test]
    fn match_depends_on_threshold() {
        // IoU = 8x10 / (100 + 100 - 80) = 2/3: a match at 0.50..0.65, not from 0.70 on.
        let (rows, _) = run(
            vec![gt_box(1, [0.0, 0.0, 10.0, 10.0], false)],
            vec![det([2.0, 0.0, 10.0, 10.0], 0.9)],
        );
        assert_eq!(rows[0], vec![TP, TP, TP, TP, FP, FP, FP, FP, FP, FP]);
    }

    #[test]
    fn crowd_region_absorbs_many_detections_and_they_are_ignored() {
        let (rows, npig) = run(
            vec![gt_box(1, [0.0, 0.0, 100.0, 100.0], true)],
            vec![
                det([0.0, 0.0, 10.0, 10.0], 0.9),
                det([50.0, 50.0, 10.0, 10.0], 0.8),
            ],
        );
        assert_eq!(npig, 0);
        assert_eq!(rows, vec![vec![IG; 10], vec![IG; 10]]);
    }

    #[test]
    fn regular_ground_truth_is_preferred_over_crowd() {
        // The crowd gt is listed first but ignored gt is visited last; once the detection
        // holds the regular gt it stops before reaching the crowd one.
        let (rows, npig) = run(
            vec![
                gt_box(1, [0.0, 0.0, 10.0, 10.0], true),
                gt_box(2, [0.0, 0.0, 10.0, 12.0], false),
            ],
            vec![det([0.0, 0.0, 10.0, 10.0], 0.9)],
        );
        assert_eq!(npig, 1);
        // IoU with the regular gt is 100/120 = 0.833: true positive up to 0.80, then the
        // detection falls through to the crowd region and is ignored.
        assert_eq!(rows[0], vec![TP, TP, TP, TP, TP, TP, TP, IG, IG, IG]);
    }

    #[test]
    fn equal_iou_goes_to_the_later_ground_truth() {
        let (rows, _) = run(
            vec![
                gt_box(1, [0.0, 0.0, 10.0, 10.0], false),
                gt_box(2, [0.0, 0.0, 10.0, 10.0], false),
            ],
            vec![
                det([0.0, 0.0, 10.0, 10.0], 0.9),
                det([0.0, 0.0, 10.0, 10.0], 0.8),
            ],
        );
        // Both match (the first takes gt 2, the second gt 1).
        assert_eq!(rows, vec![vec![TP; 10], vec![TP; 10]]);
    }

    #[test]
    fn ground_truth_id_zero_counts_as_unmatched() {
        let (rows, _) = run(
            vec![gt_box(0, [0.0, 0.0, 10.0, 10.0], false)],
            vec![det([0.0, 0.0, 10.0, 10.0], 0.9)],
        );
        assert_eq!(rows[0], vec![FP; 10]);
    }

    #[test]
    fn unmatched_detection_outside_area_range_is_ignored() {
        let gt = GroundTruth {
            images: vec![1],
            categories: vec![Category {
                id: 1,
                name: "thing".into(),
            }],
            annotations: vec![],
        };
        let dets = vec![det([0.0, 0.0, 100.0, 100.0], 0.9)];
        let params = EvalParams::default();
        let cells = Cells::build(&gt, &dets).ok().unwrap();
        let measure = BoxIou {
            detections: &dets,
            ground_truth: &gt,
        };
        let input = MatchInput {
            params: &params,
            cells: &cells,
            ground_truth: &gt,
            detections: &dets,
            measure: &measure,
        };
        let m = input.match_images(0, 0..1);
        let at = |area: usize| m.outcomes[area * 10];
        // all, small, medium, large: a 100x100 detection is large.
        assert_eq!([at(0), at(1), at(2), at(3)], [FP, IG, IG, FP]);
    }
}
