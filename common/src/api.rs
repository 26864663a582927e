//! Worker ⇄ server wire protocol (JSON over HTTP under `/api/v1/`, bearer worker token).
//!
//! Every call a worker makes about a run carries the attempt number it was given at claim time.
//! The server rejects calls from an attempt that is no longer current (409 Conflict), which fences
//! off a worker whose lease expired and whose job was handed to someone else.

use crate::jobs::{JobConfig, RunStatus};
use serde::{Deserialize, Serialize};

/// 3: job inputs by content (`JobSpec::dataset_content`, `inputs`), no server paths.
pub const PROTOCOL_VERSION: u32 = 3;

/// Header a worker sends on every call after registering: the secret the server gave it in
/// [`WorkerRegistered::worker_key`]. The shared worker token says "some worker of this
/// platform"; the key says which one, so a worker can only report for attempts it holds.
pub const WORKER_KEY_HEADER: &str = "x-aligndet-worker-key";

/// `POST /api/v1/workers/register`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterWorker {
    pub name: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Free-form facts about the worker (libtorch version, CUDA, threads).
    #[serde(default)]
    pub info: serde_json::Value,
    pub protocol_version: u32,
    /// What it has, for capability-matched claims (a worker without: one CPU core).
    #[serde(default)]
    pub capabilities: Option<crate::capabilities::Capabilities>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerRegistered {
    pub worker_id: i64,
    /// How often the worker must heartbeat a running job, in seconds.
    pub heartbeat_interval_s: f64,
    /// This worker's secret, sent back in [`WORKER_KEY_HEADER`] on every later call.
    pub worker_key: String,
}

/// `POST /api/v1/jobs/claim`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimRequest {
    pub worker_id: i64,
    /// Claim exactly this run (if it is queued and the worker meets its requirements), even when
    /// a Slurm job was placed for it: what `trainer worker --once --run ID` inside that job sends.
    #[serde(default)]
    pub run_id: Option<i64>,
    /// What the claiming trainer is (the run's reproducibility stamp). Optional, so workers
    /// from before it still claim (their runs' stamps say "not reported"), and ignored by
    /// servers from before it: no protocol version change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<TrainerStamp>,
}

/// The trainer side of a run's reproducibility stamp, sent with each claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerStamp {
    /// The trainer crate's version.
    pub version: String,
    /// `git rev-parse HEAD` of the checkout it was built from, or `unknown`.
    pub git_commit: String,
    /// Whether that checkout had uncommitted changes (`None`: not a git checkout).
    #[serde(default)]
    pub git_dirty: Option<bool>,
    /// The libtorch it runs against.
    pub libtorch_version: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
}

/// Where a job finds its dataset on the machine it runs on: given by hand to `trainer run`, laid
/// out from [`JobSpec::dataset_content`] by a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetLocation {
    pub dataset_id: i64,
    pub name: String,
    /// COCO JSON of the whole dataset as stored by the server.
    pub annotations_path: String,
    /// Folder that image `file_name`s are relative to.
    pub image_root: String,
    /// Train/val image ids and labeled subsets (`dataset::DatasetSplits`), when the dataset has them.
    #[serde(default)]
    pub splits: Option<serde_json::Value>,
}

/// The answer to a successful claim: everything a worker needs to run the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub run_id: i64,
    pub attempt: i32,
    pub name: String,
    pub config: JobConfig,
    /// Local paths: `trainer run` specs (a server sends `dataset_content` instead).
    #[serde(default)]
    pub dataset: Option<DatasetLocation>,
    /// The dataset by content, from a server: the worker fetches it into its cache.
    #[serde(default)]
    pub dataset_content: Option<crate::content::DatasetContent>,
    /// Artifacts of this run and the runs it reads from, by content, fetched when the job asks.
    #[serde(default)]
    pub inputs: Vec<crate::content::ArtifactInput>,
    pub lease_seconds: f64,
    /// Decoded-size limits the worker applies to every image it opens (the server's own).
    #[serde(default)]
    pub image_limits: crate::images::ImageLimits,
    /// The largest artifact the server stores, in bytes: a worker refuses a bigger one before
    /// uploading it, with a message that says so (the server's 413 arrives mid-upload, when the
    /// client may no longer read it).
    #[serde(default)]
    pub artifact_limit_bytes: Option<u64>,
}

impl JobSpec {
    /// A first attempt of `config` that reads no dataset and no other run's artifacts, holds no
    /// lease and takes the default image limits (a spec to run by hand, or a test's).
    pub fn standalone(run_id: i64, name: &str, config: JobConfig) -> JobSpec {
        JobSpec {
            run_id,
            attempt: 1,
            name: name.to_string(),
            config,
            dataset: None,
            dataset_content: None,
            inputs: Vec::new(),
            lease_seconds: 0.0,
            image_limits: Default::default(),
            artifact_limit_bytes: None,
        }
    }
}

