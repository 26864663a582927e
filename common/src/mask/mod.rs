//! COCO masks, torch-free so the trainer's segm evaluation and the server's pages share one
//! decoder:
//!
//! - [`rle`]: run-length encoding, area, box, merge, compressed strings and IoU, as
//!   pycocotools' `maskApi.c`;
//! - [`poly`]: polygon and box rasterization (`rleFrPoly`, `rleFrBbox`);
//! - [`segmentation`]: a COCO `segmentation` value (polygons or RLE) as an [`rle::Rle`];
//! - [`box_iou`]: pycocotools' box IoU, which the mask IoU tests first (and the trainer's box
//!   evaluation and the server's predictions browser use).

pub mod poly;
pub mod rle;
pub mod segmentation;

/// IoU of two `[x, y, w, h]` boxes with the operation order of pycocotools' `bbIou` (C), so
/// results are bit-identical. For a crowd ground truth the union is the detection's area:
/// the score is the fraction of the detection inside the crowd region.
pub fn box_iou(det: &[f64; 4], gt: &[f64; 4], gt_is_crowd: bool) -> f64 {
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
}
