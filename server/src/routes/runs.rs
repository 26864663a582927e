//! Run pages: the runs table, the new-run form, a run's page with live curves, cancel, artifacts.

use crate::db;
use crate::db::datasets::DatasetRow;
use crate::db::runs::{ArtifactRow, AttemptRow, LogRow, ParentRow, RunFilter, RunRow, RunSort};
use crate::error::PageError;
use crate::plots;
use crate::routes::{api, render};
use crate::security::CsrfToken;
use crate::state::{AppState, ArtifactRead};
use aligndet_common::jobs::{RunKind, RunStatus};
use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use futures_util::Stream;
use serde::Deserialize;
use std::collections::HashMap;
use std::convert::Infallible;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

#[derive(Template)]
#[template(path = "runs.html")]
struct RunsPage {
    runs: Vec<RunRow>,
    datasets: Vec<DatasetRow>,
    kinds: Vec<String>,
    statuses: Vec<String>,
    sorts: Vec<String>,
    filter_kind: String,
    filter_status: String,
    filter_dataset: String,
    sort: String,
}

#[derive(Deserialize, Default)]
pub struct RunsQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    dataset: String,
    #[serde(default)]
    sort: String,
}

pub async fn list(
    State(s): State<AppState>,
    Query(q): Query<RunsQuery>,
) -> Result<Response, PageError> {
    // Unknown filter values are ignored rather than trusted: only known kinds/statuses reach SQL.
    let filter = RunFilter {
        kind: RunKind::parse(&q.kind).map(|k| k.as_str().to_string()),
        status: RunStatus::parse(&q.status).map(|k| k.as_str().to_string()),
        dataset_id: q.dataset.parse().ok(),
        sort: RunSort::parse(&q.sort).unwrap_or_default(),
    };
    Ok(render(&RunsPage {
        runs: db::runs::list(&s.pool, &filter).await?,
        datasets: db::datasets::list(&s.pool).await?,
        kinds: RunKind::ALL
            .iter()
            .map(|k| k.as_str().to_string())
            .collect(),
        statuses: RunStatus::ALL
            .iter()
            .map(|k| k.as_str().to_string())
            .collect(),
        sorts: [
            RunSort::Newest,
            RunSort::Oldest,
            RunSort::Name,
            RunSort::Status,
        ]
        .iter()
        .map(|k| k.as_str().to_string())
        .collect(),
        filter_kind: filter.kind.clone().unwrap_or_default(),
        filter_status: filter.status.clone().unwrap_or_default(),
        filter_dataset: filter.dataset_id.map(|d| d.to_string()).unwrap_or_default(),
        sort: filter.sort.as_str().to_string(),
    }))
}

#[derive(Template)]
#[template(path = "new_run.html")]
struct NewRunPage {
    csrf: String,
    error: Option<String>,
    datasets: Vec<DatasetRow>,
}

pub async fn new_form(
    State(s): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
) -> Result<Response, PageError> {
    Ok(render(&NewRunPage {
        csrf: csrf.0,
        error: None,
        datasets: db::datasets::list(&s.pool).await?,
    }))
}

/// The new-run form, posted as url-encoded fields. Numbers arrive as strings; the typed config
/// (with its validation) decides what is acceptable.
pub async fn create(
    State(s): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    axum::Form(form): axum::Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
    };
    let result = (|| {
        let kind = field("kind").unwrap_or_default();
        let mut config = serde_json::Map::new();
        config.insert("kind".into(), kind.clone().into());
        match RunKind::parse(&kind) {
            Some(RunKind::Benchmark) => {
                if let Some(b) = field("backbone") {
                    config.insert("backbone".into(), b.into());
                }
                for key in ["batch_size", "resolution", "steps", "warmup_steps"] {
                    if let Some(v) = field(key).filter(|v| !v.is_empty()) {
                        let n: u32 = v
                            .parse()
                            .map_err(|_| format!("{key}: {v:?} is not a whole number"))?;
                        config.insert(key.into(), n.into());
                    }
                }
            }
            Some(RunKind::Proposals) => {
                let dataset: i64 = field("dataset_id")
                    .and_then(|v| v.parse().ok())
                    .ok_or("choose a dataset")?;
                config.insert("dataset_id".into(), dataset.into());
                if let Some(st) = field("strategy") {
                    config.insert("strategy".into(), st.into());
                }
                for key in ["max_images", "seed"] {
                    if let Some(v) = field(key).filter(|v| !v.is_empty()) {
                        let n: u64 = v
                            .parse()
                            .map_err(|_| format!("{key}: {v:?} is not a whole number"))?;
                        config.insert(key.into(), n.into());
                    }
                }
                let mut filter = serde_json::Map::new();
                for key in ["min_side", "max_aspect", "max_relative_size", "nms_iou"] {
                    if let Some(v) = field(key).filter(|v| !v.is_empty()) {
                        let x: f64 = v
                            .parse()
                            .map_err(|_| format!("{key}: {v:?} is not a number"))?;
                        filter.insert(key.into(), x.into());
                    }
                }
                if let Some(v) = field("top_k").filter(|v| !v.is_empty()) {
                    let n: u32 = v
                        .parse()
                        .map_err(|_| format!("top_k: {v:?} is not a whole number"))?;
                    filter.insert("top_k".into(), n.into());
                }
                config.insert("filter".into(), serde_json::Value::Object(filter));
            }
            Some(RunKind::Evaluate) => {
                let dataset: i64 = field("dataset_id")
                    .and_then(|v| v.parse().ok())
                    .ok_or("choose a dataset")?;
                config.insert("dataset_id".into(), dataset.into());
                if let Some(split) = field("split").filter(|v| !v.is_empty()) {
                    config.insert("split".into(), split.into());
                }
                let run_id: i64 = field("detections_run")
                    .and_then(|v| v.parse().ok())
                    .ok_or("give the run whose artifact holds the detections")?;
                let name = field("detections_artifact").unwrap_or_default();
                config.insert(
                    "detections".into(),
                    serde_json::json!({"run_id": run_id, "name": name}),
                );
            }
            None => return Err(format!("unknown run kind {kind:?}")),
        }
        Ok((
            field("name").unwrap_or_default(),
            serde_json::Value::Object(config),
        ))
    })();
    let outcome = match result {
        Ok((name, config)) => api::queue_run(&s, &name, config, None, &[])
            .await
            .map_err(|e| e.message),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(id) => Ok(Redirect::to(&format!("/runs/{id}")).into_response()),
        Err(e) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            render(&NewRunPage {
                csrf: csrf.0,
                error: Some(e),
                datasets: db::datasets::list(&s.pool).await?,
            }),
        )
            .into_response()),
    }
}

