//! Overlap between detections and ground truth.
//!
//! [`IouMeasure`] is the seam between IoU types: boxes here, masks in
//! [`super::mask::MaskSet`]; `EvalParams::iou_type` selects one.

use super::load::{BBox, Detection, GroundTruth};

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

/// IoU of two `[x, y, w, h]` boxes with the operation order of pycocotools' `bbIou` (C), so
/// results are bit-identical. For a crowd ground truth the union is the detection's area:
/// the score is the fraction of the detection inside the crowd region.
pub fn box_iou(det: &BBox, gt: &BBox, gt_is_crowd: bool) -> f64 {
    let w = (det[2] + det[0]).min(gt[2] + gt[0]) - det[0].max(gt[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (det[3] + det[1]).min(gt[3] + gt[1]) - det[1].max(gt[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let intersection = w * h;
    let det_area = det[2] * det[3];
    let union = if gt_is_crowd {
        det_area
    } else {
        det_area + gt[2] * gt[3] - intersection
    };
    intersection / union
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_boxes_have_iou_one() {
        assert_eq!(
            box_iou(&[3.0, 4.0, 10.0, 20.0], &[3.0, 4.0, 10.0, 20.0], false),
            1.0
        );
    }

    #[test]
    fn half_shifted_box() {
        // Intersection 5x10 = 50, union 100 + 100 - 50 = 150.
        let iou = box_iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 10.0, 10.0], false);
        assert!((iou - 1.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn touching_or_disjoint_boxes_have_iou_zero() {
        assert_eq!(
            box_iou(&[0.0, 0.0, 10.0, 10.0], &[10.0, 0.0, 5.0, 5.0], false),
            0.0
        );
        assert_eq!(
            box_iou(&[0.0, 0.0, 10.0, 10.0], &[0.0, 20.0, 5.0, 5.0], false),
            0.0
        );
    }

    #[test]
    fn crowd_iou_is_intersection_over_detection_area() {
        let crowd = [0.0, 0.0, 100.0, 100.0];
        // Detection fully inside the crowd region: 1 even though the region is much larger.
        assert_eq!(box_iou(&[10.0, 10.0, 10.0, 10.0], &crowd, true), 1.0);
        assert_eq!(box_iou(&[10.0, 10.0, 10.0, 10.0], &crowd, false), 0.01);
        // A quarter of the detection (10x10 of 20x20) lies inside.
        assert_eq!(box_iou(&[90.0, 90.0, 20.0, 20.0], &crowd, true), 0.25);
    }

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
