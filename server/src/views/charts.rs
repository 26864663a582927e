//! A fine-tune run's charts (loss terms, AP at the periodic evaluations, learning rate) and its
//! evaluation history; the groups of the other kinds are in [`super::chart_groups`].

use super::finetune::finetune_config;
use crate::db;
use crate::db::runs::RunRow;
use crate::error::PageError;
use crate::numbers::coco_stat;
use crate::state::AppState;

pub use super::chart_groups::*;

/// The metric key prefixes of the periodic evaluations: box AP (`eval/AP`) and, for detectors
/// with masks, mask AP (`eval/segm_AP`).
const BOX_EVAL: &str = "eval/";
const MASK_EVAL: &str = "eval/segm_";

/// A fine-tune run's evaluations during training: (step, cells) with the 12 box statistics,
/// then the 12 mask statistics when the run logged mask AP.
#[derive(Default)]
pub struct EvalHistory {
    pub rows: Vec<(i64, Vec<String>)>,
    pub masks: bool,
}

/// A fine-tune run's curves, grouped (one chart for every loss term, one for box AP and one for
/// mask AP at the periodic evaluations, one for the learning rate) and its evaluation history.
/// Returns the charts, the history and the metric keys used, which the generic per-key charts
/// then skip.
pub async fn finetune_charts(
    s: &AppState,
    run: &RunRow,
    keys: &[(String, i64)],
    ctx: &ChartContext<'_>,
) -> Result<(Vec<(String, String)>, EvalHistory, Vec<String>), PageError> {
    use aligndet_common::report::COCO_STAT_NAMES;
    let val_split = finetune_config(run)
        .map(|c| c.val_split)
        .unwrap_or_else(|| "val".into());
    let mut used: Vec<String> = Vec::new();
    let mut charts = grouped_charts(ctx, keys, &[LOSS_CHART], &mut used);
    let has = |k: &str| keys.iter().any(|(key, _)| key == k);
    for (prefix, id, what) in [
        (BOX_EVAL, "eval-ap", "COCO AP"),
        (MASK_EVAL, "eval-mask-ap", "COCO mask AP"),
    ] {
        let mut ap = Vec::new();
        for stat in ["AP", "AP50", "AP75"] {
            let key = format!("{prefix}{stat}");
            if has(&key) {
                ap.push((stat.to_string(), ctx.series(&key, None, &mut used)));
            }
        }
        if !ap.is_empty() {
            let title = format!("{what} on {val_split} at each evaluation");
            charts.push(ctx.chart(id, &title, None, "AP (fraction)", &ap));
        }
    }
    charts.extend(grouped_charts(ctx, keys, &[LR_CHART], &mut used));
    // Every evaluation step, with whichever of the 12 statistics it reported (box, then mask).
    let masks = COCO_STAT_NAMES
        .iter()
        .any(|stat| has(&format!("{MASK_EVAL}{stat}")));
    let prefixes: &[&str] = if masks {
        &[BOX_EVAL, MASK_EVAL]
    } else {
        &[BOX_EVAL]
    };
    let width = COCO_STAT_NAMES.len() * prefixes.len();
    let mut history: std::collections::BTreeMap<i64, Vec<Option<f64>>> = Default::default();
    for (p, prefix) in prefixes.iter().enumerate() {
        for (i, stat) in COCO_STAT_NAMES.iter().enumerate() {
            let key = format!("{prefix}{stat}");
            if !has(&key) {
                continue;
            }
            if !used.contains(&key) {
                used.push(key.clone());
            }
            for (step, v) in db::runs::metric_series(&s.pool, run.id, &key).await? {
                history.entry(step).or_insert_with(|| vec![None; width])
                    [p * COCO_STAT_NAMES.len() + i] = Some(v);
            }
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
    Ok((charts, EvalHistory { rows, masks }, used))
}
