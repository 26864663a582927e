//! FCOS training targets and losses, as torchvision computes them: centre sampling (radius 1.5
//! strides), a scale range per level, the smallest box wins ties; focal loss over all locations,
//! GIoU loss and centerness BCE over the foreground, each divided by the foreground count.

use super::box_coder::BoxLinearCoder;
use super::detector::{Losses, Targets};
use super::losses::{generalized_box_iou_loss, sigmoid_focal_loss};
use tch::{Kind, Reduction, Tensor};

/// Raw head outputs over all levels: `[N, ΣHW, C]`, `[N, ΣHW, 4]`, `[N, ΣHW, 1]`, and the
/// number of locations per level.
pub struct FcosOutputs {
    pub cls_logits: Tensor,
    pub bbox_regression: Tensor,
    pub bbox_ctrness: Tensor,
    pub level_sizes: Vec<i64>,
}

const CENTER_SAMPLING_RADIUS: f64 = 1.5;

/// For every anchor (location) the index of the ground-truth box it learns from, or −1.
/// `anchors` `[A, 4]`; `level_sizes` are the locations per level (for the scale ranges).
pub fn match_locations(anchors: &Tensor, gt_boxes: &Tensor, level_sizes: &[i64]) -> Tensor {
    match_locations_with(anchors, gt_boxes, level_sizes, Some(CENTER_SAMPLING_RADIUS))
}

/// [`match_locations`] with centre sampling at `center_radius` strides, or without it (every
/// location inside a box is a candidate, as mmdet's FCOS with `center_sampling = False` that
/// AlignDet's pre-training uses).
pub fn match_locations_with(
    anchors: &Tensor,
    gt_boxes: &Tensor,
    level_sizes: &[i64],
    center_radius: Option<f64>,
) -> Tensor {
    let n = anchors.size()[0];
    let device = anchors.device();
    if gt_boxes.numel() == 0 {
        return Tensor::full([n], -1, (Kind::Int64, device));
    }
    let gt_centers = (gt_boxes.narrow(1, 0, 2) + gt_boxes.narrow(1, 2, 2)) / 2.0;
    let centers = (anchors.narrow(1, 0, 2) + anchors.narrow(1, 2, 2)) / 2.0;
    let sizes = anchors.select(1, 2) - anchors.select(1, 0);
    // centre sampling: the location must be near the box centre …
    let (near, _) = (centers.unsqueeze(1) - gt_centers.unsqueeze(0))
        .abs()
        .max_dim(2, false);
    let mut matched = match center_radius {
        Some(r) => near.lt_tensor(&(sizes.unsqueeze(1) * r)),
        None => near.ones_like().to_kind(Kind::Bool),
    };
    // … and inside it
    let (x, y) = (
        centers.select(1, 0).unsqueeze(1),
        centers.select(1, 1).unsqueeze(1),
    );
    let (x0, y0, x1, y1) = (
        gt_boxes.select(1, 0).unsqueeze(0),
        gt_boxes.select(1, 1).unsqueeze(0),
        gt_boxes.select(1, 2).unsqueeze(0),
        gt_boxes.select(1, 3).unsqueeze(0),
    );
    let dist = Tensor::stack(&[&x - x0, &y - y0, x1 - &x, y1 - &y], 2);
    let (min_dist, _) = dist.min_dim(2, false);
    matched = matched.logical_and(&min_dist.gt(0.0));
    // each level answers for a range of box sizes (the first without lower bound, the last
    // without upper bound)
    let lower = &sizes * 4.0;
    let upper = &sizes * 8.0;
    let first = level_sizes.first().copied().unwrap_or(0);
    let last = level_sizes.last().copied().unwrap_or(0);
    let _ = lower.narrow(0, 0, first).fill_(0.0);
    let _ = upper.narrow(0, n - last, last).fill_(f64::INFINITY);
    let (max_dist, _) = dist.max_dim(2, false);
    matched = matched
        .logical_and(&max_dist.gt_tensor(&lower.unsqueeze(1)))
        .logical_and(&max_dist.lt_tensor(&upper.unsqueeze(1)));
    // the smallest matching box wins
    let areas = (gt_boxes.select(1, 2) - gt_boxes.select(1, 0))
        * (gt_boxes.select(1, 3) - gt_boxes.select(1, 1));
    let score = matched.to_kind(Kind::Float) * (areas.unsqueeze(0).neg() + 1e8);
    let (best, idx) = score.max_dim(1, false);
    idx.where_self(&best.ge(1e-5), &idx.full_like(-1))
}

