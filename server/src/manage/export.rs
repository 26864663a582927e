//! Exports streamed as they are read from the database (no cap, nothing held in memory beyond a
//! batch): a run's metrics as CSV (long form: one row per point) and JSON, and the runs a search
//! finds as CSV. A database error midway aborts the response instead of ending it early, so a
//! download is never silently short.

use crate::db;
use crate::db::run_manage::MetricRow;
use crate::db::run_search::{RunSearch, SearchRow};
use axum::body::{Body, Bytes};
use futures_util::{Stream, StreamExt};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Rows per chunk written to the response.
const BATCH: usize = 512;

/// Rows from a database reader running on its own task; its error ends the stream as an error.
fn rows<T: Send + 'static, F>(read: F) -> impl Stream<Item = Result<T, std::io::Error>>
where
    F: FnOnce(mpsc::Sender<T>) -> futures_util::future::BoxFuture<'static, sqlx::Result<()>>,
{
    let (tx, rx) = mpsc::channel::<T>(BATCH);
    let (err_tx, err_rx) = tokio::sync::oneshot::channel::<String>();
    let reader = read(tx);
    tokio::spawn(async move {
        if let Err(e) = reader.await {
            let incident = crate::error::incident(&e);
            let _ = err_tx.send(format!("export failed (incident {incident})"));
        }
    });
    let failure = futures_util::stream::once(err_rx)
        .filter_map(|r| async move { r.ok().map(|m| Err(std::io::Error::other(m))) });
    ReceiverStream::new(rx).map(Ok).chain(failure)
}

/// CSV records in batches, with a header first.
fn csv_body<T: Send + 'static>(
    header: Vec<String>,
    rows: impl Stream<Item = Result<T, std::io::Error>> + Send + 'static,
    record: impl Fn(&T) -> Vec<String> + Send + Sync + 'static,
) -> Body {
    let head = futures_util::stream::once(async move { encode(&[header]) });
    let body = rows.ready_chunks(BATCH).map(move |batch| {
        let mut records = Vec::with_capacity(batch.len());
        for row in batch {
            records.push(record(&row?));
        }
        encode(&records)
    });
    Body::from_stream(head.chain(body))
}

fn encode(records: &[Vec<String>]) -> Result<Bytes, std::io::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in records {
        w.write_record(r).map_err(std::io::Error::other)?;
    }
    w.into_inner()
        .map(Bytes::from)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

fn metric_rows(
    pool: &PgPool,
    run_id: i64,
) -> impl Stream<Item = Result<MetricRow, std::io::Error>> + Send + 'static {
    let pool = pool.clone();
    rows(move |tx| Box::pin(async move { db::run_manage::each_metric(&pool, run_id, tx).await }))
}

/// `run_id,key,step,value,wall_time,attempt`, one row per stored point, by key then step.
pub fn metrics_csv(pool: &PgPool, run_id: i64) -> Body {
    let header = ["run_id", "key", "step", "value", "wall_time", "attempt"];
    csv_body(
        header.iter().map(|h| h.to_string()).collect(),
        metric_rows(pool, run_id),
        move |m| {
            vec![
                run_id.to_string(),
                m.key.clone(),
                m.step.to_string(),
                m.value.to_string(),
                m.wall_time.to_string(),
                m.attempt.to_string(),
            ]
        },
    )
}

/// `{"run_id": N, "metrics": [{"key", "step", "value", "wall_time", "attempt"}, …]}`.
pub fn metrics_json(pool: &PgPool, run_id: i64) -> Body {
    let head = futures_util::stream::once(async move {
        Ok::<_, std::io::Error>(Bytes::from(format!("{{\"run_id\":{run_id},\"metrics\":[")))
    });
    let mut first = true;
    let body = metric_rows(pool, run_id)
        .ready_chunks(BATCH)
        .map(move |batch| {
            let mut out = Vec::new();
            for row in batch {
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                serde_json::to_writer(&mut out, &row?).map_err(std::io::Error::other)?;
            }
            Ok(Bytes::from(out))
        });
    let tail = futures_util::stream::once(async { Ok(Bytes::from_static(b"]}")) });
    Body::from_stream(head.chain(body).chain(tail))
}

/// The runs a search finds, in its order, one row each.
pub fn runs_csv(pool: &PgPool, search: RunSearch) -> Body {
    let best = search.best.as_ref().map(|(k, g)| (k.clone(), *g));
    let mut header: Vec<String> = [
        "id",
        "name",
        "kind",
        "status",
        "dataset_id",
        "dataset",
        "tags",
        "note",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
        "archived",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect();
    if let Some((key, goal)) = &best {
        header.push(format!("{key} ({} value)", goal.label()));
        header.push(format!("{key} (step of the {})", goal.label()));
    }
    header.push("config".into());
    let pool = pool.clone();
    let rows =
        rows(move |tx| Box::pin(async move { db::run_search::each(&pool, &search, tx).await }));
    let time =
        |t: &Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    csv_body(header, rows, move |r: &SearchRow| {
        let run = &r.run;
        let mut rec = vec![
            run.id.to_string(),
            run.name.clone(),
            run.kind.to_string(),
            run.status.to_string(),
            run.dataset_id.map(|d| d.to_string()).unwrap_or_default(),
            r.dataset_name.clone().unwrap_or_default(),
            run.tags.join(" "),
            run.note.clone(),
            run.creator.clone().unwrap_or_default(),
            run.created_at.to_rfc3339(),
            time(&run.started_at),
            time(&run.finished_at),
            run.archived_at.is_some().to_string(),
        ];
        if best.is_some() {
            rec.push(r.best_value.map(|v| v.to_string()).unwrap_or_default());
            rec.push(r.best_step.map(|v| v.to_string()).unwrap_or_default());
        }
        rec.push(run.config.json.to_string());
        rec
    })
}
