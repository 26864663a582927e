//! AlignDet box-domain pre-training pieces: the box-level contrastive loss and the momentum (EMA)
//! detector. See ../shared/reference/aligndet-method.md sections 4.1–4.3.

pub mod contrastive;
pub mod ema;
