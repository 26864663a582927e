//! Faster R-CNN (torchvision design and parameter names): body + FPN (P2–P6, max-pool level),
//! region proposal network over all five levels, RoIAlign box branch over P2–P5.

use super::backbone::{Body, BodyKind, build_body};
use super::detector::{Detections, Detector, Losses, Targets};
use super::fpn::{ExtraLevels, Fpn};
use super::norm::NormKind;
use super::roi_heads::RoiHeads;
use super::rpn::Rpn;
use super::transform::{DetectionTransform, ImageBatch};
use tch::Tensor;
use tch::nn;

/// Pyramid levels the box branch pools from (torchvision's feature maps "0"–"3").
pub(crate) const POOLED_LEVELS: usize = 4;

#[derive(Debug)]
pub struct FasterRcnn {
    pub body: Box<dyn Body>,
    pub fpn: Fpn,
    pub rpn: Rpn,
    pub roi_heads: RoiHeads,
    pub transform: DetectionTransform,
}

impl FasterRcnn {
    /// Faster R-CNN under `vs` with torchvision's names (`backbone.body`, `backbone.fpn`,
    /// `rpn.head`, `roi_heads.box_head`, `roi_heads.box_predictor`). `num_classes` includes the
    /// background (index 0), as in torchvision.
    pub fn new(vs: &nn::Path, body: BodyKind, norm: NormKind, num_classes: i64) -> FasterRcnn {
        let bb = vs / "backbone";
        let body = build_body(&(&bb / "body"), body, norm);
        let chans = body.out_channels();
        let transform = DetectionTransform::for_body(body.as_ref());
        FasterRcnn {
            fpn: Fpn::new(&(&bb / "fpn"), &chans, 256, ExtraLevels::MaxPool),
            rpn: Rpn::new(&(vs / "rpn"), 256),
            roi_heads: RoiHeads::new(&(vs / "roi_heads"), 256, num_classes),
            body,
            transform,
        }
    }

    /// P2–P6 of a normalised, padded batch.
    pub fn features(&self, batch: &Tensor, train: bool) -> Vec<Tensor> {
        let c = self.body.forward_t(batch, train);
        self.fpn.forward(&c)
    }
}

impl Detector for FasterRcnn {
    fn transform(&self) -> &DetectionTransform {
        &self.transform
    }

    fn body(&self) -> Option<&dyn Body> {
        Some(self.body.as_ref())
    }

    fn set_score_threshold(&mut self, threshold: f64) {
        self.roi_heads.settings.score_thresh = threshold;
    }

    fn detect_batch(&self, batch: &ImageBatch) -> Vec<Detections> {
        let features = self.features(&batch.tensor, false);
        let (proposals, _) = self.rpn.forward(batch, &features, None);
        let dets =
            self.roi_heads
                .detect(&features[..POOLED_LEVELS], &proposals, &batch.image_sizes);
        dets.into_iter()
            .enumerate()
            .map(|(i, d)| batch.to_original(i, d))
            .collect()
    }

    /// torchvision's training-mode losses, in its order: `loss_classifier`, `loss_box_reg`,
    /// `loss_objectness`, `loss_rpn_box_reg`. The RPN uses its training top-n settings whatever
    /// `train` says (which only selects the body's batch-norm mode).
    fn losses(&self, batch: &ImageBatch, targets: &[Targets], train: bool) -> Losses {
        let features = self.features(&batch.tensor, train);
        let (proposals, rpn_losses) = self.rpn.forward(batch, &features, Some(targets));
        let mut losses = self.roi_heads.losses(
            &features[..POOLED_LEVELS],
            &proposals,
            &batch.image_sizes,
            targets,
        );
        losses.extend(rpn_losses);
        losses
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn small() -> (nn::VarStore, FasterRcnn) {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut m = FasterRcnn::new(&vs.root(), BodyKind::Resnet18, NormKind::FrozenBn, 3);
        m.transform.min_size = 96.0;
        m.transform.max_size = 128.0;
        (vs, m)
    }

    #[test]
    fn faster_rcnn_losses_are_finite_and_reach_every_module() {
        tch::manual_seed(0);
        let (vs, m) = small();
        let images = [
            Tensor::rand([3, 90, 120], (Kind::Float, Device::Cpu)),
            Tensor::rand([3, 100, 80], (Kind::Float, Device::Cpu)),
        ];
        // the second image has no objects (a background-only image)
        let targets = [
            Targets::one_box([10.0, 20.0, 60.0, 80.0], 2),
            Targets::background_only(),
        ];
        let (batch, targets) = m.transform.batch_with_targets(&images, &targets);
        let losses = m.losses(&batch, &targets, true);
        let names: Vec<&str> = losses.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "loss_classifier",
                "loss_box_reg",
                "loss_objectness",
                "loss_rpn_box_reg"
            ]
        );
        for (name, l) in &losses {
            assert!(l.double_value(&[]).is_finite(), "{name}");
        }
        let total = crate::models::detector::total_loss(&losses);
        total.backward();
        // the box branch back-propagates through RoIAlign into the pyramid and the body
        let vars = vs.variables();
        for name in [
            "roi_heads.box_predictor.cls_score.weight",
            "roi_heads.box_head.fc6.weight",
            "rpn.head.conv.0.0.weight",
            "backbone.fpn.layer_blocks.0.0.weight",
            "backbone.body.layer1.0.conv1.weight",
        ] {
            let g = vars[name].grad();
            assert!(
                g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{name}"
            );
        }
    }

    #[test]
    fn detections_are_in_original_pixels() {
        let (_vs, m) = small();
        let images = [Tensor::rand([3, 90, 120], (Kind::Float, Device::Cpu))];
        let d = m.detect(&images);
        assert_eq!(d.len(), 1);
        let b = &d[0].boxes;
        if b.size()[0] > 0 {
            assert!(b.select(1, 2).max().double_value(&[]) <= 120.0 + 1e-3);
            assert!(b.select(1, 3).max().double_value(&[]) <= 90.0 + 1e-3);
        }
        assert_eq!(d[0].labels.kind(), Kind::Int64);
    }
}
