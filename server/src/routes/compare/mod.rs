//! `/compare?runs=…`: any set of runs side by side (arms of seeds, overlaid curves, the delta
//! table against a baseline arm, convergence speed, config differences), and
//! `/api/v1/compare?runs=…` with the same numbers as JSON. The numbers come from
//! [`crate::compare`]; this module loads runs, metrics and `eval.json`, [`page`] formats.

mod page;

use crate::compare::{self, ClassAp, CompareParams, Comparison, EvalPoint, RunData};
use crate::db;
use crate::db::stored_config::StoredConfig;
use crate::error::PageResult;
use crate::error::{ApiError, PageError};
use crate::routes::render;
use crate::state::AppState;
use crate::views::chart_view::parse_view;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use std::collections::{BTreeMap, HashMap};

/// Why a comparison could not be made: bad input (400), unknown runs (404), runs of different
/// kinds (422), or the server.
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
                "unknown run {}: {}",
                crate::numbers::noun(unknown.len() as i64, "id"),
                unknown.join(", ")
            ),
        ));
    }
    let kinds: Vec<(i64, &str)> = rows.iter().map(|r| (r.id, r.kind.as_str())).collect();
    if let Some(why) = compare::mixed_kinds(&kinds) {
        return Err(Failure::Status(StatusCode::UNPROCESSABLE_ENTITY, why));
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
        let report = s.eval_report(run.id).await?.unwrap_or_else(|why| {
            notes.push(format!("{why}; its last evaluation point is used"));
            None
        });
        let last: BTreeMap<String, f64> = series
            .iter()
            .filter(|((r, k), _)| *r == run.id && k.starts_with("eval/"))
            .filter_map(|((_, k), pts)| pts.last().map(|p| (k.clone(), p.1)))
            .collect();
        let (finals, final_source) =
            compare::final_stats(report.as_ref().map(|r| r.stats.as_slice()), &last);
        let segm_stats = report.as_ref().and_then(|r| r.segm.as_ref());
        let (mask_finals, _) =
            compare::final_mask_stats(segm_stats.map(|m| m.stats.as_slice()), &last);
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
            experiment_role: run.experiment_role.clone(),
            config,
            batch_size,
            train_images,
            finals,
            final_source,
            mask_finals,
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

/// `GET /compare?runs=…`: the comparison page; its charts take the run page's view
/// (`logx`, `logy`, `smooth`) besides their own x axis.
pub async fn show(State(s): State<AppState>, RawQuery(raw): RawQuery) -> PageResult {
    let params = parse(raw.as_deref())?;
    let (view, view_notes) = parse_view(raw.as_deref());
    let mut loaded = load(&s, &params).await?;
    loaded.notes.extend(view_notes);
    Ok(render(&page::page(loaded, &params, view)))
}
