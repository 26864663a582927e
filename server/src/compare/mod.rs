//! Comparing any set of runs (`/compare`): pure computation, no database. The route
//! (`routes::compare`) loads configs, metrics and `eval.json` into [`RunData`]; [`compare`] groups
//! the runs into arms (seeds of one setting), summarises the final numbers per arm (mean ± std,
//! n), the deltas against a baseline arm (paired per seed where both arms ran the same seeds),
//! the convergence speed and the config paths whose values differ.
//!
//! - [`configs`]: flattening, normalising and diffing configs into arms;
//! - [`stats`]: crossings and mean curves (means and deltas: [`crate::stats`]);
//! - [`comparison`]: [`compare`] itself and the result it returns.

pub mod comparison;
pub mod configs;
pub mod roles;
pub mod stats;
#[cfg(test)]
mod tests;

pub use comparison::*;
pub use configs::*;
pub use roles::*;
pub use stats::*;

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Most runs one comparison takes.
pub const MAX_RUNS: usize = 50;
/// The final statistics compared (COCO order).
pub const COMPARED_STATS: [&str; 6] = ["AP", "AP50", "AP75", "APs", "APm", "APl"];
pub const DEFAULT_FRACTIONS: [f64; 3] = [0.5, 0.75, 0.9];
/// Evaluations a run needs before its curve says anything about convergence speed.
pub const MIN_EVALS: usize = 3;

/// What the x axis of the curves measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XAxis {
    Step,
    Epoch,
    Images,
    Wall,
}

impl XAxis {
    pub const ALL: [XAxis; 4] = [XAxis::Step, XAxis::Epoch, XAxis::Images, XAxis::Wall];
    pub fn parse(s: &str) -> Option<XAxis> {
        Some(match s {
            "step" => XAxis::Step,
            "epoch" => XAxis::Epoch,
            "images" => XAxis::Images,
            "wall" => XAxis::Wall,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            XAxis::Step => "step",
            XAxis::Epoch => "epoch",
            XAxis::Images => "images",
            XAxis::Wall => "wall",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            XAxis::Step => "optimizer step",
            XAxis::Epoch => "epoch (images seen / train split size)",
            XAxis::Images => "images seen (step × batch size)",
            XAxis::Wall => "seconds since the run's first metric",
        }
    }
}

/// The query of `/compare` (page and API), validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareParams {
    /// Distinct run ids in the order given.
    pub runs: Vec<i64>,
    /// Arm index of the baseline (checked against the arms later).
    pub baseline: Option<usize>,
    pub x: XAxis,
    pub fractions: Vec<f64>,
}

/// Parse a raw query string: `runs=1,2,3` and/or `runs=1&runs=2`, `baseline=<arm index>`,
/// `x=step|epoch|images|wall`, `fractions=0.5,0.9`. The error names the problem.
pub fn parse_params(raw: &str) -> Result<CompareParams, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw).map_err(|e| format!("unreadable query string: {e}"))?;
    let mut runs: Vec<i64> = Vec::new();
    let mut baseline = None;
    let mut x = XAxis::Step;
    let mut fractions = DEFAULT_FRACTIONS.to_vec();
    for (k, v) in &pairs {
        match k.as_str() {
            "runs" => {
                for tok in v.split([',', ' ', '\t', '\n']).map(str::trim) {
                    if tok.is_empty() {
                        continue;
                    }
                    let id: i64 = tok
                        .parse()
                        .map_err(|_| format!("run id {tok:?} is not a number"))?;
                    if !runs.contains(&id) {
                        runs.push(id);
                    }
                }
            }
            "baseline" if !v.trim().is_empty() => {
                baseline = Some(
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| format!("baseline {v:?} is not an arm index (0, 1, …)"))?,
                );
            }
            "x" if !v.trim().is_empty() => {
                x = XAxis::parse(v.trim()).ok_or_else(|| {
                    format!("x axis {v:?} is not one of step, epoch, images, wall")
                })?;
            }
            "fractions" if !v.trim().is_empty() => {
                let mut fs = Vec::new();
                for tok in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    let f: f64 = tok
                        .parse()
                        .ok()
                        .filter(|f: &f64| f.is_finite() && *f > 0.0 && *f <= 1.5)
                        .ok_or_else(|| format!("fraction {tok:?} is not a number in (0, 1.5]"))?;
                    fs.push(f);
                }
                if fs.is_empty() || fs.len() > 10 {
                    return Err("give 1 to 10 fractions, e.g. fractions=0.5,0.75,0.9".into());
                }
                fractions = fs;
            }
            _ => {}
        }
    }
    if runs.is_empty() {
        return Err("no runs given: name them as /compare?runs=12,15,18".into());
    }
    if runs.len() > MAX_RUNS {
        return Err(format!(
            "{} runs given; at most {MAX_RUNS} can be compared at once",
            runs.len()
        ));
    }
    Ok(CompareParams {
        runs,
        baseline,
        x,
        fractions,
    })
}

