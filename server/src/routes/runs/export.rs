//! Downloads: a run's metrics as CSV (`/runs/{id}/metrics.csv`, one row per point) and JSON
//! (`/runs/{id}/metrics.json`), and the runs table with its current search as CSV
//! (`/runs.csv?q=…`). All streamed, uncapped (`manage::export`).

use crate::db;
use crate::error::PageResult;
use crate::error::{OrNotFound, PageError, PagePath, PageQuery};
use crate::manage::export;
use crate::manage::table::{self, TableQuery};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use sqlx::PgPool;

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

pub async fn metrics_csv(State(s): State<AppState>, PagePath(id): PagePath<i64>) -> PageResult {
    metrics_download(
        &s,
        id,
        export::metrics_csv,
        "text/csv; charset=utf-8",
        "csv",
    )
    .await
}

pub async fn metrics_json(State(s): State<AppState>, PagePath(id): PagePath<i64>) -> PageResult {
    metrics_download(&s, id, export::metrics_json, "application/json", "json").await
}

/// Run `id`'s metrics as `run-ID-metrics.EXT`, the body streamed by `body` (a 404 page when
/// there is no such run).
async fn metrics_download(
    s: &AppState,
    id: i64,
    body: fn(&PgPool, i64) -> Body,
    content_type: &'static str,
    ext: &str,
) -> PageResult {
    db::runs::get(&s.pool, id).await?.or_not_found("run", id)?;
    let file = format!("run-{id}-metrics.{ext}");
    Ok(download(body(&s.pool, id), content_type, &file))
}

pub async fn runs_csv(
    State(s): State<AppState>,
    PageQuery(q): PageQuery<TableQuery>,
) -> PageResult {
    let view = table::resolve(&s.pool, &q).await?;
    let search = view.search.map_err(PageError::bad_request)?;
    Ok(download(
        export::runs_csv(&s.pool, search),
        "text/csv; charset=utf-8",
        "runs.csv",
    ))
}
