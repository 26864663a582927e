//! What the one-stage dense detectors (FCOS, RetinaNet) share at inference: their settings and
//! torchvision's `postprocess_detections`, which both run level by level over the anchors.

use super::box_ops::{batched_nms, clip_boxes};
use super::detector::Detections;
use super::transform::ImageBatch;
use tch::{Kind, Tensor};

/// Inference settings (torchvision's names; its defaults differ by detector).
#[derive(Debug, Clone)]
pub struct DenseInference {
    pub score_thresh: f64,
    pub nms_thresh: f64,
    pub detections_per_img: i64,
    pub topk_candidates: i64,
}

impl DenseInference {
    /// torchvision's FCOS defaults.
    pub fn fcos() -> DenseInference {
        DenseInference {
            score_thresh: 0.2,
            nms_thresh: 0.6,
            detections_per_img: 100,
            topk_candidates: 1000,
        }
    }

    /// torchvision's RetinaNet defaults.
    pub fn retinanet() -> DenseInference {
        DenseInference {
            score_thresh: 0.05,
            nms_thresh: 0.5,
            detections_per_img: 300,
            topk_candidates: 1000,
        }
    }

    /// One image's detections in resized-image pixels (`size`, what boxes are clipped to): per
    /// level, the class scores above the threshold, at most `topk_candidates` of them, their
    /// anchors' boxes decoded; then class-wise NMS over all levels, best `detections_per_img`.
    ///
    /// `level_scores(start, n)` gives the level's anchors `start..start + n` as `[n, K]` class
    /// scores; `decode(start, n, anchor_idx)` the boxes of the chosen anchors of that level.
    pub fn select(
        &self,
        level_sizes: &[i64],
        size: (i64, i64),
        level_scores: impl Fn(i64, i64) -> Tensor,
        decode: impl Fn(i64, i64, &Tensor) -> Tensor,
    ) -> Detections {
        let (mut boxes, mut scores, mut labels) = (vec![], vec![], vec![]);
        let mut start = 0;
        for &n in level_sizes {
            let level = level_scores(start, n);
            let num_classes = level.size()[1];
            let s = level.flatten(0, -1);
            let keep = s.gt(self.score_thresh).nonzero().squeeze_dim(1);
            let s = s.index_select(0, &keep);
            let k = keep.size()[0].min(self.topk_candidates);
            let (s, idx) = s.topk(k, 0, true, true);
            let flat = keep.index_select(0, &idx);
            let anchor_idx = flat.divide_scalar_mode(num_classes, "floor");
            boxes.push(clip_boxes(&decode(start, n, &anchor_idx), size));
            scores.push(s);
            labels.push(flat.remainder(num_classes));
            start += n;
        }
        let (boxes, scores, labels) = (
            Tensor::cat(&boxes, 0),
            Tensor::cat(&scores, 0),
            Tensor::cat(&labels, 0),
        );
        let keep = batched_nms(&boxes, &scores, &labels, self.nms_thresh);
        let keep = keep.narrow(0, 0, keep.size()[0].min(self.detections_per_img));
        Detections {
            boxes: boxes.index_select(0, &keep),
            scores: scores.index_select(0, &keep),
            labels: labels.index_select(0, &keep).to_kind(Kind::Int64),
            masks: None,
        }
    }
}

/// Every image of `batch` through `detect(image index, resized size)`, mapped back to original
/// pixels.
pub fn detect_each(
    batch: &ImageBatch,
    detect: impl Fn(i64, (i64, i64)) -> Detections,
) -> Vec<Detections> {
    (0..batch.image_sizes.len())
        .map(|i| batch.to_original(i, detect(i as i64, batch.image_sizes[i])))
        .collect()
}