/// `POST /api/v1/runs/{id}/heartbeat`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub worker_id: i64,
    pub attempt: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The user asked to cancel: stop at the next safe point and report `cancelled`.
    pub cancel_requested: bool,
    pub lease_seconds: f64,
}

/// One point of a metric series. `(run, key, step)` identifies it: sending it twice stores it once,
/// and a later value for the same step replaces the earlier one (a resumed run re-logs steps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub key: String,
    pub step: i64,
    pub value: f64,
    /// Seconds since the Unix epoch when the value was measured.
    pub wall_time: f64,
}

/// `POST /api/v1/runs/{id}/metrics`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsBatch {
    pub attempt: i32,
    pub points: Vec<MetricPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Per-attempt sequence number; `(run, attempt, seq)` makes re-sent lines idempotent.
    pub seq: i64,
    pub wall_time: f64,
    pub level: String,
    pub text: String,
    /// A training-health warning's stable code (`flat_loss/bbox_regression`, `stalled`, …;
    /// see the trainer's `train::health`): the run page and the runs list show the latest line
    /// of each code. `None` for ordinary lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// `POST /api/v1/runs/{id}/logs`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogBatch {
    pub attempt: i32,
    pub lines: Vec<LogLine>,
}

/// `POST /api/v1/runs/{id}/status`: the final word of an attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub attempt: i32,
    pub status: RunStatus,
    #[serde(default)]
    pub error: Option<String>,
    /// A `failed` attempt whose cause lies outside the job (a data-parallel rank died): the run
    /// goes back to the queue while attempts remain, and resumes from its checkpoint.
    #[serde(default)]
    pub retryable: bool,
}

/// Why the pseudo-box filter removed a box (0 = kept). Stored per box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(i16)]
pub enum FilterRule {
    Kept = 0,
    /// w or h below the minimum side.
    TooSmall = 1,
    /// w/h outside [1/max_aspect, max_aspect].
    Aspect = 2,
    /// sqrt(w·h) above max_relative_size of the image's sqrt(W·H).
    TooLarge = 3,
    /// Suppressed by NMS.
    Nms = 4,
    /// Beyond top-k.
    TopK = 5,
}

impl FilterRule {
    pub fn from_code(code: i16) -> Option<FilterRule> {
        Some(match code {
            0 => FilterRule::Kept,
            1 => FilterRule::TooSmall,
            2 => FilterRule::Aspect,
            3 => FilterRule::TooLarge,
            4 => FilterRule::Nms,
            5 => FilterRule::TopK,
            _ => return None,
        })
    }
    pub fn label(self) -> &'static str {
        match self {
            FilterRule::Kept => "kept",
            FilterRule::TooSmall => "too small",
            FilterRule::Aspect => "aspect ratio",
            FilterRule::TooLarge => "too large",
            FilterRule::Nms => "NMS",
            FilterRule::TopK => "beyond top-k",
        }
    }
}

/// Pseudo-boxes of one image, as produced (before filtering) with the filter's verdict per box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageProposals {
    pub image_id: i64,
    /// `[x, y, w, h]` in pixels, in the order produced.
    pub boxes: Vec<[f32; 4]>,
    /// One per box.
    pub removed_by: Vec<FilterRule>,
    pub seconds: f64,
}

/// `POST /api/v1/runs/{id}/proposals` (idempotent per image).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProposalsBatch {
    pub attempt: i32,
    pub images: Vec<ImageProposals>,
}

/// `GET /api/v1/runs/{id}/proposals/done[?full=1]`: images a re-claimed job need not recompute,
/// and with `full=1` their stored pseudo-boxes (for recall over the whole dataset).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProposalsDone {
    pub image_ids: Vec<i64>,
    #[serde(default)]
    pub images: Vec<ImageProposals>,
}

/// JSON error body of every `/api/v1/` failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// One event of a job, as written to `events.jsonl` by `trainer run` and as sent over HTTP by a
/// worker. The job emits these through one sink and never knows which.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    Metrics {
        points: Vec<MetricPoint>,
    },
    Log {
        line: LogLine,
    },
    Artifact {
        name: String,
        bytes: u64,
    },
    Proposals {
        images: Vec<ImageProposals>,
    },
    Status {
        status: RunStatus,
        error: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_events_are_tagged_json() {
        let e = JobEvent::Status {
            status: RunStatus::Succeeded,
            error: None,
        };
        let s = serde_json::to_string(&e).unwrap();
        assert!(s.contains(r#""event":"status""#));
        assert_eq!(serde_json::from_str::<JobEvent>(&s).unwrap(), e);
    }
}
