//! Home and workers pages.

use crate::db;
use crate::db::datasets::DatasetRow;
use crate::db::runs::{RunFilter, RunRow};
use crate::db::workers::WorkerRow;
use crate::error::PageError;
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

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage {
    workers: Vec<WorkerRow>,
    token_path: String,
}

pub async fn workers(State(s): State<AppState>) -> Result<Response, PageError> {
    Ok(render(&WorkersPage {
        workers: db::workers::list(&s.pool).await?,
        token_path: s.data_dir.join("worker-token").display().to_string(),
    }))
}
