//! Mask R-CNN (torchvision design and parameter names): Faster R-CNN plus the mask branch under
//! `roi_heads` (`mask_head`, `mask_predictor`). Training adds `loss_mask` on the box branch's
//! positive proposals; inference pastes each detection's mask into the original image.

use super::backbone::{Body, BodyKind};
use super::detector::{Detections, Detector, Losses, Targets};
use super::faster_rcnn::{FasterRcnn, POOLED_LEVELS};
use super::mask_head::MaskBranch;
use super::norm::NormKind;
use super::paste_masks::paste_masks_in_image;
use super::transform::{DetectionTransform, ImageBatch};
use tch::{Tensor, nn};

/// Pasted mask probabilities above this are the object (torchvision's users' 0.5).
pub const MASK_THRESHOLD: f64 = 0.5;

#[derive(Debug)]
pub struct MaskRcnn {
    pub faster: FasterRcnn,
    pub mask: MaskBranch,
}

impl MaskRcnn {
    /// Faster R-CNN's modules with their torchvision names, and `roi_heads.mask_head`,
    /// `roi_heads.mask_predictor`. `num_classes` includes the background.
    pub fn new(vs: &nn::Path, body: BodyKind, norm: NormKind, num_classes: i64) -> MaskRcnn {
        MaskRcnn {
            faster: FasterRcnn::new(vs, body, norm, num_classes),
            mask: MaskBranch::new(&(vs / "roi_heads"), 256, num_classes),
        }
    }
}

impl Detector for MaskRcnn {
    fn transform(&self) -> &DetectionTransform {
        &self.faster.transform
    }

    fn body(&self) -> Option<&dyn Body> {
        self.faster.body()
    }

    fn set_score_threshold(&mut self, threshold: f64) {
        self.faster.set_score_threshold(threshold);
    }

    fn detect_batch(&self, batch: &ImageBatch) -> Vec<Detections> {
        let f = &self.faster;
        let features = f.features(&batch.tensor, false);
        let pooled = &features[..POOLED_LEVELS];
        let (proposals, _) = f.rpn.forward(batch, &features, None);
        let dets = f.roi_heads.detect(pooled, &proposals, &batch.image_sizes);
        let boxes: Vec<Tensor> = dets.iter().map(|d| d.boxes.shallow_clone()).collect();
        let labels = Tensor::cat(&dets.iter().map(|d| &d.labels).collect::<Vec<_>>(), 0);
        let probs = self
            .mask
            .probabilities(pooled, &boxes, &labels, &batch.image_sizes);
        let mut start = 0;
        dets.into_iter()
            .enumerate()
            .map(|(i, d)| {
                let n = d.boxes.size()[0];
                let p = probs.narrow(0, start, n);
                start += n;
                let d = batch.to_original(i, d);
                let masks =
                    paste_masks_in_image(&p, &d.boxes, batch.original_sizes[i], MASK_THRESHOLD);
                Detections {
                    masks: Some(masks),
                    ..d
                }
            })
            .collect()
    }

    /// Faster R-CNN's four losses in its order, then `loss_mask`. Every target must carry
    /// masks (the fine-tune data path decodes them for mask detectors).
    fn losses(&self, batch: &ImageBatch, targets: &[Targets], train: bool) -> Losses {
        let f = &self.faster;
        let features = f.features(&batch.tensor, train);
        let pooled = &features[..POOLED_LEVELS];
        let (proposals, rpn_losses) = f.rpn.forward(batch, &features, Some(targets));
        let (mut losses, positives) =
            f.roi_heads
                .losses_and_positives(pooled, &proposals, &batch.image_sizes, targets);
        losses.extend(rpn_losses);
        let gt_masks: Vec<Tensor> = targets
            .iter()
            .map(|t| {
                t.masks
                    .as_ref()
                    .map(|m| m.shallow_clone())
                    .expect("Mask R-CNN targets carry masks (the data path checks it)")
            })
            .collect();
        let loss_mask = self
            .mask
            .loss(pooled, &positives, &batch.image_sizes, &gt_masks);
        losses.push(("loss_mask".to_string(), loss_mask));
        losses
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn small() -> (nn::VarStore, MaskRcnn) {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut m = MaskRcnn::new(&vs.root(), BodyKind::Resnet18, NormKind::FrozenBn, 3);
        m.faster.transform.min_size = 96.0;
        m.faster.transform.max_size = 128.0;
        (vs, m)
    }

    #[test]
    fn mask_loss_is_the_fifth_term_and_reaches_the_mask_branch() {
        tch::manual_seed(0);
        let (vs, m) = small();
        let images = [
            Tensor::rand([3, 90, 120], (Kind::Float, Device::Cpu)),
            Tensor::rand([3, 100, 80], (Kind::Float, Device::Cpu)),
        ];
        let mask = Tensor::zeros([1, 90, 120], (Kind::Uint8, Device::Cpu));
        let _ = mask.narrow(1, 25, 50).narrow(2, 15, 40).fill_(1);
        let targets = [
            Targets {
                masks: Some(mask),
                ..Targets::one_box([10.0, 20.0, 60.0, 80.0], 2)
            },
            Targets {
                masks: Some(Tensor::zeros([0, 100, 80], (Kind::Uint8, Device::Cpu))),
                ..Targets::background_only()
            },
        ];
        let (batch, targets) = m.transform().batch_with_targets(&images, &targets);
        let losses = m.losses(&batch, &targets, true);
        let names: Vec<&str> = losses.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[4], "loss_mask");
        assert_eq!(names.len(), 5);
        let total = crate::models::detector::total_loss(&losses);
        assert!(total.double_value(&[]).is_finite());
        total.backward();
        let vars = vs.variables();
        for name in [
            "roi_heads.mask_predictor.mask_fcn_logits.weight",
            "roi_heads.mask_predictor.conv5_mask.weight",
            "roi_heads.mask_head.0.0.weight",
            "roi_heads.mask_head.3.0.bias",
        ] {
            let g = vars[name].grad();
            assert!(
                g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{name}"
            );
        }
    }

    #[test]
    fn detections_carry_image_sized_binary_masks() {
        let (_vs, mut m) = small();
        m.set_score_threshold(0.0);
        let images = [Tensor::rand([3, 90, 120], (Kind::Float, Device::Cpu))];
        let d = m.detect(&images);
        let masks = d[0].masks.as_ref().expect("masks");
        let n = d[0].boxes.size()[0];
        assert_eq!(masks.size(), vec![n, 90, 120]);
        assert_eq!(masks.kind(), Kind::Bool);
    }
}
