//! Summary numbers from the accumulated tables (pycocotools' `summarize`), plus per-class
//! and per-size numbers and precision-recall curves.

use serde::{Deserialize, Serialize};

use super::accumulate::Accumulated;
use super::load::GroundTruth;
use super::params::EvalParams;

/// Names of `EvalResult::stats`, in pycocotools' order.
pub const STAT_NAMES: [&str; 12] = [
    "AP@[.50:.95] all maxDets=100",
    "AP@.50 all maxDets=100",
    "AP@.75 all maxDets=100",
    "AP@[.50:.95] small maxDets=100",
    "AP@[.50:.95] medium maxDets=100",
    "AP@[.50:.95] large maxDets=100",
    "AR@[.50:.95] all maxDets=1",
    "AR@[.50:.95] all maxDets=10",
    "AR@[.50:.95] all maxDets=100",
    "AR@[.50:.95] small maxDets=100",
    "AR@[.50:.95] medium maxDets=100",
    "AR@[.50:.95] large maxDets=100",
];

/// Per-category numbers for area "all" at the largest maxDets; -1 when the category has no
/// non-crowd ground truth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassSummary {
    pub category_id: i64,
    pub name: String,
    pub ap: f64,
    pub ap50: f64,
    pub ap75: f64,
    pub ar100: f64,
    /// Non-crowd ground-truth boxes of this category.
    pub num_gt: usize,
}

/// AP and AR at the largest maxDets for one area range (other than "all").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AreaSummary {
    pub area: String,
    pub min_area: f64,
    pub max_area: f64,
    pub ap: f64,
    pub ar: f64,
}

/// Interpolated precision at each recall point (area "all", largest maxDets); -1 entries
/// for a category without ground truth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrCurve {
    pub category_id: i64,
    pub recall: Vec<f64>,
    pub precision_iou50: Vec<f64>,
    pub precision_iou75: Vec<f64>,
    /// Mean over all IoU thresholds.
    pub precision_mean: Vec<f64>,
}

/// Which slice of the tables one statistic averages.
struct Selection {
    thresholds: Vec<usize>,
    areas: Vec<usize>,
    max_dets: Vec<usize>,
    categories: Vec<usize>,
}

impl Selection {
    /// pycocotools selects by value: `iouThr == iouThrs`, area label, `maxDets` value.
    fn new(
        acc: &Accumulated,
        params: &EvalParams,
        iou: Option<f64>,
        area: &str,
        max_det: Option<usize>,
    ) -> Self {
        let positions = |n: usize, keep: &dyn Fn(usize) -> bool| {
            (0..n).filter(|&i| keep(i)).collect::<Vec<_>>()
        };
        Selection {
            thresholds: positions(acc.num_thresholds, &|t| {
                iou.is_none_or(|v| params.iou_thresholds[t] == v)
            }),
            areas: positions(acc.num_areas, &|a| params.area_ranges[a].label == area),
            max_dets: positions(acc.num_max_dets, &|m| Some(params.max_dets[m]) == max_det),
            categories: (0..acc.num_categories).collect(),
        }
    }

    fn for_category(mut self, k: usize) -> Self {
        self.categories = vec![k];
        self
    }

    /// Mean precision over the selection in numpy's element order, skipping -1.
    fn mean_precision(&self, acc: &Accumulated) -> f64 {
        let mut values = Vec::new();
        for &t in &self.thresholds {
            for r in 0..acc.num_recall_points {
                for &k in &self.categories {
                    for &a in &self.areas {
                        for &m in &self.max_dets {
                            values.push(acc.precision(t, r, k, a, m));
                        }
                    }
                }
            }
        }
        mean_of_valid(values)
    }

    fn mean_recall(&self, acc: &Accumulated) -> f64 {
        let mut values = Vec::new();
        for &t in &self.thresholds {
            for &k in &self.categories {
                for &a in &self.areas {
                    for &m in &self.max_dets {
                        values.push(acc.recall(t, k, a, m));
                    }
                }
            }
        }
        mean_of_valid(values)
    }
}

/// `np.mean(s[s > -1])`, or -1 when nothing is left; summed the way numpy does so the
/// result is bit-identical.
fn mean_of_valid(mut values: Vec<f64>) -> f64 {
    values.retain(|&v| v > -1.0);
    if values.is_empty() {
        -1.0
    } else {
        numpy_pairwise_sum(&values) / values.len() as f64
    }
}

