//! Dataset generation and preparation.

pub mod synthetic;
pub mod tiling;
