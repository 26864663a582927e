//! COCO evaluation with pycocotools' exact semantics (`COCOeval` with `iouType="bbox"` or
//! `"segm"`).
//!
//! Pipeline, one module per step:
//! - [`load`]: parse the ground-truth dataset and the results (detections) JSON.
//! - [`cells`]: group annotations and detections by (category, image).
//! - [`iou`]: overlap between detections and ground truth, boxes or masks
//!   ([`mask::MaskSet`], with RLE and polygon handling in [`mask`]).
//! - [`matching`]: greedy per-image matching at every IoU threshold and area range
//!   (pycocotools' `evaluateImg`).
//! - [`accumulate`]: precision/recall tables (pycocotools' `accumulate`).
//! - [`summary`]: the 12 summary statistics, per-class and per-size numbers, PR curves.
//! - [`evaluate`]: runs the above in parallel and returns an [`EvalResult`].

pub mod accumulate;
pub mod cells;
pub mod evaluate;
pub mod iou;
pub mod load;
pub mod mask;
pub mod matching;
pub mod params;
pub mod summary;

pub use evaluate::{EvalError, EvalResult, StageTimings, evaluate, evaluate_segm};
pub use load::{Category, Detection, GroundTruth, GtAnnotation, LoadError, parse_detections};
pub use params::{AreaRange, EvalParams, IouType};
pub use summary::{AreaSummary, ClassSummary, PrCurve, STAT_NAMES};
