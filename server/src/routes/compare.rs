//! `/compare?runs=…`: any set of runs side by side (arms of seeds, overlaid curves, the delta
//! table against a baseline arm, convergence speed, config differences), and
//! `/api/v1/compare?runs=…` with the same numbers as JSON. The numbers come from
//! [`crate::compare`]; this module loads runs, metrics and `eval.json` and formats.

use crate::compare::{
    self, ArmStat, ClassAp, CompareParams, Comparison, EvalPoint, RunData, XAxis,
};
use crate::db;
use crate::db::stored_config::StoredConfig;
use crate::error::{ApiError, PageError};
use crate::numbers;
use crate::plots::{self, OverlayLine};
use crate::routes::render;
use crate::state::{AppState, ArtifactRead};
use aligndet_common::artifacts;
use aligndet_common::report::EvaluationReport;
use askama::Template;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use std::collections::{BTreeMap, HashMap};

/// Why a comparison could not be made: bad input (400), unknown runs (404), or the server.
enum Failure {
    Status(StatusCode, String),
    Internal(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Internal(e.into())
    }
}

impl From<Failure> for PageError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Status(status, msg) => PageError::new(status, msg),
            Failure::Internal(e) => PageError::from(e),
        }
    }
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Status(status, msg) => ApiError::new(status, msg),
            Failure::Internal(e) => {
                tracing::error!("compare: {e:#}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
            }
        }
    }
}

/// Metric series drawn on the page: (element id, metric key, chart title).
const CHARTS: [(&str, &str, &str); 3] = [
    ("chart-eval-ap", "eval/AP", "COCO AP (eval/AP)"),
    ("chart-eval-ap50", "eval/AP50", "AP50 (eval/AP50)"),
    ("chart-loss", "loss/total", "Training loss (loss/total)"),
];

/// Points of one series: (step, value, seconds since the run's first metric).
type Series = Vec<(i64, f64, f64)>;

struct Loaded {
    cmp: Comparison,
    /// The runs' data in arm order (as `cmp.runs`).
    runs: Vec<RunData>,
    /// (run id, key) → series, for the keys in [`CHARTS`].
    curves: HashMap<(i64, String), Series>,
    notes: Vec<String>,
}

fn parse(raw: Option<&str>) -> Result<CompareParams, Failure> {
    compare::parse_params(raw.unwrap_or(""))
        .map_err(|e| Failure::Status(StatusCode::BAD_REQUEST, e))
}

/// A stored config with every default filled in (old configs compare equal to new ones).
fn resolved_config(config: &StoredConfig) -> serde_json::Value {
    config
        .job()
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or_else(|| config.json.clone())
}

