//! What box-domain pre-training asks of a detector: one view in, the embeddings of its sampled
//! points / anchors / RoIs with their instance ids out, plus the view's own regression losses.
//!
//! The online detector runs on view 1 and the momentum detector on view 2; the contrastive loss
//! pairs their outputs by instance id (`contrastive::box_contrastive_loss`). Regression terms
//! depend on one view only, so each view computes its own and the job keeps the online ones
//! (method notes, 4.1 and 4.4).
//!
//! Every pre-training model names its variables as the fine-tuning detector does
//! (`backbone.body`, `backbone.fpn`, `head.*`, `rpn.*`, `roi_heads.*`), predictors included
//! where the pretext task uses the fine-tuning form (FCOS's `bbox_reg` and `bbox_ctrness`,
//! RetinaNet's `bbox_reg`), and its pre-training-only modules (projectors, Faster R-CNN's
//! class-agnostic regressor) under names the fine-tuning detector does not have, recognised by
//! [`is_pretraining_only`]: transfer is a non-strict load.

use crate::models::backbone::Body;
use crate::models::detector::Losses;
use crate::models::transform::{DetectionTransform, ImageBatch};
use tch::{Kind, Tensor};

/// The instance id of samples that lie on no pseudo-box: negatives only. Kept apart from every
/// instance id, unlike the reference's `num_classes` sentinel (method notes, A6).
pub const BACKGROUND: i64 = -1;

/// One view's contribution to the pre-training losses.
pub struct ViewOutput {
    /// `[n, d]` embeddings of the sampled points / anchors / RoIs (not normalised).
    pub embeddings: Tensor,
    /// `[n]` instance id of each sample, [`BACKGROUND`] for negatives.
    pub instances: Tensor,
    /// The view's regression terms (box, centerness, RPN…), empty when not asked for.
    pub losses: Losses,
    /// Diagnostics: counts of sampled positives, negatives, instances…
    pub stats: Vec<(String, f64)>,
}

/// A detector in its pre-training form.
pub trait BoxPretrainer: std::fmt::Debug + Send {
    /// `batch` is one padded view; `boxes[i]` the `[n_i, 4]` xyxy pseudo-boxes of image i in
    /// that view's pixels, box j of image i being instance `offset_i + j` (see
    /// [`instance_offsets`]). Regression losses are computed only when `with_losses`.
    fn forward_view(&self, batch: &ImageBatch, boxes: &[Tensor], with_losses: bool) -> ViewOutput;

    /// Normalisation and padding of the views.
    fn transform(&self) -> &DetectionTransform;

    /// The frozen image-domain backbone.
    fn body(&self) -> &dyn Body;
}

/// Variables that exist only in the pre-training form (projectors and the pretext predictors);
/// they are left out of `pretrained.safetensors` (method notes, 8.1).
pub fn is_pretraining_only(name: &str) -> bool {
    name.split('.')
        .any(|part| part == "projector" || part.starts_with("pretrain_"))
}

/// Instance-id offsets of a batch: image b's box j is instance `offset_b + j`, with offset₀ = 0
/// and offset_{b+1} = offset_b + n_b (method notes, 4.2). Both views compute the same offsets
/// because they keep every box in order.
pub fn instance_offsets(boxes: &[Tensor]) -> Vec<i64> {
    let mut offsets = Vec::with_capacity(boxes.len());
    let mut next = 0;
    for b in boxes {
        offsets.push(next);
        next += b.size()[0];
    }
    offsets
}

/// Per-location box index (−1 none) → instance id ([`BACKGROUND`] none).
pub fn to_instances(matched: &Tensor, offset: i64) -> Tensor {
    let fg = matched.ge(0);
    (matched + offset).where_self(&fg, &matched.full_like(BACKGROUND))
}

/// Backbone features of a view: the body is frozen, in eval mode and outside autograd.
pub fn frozen_features(body: &dyn Body, images: &Tensor) -> Vec<Tensor> {
    tch::no_grad(|| body.forward_t(images, false))
}

/// Number of distinct instances among `instances` (background excluded).
pub fn count_instances(instances: &Tensor) -> f64 {
    let fg = instances.masked_select(&instances.ge(0));
    if fg.numel() == 0 {
        return 0.0;
    }
    let (u, _, _) = fg
        .to_kind(Kind::Int64)
        .internal_unique2(false, false, false);
    u.size()[0] as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_give_every_box_of_the_batch_its_own_id() {
        let boxes = [
            Tensor::zeros([3, 4], (Kind::Float, tch::Device::Cpu)),
            Tensor::zeros([0, 4], (Kind::Float, tch::Device::Cpu)),
            Tensor::zeros([2, 4], (Kind::Float, tch::Device::Cpu)),
        ];
        assert_eq!(instance_offsets(&boxes), vec![0, 3, 3]);
        let matched = Tensor::from_slice(&[-1i64, 0, 1, -1]);
        let ids = to_instances(&matched, 3);
        assert_eq!(Vec::<i64>::try_from(&ids).unwrap(), vec![-1, 3, 4, -1]);
        assert_eq!(count_instances(&ids), 2.0);
    }

    #[test]
    fn pretraining_only_names() {
        assert!(is_pretraining_only(
            "head.classification_head.projector.0.weight"
        ));
        assert!(is_pretraining_only(
            "head.regression_head.pretrain_reg.bias"
        ));
        assert!(!is_pretraining_only(
            "head.classification_head.conv.0.weight"
        ));
        assert!(!is_pretraining_only("backbone.fpn.layer_blocks.0.0.weight"));
    }
}
