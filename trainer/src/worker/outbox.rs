//! Buffered, retrying delivery of a job's events to the server.
//!
//! The job pushes events without waiting; one sender thread delivers them in order. While the
//! server is unreachable the events stay queued and the sender retries with back-off, so nothing
//! is lost. Metric and log events that queue up are merged into larger batches. A 409 means this
//! attempt lost its lease: the outbox drops everything and raises the stop flag. Any other refusal
//! (e.g. 413 for an artifact over the server's limit) can never succeed: it raises the stop flag
//! and is kept as [`Outbox::refusal`], so the run ends `failed` with the server's reason instead
//! of `succeeded` without the result.

use super::client::{ApiCallError, ApiClient};
use crate::jobs::sink::LogNumbering;
use crate::jobs::{EventSink, StopFlag};
use aligndet_common::api::{
    ImageProposals, LogBatch, LogLine, MetricPoint, MetricsBatch, ProposalsBatch,
};
use aligndet_common::artifacts::check_artifact_name;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

enum Pending {
    Metrics(Vec<MetricPoint>),
    Logs(Vec<LogLine>),
    Proposals(Vec<ImageProposals>),
    Artifact { name: String, file: PathBuf },
}

impl Pending {
    /// What the event is, for the error a refusal fails the run with.
    fn describe(&self) -> String {
        match self {
            Pending::Metrics(points) => format!("{} metric points", points.len()),
            Pending::Logs(lines) => format!("{} log lines", lines.len()),
            Pending::Proposals(images) => format!("pseudo-boxes of {} images", images.len()),
            Pending::Artifact { name, .. } => format!("artifact {name:?}"),
        }
    }
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Pending>,
    /// The job has finished: the sender exits once the queue is empty.
    closing: bool,
    /// The server answered 409: the attempt is dead, nothing more is sent.
    lost: bool,
    /// The first event the server refused for good, with its reason.
    refusal: Option<String>,
}

pub struct Outbox {
    queue: Mutex<Queue>,
    wake: Condvar,
}

const MAX_BATCH_POINTS: usize = 5_000;

impl Outbox {
    pub fn new() -> Arc<Outbox> {
        Arc::new(Outbox {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
        })
    }

    fn push(&self, item: Pending) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.lost {
            return;
        }
        q.items.push_back(item);
        self.wake.notify_all();
    }

    pub fn is_lost(&self) -> bool {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).lost
    }

    /// The attempt's lease is gone: drop what is queued (the server would 409 it all).
    /// Returns how many queued events were dropped.
    pub fn mark_lost(&self) -> usize {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.lost = true;
        let dropped = q.items.len();
        q.items.clear();
        self.wake.notify_all();
        dropped
    }

    /// Why the run must fail: the first event the server refused, and the server's reason.
    pub fn refusal(&self) -> Option<String> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refusal
            .clone()
    }

    fn record_refusal(&self, message: String) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.refusal.get_or_insert(message);
    }

    /// Take the next item, merging consecutive metric or log batches.
    fn next(&self) -> Option<Pending> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if q.lost {
                return None;
            }
            if let Some(first) = q.items.pop_front() {
                return Some(match first {
                    Pending::Metrics(mut points) => {
                        while points.len() < MAX_BATCH_POINTS {
                            match q.items.front() {
                                Some(Pending::Metrics(_)) => {
                                    if let Some(Pending::Metrics(more)) = q.items.pop_front() {
                                        points.extend(more);
                                    }
                                }
                                _ => break,
                            }
                        }
                        Pending::Metrics(points)
                    }
                    Pending::Logs(mut lines) => {
                        while lines.len() < MAX_BATCH_POINTS {
                            match q.items.front() {
                                Some(Pending::Logs(_)) => {
                                    if let Some(Pending::Logs(more)) = q.items.pop_front() {
                                        lines.extend(more);
                                    }
                                }
                                _ => break,
                            }
                        }
                        Pending::Logs(lines)
                    }
                    other => other,
                });
            }
            if q.closing {
                return None;
            }
            q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Deliver queued events until the job closes the outbox and the queue is empty.
    /// Returns when everything was delivered or the attempt was lost.
    pub fn run_sender(
        self: &Arc<Self>,
        client: &ApiClient,
        run_id: i64,
        attempt: i32,
        stop: &StopFlag,
    ) {
        while let Some(item) = self.next() {
            let result = retry_transient(self, || match &item {
                Pending::Metrics(points) => client.metrics(
                    run_id,
                    &MetricsBatch {
                        attempt,
                        points: points.clone(),
                    },
                ),
                Pending::Logs(lines) => client.logs(
                    run_id,
                    &LogBatch {
                        attempt,
                        lines: lines.clone(),
                    },
                ),
                Pending::Proposals(images) => client.proposals(
                    run_id,
                    &ProposalsBatch {
                        attempt,
                        images: images.clone(),
                    },
                ),
                Pending::Artifact { name, file } => {
                    deliver_artifact(self, client, run_id, attempt, name, file)
                }
            });
            match result {
                Ok(()) => {}
                Err(ApiCallError::Conflict(msg)) => {
                    let dropped = self.mark_lost() + 1;
                    eprintln!(
                        "run #{run_id} attempt {attempt}: lease lost ({msg}); \
                         dropping {dropped} undelivered event(s) ({} and what was queued after it) \
                         and abandoning the job",
                        item.describe()
                    );
                    stop.set();
                    return;
                }
                // (Transient and CutOff never come back here: they are retried until delivered,
                // lost or, for repeated cut-offs, turned into a refusal.)
                Err(
                    ApiCallError::Refused(msg)
                    | ApiCallError::Transient(msg)
                    | ApiCallError::CutOff(msg),
                ) => {
                    // Retrying cannot help; the run fails with this reason. The events after it
                    // are still delivered so the run page shows what happened up to the end.
                    let error = format!("the server refused {}: {msg}", item.describe());
                    eprintln!("run #{run_id} attempt {attempt}: {error}; stopping the job");
                    self.record_refusal(error);
                    stop.set();
                }
            }
        }
    }

    /// The job is done: let the sender exit once the queue drains.
    pub fn close(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.closing = true;
        self.wake.notify_all();
    }
}

