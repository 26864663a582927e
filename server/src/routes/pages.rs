//! Home and workers pages.

use crate::db;
use crate::db::datasets::DatasetRow;
use crate::db::runs::{RunFilter, RunRow};
use crate::db::workers::WorkerRow;
use crate::error::PageError;
use crate::numbers::filters;
use crate::routes::render;
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::response::Response;

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

pub async fn home(State(s): State<AppState>) -> Result<Response, PageError> {
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
    environment: Vec<(String, String)>,
    running: Vec<(i64, String)>,
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage {
    workers: Vec<WorkerView>,
    connected: usize,
    token_path: String,
}

pub async fn workers(State(s): State<AppState>) -> Result<Response, PageError> {
    let current = db::workers::current_runs(&s.pool).await?;
    let workers: Vec<WorkerView> = db::workers::list(&s.pool)
        .await?
        .into_iter()
        .map(|row| WorkerView {
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
    }))
}