/// Multipart form: `name`, `dataset_id`, `split`, and the COCO results file `detections`.
/// The run and its input artifact are stored in one transaction, so no worker can claim the run
/// before its detections are in place.
pub async fn create_evaluate_upload(
    State(s): State<AppState>,
    mut multipart: axum::extract::Multipart,
) -> Result<Response, PageError> {
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut detections: Option<Vec<u8>> = None;
    let limit = (s.cfg.upload_limit_mib * 1024 * 1024) as usize;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| PageError::bad_request(format!("the upload could not be read: {e}")))?
    {
        let name = field.name().unwrap_or("").to_string();
        if name == "detections" {
            let bytes = field.bytes().await.map_err(|e| {
                PageError::bad_request(format!("the detections upload failed or is too large: {e}"))
            })?;
            if bytes.len() > limit {
                return Err(PageError::bad_request(
                    "the detections file is larger than the upload limit",
                ));
            }
            detections = Some(bytes.to_vec());
        } else {
            let text = field
                .text()
                .await
                .map_err(|e| PageError::bad_request(e.to_string()))?;
            fields.insert(name, text);
        }
    }
    let detections =
        detections.ok_or_else(|| PageError::bad_request("choose a COCO results file to upload"))?;
    // Refuse what is not JSON now, with the parser's position; the worker checks the rest.
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&detections) {
        return Err(PageError::bad_request(format!(
            "the detections file is not valid JSON: {e}"
        )));
    }
    let dataset_id: i64 = fields
        .get("dataset_id")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| PageError::bad_request("choose a dataset"))?;
    let split = fields
        .get("split")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let name = fields
        .get("name")
        .cloned()
        .unwrap_or_else(|| "evaluation".into());
    let artifact = "detections.json";

    let mut tx = s.pool.begin().await?;
    // The run id is needed in the config; insert with a placeholder and set it in the same tx.
    let mut config = aligndet_common::jobs::EvaluateConfig {
        dataset_id,
        split,
        detections: aligndet_common::jobs::ArtifactRef {
            run_id: 0,
            name: artifact.into(),
        },
    };
    let config_json =
        serde_json::to_value(aligndet_common::jobs::JobConfig::Evaluate(config.clone()))?;
    let id = db::runs::create_in(
        &mut tx,
        &db::runs::NewRun {
            kind: RunKind::Evaluate.as_str(),
            name: name.trim(),
            config: config_json,
            dataset_id: Some(dataset_id),
            max_attempts: s.cfg.max_attempts,
            parents: vec![],
        },
    )
    .await?;
    config.detections.run_id = id;
    config
        .validate()
        .map_err(|e| PageError::bad_request(e.to_string()))?;
    db::runs::set_config(
        &mut tx,
        id,
        &serde_json::to_value(aligndet_common::jobs::JobConfig::Evaluate(config))?,
    )
    .await?;
    let dir = s.artifacts_dir(id);
    tokio::fs::create_dir_all(&dir).await?;
    tokio::fs::write(dir.join(artifact), &detections).await?;
    db::runs::insert_artifact_in(&mut tx, id, artifact, detections.len() as i64).await?;
    if let Err(e) = tx.commit().await {
        let _ = tokio::fs::remove_dir_all(&dir).await;
        return Err(e.into());
    }
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

