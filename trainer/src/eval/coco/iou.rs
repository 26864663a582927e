//! Overlap between detections and ground truth.
//!
//! [`IouMeasure`] is the seam between IoU types: boxes here, masks in
//! [`super::mask::MaskSet`]; `EvalParams::iou_type` selects one.

use super::load::{Detection, GroundTruth};

pub trait IouMeasure: Sync {
    /// Fills `out` with the row-major `dets.len() x gts.len()` overlap matrix, where `dets`
    /// index the detection list and `gts` index `GroundTruth::annotations`.
    fn iou_matrix(&self, dets: &[u32], gts: &[u32], out: &mut Vec<f64>);

    /// The detection's area for area ranges: pycocotools' `loadRes` sets it per IoU type.
    fn detection_area(&self, det: u32) -> f64;
}

/// Box IoU, pycocotools' `maskUtils.iou` on `[x, y, w, h]` boxes.
pub struct BoxIou<'a> {
    pub detections: &'a [Detection],
    pub ground_truth: &'a GroundTruth,
}

impl IouMeasure for BoxIou<'_> {
    fn iou_matrix(&self, dets: &[u32], gts: &[u32], out: &mut Vec<f64>) {
        out.clear();
        for &d in dets {
            let det = &self.detections[d as usize].bbox;
            out.extend(gts.iter().map(|&g| {
                let gt = &self.ground_truth.annotations[g as usize];
                box_iou(det, &gt.bbox, gt.iscrowd)
            }));
        }
    }

    fn detection_area(&self, det: u32) -> f64 {
        self.detections[det as usize].area()
    }
}

pub use aligndet_common::mask::box_iou;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_is_row_major_dets_by_gts() {
        let gt = GroundTruth {
            annotations: [[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 10.0, 10.0]]
                .iter()
                .enumerate()
                .map(|(i, b)| super::super::load::GtAnnotation {
                    id: i as i64 + 1,
                    image_id: 1,
                    category_id: 1,
                    bbox: *b,
                    area: 100.0,
                    iscrowd: false,
                })
                .collect(),
            ..Default::default()
        };
        let dets = [Detection {
            image_id: 1,
            category_id: 1,
            bbox: [0.0, 0.0, 10.0, 10.0],
            score: 1.0,
        }];
        let mut out = Vec::new();
        BoxIou {
            detections: &dets,
            ground_truth: &gt,
        }
        .iou_matrix(&[0], &[1, 0], &mut out);
        assert_eq!(out.len(), 2);
        assert!((out[0] - 1.0 / 3.0).abs() < 1e-15);
        assert_eq!(out[1], 1.0);
    }
}
