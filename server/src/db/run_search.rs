//! The runs table's search in SQL: a [`Filter`] (from `crate::search`) becomes WHERE clauses
//! whose every value (words, tags, config paths, numbers, metric names) is a bound parameter;
//! only fixed strings (operators, column names, directions) are written into the SQL text.
//! Also the simple run lists other pages pick from ([`list`], re-exported by `db::runs`).

use super::runs::RunRow;
use super::{creator_column, select_with_creator};
use crate::search::resolve::{ConfigCond, Filter, MetricCond, Path};
use crate::search::{Goal, SortKey, Value};
use futures_util::TryStreamExt;
use sqlx::{PgPool, Postgres, QueryBuilder};

/// A search of the runs table as the page (or the CSV export) asks it.
#[derive(Debug, Clone)]
pub struct RunSearch {
    pub filter: Filter,
    pub sort: SortKey,
    pub descending: bool,
    /// The metric of the best-value columns, and whether higher or lower is better.
    pub best: Option<(String, Goal)>,
    /// Archived runs too (hidden by default).
    pub include_archived: bool,
}

impl Default for RunSearch {
    fn default() -> Self {
        RunSearch {
            filter: Filter::default(),
            sort: SortKey::Id,
            descending: true,
            best: None,
            include_archived: false,
        }
    }
}

/// A run as the table lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SearchRow {
    #[sqlx(flatten)]
    pub run: RunRow,
    pub dataset_name: Option<String>,
    /// The best value of the chosen metric and the (first) step it was reached.
    pub best_value: Option<f64>,
    pub best_step: Option<i64>,
}

/// `COALESCE(runs.config #> $a, runs.config #> $b, …)`: the first path the config has.
fn push_config_value(qb: &mut QueryBuilder<Postgres>, paths: &[Path]) {
    qb.push("COALESCE(");
    for (i, p) in paths.iter().enumerate() {
        if i > 0 {
            qb.push(", ");
        }
        qb.push("runs.config #> ");
        qb.push_bind(p.clone());
        qb.push("::TEXT[]");
    }
    qb.push(")");
}

/// The metric's value at its last step (the primary key's order: one index probe).
fn push_final_metric(qb: &mut QueryBuilder<Postgres>, key: &str) {
    qb.push("(SELECT m.value FROM metrics m WHERE m.run_id = runs.id AND m.key = ");
    qb.push_bind(key.to_string());
    qb.push(" ORDER BY m.step DESC LIMIT 1)");
}

fn push_config_cond(qb: &mut QueryBuilder<Postgres>, c: &ConfigCond) {
    match &c.value {
        Value::Num(x) => {
            // Only numbers compare as numbers; a text or missing value never matches.
            qb.push(" AND (CASE WHEN jsonb_typeof(");
            push_config_value(qb, &c.paths);
            qb.push(") = 'number' THEN (");
            push_config_value(qb, &c.paths);
            qb.push(" #>> '{}')::FLOAT8 END) ");
            qb.push(c.op.sql());
            qb.push(" ");
            qb.push_bind(*x);
        }
        Value::Text(t) => {
            qb.push(" AND (");
            push_config_value(qb, &c.paths);
            qb.push(" #>> '{}') ");
            qb.push(c.op.sql());
            qb.push(" ");
            qb.push_bind(t.clone());
        }
    }
}

fn push_metric_cond(qb: &mut QueryBuilder<Postgres>, c: &MetricCond) {
    qb.push(" AND ");
    push_final_metric(qb, &c.key);
    qb.push(" ");
    qb.push(c.op.sql());
    qb.push(" ");
    qb.push_bind(c.value);
}

