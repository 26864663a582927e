//! Buffered, retrying delivery of a job's events to the server.
//!
//! The job pushes events without waiting; one sender thread delivers them in order. While the
//! server is unreachable the events stay queued and the sender retries with back-off, so nothing
//! is lost. Metric and log events that queue up are merged into larger batches. A 409 means this
//! attempt lost its lease: the outbox drops everything and raises the stop flag.

use super::client::{ApiCallError, ApiClient};
use crate::jobs::sink::now_seconds;
use crate::jobs::{EventSink, StopFlag};
use aligndet_common::api::{
    ImageProposals, LogBatch, LogLine, MetricPoint, MetricsBatch, ProposalsBatch,
    check_artifact_name,
};
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

#[derive(Default)]
struct Queue {
    items: VecDeque<Pending>,
    /// The job has finished: the sender exits once the queue is empty.
    closing: bool,
    /// The server answered 409: the attempt is dead, nothing more is sent.
    lost: bool,
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

    pub fn mark_lost(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.lost = true;
        q.items.clear();
        self.wake.notify_all();
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
                Pending::Artifact { name, file } => client.artifact(run_id, attempt, name, file),
            });
            match result {
                Ok(()) => {}
                Err(ApiCallError::Conflict(msg)) => {
                    eprintln!("run {run_id} attempt {attempt}: {msg}; abandoning the job");
                    self.mark_lost();
                    stop.set();
                    return;
                }
                Err(e) => {
                    // Refused: drop this one item (it can never succeed) and go on.
                    eprintln!("run {run_id}: dropping an event the server refused: {e}");
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
    next_log_seq: i64,
    next_artifact_seq: u64,
    staging_dir: PathBuf,
}

impl HttpSink {
    pub fn new(outbox: Arc<Outbox>, staging_dir: PathBuf) -> HttpSink {
        HttpSink {
            outbox,
            next_log_seq: 0,
            next_artifact_seq: 0,
            staging_dir,
        }
    }
}

impl EventSink for HttpSink {
    fn metrics(&mut self, points: Vec<MetricPoint>) {
        self.outbox.push(Pending::Metrics(points));
    }

    fn log(&mut self, level: &str, text: String) {
        eprintln!("[{level}] {text}");
        let line = LogLine {
            seq: self.next_log_seq,
            wall_time: now_seconds(),
            level: level.to_string(),
            text,
        };
        self.next_log_seq += 1;
        self.outbox.push(Pending::Logs(vec![line]));
    }

    fn proposals(&mut self, images: Vec<ImageProposals>) {
        self.outbox.push(Pending::Proposals(images));
    }

    fn artifact(&mut self, name: &str, path: &Path) -> anyhow::Result<()> {
        check_artifact_name(name).map_err(|e| anyhow::anyhow!(e))?;
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
