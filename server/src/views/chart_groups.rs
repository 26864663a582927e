//! Which metrics share a chart: one y-axis per unit. Each [`ChartGroup`] selects keys that
//! measure the same thing (losses, a learning rate, counts per step, fractions, seconds); a
//! group with more than [`MAX_SERIES`] members is drawn as several charts, so every chart keeps
//! distinct colours and a legend that reads.

use super::chart_view::{ChartQuery, XMap};
use crate::plots::{self, Labels};
use crate::serving::live_series::LiveSeries;

/// Most series one chart draws.
pub const MAX_SERIES: usize = 4;

/// Which keys a group draws.
#[derive(Clone, Copy)]
pub enum Select {
    /// Every key starting with it (a new loss term joins its chart without naming it here).
    Prefix(&'static str),
    /// Exactly these keys.
    Keys(&'static [&'static str]),
}

impl Select {
    fn matches(&self, key: &str) -> bool {
        match self {
            Select::Prefix(p) => key.starts_with(p),
            Select::Keys(keys) => keys.contains(&key),
        }
    }
}

/// Metrics drawn in one chart (or several, past [`MAX_SERIES`]).
#[derive(Clone, Copy)]
pub struct ChartGroup {
    pub id: &'static str,
    pub title: &'static str,
    pub select: Select,
    /// The y-axis title: the unit the members share.
    pub y_label: &'static str,
    /// What the step of these keys counts when it is not an optimizer step (the proposals job
    /// logs recall with the number of boxes per image as the step): a fixed x axis.
    pub x_fixed: Option<&'static str>,
}

const fn group(
    id: &'static str,
    title: &'static str,
    select: Select,
    y: &'static str,
) -> ChartGroup {
    ChartGroup {
        id,
        title,
        select,
        y_label: y,
        x_fixed: None,
    }
}

pub const LOSS_CHART: ChartGroup = group("loss", "Training loss", Select::Prefix("loss/"), "loss");

pub const LR_CHART: ChartGroup = group(
    "lr",
    "Learning rate",
    Select::Keys(&["train/lr"]),
    "learning rate",
);

/// How far each step moves the weights (the training-health `stalled` check reads it).
const UPDATE_CHART: ChartGroup = group(
    "update-ratio",
    "Weight update per step, relative to the weights (‖Δw‖ / ‖w‖)",
    Select::Keys(&["train/update_ratio"]),
    "ratio",
);

/// Images per second of each evaluation (periodic and final).
const EVAL_SPEED_CHART: ChartGroup = group(
    "eval-speed",
    "Evaluation speed",
    Select::Keys(&["evaluation/images_per_s"]),
    "images/s",
);

/// Step timings in milliseconds, and the loader's wait.
const TIMING_CHART: ChartGroup = group(
    "timings",
    "Time per step",
    Select::Keys(&[
        "time/forward_ms",
        "time/backward_update_ms",
        "train/data_wait_ms",
        "time/online_forward_ms",
        "time/momentum_forward_ms",
    ]),
    "milliseconds",
);

/// `pretrain/*` diagnostics by what they measure: sample counts, retrieval accuracy against
/// its chance level, the losses an untrained model would score, unitless health ratios, and a
/// catch-all for diagnostics added later.
const DIAGNOSTICS: [ChartGroup; 5] = [
    group(
        "pretrain-counts",
        "Pre-training diagnostics: samples per step",
        Select::Keys(&[
            "pretrain/positives",
            "pretrain/negatives",
            "pretrain/instances",
        ]),
        "count per step",
    ),
    group(
        "pretrain-retrieval",
        "Pre-training diagnostics: cross-view retrieval vs chance",
        Select::Keys(&["pretrain/top1_retrieval", "pretrain/top1_chance"]),
        "fraction of queries",
    ),
    group(
        "pretrain-reference-losses",
        "Pre-training diagnostics: what an untrained model would score",
        Select::Keys(&["pretrain/contrastive_chance", "pretrain/regression_zero"]),
        "loss",
    ),
    group(
        "pretrain-health",
        "Pre-training diagnostics: representation health (ratios)",
        Select::Keys(&[
            "pretrain/embedding_spread",
            "pretrain/weight_change",
            "pretrain/box_head_active",
        ]),
        "ratio",
    ),
    group(
        "pretrain",
        "Pre-training diagnostics: other",
        Select::Prefix("pretrain/"),
        "value",
    ),
];