/// torchvision's FCOS losses for a batch: `classification`, `bbox_regression`, `bbox_ctrness`.
pub fn fcos_losses(out: &FcosOutputs, anchors: &Tensor, targets: &[Targets]) -> Losses {
    let coder = BoxLinearCoder {
        normalize_by_size: true,
    };
    let a = anchors.size()[0];
    let (mut cls_t, mut box_t) = (vec![], vec![]);
    for t in targets {
        let idx = match_locations(anchors, &t.boxes, &out.level_sizes);
        let (labels, boxes) = if t.labels.numel() == 0 {
            (
                Tensor::zeros([a], (Kind::Int64, anchors.device())),
                Tensor::zeros([a, 4], (Kind::Float, anchors.device())),
            )
        } else {
            let safe = idx.clamp_min(0);
            (
                t.labels.index_select(0, &safe),
                t.boxes.index_select(0, &safe),
            )
        };
        cls_t.push(labels.where_self(&idx.ge(0), &labels.full_like(-1)));
        box_t.push(boxes);
    }
    let cls_t = Tensor::stack(&cls_t, 0); // [N, A]
    let box_t = Tensor::stack(&box_t, 0); // [N, A, 4]
    let fg = cls_t.ge(0);
    // max(foreground locations, 1) over the global batch when ranks share it (dist::normalizer).
    let num_fg = crate::dist::normalizer(fg.sum(Kind::Int64).int64_value(&[]) as f64);

    let logits = &out.cls_logits;
    let onehot = cls_t
        .clamp_min(0)
        .one_hot(logits.size()[2])
        .to_kind(Kind::Float)
        * fg.unsqueeze(2).to_kind(Kind::Float);
    let loss_cls = sigmoid_focal_loss(logits, &onehot, 0.25, 2.0).sum(Kind::Float);

    let n = targets.len() as i64;
    let flat_anchors = anchors
        .unsqueeze(0)
        .expand([n, a, 4], false)
        .reshape([-1, 4]);
    let flat_fg = fg.reshape([-1]);
    let flat_box_t = box_t.reshape([-1, 4]);
    let pred = coder.decode(&out.bbox_regression.reshape([-1, 4]), &flat_anchors);
    let loss_reg = generalized_box_iou_loss(
        &pred.index(&[Some(&flat_fg)]),
        &flat_box_t.index(&[Some(&flat_fg)]),
    )
    .sum(Kind::Float);

    let reg_t = coder.encode(&flat_anchors, &flat_box_t);
    let lr = Tensor::stack(&[reg_t.select(1, 0), reg_t.select(1, 2)], 1);
    let tb = Tensor::stack(&[reg_t.select(1, 1), reg_t.select(1, 3)], 1);
    let ctr_t = ((lr.amin(&[1i64][..], false) / lr.amax(&[1i64][..], false))
        * (tb.amin(&[1i64][..], false) / tb.amax(&[1i64][..], false)))
    .sqrt();
    let ctr_pred = out.bbox_ctrness.reshape([-1]);
    let loss_ctr = ctr_pred
        .index(&[Some(&flat_fg)])
        .binary_cross_entropy_with_logits::<Tensor>(
            &ctr_t.index(&[Some(&flat_fg)]),
            None,
            None,
            Reduction::Sum,
        );
    vec![
        ("classification".into(), loss_cls / num_fg),
        ("bbox_regression".into(), loss_reg / num_fg),
        ("bbox_ctrness".into(), loss_ctr / num_fg),
    ]
}