#[derive(Template)]
#[template(path = "run_live.html")]
struct RunLive {
    run: RunRow,
    terminal: bool,
    attempts: Vec<AttemptRow>,
    logs: Vec<LogRow>,
    charts: Vec<(String, String)>,
    summaries: Vec<(String, f64)>,
}

async fn live_html(s: &AppState, run: RunRow) -> Result<String, PageError> {
    let id = run.id;
    let mut charts = Vec::new();
    let mut summaries = Vec::new();
    for (key, n) in db::runs::metric_keys(&s.pool, id).await? {
        let series = db::runs::metric_series(&s.pool, id, &key).await?;
        if n <= 1 {
            if let Some((_, v)) = series.first() {
                summaries.push((key, *v));
            }
            continue;
        }
        let pts: Vec<(f64, f64)> = series.iter().map(|&(x, y)| (x as f64, y)).collect();
        let svg = plots::line_chart(&key, "step", &[(key.clone(), pts)]);
        charts.push((key, svg));
    }
    let page = RunLive {
        terminal: RunStatus::parse(&run.status).is_some_and(|st| st.is_terminal()),
        attempts: db::runs::attempts(&s.pool, id).await?,
        logs: db::runs::log_tail(&s.pool, id, 200).await?,
        charts,
        summaries,
        run,
    };
    page.render()
        .map_err(|e| PageError::from(anyhow::anyhow!("template: {e}")))
}

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
}

/// pycocotools prints −1 for undefined statistics; show a dash instead.
fn format_stat(v: f64) -> String {
    if v < 0.0 {
        "–".to_string()
    } else {
        format!("{v:.3}")
    }
}

fn eval_view(report: aligndet_common::report::EvaluationReport) -> EvalView {
    use aligndet_common::report::COCO_STAT_NAMES;
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
    let class_rows = report
        .per_class
        .iter()
        .map(|c| {
            let cells = [c.ap, c.ap50, c.ap75, c.ar100]
                .into_iter()
                .map(format_stat)
                .collect();
            (c.name.clone(), c.num_gt, cells)
        })
        .collect();
    let size_rows = report
        .per_size
        .iter()
        .map(|s| (s.area.clone(), format_stat(s.ap), format_stat(s.ar)))
        .collect();
    EvalView {
        class_rows,
        size_rows,
        stats: COCO_STAT_NAMES
            .iter()
            .copied()
            .zip(report.stats.iter().copied())
            .collect(),
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

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    evaluation: Option<EvalView>,
    run: RunRow,
    terminal: bool,
    csrf: String,
    live: String,
    config_pretty: String,
    artifacts: Vec<ArtifactRow>,
    parents: Vec<ParentRow>,
}

impl RunPage {
    fn stat(&self, v: &f64) -> String {
        format_stat(*v)
    }
}

async fn get_run(s: &AppState, id: i64) -> Result<RunRow, PageError> {
    db::runs::get(&s.pool, id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("run {id} not found")))
}

pub async fn show(
    State(s): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    let run = get_run(&s, id).await?;
    let live = live_html(&s, run.clone()).await?;
    let evaluation = if run.kind == RunKind::Evaluate.as_str() {
        tokio::fs::read(s.artifacts_dir(id).join("eval.json"))
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .map(eval_view)
    } else {
        None
    };
    Ok(render(&RunPage {
        evaluation,
        terminal: RunStatus::parse(&run.status).is_some_and(|st| st.is_terminal()),
        config_pretty: serde_json::to_string_pretty(&run.config)?,
        artifacts: db::runs::artifacts(&s.pool, id).await?,
        parents: db::runs::parents(&s.pool, id).await?,
        csrf: csrf.0,
        live,
        run,
    }))
}

pub async fn live_fragment(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    let run = get_run(&s, id).await?;
    Ok(Html(live_html(&s, run).await?).into_response())
}

/// Server-sent events: one `changed` event whenever the run's data changes (Postgres NOTIFY).
pub async fn events(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, PageError> {
    get_run(&s, id).await?;
    let stream = BroadcastStream::new(s.run_changed.subscribe()).filter_map(move |msg| match msg {
        Ok(run_id) if run_id == id => {
            Some(Ok(Event::default().event("changed").data(id.to_string())))
        }
        // Lagged: we missed notifications, so tell the page to refresh anyway.
        Err(_) => Some(Ok(Event::default().event("changed").data(id.to_string()))),
        _ => None,
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

pub async fn cancel(State(s): State<AppState>, Path(id): Path<i64>) -> Result<Response, PageError> {
    db::runs::request_cancel(&s.pool, id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("run {id} not found")))?;
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

pub async fn download_artifact(
    State(s): State<AppState>,
    Path((id, name)): Path<(i64, String)>,
) -> Result<Response, PageError> {
    let bytes = match s.read_artifact(id, &name).await? {
        ArtifactRead::BadName(why) => return Err(PageError::bad_request(why)),
        ArtifactRead::Missing(msg) => return Err(PageError::not_found(msg)),
        ArtifactRead::Found(bytes) => bytes,
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}
