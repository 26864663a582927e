//! Dataset generation and preparation.

pub mod arrivals;
pub mod augment;
pub mod color_ops;
pub mod detection;
pub mod loader;
pub mod masks;
pub mod moco_aug;
pub mod multiview;
pub mod synthetic;
pub mod tiling;
