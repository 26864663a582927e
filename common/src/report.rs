//! Result documents a job writes as artifacts and the server renders (one schema, both sides).

use serde::{Deserialize, Serialize};

/// Names of the 12 COCO summary statistics, in pycocotools' order.
pub const COCO_STAT_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

/// `eval.json` of an `evaluate` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationReport {
    /// The 12 statistics in pycocotools' order (−1 where undefined, as pycocotools prints).
    pub stats: Vec<f64>,
    pub per_class: Vec<ClassResult>,
    pub per_size: Vec<SizeResult>,
    /// Precision at the 101 recall points 0, 0.01, … 1 (area all, 100 detections), per class.
    pub pr_curves: Vec<PrCurve>,
    pub num_images: usize,
    pub num_detections: usize,
    pub seconds: f64,
    /// Mask AP (`iouType="segm"`) beside the box AP above, when the detections carry masks
    /// (Mask R-CNN). Absent in reports of box-only runs and of older workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segm: Option<SegmReport>,
}

/// The mask half of an [`EvaluationReport`]: the same 12 statistics, per class and per size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmReport {
    pub stats: Vec<f64>,
    pub per_class: Vec<ClassResult>,
    pub per_size: Vec<SizeResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassResult {
    pub category_id: i64,
    pub name: String,
    pub ap: f64,
    pub ap50: f64,
    pub ap75: f64,
    pub ar100: f64,
    pub num_gt: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeResult {
    /// `small`, `medium`, `large` (COCO area ranges).
    pub area: String,
    pub ap: f64,
    pub ar: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrCurve {
    pub name: String,
    /// `0.5`, `0.75`, or `null` for the mean over IoU .50:.95.
    pub iou: Option<f64>,
    pub precision: Vec<f64>,
}
