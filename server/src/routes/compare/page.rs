//! The comparison page's view: arms named by role, AP ×100 with spreads and paired deltas with
//! their 95% confidence intervals, curves, convergence and config differences.

use super::{CHARTS, Loaded, Series};
use crate::compare::{self, Arm, ArmStat, CompareParams, Comparison, DiffRow, RunSummary, XAxis};
use crate::numbers::{self, filters};
use crate::plots::{self, OverlayLine};
use crate::views::chart_view::smooth_field;
use aligndet_common::artifacts;
use askama::Template;

struct ArmView {
    index: usize,
    color: String,
    label: String,
    subtitle: String,
    meaning: &'static str,
    fields: Vec<(String, String)>,
    runs: Vec<(i64, String)>,
    is_baseline: bool,
}

struct Cell {
    value: String,
    n: usize,
    delta: String,
    /// `up` / `down` / empty: the sign of the delta.
    delta_class: &'static str,
}

/// One line of the answer at the top: an arm against the baseline on AP.
struct Verdict {
    color: String,
    label: String,
    baseline: String,
    delta: String,
    delta_class: &'static str,
}

struct TableRow {
    name: String,
    cells: Vec<Cell>,
}

struct RunHead {
    id: i64,
    name: String,
    arm_label: String,
    color: String,
    source: &'static str,
}

struct ConvRunRow {
    id: i64,
    name: String,
    arm: usize,
    color: String,
    cells: Vec<String>,
}

struct ConvArmRow {
    arm: usize,
    color: String,
    label: String,
    cells: Vec<String>,
}

#[derive(Template)]
#[template(path = "compare.html")]
pub(super) struct ComparePage {
    runs_param: String,
    x: String,
    /// The charts' view: log axes and the smoothing weight as typed back (empty for none).
    log_x: bool,
    log_y: bool,
    smooth: String,
    x_options: Vec<(String, String)>,
    fractions_param: String,
    baseline: usize,
    arms: Vec<ArmView>,
    heads: Vec<RunHead>,
    charts: Vec<(String, String)>,
    stat_rows: Vec<TableRow>,
    class_rows: Vec<TableRow>,
    fraction_heads: Vec<String>,
    baseline_final_ap: String,
    conv_runs: Vec<ConvRunRow>,
    conv_arms: Vec<ConvArmRow>,
    diff_rows: Vec<(String, Vec<String>)>,
    notes: Vec<String>,
    verdicts: Vec<Verdict>,
    baseline_label: String,
}

/// `up` / `down` / empty: the sign of a delta, for its colour.
fn sign_class(v: f64) -> &'static str {
    if v > 0.0 {
        "up"
    } else if v < 0.0 {
        "down"
    } else {
        ""
    }
}

fn cell(a: &ArmStat) -> Cell {
    let value = numbers::ap_spread(&a.summary);
    let (delta, delta_class) = match &a.delta {
        Some(d) => (numbers::ap_delta(d), sign_class(d.mean)),
        None => (String::new(), ""),
    };
    Cell {
        value,
        n: a.summary.n,
        delta,
        delta_class,
    }
}

fn short(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The y-axis title of a compared key.
fn y_label_of(key: &str) -> &'static str {
    if key.starts_with("eval/") {
        "AP (fraction)"
    } else {
        "loss"
    }
}

fn chart_lines(l: &Loaded, key: &str, axis: XAxis, skipped: &mut Vec<i64>) -> Vec<OverlayLine> {
    let mut lines = Vec::new();
    for arm in &l.cmp.arms {
        let mut arm_curves: Vec<Series> = Vec::new();
        let mut complete = true;
        for id in &arm.runs {
            let Some(run) = l.runs.iter().find(|r| r.id == *id) else {
                continue;
            };
            let Some(pts) = l.curves.get(&(*id, key.to_string())) else {
                complete = false;
                continue;
            };
            let xy: Option<Series> = pts
                .iter()
                .map(|&(step, v, wall)| run.x_of(axis, step, wall).map(|x| (step, x, v)))
                .collect();
            let Some(xy) = xy else {
                complete = false;
                if !skipped.contains(id) {
                    skipped.push(*id);
                }
                continue;
            };
            lines.push(OverlayLine {
                arm: arm.index,
                points: xy.iter().map(|p| (p.1, p.2)).collect(),
                thick: false,
                legend: (arm.runs.len() == 1).then(|| arm.label.clone()),
                name: format!("run #{id} ({})", arm.label),
            });
            arm_curves.push(xy);
        }
        if complete && let Some(mean) = compare::mean_curve(&arm_curves) {
            lines.push(OverlayLine {
                arm: arm.index,
                points: mean,
                thick: true,
                legend: Some(format!("{} mean of {}", arm.label, arm_curves.len())),
                name: format!("{} mean of {}", arm.label, arm_curves.len()),
            });
        }
    }
    lines
}

