//! Detector building blocks, one concept per file as in torchvision's `models/detection/`.
//! Parameter names follow torchvision, so its state dicts (saved as safetensors) load as they are.
//!
//! - [`norm`]: batch norm, trainable or frozen (torchvision's `FrozenBatchNorm2d`).
//! - [`resnet`]: ResNet-18/50 bodies returning C2–C5.
//! - [`efficientnet`]: the EfficientNet-Lite0 body (TF "same" padding, ImageNet weights).
//! - [`mobilenet`]: the MobileNetV2 body (torchvision's names and taps, ImageNet weights).
//! - [`fpn`]: feature pyramid (P2–P6 with max-pool, or P3–P7 with P6/P7 convs).
//! - [`anchors`], [`box_coder`], [`box_ops`] (IoU, clipping, NMS), [`transform`]: the shared detection pieces.
//! - [`fcos`], [`retinanet`]: the one-stage detectors, sharing [`dense`]'s inference.
//! - [`faster_rcnn`]: the two-stage detector ([`rpn`], [`roi_heads`], [`roi_align`]).
//! - [`mask_rcnn`]: Faster R-CNN plus the mask branch ([`mask_head`], [`mask_targets`],
//!   [`paste_masks`]).
//! - [`linear`]: fully connected layers with PyTorch's default initialisation.
//! - [`weights`]: loading safetensors state dicts with a report of missing / unexpected keys.

pub mod anchors;
pub mod backbone;
pub mod body;
pub mod box_coder;
pub mod box_ops;
pub mod build;
pub mod dense;
pub mod detector;
pub mod efficientnet;
pub mod faster_rcnn;
pub mod fcos;
pub mod fcos_loss;
pub mod fpn;
pub mod head;
pub mod linear;
pub mod losses;
pub mod mask_head;
pub mod mask_rcnn;
pub mod mask_targets;
pub mod matcher;
pub mod mobilenet;
pub mod norm;
pub mod paste_masks;
pub mod resnet;
pub mod retinanet;
pub mod roi_align;
pub mod roi_heads;
pub mod rpn;
pub mod sampler;
pub mod structures;
pub mod transform;
pub mod weights;