/// One evaluation point of a run's `eval/AP` curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EvalPoint {
    pub step: i64,
    pub value: f64,
    /// Seconds since the run's first metric point.
    pub wall: f64,
}

/// Per-class AP of a run's final evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassAp {
    pub category_id: i64,
    pub name: String,
    pub ap: f64,
}

/// Where a run's final numbers came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSource {
    EvalJson,
    LastEvalPoint,
    None,
}

/// Everything the comparison needs of one run.
#[derive(Debug, Clone)]
pub struct RunData {
    pub id: i64,
    pub name: String,
    pub kind: String,
    /// `runs.experiment_role` of a run made by an experiment.
    pub experiment_role: Option<String>,
    pub config: Value,
    pub batch_size: Option<u32>,
    /// Images in the run's training split (for epochs).
    pub train_images: Option<usize>,
    /// Final statistics by name (`AP`, `AP50`, …), undefined ones left out.
    pub finals: BTreeMap<String, f64>,
    pub final_source: FinalSource,
    /// Final mask statistics by the same names (empty for box-only runs).
    pub mask_finals: BTreeMap<String, f64>,
    pub per_class: Vec<ClassAp>,
    pub eval_ap: Vec<EvalPoint>,
}

impl RunData {
    /// The final box statistics, or with `mask` the mask statistics.
    pub fn finals_of(&self, mask: bool) -> &BTreeMap<String, f64> {
        if mask {
            &self.mask_finals
        } else {
            &self.finals
        }
    }
    /// Images seen after `step` optimizer steps.
    pub fn images_at(&self, step: f64) -> Option<f64> {
        self.batch_size.map(|b| step * b as f64)
    }
    /// Epochs after `step` optimizer steps.
    pub fn epoch_at(&self, step: f64) -> Option<f64> {
        let n = self.train_images.filter(|n| *n > 0)?;
        Some(self.images_at(step)? / n as f64)
    }
    /// The x coordinate of a point on the chosen axis (`None` where the run lacks what it needs).
    pub fn x_of(&self, axis: XAxis, step: i64, wall: f64) -> Option<f64> {
        match axis {
            XAxis::Step => Some(step as f64),
            XAxis::Images => self.images_at(step as f64),
            XAxis::Epoch => self.epoch_at(step as f64),
            XAxis::Wall => Some(wall),
        }
    }
}

/// A run's final box numbers: `eval.json`'s 12 statistics when present (−1 = undefined, left
/// out), else the last point of each `eval/<stat>` series.
pub fn final_stats(
    eval_json_stats: Option<&[f64]>,
    last_points: &BTreeMap<String, f64>,
) -> (BTreeMap<String, f64>, FinalSource) {
    finals_of(eval_json_stats, last_points, "eval/")
}

/// The prefix of the mask statistics: metric `eval/segm_AP`, and `segm_AP` where box and mask
/// numbers share one map (the experiment API's `eval`).
pub const MASK_PREFIX: &str = "segm_";

/// A run's final mask numbers (Mask R-CNN), by the rules of [`final_stats`]: `eval.json`'s
/// `segm.stats` when present, else the last point of each `eval/segm_<stat>` series; empty
/// with [`FinalSource::None`] for a box-only run.
pub fn final_mask_stats(
    eval_json_segm_stats: Option<&[f64]>,
    last_points: &BTreeMap<String, f64>,
) -> (BTreeMap<String, f64>, FinalSource) {
    finals_of(
        eval_json_segm_stats,
        last_points,
        &format!("eval/{MASK_PREFIX}"),
    )
}

fn finals_of(
    eval_json_stats: Option<&[f64]>,
    last_points: &BTreeMap<String, f64>,
    prefix: &str,
) -> (BTreeMap<String, f64>, FinalSource) {
    use aligndet_common::report::COCO_STAT_NAMES;
    if let Some(stats) = eval_json_stats {
        let m: BTreeMap<String, f64> = COCO_STAT_NAMES
            .iter()
            .zip(stats)
            .filter(|(_, v)| **v >= 0.0 && v.is_finite())
            .map(|(n, v)| (n.to_string(), *v))
            .collect();
        return (m, FinalSource::EvalJson);
    }
    let m: BTreeMap<String, f64> = COCO_STAT_NAMES
        .iter()
        .filter_map(|n| {
            last_points
                .get(&format!("{prefix}{n}"))
                .filter(|v| **v >= 0.0 && v.is_finite())
                .map(|v| (n.to_string(), *v))
        })
        .collect();
    if m.is_empty() {
        (m, FinalSource::None)
    } else {
        (m, FinalSource::LastEvalPoint)
    }
}