impl RunHead {
    fn of(cmp: &Comparison, r: &RunSummary) -> RunHead {
        RunHead {
            id: r.id,
            name: r.name.clone(),
            arm_label: cmp.arms[r.arm].label.clone(),
            color: plots::arm_color_css(r.arm),
            source: match r.final_source {
                compare::FinalSource::EvalJson => artifacts::EVAL_REPORT,
                compare::FinalSource::LastEvalPoint => "last evaluation",
                compare::FinalSource::None => "no evaluation",
            },
        }
    }
}

/// Where a target was reached: "step 120 (epoch 2.40)", "step 120", or "not reached".
fn crossing_text(step: Option<f64>, epoch: Option<f64>) -> String {
    match (step, epoch) {
        (Some(s), Some(e)) => format!("step {} (epoch {:.2})", short(s), e),
        (Some(s), None) => format!("step {}", short(s)),
        (None, _) => "not reached".to_string(),
    }
}

impl ConvRunRow {
    /// A run's crossing of each convergence target.
    fn of(cmp: &Comparison, r: &RunSummary) -> ConvRunRow {
        let crossing = |f: &compare::FractionRow| {
            let c = f.runs.iter().find(|c| c.run_id == r.id);
            crossing_text(c.and_then(|c| c.step), c.and_then(|c| c.epoch))
        };
        ConvRunRow {
            id: r.id,
            name: r.name.clone(),
            arm: r.arm,
            color: plots::arm_color_css(r.arm),
            cells: cmp.convergence.iter().map(crossing).collect(),
        }
    }
}

impl ConvArmRow {
    /// An arm's mean crossing of each convergence target, how many of its runs reached it and
    /// (but for the baseline) its speed-up.
    fn of(cmp: &Comparison, a: &Arm) -> ConvArmRow {
        let crossing = |f: &compare::FractionRow| {
            let c = &f.arms[a.index];
            let mut t = crossing_text(c.mean_step, c.mean_epoch);
            t.push_str(&format!(", {}/{} reached", c.reached, c.n));
            if let Some(x) = c.speedup
                && !a.is_baseline
            {
                t.push_str(&format!(", speed-up ×{x:.2}"));
            }
            t
        };
        ConvArmRow {
            arm: a.index,
            color: plots::arm_color_css(a.index),
            label: a.label.clone(),
            cells: cmp.convergence.iter().map(crossing).collect(),
        }
    }
}

/// A config path and each run's value there ("—" where its config lacks the path).
fn diff_row(d: &DiffRow) -> (String, Vec<String>) {
    let values = d
        .values
        .iter()
        .map(|v| v.clone().unwrap_or_else(|| "—".into()));
    (d.path.clone(), values.collect())
}

/// Each arm's AP against the baseline's, for the answer at the top of the page.
fn verdicts(l: &Loaded) -> Vec<Verdict> {
    let cmp = &l.cmp;
    let Some(ap) = cmp.stats.iter().find(|r| r.stat == "AP") else {
        return Vec::new();
    };
    let base = &cmp.arms[cmp.baseline];
    cmp.arms
        .iter()
        .filter(|a| !a.is_baseline)
        .filter_map(|a| {
            let stat = &ap.arms[a.index];
            let d = stat.delta.as_ref()?;
            Some(Verdict {
                color: plots::arm_color_css(a.index),
                label: a.label.clone(),
                baseline: format!(
                    "{} AP (n={}) vs {} {} AP (n={})",
                    numbers::ap_spread(&stat.summary),
                    stat.summary.n,
                    base.label,
                    numbers::ap_spread(&ap.arms[base.index].summary),
                    ap.arms[base.index].summary.n
                ),
                delta: numbers::ap_delta(d),
                delta_class: sign_class(d.mean),
            })
        })
        .collect()
}

