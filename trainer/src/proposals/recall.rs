//! Proposal quality: the fraction of ground-truth boxes covered by some proposal (best IoU at
//! or above a threshold) when only the first N proposals of each image are kept, overall and
//! per COCO size class of the ground-truth box.

use serde::{Deserialize, Serialize};

/// Proposal counts of the default curve; a final "all proposals" point is always added.
pub const DEFAULT_COUNTS: [usize; 8] = [10, 20, 50, 100, 200, 300, 500, 1000];

/// IoU of two `[x, y, w, h]` boxes (continuous coordinates).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let iy = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if ix <= 0.0 || iy <= 0.0 {
        return 0.0;
    }
    let inter = ix * iy;
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Ground truth and ranked proposals of one image, both `[x, y, w, h]`.
#[derive(Clone, Copy, Debug)]
pub struct ImageBoxes<'a> {
    pub gt: &'a [[f32; 4]],
    pub proposals: &'a [[f32; 4]],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecallPoint {
    /// Proposals kept per image; `None` = all.
    pub max_proposals: Option<usize>,
    /// Mean number of proposals actually available per image at this cut.
    pub mean_proposals: f64,
    pub recall_50: f64,
    pub recall_70: f64,
    /// Mean recall over IoU 0.50:0.05:0.95.
    pub average_recall: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecallCurve {
    pub num_gt: usize,
    pub points: Vec<RecallPoint>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecallReport {
    pub num_images: usize,
    pub overall: RecallCurve,
    /// GT area < 32².
    pub small: RecallCurve,
    /// 32² <= GT area < 96².
    pub medium: RecallCurve,
    /// GT area >= 96².
    pub large: RecallCurve,
}

impl RecallReport {
    /// The overall point for a given cut (`None` = all proposals).
    pub fn overall_at(&self, max_proposals: Option<usize>) -> Option<&RecallPoint> {
        self.overall
            .points
            .iter()
            .find(|p| p.max_proposals == max_proposals)
    }
}

const THRESHOLDS: [f32; 10] = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95];

#[derive(Clone, Copy, PartialEq, Eq)]
enum SizeClass {
    Small,
    Medium,
    Large,
}

fn size_class(b: &[f32; 4]) -> SizeClass {
    let area = b[2] * b[3];
    if area < 32.0 * 32.0 {
        SizeClass::Small
    } else if area < 96.0 * 96.0 {
        SizeClass::Medium
    } else {
        SizeClass::Large
    }
}

/// Recall curves for the first `counts[i]` proposals of every image, plus all proposals.
pub fn recall_curve(images: &[ImageBoxes<'_>], counts: &[usize]) -> RecallReport {
    let cuts: Vec<Option<usize>> = counts.iter().map(|&c| Some(c)).chain([None]).collect();
    // best[g][c] = best IoU of GT g among the proposals within cut c.
    let mut best: Vec<(SizeClass, Vec<f32>)> = Vec::new();
    let mut mean_proposals = vec![0.0f64; cuts.len()];
    for img in images {
        for (m, cut) in mean_proposals.iter_mut().zip(&cuts) {
            *m += cut.map_or(img.proposals.len(), |c| c.min(img.proposals.len())) as f64;
        }
        for g in img.gt {
            // Running maximum over the ranked list, read off at each cut.
            let mut running = 0.0f32;
            let mut prefix = Vec::with_capacity(img.proposals.len());
            for p in img.proposals {
                running = running.max(iou(g, p));
                prefix.push(running);
            }
            let at_cut = cuts
                .iter()
                .map(|cut| {
                    let n = cut.map_or(prefix.len(), |c| c.min(prefix.len()));
                    if n == 0 { 0.0 } else { prefix[n - 1] }
                })
                .collect();
            best.push((size_class(g), at_cut));
        }
    }
    let n_images = images.len().max(1) as f64;
    mean_proposals.iter_mut().for_each(|m| *m /= n_images);
    let curve = |class: Option<SizeClass>| {
        let selected: Vec<&Vec<f32>> = best
            .iter()
            .filter(|(c, _)| class.is_none_or(|want| *c == want))
            .map(|(_, v)| v)
            .collect();
        let recall_at = |c: usize, t: f32| {
            if selected.is_empty() {
                return 0.0;
            }
            selected.iter().filter(|v| v[c] >= t).count() as f64 / selected.len() as f64
        };
        RecallCurve {
            num_gt: selected.len(),
            points: cuts
                .iter()
                .enumerate()
                .map(|(c, &max_proposals)| RecallPoint {
                    max_proposals,
                    mean_proposals: mean_proposals[c],
                    recall_50: recall_at(c, 0.5),
                    recall_70: recall_at(c, 0.7),
                    average_recall: THRESHOLDS.iter().map(|&t| recall_at(c, t)).sum::<f64>()
                        / THRESHOLDS.len() as f64,
                })
                .collect(),
        }
    };
    RecallReport {
        num_images: images.len(),
        overall: curve(None),
        small: curve(Some(SizeClass::Small)),
        medium: curve(Some(SizeClass::Medium)),
        large: curve(Some(SizeClass::Large)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_basics() {
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[0.0, 0.0, 10.0, 10.0]), 1.0);
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[10.0, 0.0, 10.0, 10.0]), 0.0);
        assert!((iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 10.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn curve_by_count_and_size() {
        let gt = [
            [0.0, 0.0, 20.0, 20.0],
            [100.0, 100.0, 50.0, 50.0],
            [0.0, 200.0, 120.0, 100.0],
        ];
        let proposals = [
            [300.0, 300.0, 10.0, 10.0], // misses everything
            [100.0, 100.0, 50.0, 50.0], // exact medium
            [0.0, 0.0, 20.0, 16.0],     // IoU 0.8 with small
            [0.0, 200.0, 120.0, 60.0],  // IoU 0.6 with large
        ];
        let images = [ImageBoxes {
            gt: &gt,
            proposals: &proposals,
        }];
        let r = recall_curve(&images, &[1, 2, 3]);
        assert_eq!(r.overall.num_gt, 3);
        let at = |n| {
            r.overall_at(n)
                .map(|p| (p.recall_50, p.recall_70))
                .unwrap_or_default()
        };
        assert_eq!(at(Some(1)), (0.0, 0.0));
        assert_eq!(at(Some(2)), (1.0 / 3.0, 1.0 / 3.0));
        assert_eq!(at(Some(3)), (2.0 / 3.0, 2.0 / 3.0));
        assert_eq!(at(None), (1.0, 2.0 / 3.0));
        let all = r
            .overall_at(None)
            .map(|p| p.average_recall)
            .unwrap_or_default();
        // Exact: 10/10 thresholds; IoU 0.8: 7/10; IoU 0.6: 3/10.
        assert!((all - 20.0 / 30.0).abs() < 1e-9);
        assert_eq!((r.small.num_gt, r.medium.num_gt, r.large.num_gt), (1, 1, 1));
        assert_eq!(r.large.points.last().map(|p| p.recall_70), Some(0.0));
        assert_eq!(r.overall.points[0].mean_proposals, 1.0);
    }

    #[test]
    fn empty_inputs() {
        let r = recall_curve(&[], &DEFAULT_COUNTS);
        assert_eq!(r.overall.num_gt, 0);
        assert_eq!(r.overall.points.len(), DEFAULT_COUNTS.len() + 1);
    }
}
