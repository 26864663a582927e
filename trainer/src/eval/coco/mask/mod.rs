//! Masks for segm evaluation (pycocotools' `COCOeval` with `iouType="segm"`).
//!
//! - [`rle`] and [`poly`]: RLE and polygon code, in `aligndet_common::mask` (the server draws
//!   the same masks);
//! - [`load`]: segmentations of the ground truth and of a results file.

pub mod load;
pub use aligndet_common::mask::{poly, rle};

use rayon::prelude::*;

use super::iou::IouMeasure;
use rle::Rle;

/// The masks of one evaluation, aligned with `GroundTruth::annotations` and the detection
/// list, plus each mask's box (computed once; the IoU tests boxes before counting pixels).
pub struct MaskSet {
    gt: Vec<Rle>,
    gt_boxes: Vec<[f64; 4]>,
    dt: Vec<Rle>,
    dt_boxes: Vec<[f64; 4]>,
    /// The area pycocotools' `loadRes` gives each detection (used for area ranges).
    dt_areas: Vec<f64>,
    gt_crowd: Vec<bool>,
}

impl MaskSet {
    /// `gt_crowd[i]` is annotation `i`'s `iscrowd`; `dt_areas` come from
    /// [`load::SegmResults`].
    pub fn new(gt: Vec<Rle>, gt_crowd: Vec<bool>, dt: Vec<Rle>, dt_areas: Vec<f64>) -> MaskSet {
        let boxes = |masks: &[Rle]| masks.par_iter().map(Rle::to_bbox).collect::<Vec<_>>();
        MaskSet {
            gt_boxes: boxes(&gt),
            dt_boxes: boxes(&dt),
            gt,
            dt,
            dt_areas,
            gt_crowd,
        }
    }

    pub fn num_ground_truth(&self) -> usize {
        self.gt.len()
    }

    pub fn num_detections(&self) -> usize {
        self.dt.len()
    }
}

/// Mask IoU, pycocotools' `maskUtils.iou` on RLEs.
impl IouMeasure for MaskSet {
    fn iou_matrix(&self, dets: &[u32], gts: &[u32], out: &mut Vec<f64>) {
        out.clear();
        for &d in dets {
            let d = d as usize;
            out.extend(gts.iter().map(|&g| {
                let g = g as usize;
                Rle::iou(
                    &self.dt[d],
                    &self.gt[g],
                    &self.dt_boxes[d],
                    &self.gt_boxes[g],
                    self.gt_crowd[g],
                )
            }));
        }
    }

    fn detection_area(&self, det: u32) -> f64 {
        self.dt_areas[det as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::coco::load::{Category, Detection, GroundTruth, GtAnnotation};
    use crate::eval::coco::{EvalParams, evaluate, evaluate_segm};

    fn mask(digits: &str) -> Rle {
        let pixels: Vec<bool> = digits.bytes().map(|b| b == b'1').collect();
        Rle::encode(&pixels, 4, 5)
    }

    #[test]
    fn mask_iou_decides_matches() {
        // GT: 12 pixels (columns 2-4). The detection covers 8 of them plus 2 in column 0:
        // IoU 8/14, while its box (the whole image) would give 12/20.
        let gt_mask = mask("00000000111111111111");
        let dt_mask = mask("00110000110011111100");
        let gt = GroundTruth {
            images: vec![1],
            categories: vec![Category {
                id: 1,
                name: "a".into(),
            }],
            annotations: vec![GtAnnotation {
                id: 1,
                image_id: 1,
                category_id: 1,
                bbox: gt_mask.to_bbox(),
                area: 12.0,
                iscrowd: false,
            }],
        };
        let dets = [Detection {
            image_id: 1,
            category_id: 1,
            bbox: dt_mask.to_bbox(),
            score: 0.9,
        }];
        assert_eq!(
            Rle::iou(
                &dt_mask,
                &gt_mask,
                &dt_mask.to_bbox(),
                &gt_mask.to_bbox(),
                false
            ),
            8.0 / 14.0
        );
        let masks = MaskSet::new(vec![gt_mask], vec![false], vec![dt_mask], vec![10.0]);
        let result = evaluate_segm(&gt, &dets, &masks, &EvalParams::segm()).unwrap();
        // Matched at IoU .50 and .55 only (2 of 10 thresholds).
        // (Means over the 101 recall points are summed pairwise, as numpy does.)
        assert!((result.stats[1] - 1.0).abs() < 1e-12);
        assert_eq!(result.stats[2], 0.0);
        assert!((result.stats[0] - 0.2).abs() < 1e-12);

        // Each entry point insists on its own IoU type.
        assert!(evaluate(&gt, &dets, &EvalParams::segm()).is_err());
        assert!(evaluate_segm(&gt, &dets, &masks, &EvalParams::default()).is_err());
    }
}