/// `LIKE` text matching `word` literally.
fn like_escaped(word: &str) -> String {
    let mut out = String::from("%");
    for c in word.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

fn push_where(qb: &mut QueryBuilder<Postgres>, s: &RunSearch) {
    let f = &s.filter;
    qb.push(" WHERE TRUE");
    if !s.include_archived {
        qb.push(" AND runs.archived_at IS NULL");
    }
    for w in &f.words {
        qb.push(" AND runs.name ILIKE ");
        qb.push_bind(like_escaped(w));
        qb.push(" ESCAPE '\\'");
    }
    for t in &f.tags {
        qb.push(" AND ");
        qb.push_bind(t.clone());
        qb.push(" = ANY(runs.tags)");
    }
    for k in &f.kinds {
        qb.push(" AND runs.kind = ");
        qb.push_bind(k.clone());
    }
    for st in &f.statuses {
        qb.push(" AND runs.status = ");
        qb.push_bind(st.clone());
    }
    for d in &f.datasets {
        qb.push(" AND runs.dataset_id IN (SELECT id FROM datasets WHERE name = ");
        qb.push_bind(d.clone());
        qb.push(" OR '#' || id = ");
        qb.push_bind(d.clone());
        qb.push(" OR id::TEXT = ");
        qb.push_bind(d.clone());
        qb.push(")");
    }
    for c in &f.config {
        push_config_cond(qb, c);
    }
    for m in &f.metrics {
        push_metric_cond(qb, m);
    }
}

fn build(s: &RunSearch, limit: Option<i64>) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new(concat!(
        "SELECT runs.*, ",
        creator_column!("runs"),
        ", (SELECT name FROM datasets WHERE id = runs.dataset_id) AS dataset_name,"
    ));
    match &s.best {
        Some((key, goal)) => {
            qb.push(" b.value AS best_value, b.step AS best_step FROM runs");
            qb.push(" LEFT JOIN LATERAL (SELECT value, step FROM metrics WHERE run_id = runs.id AND key = ");
            qb.push_bind(key.clone());
            qb.push(" AND value NOT IN ('NaN', 'Infinity', '-Infinity') ORDER BY value ");
            qb.push(match goal {
                Goal::Max => "DESC",
                Goal::Min => "ASC",
            });
            qb.push(", step ASC LIMIT 1) b ON TRUE");
        }
        None => {
            qb.push(" NULL::FLOAT8 AS best_value, NULL::BIGINT AS best_step FROM runs");
        }
    }
    push_where(&mut qb, s);
    qb.push(" ORDER BY ");
    match &s.sort {
        SortKey::Id => qb.push("runs.id"),
        SortKey::Name => qb.push("runs.name"),
        SortKey::Kind => qb.push("runs.kind"),
        SortKey::Status => qb.push("runs.status"),
        SortKey::Created => qb.push("runs.created_at"),
        SortKey::Finished => qb.push("runs.finished_at"),
        SortKey::Best if s.best.is_some() => qb.push("b.value"),
        SortKey::Best => qb.push("runs.id"),
        SortKey::Config(paths) => {
            push_config_value(&mut qb, paths);
            &mut qb
        }
        SortKey::Metric(key) => {
            push_final_metric(&mut qb, key);
            &mut qb
        }
    };
    qb.push(if s.descending {
        " DESC NULLS LAST"
    } else {
        " ASC NULLS LAST"
    });
    qb.push(", runs.id DESC");
    if let Some(n) = limit {
        qb.push(" LIMIT ");
        qb.push_bind(n);
    }
    qb
}

/// The first `limit` runs the search finds, in its order.
pub async fn search(pool: &PgPool, s: &RunSearch, limit: i64) -> sqlx::Result<Vec<SearchRow>> {
    build(s, Some(limit)).build_query_as().fetch_all(pool).await
}

/// How many runs the search finds.
pub async fn count(pool: &PgPool, s: &RunSearch) -> sqlx::Result<i64> {
    let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM runs");
    push_where(&mut qb, s);
    qb.build_query_scalar().fetch_one(pool).await
}

