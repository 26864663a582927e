//! Dataset generation and preparation.

pub mod augment;
pub mod detection;
pub mod loader;
pub mod synthetic;
pub mod tiling;
