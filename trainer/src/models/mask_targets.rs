//! Mask R-CNN's training targets and loss (torchvision's `project_masks_on_boxes` and
//! `maskrcnn_loss`): each positive proposal's matched ground-truth mask is cropped and resized
//! onto the proposal by RoIAlign (adaptive sampling, no threshold), and the logits of the
//! ground-truth class are scored with binary cross-entropy.

use super::roi_align::roi_align_adaptive;
use tch::{Kind, Reduction, Tensor};

/// The positive proposals of the box branch's training sample, per image: their boxes (batch
/// coordinates), the index of the ground truth each matched, and that ground truth's label.
#[derive(Debug)]
pub struct Positives {
    pub boxes: Tensor,
    pub matched: Tensor,
    pub labels: Tensor,
}

/// Row k's map of class `labels[k]`: `[K, C, M, M]` → `[K, M, M]`.
pub fn select_class(logits: &Tensor, labels: &Tensor) -> Tensor {
    let s = logits.size();
    let index = labels
        .to_kind(Kind::Int64)
        .view([-1, 1, 1, 1])
        .expand([s[0], 1, s[2], s[3]], false);
    logits.gather(1, &index, false).squeeze_dim(1)
}

/// `gt_masks` `[n, H, W]` (one image), `boxes` `[K, 4]` and their matched ground-truth indices
/// `[K]` → soft targets `[K, M, M]` in 0..1.
pub fn project_masks_on_boxes(
    gt_masks: &Tensor,
    boxes: &Tensor,
    matched: &Tensor,
    m: i64,
) -> Tensor {
    let rois = Tensor::cat(
        &[
            matched.to_kind(boxes.kind()).unsqueeze(1),
            boxes.shallow_clone(),
        ],
        1,
    );
    let masks = gt_masks.unsqueeze(1).to_kind(boxes.kind());
    roi_align_adaptive(&masks, &rois, (m, m), 1.0).squeeze_dim(1)
}

/// `loss_mask` over the positives of every image; `logits` `[ΣKi, C, M, M]` rows in the
/// positives' order. Without positives the loss is `0 · Σ logits` (keeps the graph connected).
pub fn maskrcnn_loss(logits: &Tensor, positives: &[Positives], gt_masks: &[Tensor]) -> Tensor {
    let m = logits.size()[3];
    let targets: Vec<Tensor> = positives
        .iter()
        .zip(gt_masks)
        .map(|(p, g)| project_masks_on_boxes(g, &p.boxes.detach(), &p.matched, m))
        .collect();
    let targets = Tensor::cat(&targets, 0);
    if targets.numel() == 0 {
        return logits.sum(Kind::Float) * 0.0;
    }
    let labels = Tensor::cat(&positives.iter().map(|p| &p.labels).collect::<Vec<_>>(), 0);
    select_class(logits, &labels).binary_cross_entropy_with_logits::<Tensor>(
        &targets.to_kind(logits.kind()),
        None,
        None,
        Reduction::Mean,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn a_box_inside_a_filled_mask_projects_to_ones_and_outside_to_zeros() {
        let masks = Tensor::zeros([2, 40, 40], (Kind::Uint8, Device::Cpu));
        let _ = masks.get(1).narrow(0, 10, 20).narrow(1, 10, 20).fill_(1);
        let boxes =
            Tensor::from_slice(&[12.0f32, 12.0, 28.0, 28.0, 12.0, 12.0, 28.0, 28.0]).view([2, 4]);
        let matched = Tensor::from_slice(&[1i64, 0]);
        let t = project_masks_on_boxes(&masks, &boxes, &matched, 28);
        assert_eq!(t.size(), vec![2, 28, 28]);
        assert!((t.get(0) - 1.0).abs().max().double_value(&[]) < 1e-6);
        assert_eq!(t.get(1).abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn no_positives_give_a_zero_loss_that_still_back_propagates() {
        let logits =
            Tensor::ones([0, 3, 28, 28], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let p = Positives {
            boxes: Tensor::zeros([0, 4], (Kind::Float, Device::Cpu)),
            matched: Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
            labels: Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
        };
        let gt = Tensor::zeros([0, 10, 10], (Kind::Uint8, Device::Cpu));
        let l = maskrcnn_loss(&logits, &[p], &[gt]);
        assert_eq!(l.double_value(&[]), 0.0);
        l.backward();
    }
}