async fn load(s: &AppState, params: &CompareParams) -> Result<Loaded, Failure> {
    let mut rows = Vec::new();
    let mut unknown = Vec::new();
    for &id in &params.runs {
        match db::runs::get(&s.pool, id).await? {
            Some(r) => rows.push(r),
            None => unknown.push(id.to_string()),
        }
    }
    if !unknown.is_empty() {
        return Err(Failure::Status(
            StatusCode::NOT_FOUND,
            format!(
                "unknown run id{}: {}",
                if unknown.len() > 1 { "s" } else { "" },
                unknown.join(", ")
            ),
        ));
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let chart_keys: Vec<String> = CHARTS.iter().map(|c| c.1.to_string()).collect();
    // Every eval/* series (for the last points) and the charted keys, with wall times.
    let points = db::compare::eval_and_chart_points(&s.pool, &ids, &chart_keys).await?;
    let first_wall = db::compare::first_wall_times(&s.pool, &ids).await?;
    let mut series: HashMap<(i64, String), Series> = HashMap::new();
    for (run, key, step, value, wall) in points {
        let t0 = first_wall.get(&run).copied().unwrap_or(wall);
        series
            .entry((run, key))
            .or_default()
            .push((step, value, wall - t0));
    }

    let mut split_sizes: HashMap<(i64, String), Option<usize>> = HashMap::new();
    let mut inputs = Vec::new();
    let mut notes = Vec::new();
    for run in &rows {
        let config = resolved_config(&run.config);
        let batch_size = config
            .pointer("/optim/batch_size")
            .and_then(|b| b.as_u64())
            .map(|b| b as u32);
        let train_images = match (
            config.get("dataset_id").and_then(|d| d.as_i64()),
            config.get("train_split").and_then(|t| t.as_str()),
        ) {
            (Some(d), Some(split)) => {
                let key = (d, split.to_string());
                if !split_sizes.contains_key(&key) {
                    let n = db::datasets::get(&s.pool, d)
                        .await?
                        .and_then(|ds| ds.split_ids(split))
                        .map(|ids| ids.len());
                    split_sizes.insert(key.clone(), n);
                }
                split_sizes[&key]
            }
            _ => None,
        };
        let report: Option<EvaluationReport> = match s
            .read_artifact(run.id, artifacts::EVAL_REPORT)
            .await?
        {
            ArtifactRead::Found(bytes) => match serde_json::from_slice(&bytes) {
                Ok(r) => Some(r),
                Err(e) => {
                    notes.push(format!(
                        "run {}: eval.json could not be read ({e}); its last evaluation point is used",
                        run.id
                    ));
                    None
                }
            },
            _ => None,
        };
        let last: BTreeMap<String, f64> = series
            .iter()
            .filter(|((r, k), _)| *r == run.id && k.starts_with("eval/"))
            .filter_map(|((_, k), pts)| pts.last().map(|p| (k.clone(), p.1)))
            .collect();
        let (finals, final_source) =
            compare::final_stats(report.as_ref().map(|r| r.stats.as_slice()), &last);
        let per_class = report
            .map(|r| {
                r.per_class
                    .into_iter()
                    .map(|c| ClassAp {
                        category_id: c.category_id,
                        name: c.name,
                        ap: c.ap,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let eval_ap = series
            .get(&(run.id, "eval/AP".to_string()))
            .map(|pts| {
                pts.iter()
                    .map(|&(step, value, wall)| EvalPoint { step, value, wall })
                    .collect()
            })
            .unwrap_or_default();
        inputs.push(RunData {
            id: run.id,
            name: run.name.clone(),
            kind: run.kind.as_str().to_string(),
            config,
            batch_size,
            train_images,
            finals,
            final_source,
            per_class,
            eval_ap,
        });
    }
    let (cmp, order) = compare::compare(&inputs, params.baseline, &params.fractions)
        .map_err(|e| Failure::Status(StatusCode::BAD_REQUEST, e))?;
    let runs: Vec<RunData> = order.iter().map(|&i| inputs[i].clone()).collect();
    series.retain(|(_, k), _| chart_keys.contains(k));
    Ok(Loaded {
        cmp,
        runs,
        curves: series,
        notes,
    })
}

/// `GET /api/v1/compare?runs=…`: the comparison's numbers as JSON.
pub async fn api(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Comparison>, ApiError> {
    let params = parse(raw.as_deref())?;
    Ok(Json(load(&s, &params).await?.cmp))
}

// ---------------------------------------------------------------------------------------------
// The page.

struct ArmView {
    index: usize,
    color: String,
    label: String,
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

struct TableRow {
    name: String,
    cells: Vec<Cell>,
}

struct RunHead {
    id: i64,
    name: String,
    arm: usize,
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
struct ComparePage {
    runs_param: String,
    x: String,
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
}

fn cell(a: &ArmStat) -> Cell {
    let value = numbers::mean_spread(&a.summary);
    let (delta, delta_class) = match &a.delta {
        Some(d) => {
            let text = numbers::delta_text(d);
            let class = if d.mean > 0.0 {
                "up"
            } else if d.mean < 0.0 {
                "down"
            } else {
                ""
            };
            (text, class)
        }
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
                legend: (arm.runs.len() == 1).then(|| format!("#{}", arm.index)),
            });
            arm_curves.push(xy);
        }
        if complete && let Some(mean) = compare::mean_curve(&arm_curves) {
            lines.push(OverlayLine {
                arm: arm.index,
                points: mean,
                thick: true,
                legend: Some(format!("#{} mean of {}", arm.index, arm_curves.len())),
            });
        }
    }
    lines
}

fn page(l: Loaded, params: &CompareParams) -> ComparePage {
    let cmp = &l.cmp;
    let color = |arm: usize| plots::arm_color_css(arm);
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
            color: color(a.index),
            label: a.label.clone(),
            fields: a.fields.clone(),
            runs: a.runs.iter().map(|&id| (id, name_of(id))).collect(),
            is_baseline: a.is_baseline,
        })
        .collect();
    let heads = cmp
        .runs
        .iter()
        .map(|r| RunHead {
            id: r.id,
            name: r.name.clone(),
            arm: r.arm,
            color: color(r.arm),
            source: match r.final_source {
                compare::FinalSource::EvalJson => artifacts::EVAL_REPORT,
                compare::FinalSource::LastEvalPoint => "last evaluation",
                compare::FinalSource::None => "no evaluation",
            },
        })
        .collect();

    let mut notes = l.notes.clone();
    let mut skipped = Vec::new();
    let mut charts = Vec::new();
    for (id, key, title) in CHARTS {
        if !l.curves.keys().any(|(_, k)| k == key) {
            continue;
        }
        let lines = chart_lines(&l, key, params.x, &mut skipped);
        charts.push((
            id.to_string(),
            plots::overlay_chart(title, params.x.label(), &lines),
        ));
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
                numbers::fixed3(f.target)
            )
        })
        .collect();
    let conv_runs = cmp
        .runs
        .iter()
        .map(|r| ConvRunRow {
            id: r.id,
            name: r.name.clone(),
            arm: r.arm,
            color: color(r.arm),
            cells: cmp
                .convergence
                .iter()
                .map(|f| {
                    match f
                        .runs
                        .iter()
                        .find(|c| c.run_id == r.id)
                        .and_then(|c| c.step.map(|s| (s, c.epoch)))
                    {
                        Some((s, Some(e))) => format!("step {} (epoch {:.2})", short(s), e),
                        Some((s, None)) => format!("step {}", short(s)),
                        None => "not reached".to_string(),
                    }
                })
                .collect(),
        })
        .collect();
    let conv_arms = cmp
        .arms
        .iter()
        .map(|a| ConvArmRow {
            arm: a.index,
            color: color(a.index),
            label: a.label.clone(),
            cells: cmp
                .convergence
                .iter()
                .map(|f| {
                    let c = &f.arms[a.index];
                    let mut t = match (c.mean_step, c.mean_epoch) {
                        (Some(s), Some(e)) => format!("step {} (epoch {:.2})", short(s), e),
                        (Some(s), None) => format!("step {}", short(s)),
                        _ => "not reached".to_string(),
                    };
                    t.push_str(&format!(", {}/{} reached", c.reached, c.n));
                    if let Some(x) = c.speedup
                        && !a.is_baseline
                    {
                        t.push_str(&format!(", speed-up ×{x:.2}"));
                    }
                    t
                })
                .collect(),
        })
        .collect();
    let diff_rows = cmp
        .config_diff
        .iter()
        .map(|d| {
            (
                d.path.clone(),
                d.values
                    .iter()
                    .map(|v| v.clone().unwrap_or_else(|| "—".into()))
                    .collect(),
            )
        })
        .collect();
    if cmp.convergence.is_empty() {
        notes.push(
            "convergence speed needs a final AP for the baseline arm; it has none".to_string(),
        );
    }
    let ids: Vec<String> = params.runs.iter().map(i64::to_string).collect();
    ComparePage {
        runs_param: ids.join(","),
        x: params.x.as_str().to_string(),
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
            .map(numbers::fixed3)
            .unwrap_or_default(),
        conv_runs,
        conv_arms,
        diff_rows,
        notes,
    }
}

/// `GET /compare?runs=…`: the comparison page.
pub async fn show(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let params = parse(raw.as_deref())?;
    let loaded = load(&s, &params).await?;
    Ok(render(&page(loaded, &params)))
}
