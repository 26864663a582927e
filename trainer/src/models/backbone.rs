//! Backbone bodies behind one interface, so that every detector can sit on any of them.
//! A body returns the feature maps at strides 4, 8, 16 and 32 (C2–C5); the FPN picks the levels
//! it needs. Each body also says how its pixels are normalised, since ImageNet weights expect it.

use super::efficientnet::EfficientNetLite;
use super::mobilenet::MobileNetV2;
use super::norm::NormKind;
use super::resnet::{ResNet, ResNetDepth};
use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn;

pub use super::body::{Body, IMAGENET_NORM};

/// Freeze the first stages as torchvision's `trainable_backbone_layers` does: with `trainable`
/// = 3 only the stages ending in C3..C5 train; 0 freezes the body, 5 nothing.
pub fn freeze_stages(
    vs: &nn::VarStore,
    body_prefix: &str,
    body: &dyn Body,
    trainable: u8,
) -> usize {
    let first_trainable = 5usize.saturating_sub(trainable as usize);
    let mut frozen = 0;
    for (name, t) in vs.variables() {
        let Some(rest) = name.strip_prefix(body_prefix) else {
            continue;
        };
        let rest = rest.trim_start_matches('.');
        if body.stage_of(rest).is_some_and(|s| s < first_trainable) {
            let _ = t.set_requires_grad(false);
            frozen += 1;
        }
    }
    frozen
}

/// Which body to build (what configs and checkpoints name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyKind {
    Resnet18,
    Resnet50,
    EfficientnetLite0,
    MobilenetV2,
}

impl Body for ResNet {
    fn forward_t(&self, images: &Tensor, train: bool) -> Vec<Tensor> {
        ResNet::forward_t(self, images, train)
    }
    fn out_channels(&self) -> [i64; 4] {
        self.depth.out_channels()
    }
    fn pixel_norm(&self) -> ([f64; 3], [f64; 3]) {
        IMAGENET_NORM
    }
    fn stage_of(&self, name: &str) -> Option<usize> {
        if name.starts_with("conv1") || name.starts_with("bn1") {
            return Some(0);
        }
        (1..=4).find(|k| name.starts_with(&format!("layer{k}.")))
    }
}

/// Build the body under `vs` (torchvision names for ResNet, `conv1`, `layer1`, …, and for
/// MobileNetV2, `features.…`).
pub fn build_body(vs: &nn::Path, kind: BodyKind, norm: NormKind) -> Box<dyn Body> {
    match kind {
        BodyKind::Resnet18 => Box::new(ResNet::new(vs, ResNetDepth::Resnet18, norm)),
        BodyKind::Resnet50 => Box::new(ResNet::new(vs, ResNetDepth::Resnet50, norm)),
        BodyKind::EfficientnetLite0 => Box::new(EfficientNetLite::lite0(vs, norm)),
        BodyKind::MobilenetV2 => Box::new(MobileNetV2::new(vs, norm)),
    }
}
