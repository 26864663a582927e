//! The runs table (`GET /runs`): a search in `crate::search`'s language, a sort by any column
//! (a config value or a metric included), the best value of a chosen metric and its step, and
//! archived runs on request; the whole view lives in the URL (a GET form).

use crate::db;
use crate::db::logs::WarningRow;
use crate::db::run_search::SearchRow;
use crate::error::PageQuery;
use crate::error::PageResult;
use crate::manage::table::{self, TableQuery};
use crate::numbers::filters;
use crate::routes::render;
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use std::collections::HashMap;

/// Rows the page shows at most (the CSV export has them all).
const PAGE_ROWS: i64 = 500;

#[derive(Template)]
#[template(path = "runs.html")]
struct RunsPage {
    rows: Vec<SearchRow>,
    /// How many runs the search found (more than `rows` when over the page's limit).
    found: i64,
    q: TableQuery,
    /// Why the search cannot run (parse error, unknown key or metric).
    error: Option<String>,
    metrics: Vec<String>,
    tags: Vec<String>,
    /// `max` or `min`, for the best-value column's header.
    best_goal: &'static str,
    csv_url: String,
    /// Training-health warnings of the rows' runs (only runs that have some).
    warnings: HashMap<i64, Vec<WarningRow>>,
}

impl RunsPage {
    /// The URL of this view sorted by `column` (descending first; a second click flips it).
    fn sort_url(&self, column: &str) -> String {
        let mut q = self.q.clone();
        q.dir = if q.sort == column && !q.ascending() {
            "asc".into()
        } else {
            "desc".into()
        };
        q.sort = column.to_string();
        format!("/runs?{}", q.to_query())
    }

    /// The arrow after a sorted column's header.
    fn arrow(&self, column: &str) -> &'static str {
        let sorted = self.q.sort == column || (column == "id" && self.q.sort.is_empty());
        match (sorted, self.q.ascending()) {
            (false, _) => "",
            (true, true) => " ▲",
            (true, false) => " ▼",
        }
    }

    /// A run's warnings as the badge's count and hover text (one line each).
    fn health(&self, run_id: &i64) -> Option<(usize, String)> {
        let w = self.warnings.get(run_id)?;
        let lines: Vec<&str> = w.iter().map(|w| w.text.as_str()).collect();
        Some((w.len(), lines.join("\n")))
    }

    fn best_text(&self, r: &SearchRow) -> String {
        r.best_value
            .map(crate::numbers::six_significant)
            .unwrap_or_default()
    }
}

pub async fn list(State(s): State<AppState>, PageQuery(q): PageQuery<TableQuery>) -> PageResult {
    let view = table::resolve(&s.pool, &q).await?;
    let (rows, found, error) = match &view.search {
        Ok(search) => (
            db::run_search::search(&s.pool, search, PAGE_ROWS).await?,
            db::run_search::count(&s.pool, search).await?,
            None,
        ),
        Err(e) => (Vec::new(), 0, Some(e.clone())),
    };
    let ids: Vec<i64> = rows.iter().map(|r| r.run.id).collect();
    let warnings = db::logs::warnings_of(&s.pool, &ids).await?;
    Ok(render(&RunsPage {
        warnings,
        rows,
        found,
        error,
        metrics: view.metrics,
        tags: db::run_search::tags_in_use(&s.pool).await?,
        best_goal: view.best_goal.map_or("", |g| g.label()),
        csv_url: format!("/runs.csv?{}", q.to_query()),
        q,
    }))
}