pub(super) fn page(l: Loaded, params: &CompareParams, view: plots::View) -> ComparePage {
    let cmp = &l.cmp;
    let name_of = |id: i64| {
        cmp.runs
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.name.clone())
            .unwrap_or_default()
    };
    let arms: Vec<ArmView> = cmp
        .arms
        .iter()
        .map(|a| ArmView {
            index: a.index,
            color: plots::arm_color_css(a.index),
            label: a.label.clone(),
            subtitle: a.subtitle.clone(),
            meaning: a.role.meaning(),
            fields: a.fields.clone(),
            runs: a.runs.iter().map(|&id| (id, name_of(id))).collect(),
            is_baseline: a.is_baseline,
        })
        .collect();
    let heads = cmp.runs.iter().map(|r| RunHead::of(cmp, r)).collect();

    let mut notes = l.notes.clone();
    let mut skipped = Vec::new();
    let mut charts = Vec::new();
    for (id, key, title) in CHARTS {
        if !l.curves.keys().any(|(_, k)| k == key) {
            continue;
        }
        let lines = chart_lines(&l, key, params.x, &mut skipped);
        let labels = plots::Labels {
            title,
            x: params.x.label(),
            y: y_label_of(key),
        };
        charts.push((id.to_string(), plots::overlay_chart(&labels, &lines, view)));
    }
    if !skipped.is_empty() {
        let ids: Vec<String> = skipped.iter().map(i64::to_string).collect();
        notes.push(format!(
            "run(s) {} left out of the curves: their config has no batch size or training split \
             size, which the {} axis needs",
            ids.join(", "),
            params.x.as_str()
        ));
    }

    let table = |name: String, arms: &[ArmStat]| TableRow {
        name,
        cells: arms.iter().map(cell).collect(),
    };
    let stat_rows = cmp
        .stats
        .iter()
        .map(|r| table(r.stat.clone(), &r.arms))
        .collect();
    let class_rows = cmp
        .per_class
        .iter()
        .map(|r| table(r.name.clone(), &r.arms))
        .collect();

    let fraction_heads = cmp
        .convergence
        .iter()
        .map(|f| {
            format!(
                "{} × baseline AP = {}",
                f.fraction,
                numbers::ap100(f.target)
            )
        })
        .collect();
    let conv_runs = cmp
        .runs
        .iter()
        .filter(|r| {
            cmp.convergence
                .first()
                .is_some_and(|f| f.runs.iter().any(|c| c.run_id == r.id))
        })
        .map(|r| ConvRunRow::of(cmp, r))
        .collect();
    let conv_arms = cmp.arms.iter().map(|a| ConvArmRow::of(cmp, a)).collect();
    let diff_rows = cmp.config_diff.iter().map(diff_row).collect();
    if cmp.convergence.is_empty() {
        notes.push(format!(
            "convergence speed needs a final AP for the baseline arm and runs with at least {} \
             evaluations; these runs lack one or the other",
            compare::MIN_EVALS
        ));
    }
    let verdicts = verdicts(&l);
    let ids: Vec<String> = params.runs.iter().map(i64::to_string).collect();
    ComparePage {
        runs_param: ids.join(","),
        x: params.x.as_str().to_string(),
        log_x: view.log_x,
        log_y: view.log_y,
        smooth: smooth_field(&view),
        x_options: XAxis::ALL
            .iter()
            .map(|a| (a.as_str().to_string(), a.label().to_string()))
            .collect(),
        fractions_param: params
            .fractions
            .iter()
            .map(f64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        baseline: cmp.baseline,
        arms,
        heads,
        charts,
        stat_rows,
        class_rows,
        fraction_heads,
        baseline_final_ap: cmp
            .baseline_final_ap
            .map(numbers::ap100)
            .unwrap_or_default(),
        conv_runs,
        conv_arms,
        diff_rows,
        notes,
        verdicts,
        baseline_label: cmp.arms[cmp.baseline].label.clone(),
    }
}
