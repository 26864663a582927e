//! AlignDet box-domain pre-training: the box-level contrastive loss, the momentum (EMA) detector,
//! the pre-training forms of FCOS, RetinaNet and Faster R-CNN, and their two-view data.
//! See ../shared/reference/aligndet-method.md sections 4–7.

pub mod build;
pub mod contrastive;
pub mod data;
pub mod detector;
pub mod ema;
pub mod fcos_head;
pub mod moco;
pub mod rcnn_head;
pub mod retinanet_head;