/// Every run the search finds, streamed from the database in order into `sink` (stops early
/// when the receiver is gone: the download was abandoned).
pub async fn each(
    pool: &PgPool,
    s: &RunSearch,
    sink: tokio::sync::mpsc::Sender<SearchRow>,
) -> sqlx::Result<()> {
    let mut qb = build(s, None);
    let mut rows = qb.build_query_as::<SearchRow>().fetch(pool);
    while let Some(row) = rows.try_next().await? {
        if sink.send(row).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Every metric name any run has reported, in order (a skip scan of each run's keys, so the
/// metric points themselves are never read).
pub async fn metric_names(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT DISTINCT k.key FROM runs r CROSS JOIN LATERAL (
             WITH RECURSIVE t(key) AS (
                 (SELECT key FROM metrics WHERE run_id = r.id ORDER BY key LIMIT 1)
                 UNION ALL
                 SELECT (SELECT key FROM metrics WHERE run_id = r.id AND key > t.key
                         ORDER BY key LIMIT 1)
                 FROM t WHERE t.key IS NOT NULL
             ) SELECT key FROM t WHERE key IS NOT NULL
         ) k ORDER BY k.key",
    )
    .fetch_all(pool)
    .await
}

/// Every tag in use, in order.
pub async fn tags_in_use(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT DISTINCT unnest(tags) AS t FROM runs ORDER BY t")
        .fetch_all(pool)
        .await
}

/// Filters and sort order of a simple run list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub kind: Option<String>,
    pub status: Option<String>,
    pub dataset_id: Option<i64>,
    pub sort: RunSort,
    /// Archived runs too (lists hide them by default).
    pub include_archived: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RunSort {
    #[default]
    Newest,
    Oldest,
    Name,
    Status,
}

impl RunSort {
    pub fn parse(s: &str) -> Option<RunSort> {
        Some(match s {
            "newest" => RunSort::Newest,
            "oldest" => RunSort::Oldest,
            "name" => RunSort::Name,
            "status" => RunSort::Status,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RunSort::Newest => "newest",
            RunSort::Oldest => "oldest",
            RunSort::Name => "name",
            RunSort::Status => "status",
        }
    }
    fn order_by(self) -> &'static str {
        // Fixed strings only: the user picks among these, never writes SQL.
        match self {
            RunSort::Newest => "id DESC",
            RunSort::Oldest => "id ASC",
            RunSort::Name => "name ASC, id DESC",
            RunSort::Status => "status ASC, id DESC",
        }
    }
}

/// The simple lists other pages pick runs from (the home page's recent runs, the new-run
/// page's checkpoints), filtered by kind, status and dataset.
pub async fn list(pool: &PgPool, f: &RunFilter) -> sqlx::Result<Vec<RunRow>> {
    let sql = format!(
        select_with_creator!(
            "runs",
            "WHERE ($1::TEXT IS NULL OR kind = $1) AND ($2::TEXT IS NULL OR status = $2)
           AND ($3::BIGINT IS NULL OR dataset_id = $3)
           AND ($4 OR archived_at IS NULL)
         ORDER BY {} LIMIT 500"
        ),
        f.sort.order_by()
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&f.kind)
        .bind(&f.status)
        .bind(f.dataset_id)
        .bind(f.include_archived)
        .fetch_all(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::{ConfigKeys, Op, parse, resolve::resolve};

    #[test]
    fn user_text_never_enters_the_sql() {
        let keys = ConfigKeys::of_defaults();
        let metrics = vec!["eval/AP".to_string()];
        let evil = "x'; DROP TABLE runs; --";
        let terms = parse(&format!(
            "\"{evil}\" tag:\"{evil}\" dataset:\"{evil}\" detector = \"{evil}\" lr > 0.1 eval/AP > 0.2"
        ))
        .unwrap();
        let s = RunSearch {
            filter: resolve(&terms, &keys, &metrics).unwrap(),
            best: Some(("eval/AP".into(), Goal::Max)),
            ..RunSearch::default()
        };
        let sql = build(&s, Some(10)).into_sql().as_str().to_string();
        assert!(!sql.contains("DROP"), "{sql}");
        assert!(!sql.contains("eval/AP"), "{sql}");
        assert!(!sql.contains("optim"), "{sql}");
        assert!(sql.contains("runs.archived_at IS NULL"), "{sql}");
    }

    #[test]
    fn like_patterns_are_literal() {
        assert_eq!(like_escaped("a_b%c"), "%a\\_b\\%c%");
    }

    #[test]
    fn operators_are_fixed_strings() {
        assert_eq!(Op::Ne.sql(), "<>");
    }
}