fn deliver_artifact(
    outbox: &Outbox,
    client: &ApiClient,
    run_id: i64,
    attempt: i32,
    name: &str,
    file: &Path,
) -> Result<(), ApiCallError> {
    let mut delay = Duration::from_millis(100);
    loop {
        match client.artifact(run_id, attempt, name, file) {
            // The client already retried the pieces while they made progress.
            Err(ApiCallError::CutOff(msg)) => {
                return Err(ApiCallError::Refused(format!(
                    "the server closed the connection part-way through the upload, its answer \
                     lost (over its artifact size limit?): {msg}"
                )));
            }
            // Server down: wait for it as for any other event.
            Err(ApiCallError::Transient(msg)) => {
                if outbox.is_lost() {
                    return Err(ApiCallError::Conflict(msg));
                }
                eprintln!("{msg}; retrying in {:.1} s", delay.as_secs_f64());
            }
            other => return other,
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Retry a call while it fails transiently (server down), backing off up to 5 s between tries.
/// Gives up only when the outbox is marked lost by someone else (the heartbeat thread).
pub fn retry_transient(
    outbox: &Outbox,
    call: impl FnMut() -> Result<(), ApiCallError>,
) -> Result<(), ApiCallError> {
    retry_transient_value(outbox, call)
}

/// [`retry_transient`] for calls that return a value.
pub fn retry_transient_value<T>(
    outbox: &Outbox,
    mut call: impl FnMut() -> Result<T, ApiCallError>,
) -> Result<T, ApiCallError> {
    let mut delay = Duration::from_millis(100);
    loop {
        match call() {
            Err(ApiCallError::Transient(msg)) => {
                if outbox.is_lost() {
                    return Err(ApiCallError::Conflict(msg));
                }
                eprintln!("{msg}; retrying in {:.1} s", delay.as_secs_f64());
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// The sink jobs see in worker mode: pushes into the outbox and returns at once.
pub struct HttpSink {
    outbox: Arc<Outbox>,
    log_numbering: LogNumbering,
    next_artifact_seq: u64,
    staging_dir: PathBuf,
    /// The server's artifact limit (from the job spec), checked before staging.
    artifact_limit_bytes: Option<u64>,
}

impl HttpSink {
    pub fn new(outbox: Arc<Outbox>, staging_dir: PathBuf) -> HttpSink {
        HttpSink {
            outbox,
            log_numbering: LogNumbering::default(),
            next_artifact_seq: 0,
            staging_dir,
            artifact_limit_bytes: None,
        }
    }

    pub fn with_artifact_limit(mut self, limit: Option<u64>) -> HttpSink {
        self.artifact_limit_bytes = limit;
        self
    }
}

impl EventSink for HttpSink {
    fn metrics(&mut self, points: Vec<MetricPoint>) {
        self.outbox.push(Pending::Metrics(points));
    }

    fn log_line(&mut self, level: &str, code: Option<&str>, text: String) {
        let line = self.log_numbering.line(level, code, text);
        self.outbox.push(Pending::Logs(vec![line]));
    }

    fn proposals(&mut self, images: Vec<ImageProposals>) {
        self.outbox.push(Pending::Proposals(images));
    }

    fn artifact(&mut self, name: &str, path: &Path) -> anyhow::Result<()> {
        check_artifact_name(name).map_err(|e| anyhow::anyhow!(e))?;
        let bytes = std::fs::metadata(path)?.len();
        if let Some(limit) = self.artifact_limit_bytes
            && bytes > limit
        {
            anyhow::bail!(
                "artifact {name:?} is {bytes} bytes, over the server's artifact limit of {limit} bytes ({} MiB; the server's --artifact-limit-mib)",
                limit >> 20
            );
        }
        // Snapshot the file now: the job may overwrite it before the upload happens.
        std::fs::create_dir_all(&self.staging_dir)?;
        let staged = self
            .staging_dir
            .join(format!("{}-{name}", self.next_artifact_seq));
        self.next_artifact_seq += 1;
        std::fs::copy(path, &staged)?;
        self.outbox.push(Pending::Artifact {
            name: name.to_string(),
            file: staged,
        });
        Ok(())
    }
}
