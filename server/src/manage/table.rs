//! The runs table's view as its URL holds it (a GET form): the search text, the sort column and
//! direction, the best-value metric and whether archived runs show. One reading of it serves the
//! page and the CSV export, so the export has exactly the rows the page found.

use crate::db;
use crate::db::run_search::RunSearch;
use crate::search::{self, ConfigKeys, Goal, SortKey};
use sqlx::PgPool;
use std::sync::OnceLock;

/// The query string of `/runs` and `/runs.csv`; every part optional.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct TableQuery {
    /// The search (`crate::search`'s language).
    pub q: String,
    /// `id`, `name`, …, `best`, `config:KEY`, `metric:KEY`.
    pub sort: String,
    /// `asc` or `desc` (blank: descending).
    pub dir: String,
    /// The metric of the best-value columns (blank: none).
    pub best: String,
    /// `1`: archived runs too.
    pub archived: String,
}

impl TableQuery {
    /// The same view as a query string (for the CSV link and the column headers).
    pub fn to_query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }

    pub fn include_archived(&self) -> bool {
        !self.archived.is_empty() && self.archived != "0"
    }

    pub fn ascending(&self) -> bool {
        self.dir == "asc"
    }
}

/// The view resolved against what exists: the search to run, or why it cannot run.
pub struct TableView {
    pub search: Result<RunSearch, String>,
    /// Every metric name (offered for the best-value column).
    pub metrics: Vec<String>,
    pub best_goal: Option<Goal>,
}

/// The config paths of every kind, computed once.
pub fn config_keys() -> &'static ConfigKeys {
    static KEYS: OnceLock<ConfigKeys> = OnceLock::new();
    KEYS.get_or_init(ConfigKeys::of_defaults)
}

/// Parse and check the view. A search that does not parse, or names an unknown key or metric,
/// is an error (the page shows it and lists nothing rather than everything).
pub async fn resolve(pool: &PgPool, q: &TableQuery) -> sqlx::Result<TableView> {
    let metrics = db::run_search::metric_names(pool).await?;
    let keys = config_keys();
    let best = q.best.trim();
    let best_goal = (!best.is_empty()).then(|| Goal::of(best));
    let search = (|| {
        let terms = search::parse(&q.q).map_err(|e| e.to_string())?;
        let filter = search::resolve::resolve(&terms, keys, &metrics)?;
        let sort = search::resolve::sort_key(&q.sort, keys, &metrics)?;
        let best = match best_goal {
            Some(goal) if metrics.iter().any(|m| m == best) => Some((best.to_string(), goal)),
            Some(_) => {
                return Err(format!(
                    "best value of: unknown metric `{best}`; known: {}",
                    metrics.join(", ")
                ));
            }
            None => None,
        };
        if sort == SortKey::Best && best.is_none() {
            return Err("sort by best: choose the metric of the best-value column".into());
        }
        Ok(RunSearch {
            filter,
            sort,
            descending: !q.ascending(),
            best,
            include_archived: q.include_archived(),
        })
    })();
    Ok(TableView {
        search,
        metrics,
        best_goal,
    })
}
