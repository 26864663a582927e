//! Selective-search pseudo-boxes (AlignDet/SoCo recipe) in pure Rust:
//! - [`color`]: colour-space conversions to 8-bit planes.
//! - [`felzenszwalb`]: Felzenszwalb–Huttenlocher graph segmentation.
//! - [`features`]: per-region colour/texture histograms, sizes, boxes, adjacency.
//! - [`grouping`]: hierarchical grouping by similarity.
//! - [`strategy`]: diversification presets (aligndet, fast, quality) and [`propose`].
//! - [`filter`]: the SoCo box filter with its fall-backs, NMS and top-k.
//! - [`recall`]: proposal recall curves against ground truth.
//! - [`cli`]: the `trainer proposals` command.

pub mod cli;
pub mod color;
pub mod features;
pub mod felzenszwalb;
pub mod filter;
pub mod grouping;
pub mod recall;
pub mod strategy;

pub use filter::{FilterConfig, FilterOutcome, FilterRule, FilterStage, RemovedBox, filter_boxes};
pub use recall::{ImageBoxes, RecallCurve, RecallPoint, RecallReport, recall_curve};
pub use strategy::{Ranking, Strategy, StrategyError, propose};
