//! Home and workers pages.

use crate::accounts::gate::UserPage;
use crate::db;
use crate::db::datasets::DatasetRow;
use crate::db::runs::{RunFilter, RunRow};
use crate::db::workers::WorkerRow;
use crate::error::PageForm;
use crate::error::PageResult;
use crate::error::{PageError, PagePath};
use crate::forms::actions::DrainForm;
use crate::numbers::filters;
use crate::routes::render;
use crate::state::AppState;
use aligndet_common::capabilities::Capabilities;
use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect};

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    dataset_count: i64,
    image_count: i64,
    connected_workers: usize,
    status_counts: Vec<(String, i64)>,
    datasets: Vec<DatasetRow>,
    runs: Vec<RunRow>,
}

pub async fn home(State(s): State<AppState>) -> PageResult {
    let (dataset_count, image_count, _) = db::datasets::counts(&s.pool).await?;
    let workers = db::workers::list(&s.pool).await?;
    let mut runs = db::runs::list(&s.pool, &RunFilter::default()).await?;
    runs.truncate(10);
    Ok(render(&HomePage {
        dataset_count,
        image_count,
        connected_workers: workers.iter().filter(|w| w.is_connected()).count(),
        status_counts: db::runs::status_counts(&s.pool).await?,
        datasets: db::datasets::list(&s.pool).await?,
        runs,
    }))
}

/// A worker as its page shows it: the row, its environment as key / value pairs (the JSON it
/// registered with, flattened to dotted keys) and the runs it is running.
struct WorkerView {
    row: WorkerRow,
    /// What it has, in one line (`Capabilities::summary`).
    capabilities: String,
    /// Median images/s of its training steps in the last hour, and how many steps.
    throughput: Option<(f64, i64)>,
    environment: Vec<(String, String)>,
    running: Vec<(i64, String)>,
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage {
    workers: Vec<WorkerView>,
    connected: usize,
    token_path: String,
    csrf: String,
}

pub async fn workers(UserPage { s, csrf, .. }: UserPage) -> PageResult {
    let current = db::workers::current_runs(&s.pool).await?;
    let throughput = db::workers::recent_throughput(&s.pool).await?;
    let workers: Vec<WorkerView> = db::workers::list(&s.pool)
        .await?
        .into_iter()
        .map(|row| WorkerView {
            throughput: throughput
                .iter()
                .find(|(w, _, _)| *w == row.id)
                .map(|(_, median, steps)| (*median, *steps)),
            capabilities: serde_json::from_value::<Capabilities>(row.capabilities.clone())
                .map(|c| c.summary())
                .unwrap_or_else(|_| "not reported".to_string()),
            environment: crate::compare::flatten(&row.info)
                .into_iter()
                .filter(|(k, _)| !k.is_empty())
                .collect(),
            running: current
                .iter()
                .filter(|(w, _, _)| *w == row.id)
                .map(|(_, id, name)| (*id, name.clone()))
                .collect(),
            row,
        })
        .collect();
    Ok(render(&WorkersPage {
        connected: workers.iter().filter(|w| w.row.is_connected()).count(),
        workers,
        token_path: s.data_dir.join("worker-token").display().to_string(),
        csrf: csrf.0,
    }))
}

/// `POST /workers/{id}/drain`: the worker finishes its current run and claims no more (or,
/// with `drain=0`, claims again).
pub async fn drain(
    State(s): State<AppState>,
    PagePath(id): PagePath<i64>,
    PageForm(form): PageForm<DrainForm>,
) -> PageResult {
    let draining = form.drain.0;
    if !db::workers::set_draining(&s.pool, id, draining).await? {
        return Err(PageError::not_found(format!("worker {id} not found")));
    }
    Ok(Redirect::to("/workers").into_response())
}
