//! Build the detector a training config names, and its weight initialisation.

use super::backbone::BodyKind;
use super::detector::Detector;
use super::faster_rcnn::FasterRcnn;
use super::fcos::Fcos;
use super::mask_rcnn::MaskRcnn;
use super::norm::NormKind;
use super::retinanet::RetinaNet;
use aligndet_common::train_config::{BackboneKind, DetectorKind, InitConfig};
use tch::nn;

pub fn body_kind(b: BackboneKind) -> BodyKind {
    match b {
        BackboneKind::Resnet18 => BodyKind::Resnet18,
        BackboneKind::Resnet50 => BodyKind::Resnet50,
        BackboneKind::EfficientnetLite0 => BodyKind::EfficientnetLite0,
        BackboneKind::MobilenetV2 => BodyKind::MobilenetV2,
    }
}

/// Norm layers of the body: pretrained bodies keep their statistics frozen (torchvision's
/// FrozenBatchNorm2d for detection); a body trained from scratch needs live batch norm.
pub fn body_norm(init: &InitConfig) -> NormKind {
    match init {
        InitConfig::Scratch => NormKind::Bn,
        _ => NormKind::FrozenBn,
    }
}

/// `num_classes` counts the logits (dataset classes + 1, see `detector::Targets`).
pub fn build_detector(
    vs: &nn::Path,
    detector: DetectorKind,
    backbone: BackboneKind,
    norm: NormKind,
    num_classes: i64,
) -> anyhow::Result<Box<dyn Detector>> {
    let body = body_kind(backbone);
    Ok(match detector {
        DetectorKind::Fcos => Box::new(Fcos::new(vs, body, norm, num_classes)),
        DetectorKind::Retinanet => Box::new(RetinaNet::new(vs, body, norm, num_classes)),
        DetectorKind::FasterRcnn => Box::new(FasterRcnn::new(vs, body, norm, num_classes)),
        DetectorKind::MaskRcnn => Box::new(MaskRcnn::new(vs, body, norm, num_classes)),
    })
}
