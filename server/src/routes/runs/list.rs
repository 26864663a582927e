//! The runs table (`GET /runs`), filtered by kind, status and dataset, sorted.

use crate::db;
use crate::db::datasets::DatasetRow;
use crate::db::runs::{RunFilter, RunRow, RunSort};
use crate::error::{PageError, PageQuery};
use crate::routes::render;
use crate::state::AppState;
use aligndet_common::jobs::{RunKind, RunStatus};
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;

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

/// Every filter is optional (absent: blank).
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RunsQuery {
    kind: String,
    status: String,
    dataset: String,
    sort: String,
}

pub async fn list(
    State(s): State<AppState>,
    PageQuery(q): PageQuery<RunsQuery>,
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
