//! What a run's page shows of an `eval.json` (an `evaluate` run's, or a fine-tune's final
//! evaluation): the 12 COCO statistics, precision-recall charts, per-class and per-size rows.

use crate::plots;
use aligndet_common::report::{ClassResult, SizeResult};

/// What the run page shows of an `evaluate` run's `eval.json`.
pub struct EvalView {
    pub stats: Vec<(&'static str, f64)>,
    pub report: aligndet_common::report::EvaluationReport,
    pub pr_mean_chart: String,
    pub pr_class_chart: String,
    /// (class name, GT boxes, formatted AP, AP50, AP75, AR100)
    pub class_rows: Vec<(String, usize, Vec<String>)>,
    /// (area range, formatted AP, formatted AR)
    pub size_rows: Vec<(String, String, String)>,
    /// Mask AP beside the box AP above, when the detections carried masks.
    pub segm: Option<SegmView>,
}

/// The mask statistics of an `eval.json`, in the rows the box statistics have.
pub struct SegmView {
    pub stats: Vec<(&'static str, f64)>,
    pub class_rows: Vec<(String, usize, Vec<String>)>,
    pub size_rows: Vec<(String, String, String)>,
}

fn named_stats(stats: &[f64]) -> Vec<(&'static str, f64)> {
    aligndet_common::report::COCO_STAT_NAMES
        .iter()
        .copied()
        .zip(stats.iter().copied())
        .collect()
}

fn class_rows(per_class: &[ClassResult]) -> Vec<(String, usize, Vec<String>)> {
    per_class
        .iter()
        .map(|c| {
            let cells = [c.ap, c.ap50, c.ap75, c.ar100]
                .into_iter()
                .map(crate::numbers::coco_stat)
                .collect();
            (c.name.clone(), c.num_gt, cells)
        })
        .collect()
}

fn size_rows(per_size: &[SizeResult]) -> Vec<(String, String, String)> {
    per_size
        .iter()
        .map(|s| {
            (
                s.area.clone(),
                crate::numbers::coco_stat(s.ap),
                crate::numbers::coco_stat(s.ar),
            )
        })
        .collect()
}

/// The evaluation section of a run page.
pub fn eval_view(report: aligndet_common::report::EvaluationReport) -> EvalView {
    let recall_axis = |p: &[f64]| -> Vec<(f64, f64)> {
        p.iter()
            .enumerate()
            .filter(|(_, v)| **v >= 0.0)
            .map(|(i, v)| (i as f64 / 100.0, *v))
            .collect()
    };
    // Mean over classes (skipping undefined points, as pycocotools does for the summary).
    let mut mean_series = Vec::new();
    for (iou, label) in [
        (Some(0.5), "IoU 0.5"),
        (Some(0.75), "IoU 0.75"),
        (None, "IoU 0.5:0.95"),
    ] {
        let curves: Vec<&Vec<f64>> = report
            .pr_curves
            .iter()
            .filter(|c| c.iou == iou)
            .map(|c| &c.precision)
            .collect();
        if curves.is_empty() {
            continue;
        }
        let mean: Vec<f64> = (0..101)
            .map(|i| {
                let vals: Vec<f64> = curves
                    .iter()
                    .filter_map(|c| c.get(i).copied())
                    .filter(|v| *v >= 0.0)
                    .collect();
                if vals.is_empty() {
                    -1.0
                } else {
                    vals.iter().sum::<f64>() / vals.len() as f64
                }
            })
            .collect();
        mean_series.push((label.to_string(), recall_axis(&mean)));
    }
    let class_series: Vec<(String, Vec<(f64, f64)>)> = report
        .pr_curves
        .iter()
        .filter(|c| c.iou == Some(0.5))
        .take(6)
        .map(|c| (c.name.clone(), recall_axis(&c.precision)))
        .collect();
    EvalView {
        class_rows: class_rows(&report.per_class),
        size_rows: size_rows(&report.per_size),
        segm: report.segm.as_ref().map(|m| SegmView {
            stats: named_stats(&m.stats),
            class_rows: class_rows(&m.per_class),
            size_rows: size_rows(&m.per_size),
        }),
        stats: named_stats(&report.stats),
        pr_mean_chart: plots::line_chart(
            "Precision-recall (mean over classes)",
            "recall",
            &mean_series,
        ),
        pr_class_chart: plots::line_chart(
            "Precision-recall at IoU 0.5 (per class)",
            "recall",
            &class_series,
        ),
        report,
    }
}