/// numpy's float reduction: blocks of up to 128 summed with 8 accumulators, split in halves
/// above that.
fn numpy_pairwise_sum(v: &[f64]) -> f64 {
    let n = v.len();
    if n < 8 {
        v.iter().fold(0.0, |acc, &x| acc + x)
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&v[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                r[j] += v[i + j];
            }
            i += 8;
        }
        let mut sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &v[i..] {
            sum += x;
        }
        sum
    } else {
        let mut half = n / 2;
        half -= half % 8;
        numpy_pairwise_sum(&v[..half]) + numpy_pairwise_sum(&v[half..])
    }
}

/// The 12 COCO statistics, in pycocotools' order.
pub fn coco_stats(acc: &Accumulated, params: &EvalParams) -> [f64; 12] {
    let max_dets = |i: usize| params.max_dets.get(i).copied();
    let ap = |iou: Option<f64>, area: &str, max_det: Option<usize>| {
        Selection::new(acc, params, iou, area, max_det).mean_precision(acc)
    };
    let ar = |area: &str, max_det: Option<usize>| {
        Selection::new(acc, params, None, area, max_det).mean_recall(acc)
    };
    [
        ap(None, "all", Some(100)),
        ap(Some(0.5), "all", Some(100)),
        ap(Some(0.75), "all", Some(100)),
        ap(None, "small", max_dets(2)),
        ap(None, "medium", max_dets(2)),
        ap(None, "large", max_dets(2)),
        ar("all", max_dets(0)),
        ar("all", max_dets(1)),
        ar("all", max_dets(2)),
        ar("small", max_dets(2)),
        ar("medium", max_dets(2)),
        ar("large", max_dets(2)),
    ]
}

pub fn per_class(
    acc: &Accumulated,
    params: &EvalParams,
    gt: &GroundTruth,
    category_ids: &[i64],
    num_gt: &[usize],
) -> Vec<ClassSummary> {
    let last = params.max_dets.last().copied();
    let name_of = |id: i64| {
        gt.categories
            .iter()
            .rev()
            .find(|c| c.id == id)
            .map(|c| c.name.clone())
            .unwrap_or_default()
    };
    category_ids
        .iter()
        .enumerate()
        .map(|(k, &category_id)| {
            let select = |iou| Selection::new(acc, params, iou, "all", last).for_category(k);
            ClassSummary {
                category_id,
                name: name_of(category_id),
                ap: select(None).mean_precision(acc),
                ap50: select(Some(0.5)).mean_precision(acc),
                ap75: select(Some(0.75)).mean_precision(acc),
                ar100: select(None).mean_recall(acc),
                num_gt: num_gt[k],
            }
        })
        .collect()
}

pub fn per_size(acc: &Accumulated, params: &EvalParams) -> Vec<AreaSummary> {
    let last = params.max_dets.last().copied();
    params
        .area_ranges
        .iter()
        .filter(|range| range.label != "all")
        .map(|range| {
            let select = || Selection::new(acc, params, None, &range.label, last);
            AreaSummary {
                area: range.label.clone(),
                min_area: range.min,
                max_area: range.max,
                ap: select().mean_precision(acc),
                ar: select().mean_recall(acc),
            }
        })
        .collect()
}

pub fn pr_curves(acc: &Accumulated, params: &EvalParams, category_ids: &[i64]) -> Vec<PrCurve> {
    let area = params
        .area_ranges
        .iter()
        .position(|r| r.label == "all")
        .unwrap_or(0);
    let m = acc.num_max_dets.saturating_sub(1);
    let threshold = |v: f64| params.iou_thresholds.iter().position(|&t| t == v);
    let curve_at = |k: usize, t: Option<usize>| -> Vec<f64> {
        (0..acc.num_recall_points)
            .map(|r| t.map_or(-1.0, |t| acc.precision(t, r, k, area, m)))
            .collect()
    };
    category_ids
        .iter()
        .enumerate()
        .map(|(k, &category_id)| PrCurve {
            category_id,
            recall: params.recall_thresholds.clone(),
            precision_iou50: curve_at(k, threshold(0.5)),
            precision_iou75: curve_at(k, threshold(0.75)),
            precision_mean: (0..acc.num_recall_points)
                .map(|r| {
                    let values: Vec<f64> = (0..acc.num_thresholds)
                        .map(|t| acc.precision(t, r, k, area, m))
                        .collect();
                    mean_of_valid(values)
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_skips_missing_entries() {
        assert_eq!(mean_of_valid(vec![-1.0, 0.5, 1.0]), 0.75);
        assert_eq!(mean_of_valid(vec![-1.0, -1.0]), -1.0);
    }

    #[test]
    fn pairwise_sum_matches_plain_sum_on_exact_values() {
        let v: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        assert_eq!(numpy_pairwise_sum(&v), 499500.0);
        assert_eq!(numpy_pairwise_sum(&v[..13]), 78.0);
    }
}
