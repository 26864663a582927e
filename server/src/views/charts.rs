//! A run's live charts: metrics grouped into one chart per [`ChartGroup`] (loss terms, learning
//! rate, diagnostics), and a fine-tune's AP curves and evaluation history.

use super::finetune::finetune_config;
use crate::db;
use crate::db::runs::RunRow;
use crate::error::PageError;
use crate::numbers::coco_stat;
use crate::plots;
use crate::serving::live_series::LiveSeries;
use crate::state::AppState;

/// A fine-tune run's curves, grouped (one chart for every loss term, one for AP at the periodic
/// evaluations, one for the learning rate) and its evaluation history. Returns the charts, the
/// history rows and the metric keys used, which the generic per-key charts then skip.
pub async fn finetune_charts(
    s: &AppState,
    run: &RunRow,
    keys: &[(String, i64)],
    curves: &LiveSeries,
) -> Result<(Vec<(String, String)>, Vec<(i64, Vec<String>)>, Vec<String>), PageError> {
    use aligndet_common::report::COCO_STAT_NAMES;
    let val_split = finetune_config(run)
        .map(|c| c.val_split)
        .unwrap_or_else(|| "val".into());
    let mut used: Vec<String> = Vec::new();
    let mut charts = grouped_charts(
        curves,
        keys,
        &[ChartGroup {
            id: "loss",
            title: "Training loss",
            prefix: "loss/",
        }],
        &mut used,
    );
    let has = |k: &str| keys.iter().any(|(key, _)| key == k);
    let mut ap = Vec::new();
    for stat in ["AP", "AP50", "AP75"] {
        let key = format!("eval/{stat}");
        if has(&key) {
            ap.push((stat.to_string(), float_series(curves, &key, &mut used)));
        }
    }
    if !ap.is_empty() {
        let title = format!("COCO AP on {val_split} at each evaluation");
        let id = format!(
            "eval-ap:{title}:{:?}",
            ap.iter().map(|a| &a.0).collect::<Vec<_>>()
        );
        charts.push((
            "eval-ap".to_string(),
            curves.chart(&id, || plots::line_chart(&title, "optimizer step", &ap)),
        ));
    }
    charts.extend(grouped_charts(curves, keys, &[LR_CHART], &mut used));
    // Every evaluation step, with whichever of the 12 statistics it reported.
    let mut history: std::collections::BTreeMap<i64, Vec<Option<f64>>> = Default::default();
    for (i, stat) in COCO_STAT_NAMES.iter().enumerate() {
        let key = format!("eval/{stat}");
        if !has(&key) {
            continue;
        }
        if !used.contains(&key) {
            used.push(key.clone());
        }
        for (step, v) in db::runs::metric_series(&s.pool, run.id, &key).await? {
            history
                .entry(step)
                .or_insert_with(|| vec![None; COCO_STAT_NAMES.len()])[i] = Some(v);
        }
    }
    let rows = history
        .into_iter()
        .map(|(step, cells)| {
            (
                step,
                cells
                    .into_iter()
                    .map(|v| v.map(coco_stat).unwrap_or_default())
                    .collect(),
            )
        })
        .collect();
    Ok((charts, rows, used))
}

/// Metrics drawn in one chart: the key `prefix`, or every key starting with it when it ends
/// in `/` (so a new loss term or diagnostic joins its chart without naming it here).
pub struct ChartGroup {
    pub id: &'static str,
    pub title: &'static str,
    pub prefix: &'static str,
}

pub const LR_CHART: ChartGroup = ChartGroup {
    id: "lr",
    title: "Learning rate",
    prefix: "train/lr",
};

/// `pretrain_box` curves: every loss term (contrastive, regression, centerness, RPN, …), the
/// learning rate, the momentum detector's EMA coefficient, and the `pretrain/*` diagnostics.
pub const PRETRAIN_BOX_CHARTS: [ChartGroup; 4] = [
    ChartGroup {
        id: "loss",
        title: "Pre-training loss (box-level contrastive, regression, …)",
        prefix: "loss/",
    },
    LR_CHART,
    ChartGroup {
        id: "ema-momentum",
        title: "EMA momentum of the momentum detector",
        prefix: "train/ema_momentum",
    },
    ChartGroup {
        id: "pretrain",
        title: "Pre-training diagnostics",
        prefix: "pretrain/",
    },
];

/// `pretrain_image` curves: the InfoNCE loss, instance-discrimination accuracy, learning rate.
pub const PRETRAIN_IMAGE_CHARTS: [ChartGroup; 4] = [
    ChartGroup {
        id: "loss",
        title: "Pre-training loss (InfoNCE)",
        prefix: "loss/",
    },
    ChartGroup {
        id: "accuracy",
        title: "Instance-discrimination accuracy (positive key ranked first)",
        prefix: "train/accuracy",
    },
    LR_CHART,
    ChartGroup {
        id: "pretrain",
        title: "Pre-training diagnostics",
        prefix: "pretrain/",
    },
];

/// One chart per group that has metrics, skipping keys already drawn; a group's `…/total`
/// comes first so it keeps the first colour whatever the terms are called.
pub fn grouped_charts(
    curves: &LiveSeries,
    keys: &[(String, i64)],
    groups: &[ChartGroup],
    used: &mut Vec<String>,
) -> Vec<(String, String)> {
    let mut charts = Vec::new();
    for g in groups {
        let mut members: Vec<&str> = keys
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| {
                if g.prefix.ends_with('/') {
                    k.starts_with(g.prefix)
                } else {
                    *k == g.prefix
                }
            })
            .filter(|k| !used.iter().any(|u| u == k))
            .collect();
        members.sort_by_key(|k| (!k.ends_with("/total"), *k));
        let mut series = Vec::new();
        for key in members {
            series.push((key.to_string(), float_series(curves, key, used)));
        }
        if !series.is_empty() {
            let members: Vec<&String> = series.iter().map(|s| &s.0).collect();
            let id = format!("group:{}:{}:{members:?}", g.id, g.title);
            charts.push((
                g.id.to_string(),
                curves.chart(&id, || {
                    plots::line_chart(g.title, "optimizer step", &series)
                }),
            ));
        }
    }
    charts
}

/// One metric as chart points (downsampled: `serving::live_series`), noting the key as drawn.
fn float_series(curves: &LiveSeries, key: &str, used: &mut Vec<String>) -> Vec<(f64, f64)> {
    used.push(key.to_string());
    curves.points(key)
}
