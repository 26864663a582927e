//! The one interface jobs report through, and the shared stop flag.

use aligndet_common::api::{ImageProposals, LogLine, MetricPoint};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Numbers one attempt's log lines from 0 (the server keeps `(run, attempt, seq)` once, so a
/// re-sent line is not stored twice), echoing each to stderr for whoever watches the process.
#[derive(Debug, Default)]
pub struct LogNumbering {
    next_seq: i64,
}

impl LogNumbering {
    pub fn line(&mut self, level: &str, code: Option<&str>, text: String) -> LogLine {
        eprintln!("[{level}] {text}");
        let line = LogLine {
            seq: self.next_seq,
            wall_time: now_seconds(),
            level: level.to_string(),
            text,
            code: code.map(str::to_string),
        };
        self.next_seq += 1;
        line
    }
}

/// Where a job's events go. Implementations must not block the job for long: they buffer.
pub trait EventSink: Send {
    fn metrics(&mut self, points: Vec<MetricPoint>);
    /// A log line; `code` marks a training-health warning (see `train::health`).
    fn log_line(&mut self, level: &str, code: Option<&str>, text: String);
    /// Publish the file at `path` as an artifact named `name` (checked by
    /// `aligndet_common::artifacts::check_artifact_name`).
    fn artifact(&mut self, name: &str, path: &Path) -> anyhow::Result<()>;
    /// Pseudo-boxes of finished images (stored per image; the unit a re-claimed job skips).
    fn proposals(&mut self, images: Vec<ImageProposals>);

    fn log(&mut self, level: &str, text: String) {
        self.log_line(level, None, text);
    }

    /// A training-health warning: shown on the run page and in the runs list, the latest
    /// per `code`.
    fn warning(&mut self, code: &str, text: String) {
        self.log_line("warning", Some(code), text);
    }

    /// Convenience: one metric point measured now.
    fn metric(&mut self, key: &str, step: i64, value: f64) {
        self.metrics(vec![MetricPoint {
            key: key.to_string(),
            step,
            value,
            wall_time: now_seconds(),
        }]);
    }
}

/// Set by the worker when the user cancels or the lease is lost; jobs poll it at safe points.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