/// `pretrain_box` curves: loss terms, learning rate, the momentum detector's EMA coefficient,
/// the diagnostics by unit, step timings.
pub const PRETRAIN_BOX_CHARTS: [ChartGroup; 10] = [
    group(
        "loss",
        "Pre-training loss (box-level contrastive, regression, …)",
        Select::Prefix("loss/"),
        "loss",
    ),
    LR_CHART,
    group(
        "ema-momentum",
        "EMA momentum of the momentum detector",
        Select::Keys(&["train/ema_momentum"]),
        "momentum",
    ),
    DIAGNOSTICS[0],
    DIAGNOSTICS[1],
    DIAGNOSTICS[2],
    DIAGNOSTICS[3],
    DIAGNOSTICS[4],
    UPDATE_CHART,
    TIMING_CHART,
];

/// `pretrain_image` curves: the InfoNCE loss, instance-discrimination accuracy, learning rate.
pub const PRETRAIN_IMAGE_CHARTS: [ChartGroup; 7] = [
    group(
        "loss",
        "Pre-training loss (InfoNCE)",
        Select::Prefix("loss/"),
        "loss",
    ),
    group(
        "accuracy",
        "Instance-discrimination accuracy (positive key ranked first)",
        Select::Keys(&["train/accuracy"]),
        "fraction of queries",
    ),
    LR_CHART,
    DIAGNOSTICS[3],
    DIAGNOSTICS[4],
    UPDATE_CHART,
    TIMING_CHART,
];

/// A fine-tune's update ratio, timings and evaluation speed (its loss, AP and learning rate are
/// drawn by `finetune_charts`).
pub const FINETUNE_CHARTS: [ChartGroup; 3] = [UPDATE_CHART, TIMING_CHART, EVAL_SPEED_CHART];

/// Reported for the run page's status line, not drawn (see `run_live`).
pub const EVAL_PROGRESS: &str = "evaluation/progress";

const BOXES_PER_IMAGE: &str = "pseudo-boxes per image";

const fn recall(
    id: &'static str,
    title: &'static str,
    keys: &'static [&'static str],
) -> ChartGroup {
    ChartGroup {
        id,
        title,
        select: Select::Keys(keys),
        y_label: "recall of ground-truth boxes",
        x_fixed: Some(BOXES_PER_IMAGE),
    }
}

/// A proposals run: recall against the number of pseudo-boxes per image (the step of these
/// keys), per object size, for the kept boxes and for all boxes before filtering (three
/// series each: recall at IoU 0.5 and 0.7, and AR), and the job's progress.
pub const PROPOSALS_CHARTS: [ChartGroup; 9] = [
    recall(
        "recall",
        "Recall, kept pseudo-boxes",
        &["recall/iou50", "recall/iou70", "recall/ar"],
    ),
    recall(
        "recall-small",
        "Recall, kept pseudo-boxes: small objects",
        &[
            "recall/iou50/small",
            "recall/iou70/small",
            "recall/ar/small",
        ],
    ),
    recall(
        "recall-medium",
        "Recall, kept pseudo-boxes: medium objects",
        &[
            "recall/iou50/medium",
            "recall/iou70/medium",
            "recall/ar/medium",
        ],
    ),
    recall(
        "recall-large",
        "Recall, kept pseudo-boxes: large objects",
        &[
            "recall/iou50/large",
            "recall/iou70/large",
            "recall/ar/large",
        ],
    ),
    recall(
        "recall-all",
        "Recall, all boxes before filtering",
        &["recall_all/iou50", "recall_all/iou70", "recall_all/ar"],
    ),
    recall(
        "recall-all-small",
        "Recall, all boxes: small objects",
        &[
            "recall_all/iou50/small",
            "recall_all/iou70/small",
            "recall_all/ar/small",
        ],
    ),
    recall(
        "recall-all-medium",
        "Recall, all boxes: medium objects",
        &[
            "recall_all/iou50/medium",
            "recall_all/iou70/medium",
            "recall_all/ar/medium",
        ],
    ),
    recall(
        "recall-all-large",
        "Recall, all boxes: large objects",
        &[
            "recall_all/iou50/large",
            "recall_all/iou70/large",
            "recall_all/ar/large",
        ],
    ),
    ChartGroup {
        id: "progress",
        title: "Images done",
        select: Select::Keys(&["progress/images_done"]),
        y_label: "fraction of the images",
        x_fixed: Some("images done"),
    },
];

