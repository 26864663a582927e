//! Detection losses with torchvision's definitions (`torchvision.ops` and the detection heads), so
//! that training losses can be compared with torchvision's term by term.

use tch::{Kind, Reduction, Tensor};

/// torchvision's `sigmoid_focal_loss` with `reduction="none"`: an element-wise loss with the
/// shape of `logits`. `alpha` < 0 disables the class weighting.
pub fn sigmoid_focal_loss(logits: &Tensor, targets: &Tensor, alpha: f64, gamma: f64) -> Tensor {
    let p = logits.sigmoid();
    let ce =
        logits.binary_cross_entropy_with_logits::<Tensor>(targets, None, None, Reduction::None);
    let p_t: Tensor = &p * targets + (p.neg() + 1.0) * (targets.neg() + 1.0);
    let loss = ce * (p_t.neg() + 1.0).pow_tensor_scalar(gamma);
    if alpha >= 0.0 {
        let alpha_t: Tensor = targets * alpha + (targets.neg() + 1.0) * (1.0 - alpha);
        alpha_t * loss
    } else {
        loss
    }
}

/// Intersection and union of paired xyxy boxes `[N, 4]` (torchvision's `_loss_inter_union`).
fn inter_union(a: &Tensor, b: &Tensor) -> (Tensor, Tensor) {
    let (x1, y1, x2, y2) = (
        a.select(1, 0),
        a.select(1, 1),
        a.select(1, 2),
        a.select(1, 3),
    );
    let (gx1, gy1, gx2, gy2) = (
        b.select(1, 0),
        b.select(1, 1),
        b.select(1, 2),
        b.select(1, 3),
    );
    let xk1 = x1.maximum(&gx1);
    let yk1 = y1.maximum(&gy1);
    let xk2 = x2.minimum(&gx2);
    let yk2 = y2.minimum(&gy2);
    let overlap = yk2.gt_tensor(&yk1).logical_and(&xk2.gt_tensor(&xk1));
    let inter = ((&xk2 - &xk1) * (&yk2 - &yk1)).where_self(&overlap, &x1.zeros_like());
    let union = (&x2 - &x1) * (&y2 - &y1) + (&gx2 - &gx1) * (&gy2 - &gy1) - &inter;
    (inter, union)
}

/// torchvision's `generalized_box_iou_loss` with `reduction="none"`: `[N]` of 1 − GIoU.
pub fn generalized_box_iou_loss(a: &Tensor, b: &Tensor) -> Tensor {
    const EPS: f64 = 1e-7;
    let (inter, union) = inter_union(a, b);
    let iou = &inter / (&union + EPS);
    let xc1 = a.select(1, 0).minimum(&b.select(1, 0));
    let yc1 = a.select(1, 1).minimum(&b.select(1, 1));
    let xc2 = a.select(1, 2).maximum(&b.select(1, 2));
    let yc2 = a.select(1, 3).maximum(&b.select(1, 3));
    let area_c = (xc2 - xc1) * (yc2 - yc1);
    let giou = iou - (&area_c - &union) / (&area_c + EPS);
    1.0 - giou
}

/// −log(IoU) of paired boxes (the IoU loss AlignDet's FCOS pre-training uses), `[N]`.
pub fn log_iou_loss(a: &Tensor, b: &Tensor) -> Tensor {
    const EPS: f64 = 1e-6;
    let (inter, union) = inter_union(a, b);
    -((inter / union.clamp_min(EPS)).clamp_min(EPS).log())
}

/// `F.smooth_l1_loss(input, target, beta=beta, reduction="sum")`.
pub fn smooth_l1_sum(input: &Tensor, target: &Tensor, beta: f64) -> Tensor {
    if beta == 0.0 {
        return (input - target).abs().sum(Kind::Float);
    }
    input.smooth_l1_loss(target, Reduction::Sum, beta)
}

/// `F.l1_loss(input, target, reduction="sum")`.
pub fn l1_sum(input: &Tensor, target: &Tensor) -> Tensor {
    (input - target).abs().sum(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v).view([-1, 4])
    }

    #[test]
    fn giou_loss_is_zero_for_identical_boxes_and_grows_apart() {
        let a = t(&[0.0, 0.0, 10.0, 10.0, 0.0, 0.0, 10.0, 10.0]);
        let b = t(&[0.0, 0.0, 10.0, 10.0, 20.0, 0.0, 30.0, 10.0]);
        let l: Vec<f32> = Vec::try_from(generalized_box_iou_loss(&a, &b)).unwrap();
        assert!(l[0].abs() < 1e-6);
        // Disjoint boxes: IoU 0, enclosing area 300, union 200 → GIoU = −1/3, loss 4/3.
        assert!((l[1] - 4.0 / 3.0).abs() < 1e-5, "{l:?}");
    }

    #[test]
    fn focal_loss_down_weights_easy_examples() {
        let logits = Tensor::from_slice(&[5.0f32, 0.0]);
        let targets = Tensor::from_slice(&[1.0f32, 1.0]);
        let l: Vec<f32> = Vec::try_from(sigmoid_focal_loss(&logits, &targets, 0.25, 2.0)).unwrap();
        assert!(l[0] < l[1] * 1e-3);
    }
}
