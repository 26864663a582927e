//! Downloads: a run's metrics as CSV (`/runs/{id}/metrics.csv`, one row per point) and JSON
//! (`/runs/{id}/metrics.json`), and the runs table with its current search as CSV
//! (`/runs.csv?q=…`). All streamed, uncapped (`manage::export`).

use crate::db;
use crate::error::{OrNotFound, PageError, PagePath, PageQuery};
use crate::manage::export;
use crate::manage::table::{self, TableQuery};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

fn download(body: Body, content_type: &'static str, file: &str) -> Response {
    // `file` is built here from numbers and fixed text: safe inside the quotes.
    let disposition = format!("attachment; filename=\"{file}\"");
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}

pub async fn metrics_csv(
    State(s): State<AppState>,
    PagePath(id): PagePath<i64>,
) -> Result<Response, PageError> {
    db::runs::get(&s.pool, id).await?.or_not_found("run", id)?;
    let body = export::metrics_csv(&s.pool, id);
    Ok(download(
        body,
        "text/csv; charset=utf-8",
        &format!("run-{id}-metrics.csv"),
    ))
}

pub async fn metrics_json(
    State(s): State<AppState>,
    PagePath(id): PagePath<i64>,
) -> Result<Response, PageError> {
    db::runs::get(&s.pool, id).await?.or_not_found("run", id)?;
    let body = export::metrics_json(&s.pool, id);
    Ok(download(
        body,
        "application/json",
        &format!("run-{id}-metrics.json"),
    ))
}

pub async fn runs_csv(
    State(s): State<AppState>,
    PageQuery(q): PageQuery<TableQuery>,
) -> Result<Response, PageError> {
    let view = table::resolve(&s.pool, &q).await?;
    let search = view.search.map_err(PageError::bad_request)?;
    Ok(download(
        export::runs_csv(&s.pool, search),
        "text/csv; charset=utf-8",
        "runs.csv",
    ))
}
