//! Masks for segm evaluation (pycocotools' `COCOeval` with `iouType="segm"`).
//!
//! - [`rle`]: run-length encoding, area, box, merge, compressed strings and IoU, as
//!   pycocotools' `maskApi.c`;
//! - [`poly`]: polygon and box rasterization (`rleFrPoly`, `rleFrBbox`);
//! - [`load`]: segmentations of the ground truth and of a results file.

pub mod load;
pub mod poly;
pub mod rle;

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
