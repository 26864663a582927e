//! Evaluation parameters; `EvalParams::default()` is pycocotools' `Params(iouType="bbox")`
//! and [`EvalParams::segm`] its `Params(iouType="segm")` (the same numbers).

use serde::{Deserialize, Serialize};

/// Which overlap measure the evaluation uses: box IoU, or mask IoU (which needs the masks,
/// see [`crate::eval::coco::evaluate_segm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IouType {
    Bbox,
    Segm,
}

/// An object-area bucket; both bounds are inclusive, as in pycocotools.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AreaRange {
    pub label: String,
    pub min: f64,
    pub max: f64,
}

impl AreaRange {
    fn new(label: &str, min: f64, max: f64) -> Self {
        Self {
            label: label.to_string(),
            min,
            max,
        }
    }

    /// pycocotools ignores objects with `area < min or area > max`.
    pub fn excludes(&self, area: f64) -> bool {
        area < self.min || area > self.max
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalParams {
    pub iou_type: IouType,
    /// Ascending IoU thresholds.
    pub iou_thresholds: Vec<f64>,
    /// Ascending recall points at which precision is sampled.
    pub recall_thresholds: Vec<f64>,
    pub area_ranges: Vec<AreaRange>,
    /// Ascending; the largest one caps the detections kept per image and category.
    pub max_dets: Vec<usize>,
}

/// pycocotools' `np.linspace(.5, 0.95, 10)`, bit for bit (note 0.8999999999999999).
pub const COCO_IOU_THRESHOLDS: [f64; 10] = [
    0.5,
    0.55,
    0.6,
    0.65,
    0.7,
    0.75,
    0.8,
    0.85,
    0.8999999999999999,
    0.95,
];

/// pycocotools' `np.linspace(0, 1, 101)`: `i * 0.01`, with the last point exactly 1.
pub fn coco_recall_thresholds() -> Vec<f64> {
    (0..=100)
        .map(|i| if i == 100 { 1.0 } else { i as f64 * 0.01 })
        .collect()
}

impl Default for EvalParams {
    fn default() -> Self {
        Self {
            iou_type: IouType::Bbox,
            iou_thresholds: COCO_IOU_THRESHOLDS.to_vec(),
            recall_thresholds: coco_recall_thresholds(),
            area_ranges: vec![
                AreaRange::new("all", 0.0, 1e10),
                AreaRange::new("small", 0.0, 32.0 * 32.0),
                AreaRange::new("medium", 32.0 * 32.0, 96.0 * 96.0),
                AreaRange::new("large", 96.0 * 96.0, 1e10),
            ],
            max_dets: vec![1, 10, 100],
        }
    }
}

impl EvalParams {
    /// pycocotools' `Params(iouType="segm")`: the bbox defaults with mask IoU.
    pub fn segm() -> Self {
        Self {
            iou_type: IouType::Segm,
            ..Self::default()
        }
    }

    /// Detections kept per (image, category): pycocotools evaluates with `maxDets[-1]`.
    pub fn max_dets_per_image(&self) -> usize {
        self.max_dets.last().copied().unwrap_or(0)
    }

    /// Checks the invariants the evaluator relies on.
    pub fn validate(&self) -> Result<(), String> {
        let ascending = |v: &[f64]| v.windows(2).all(|w| w[0] <= w[1]);
        if self.iou_thresholds.is_empty() || !ascending(&self.iou_thresholds) {
            return Err("iou_thresholds must be non-empty and ascending".into());
        }
        if self.recall_thresholds.is_empty() || !ascending(&self.recall_thresholds) {
            return Err("recall_thresholds must be non-empty and ascending".into());
        }
        if self.area_ranges.is_empty() {
            return Err("area_ranges must be non-empty".into());
        }
        if self.max_dets.is_empty() || self.max_dets.windows(2).any(|w| w[0] > w[1]) {
            return Err("max_dets must be non-empty and ascending".into());
        }
        let values = self.iou_thresholds.iter().chain(&self.recall_thresholds);
        if values.clone().any(|v| !v.is_finite()) {
            return Err("thresholds must be finite".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_points_match_numpy_linspace() {
        let r = coco_recall_thresholds();
        assert_eq!(r.len(), 101);
        assert_eq!(r[0], 0.0);
        assert_eq!(r[50], 0.5);
        assert_eq!(r[100], 1.0);
    }

    #[test]
    fn area_bounds_are_inclusive() {
        let p = EvalParams::default();
        let small = &p.area_ranges[1];
        let medium = &p.area_ranges[2];
        assert!(!small.excludes(1024.0) && !medium.excludes(1024.0));
        assert!(small.excludes(1024.5));
    }
}