/// What every chart of a run page shares: the curves, the reader's view, the x axis.
pub struct ChartContext<'a> {
    pub curves: &'a LiveSeries,
    pub query: &'a ChartQuery,
    pub xmap: &'a XMap,
}

impl ChartContext<'_> {
    /// One metric as chart points on the chosen x axis (or, for keys whose step counts
    /// something else, `x_fixed`), noting the key as drawn.
    pub fn series(
        &self,
        key: &str,
        x_fixed: Option<&str>,
        used: &mut Vec<String>,
    ) -> Vec<(f64, f64)> {
        used.push(key.to_string());
        let pts = self.curves.points(key);
        if x_fixed.is_some() {
            pts
        } else {
            self.xmap.apply(&pts)
        }
    }

    /// A chart of `series`, drawn once per snapshot and view: (id, SVG).
    pub fn chart(
        &self,
        id: &str,
        title: &str,
        x_fixed: Option<&str>,
        y_label: &str,
        series: &[(String, Vec<(f64, f64)>)],
    ) -> (String, String) {
        let x = x_fixed.unwrap_or(self.query.x.label());
        let names: Vec<&String> = series.iter().map(|s| &s.0).collect();
        let memo = format!("{id}:{title}:{x}:{y_label}:{names:?}:{}", self.query.key());
        let labels = Labels {
            title,
            x,
            y: y_label,
        };
        let svg = self.curves.chart(&memo, || {
            plots::line_chart_with(&labels, series, self.query.view)
        });
        (id.to_string(), svg)
    }
}

/// One chart per group that has metrics (several past [`MAX_SERIES`]), skipping keys already
/// drawn; a group's `…/total` comes first so it keeps the first colour whatever the terms are
/// called.
pub fn grouped_charts(
    ctx: &ChartContext<'_>,
    keys: &[(String, i64)],
    groups: &[ChartGroup],
    used: &mut Vec<String>,
) -> Vec<(String, String)> {
    let mut charts = Vec::new();
    for g in groups {
        let mut members: Vec<&str> = keys
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| g.select.matches(k))
            .filter(|k| !used.iter().any(|u| u == k))
            .collect();
        members.sort_by_key(|k| (!k.ends_with("/total"), *k));
        let chunks: Vec<&[&str]> = members.chunks(MAX_SERIES).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let series: Vec<(String, Vec<(f64, f64)>)> = chunk
                .iter()
                .map(|k| (k.to_string(), ctx.series(k, g.x_fixed, used)))
                .collect();
            let (id, title) = if chunks.len() == 1 {
                (g.id.to_string(), g.title.to_string())
            } else {
                (
                    format!("{}-{}", g.id, i + 1),
                    format!("{} ({} of {})", g.title, i + 1, chunks.len()),
                )
            };
            charts.push(ctx.chart(&id, &title, g.x_fixed, g.y_label, &series));
        }
    }
    charts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_diagnostic_has_a_unit_group_of_at_most_four() {
        for g in PRETRAIN_BOX_CHARTS.iter().chain(&PROPOSALS_CHARTS) {
            if let Select::Keys(k) = g.select {
                assert!(k.len() <= MAX_SERIES || g.id == "timings", "{}", g.id);
            }
        }
        // The keys the trainer logs are taken by a group before the catch-all.
        for key in [
            "pretrain/positives",
            "pretrain/top1_chance",
            "pretrain/regression_zero",
            "pretrain/weight_change",
        ] {
            let first = PRETRAIN_BOX_CHARTS
                .iter()
                .find(|g| g.select.matches(key))
                .unwrap();
            assert_ne!(first.id, "pretrain", "{key}");
        }
    }
}
