//! `trainer worker`: register with a server, then claim and run jobs until stopped.
//!
//! Per job, three threads cooperate: the job itself (this thread), a heartbeat thread that extends
//! the lease and hears about cancellation, and the outbox sender that delivers events. The final
//! status is sent only after every event before it was delivered.

pub mod bench_delivery;
pub mod cache;
pub mod client;
pub mod content;
mod layout_marker;
pub mod outbox;
pub mod stream;
pub(crate) mod verified;

use crate::doctor::environment_report;
use crate::jobs::{EventSink, JobContext, JobOutcome, ResumeState, StopFlag, devices, run_job};
use aligndet_common::api::{
    Heartbeat, JobSpec, PROTOCOL_VERSION, RegisterWorker, StatusUpdate, WorkerRegistered,
};
use aligndet_common::jobs::{JobConfig, RunStatus};
use cache::{BlobCache, CacheReport};
use client::{ApiCallError, ApiClient};
use outbox::{HttpSink, Outbox, retry_transient, retry_transient_value};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// Server base URL, e.g. http://127.0.0.1:8080
    #[arg(long)]
    pub server: String,
    /// File holding the worker token (the server keeps it in <data dir>/worker-token).
    /// Without it the token comes from the environment variable ALIGNDET_WORKER_TOKEN.
    #[arg(long, value_name = "PATH", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Deprecated: a token in the arguments is visible to every local user (`ps`).
    #[arg(long, hide = true)]
    pub token: Option<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// CUDA devices for data-parallel jobs, e.g. 0,1,2,3: a job with optim.world_size N runs its
    /// ranks on the first N (rank 0, this process, on the first; single-device jobs too).
    #[arg(long, conflicts_with = "device")]
    pub gpus: Option<String>,
    /// A label runs may require (repeat: `--label a100 --label site=lab2`).
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Name shown in the UI (default: host name and process id).
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds between claim attempts while idle.
    #[arg(long, default_value_t = 1.0)]
    pub poll_interval: f64,
    /// Scratch folder for job work directories.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Content-addressed cache of job inputs (datasets, checkpoints), kept between jobs.
    /// Default: aligndet-studio/worker-cache under the user's cache folder (the first free
    /// one when several workers share a machine).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Cap on the cache's size in GB; least-recently-used inputs are evicted beyond it.
    #[arg(long, default_value_t = 50.0)]
    pub cache_max_gb: f64,
    /// Exit after this many jobs (for scripts and tests); run forever when absent.
    #[arg(long)]
    pub max_jobs: Option<u64>,
    /// Run one job, then exit: with status 0 only when it succeeded.
    #[arg(long)]
    pub once: bool,
    /// Claim exactly this run (with --once), even when a Slurm job was placed for it: what the
    /// batch script of `trainer slurm-agent` runs. Fails when the run cannot be claimed.
    #[arg(long, value_name = "ID", requires = "once")]
    pub run: Option<i64>,
}

/// Environment variable the worker token may come from instead of `--token-file`.
pub const TOKEN_ENV: &str = "ALIGNDET_WORKER_TOKEN";

/// The worker token from `--token-file`, the deprecated `--token`, or [`TOKEN_ENV`], in that order.
pub fn resolve_token(args: &WorkerArgs) -> anyhow::Result<String> {
    token_from(args.token_file.as_deref(), args.token.as_deref())
}

/// [`resolve_token`] for any command with the same two options (`trainer slurm-agent`).
pub fn token_from(
    token_file: Option<&std::path::Path>,
    token: Option<&str>,
) -> anyhow::Result<String> {
    if let Some(path) = token_file {
        return read_token_file(path);
    }
    if let Some(token) = token {
        eprintln!(
            "warning: --token is deprecated: the command line is visible to every local user \
             (ps, /proc); use --token-file PATH or {TOKEN_ENV} instead"
        );
        return non_empty(token, "--token");
    }
    match std::env::var(TOKEN_ENV) {
        Ok(token) => non_empty(&token, TOKEN_ENV),
        Err(std::env::VarError::NotUnicode(_)) => anyhow::bail!("{TOKEN_ENV} is not valid UTF-8"),
        Err(std::env::VarError::NotPresent) => anyhow::bail!(
            "no worker token given: pass --token-file PATH (the server keeps it in \
             <data dir>/worker-token), or set {TOKEN_ENV}, or (deprecated, visible in ps) --token"
        ),
    }
}

pub(crate) fn read_token_file(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!("cannot read the worker token file {}: {e}", path.display())
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!(
                "warning: the worker token file {} is readable by other users (chmod 600 it)",
                path.display()
            );
        }
    }
    non_empty(&text, &format!("the worker token file {}", path.display()))
}

fn non_empty(token: &str, source: &str) -> anyhow::Result<String> {
    let token = token.trim();
    if token.is_empty() {
        anyhow::bail!("{source} is empty: it must hold the worker token");
    }
    Ok(token.to_string())
}

pub fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    let (device, rank_devices) = devices(&args.device, args.gpus.as_deref())?;
    let token = resolve_token(&args)?;
    let client = ApiClient::new(&args.server, &token)?;
    let name = args.name.clone().unwrap_or_else(default_worker_name);
    let work_root = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("aligndet-worker-{}", std::process::id()))
    });
    for label in &args.labels {
        aligndet_common::capabilities::check_label(label).map_err(anyhow::Error::msg)?;
    }
    let cache = open_cache(&args)?;
    eprintln!("worker cache: {}", cache.root().display());
    let capabilities =
        crate::doctor::capabilities(device, &rank_devices, args.labels.clone(), cache.root());
    eprintln!("worker capabilities: {}", capabilities.summary());
    let registration = register_with_retry(&client, &name, &args.device, capabilities)?;
    let stamp = crate::doctor::trainer_stamp(&args.device);
    eprintln!(
        "worker {name} registered as #{} on {}",
        registration.worker_id, args.server
    );
    let mut jobs_done = 0u64;
    loop {
        if args.max_jobs.is_some_and(|m| jobs_done >= m) {
            return Ok(());
        }
        match client.claim(registration.worker_id, args.run, &stamp) {
            Ok(Some(spec)) => {
                let outcome = run_claimed_job(
                    &client,
                    &cache,
                    &registration,
                    &spec,
                    device,
                    &rank_devices,
                    &work_root,
                );
                jobs_done += 1;
                if args.once {
                    return once_result(spec.run_id, outcome);
                }
            }
            Ok(None) if args.run.is_some() => anyhow::bail!(
                "run {} cannot be claimed: it is not queued, waits for other runs, or needs more \
                 than this worker has",
                args.run.unwrap_or_default()
            ),
            Ok(None) => std::thread::sleep(Duration::from_secs_f64(args.poll_interval)),
            Err(ApiCallError::Refused(msg)) => {
                anyhow::bail!("the server refused this worker: {msg}")
            }
            Err(e) => {
                eprintln!("claim failed ({e}); retrying");
                std::thread::sleep(Duration::from_secs_f64(args.poll_interval.max(1.0)));
            }
        }
    }
}

/// `--cache`, or the first cache folder under the user's cache folder no other worker holds.
fn open_cache(args: &WorkerArgs) -> anyhow::Result<BlobCache> {
    let max_bytes = (args.cache_max_gb.max(0.0) * 1e9) as u64;
    if let Some(dir) = &args.cache {
        return BlobCache::open(dir, max_bytes);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("aligndet-studio");
    let mut last = None;
    for n in 1..=16 {
        let name = if n == 1 {
            "worker-cache".to_string()
        } else {
            format!("worker-cache-{n}")
        };
        match BlobCache::open(&base.join(name), max_bytes) {
            Ok(cache) => return Ok(cache),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried at least once"))
}

/// How `--once` ends: `Ok` only for a run that succeeded.
fn once_result(run_id: i64, outcome: Option<RunStatus>) -> anyhow::Result<()> {
    match outcome {
        Some(RunStatus::Succeeded) => Ok(()),
        Some(status) => anyhow::bail!("run {run_id} ended {status}"),
        None => anyhow::bail!("run {run_id}: the final status did not reach the server"),
    }
}

fn default_worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".to_string());
    format!("{host}-{}", std::process::id())
}

pub fn register_with_retry(
    client: &ApiClient,
    name: &str,
    device: &str,
    capabilities: aligndet_common::capabilities::Capabilities,
) -> anyhow::Result<WorkerRegistered> {
    let request = RegisterWorker {
        name: name.to_string(),
        device: device.to_string(),
        info: serde_json::to_value(environment_report())?,
        protocol_version: PROTOCOL_VERSION,
        capabilities: Some(capabilities),
    };
    let mut delay = Duration::from_millis(200);
    loop {
        match client.register(&request) {
            Ok(r) => return Ok(r),
            Err(ApiCallError::Transient(msg)) => {
                eprintln!("server not reachable yet ({msg}); retrying");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => anyhow::bail!("registration failed: {e}"),
        }
    }
}

fn run_claimed_job(
    client: &ApiClient,
    cache: &BlobCache,
    registration: &WorkerRegistered,
    spec: &JobSpec,
    device: tch::Device,
    rank_devices: &[tch::Device],
    work_root: &std::path::Path,
) -> Option<RunStatus> {
    eprintln!(
        "running run #{} attempt {} ({})",
        spec.run_id,
        spec.attempt,
        spec.config.kind()
    );
    let stop = StopFlag::default();
    let cancel_requested = Arc::new(AtomicBool::new(false));
    let job_done = Arc::new(AtomicBool::new(false));
    let outbox = Outbox::new();
    let work_dir = work_root.join(format!("run-{}-attempt-{}", spec.run_id, spec.attempt));

    let outcome = std::thread::scope(|scope| {
        // Heartbeats: extend the lease, hear about cancellation, notice a lost lease.
        scope.spawn(|| {
            let interval = Duration::from_secs_f64(registration.heartbeat_interval_s.max(0.2));
            let beat = Heartbeat {
                worker_id: registration.worker_id,
                attempt: spec.attempt,
            };
            while !job_done.load(Ordering::SeqCst) {
                match client.heartbeat(spec.run_id, &beat) {
                    Ok(reply) if reply.cancel_requested => {
                        cancel_requested.store(true, Ordering::SeqCst);
                        stop.set();
                    }
                    Ok(_) => {}
                    Err(ApiCallError::Conflict(msg)) | Err(ApiCallError::Refused(msg)) => {
                        let dropped = outbox.mark_lost();
                        eprintln!(
                            "run #{} attempt {}: lease lost (heartbeat answered {msg}); \
                             dropping {dropped} undelivered event(s) and stopping the job",
                            spec.run_id, spec.attempt
                        );
                        stop.set();
                        return;
                    }
                    Err(ApiCallError::Transient(_) | ApiCallError::CutOff(_)) => {}
                }
                // Sleep in small slices so the thread ends soon after the job.
                let mut slept = Duration::ZERO;
                while slept < interval && !job_done.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                    slept += Duration::from_millis(50);
                }
            }
        });
        let sender = scope.spawn(|| outbox.run_sender(client, spec.run_id, spec.attempt, &stop));

        let mut sink = HttpSink::new(outbox.clone(), work_dir.join("outbox"))
            .with_artifact_limit(spec.artifact_limit_bytes);
        let result = std::fs::create_dir_all(&work_dir)
            .map_err(anyhow::Error::from)
            .and_then(|_| {
                let mut resume = ResumeState::default();
                if let JobConfig::Proposals(_) = &spec.config {
                    resume.proposals =
                        retry_transient_value(&outbox, || client.proposals_done(spec.run_id))
                            .map_err(|e| anyhow::anyhow!("asking which images are done: {e}"))?;
                    if !resume.proposals.is_empty() {
                        sink.log(
                            "info",
                            format!(
                                "resuming: {} images were finished by an earlier attempt",
                                resume.proposals.len()
                            ),
                        );
                    }
                }
                let prepared = content::prepare(spec, cache, client)?;
                // An image the job needs will not come: stop it (the stream's error is the
                // run's).
                let stop_job = || stop.set();
                let (result, streamed) = prepared.run_streaming(stop_job, || {
                    let mut ctx = JobContext {
                        spec: &prepared.spec,
                        device,
                        rank_devices: rank_devices.to_vec(),
                        sink: &mut sink,
                        work_dir: work_dir.clone(),
                        stop: stop.clone(),
                        resume,
                        inputs: &prepared.artifacts,
                    };
                    // A panic in a job must fail the run, not kill the worker.
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_job(&mut ctx)))
                        .unwrap_or_else(|panic| {
                            let msg = crate::train::engine::panic_text(panic.as_ref());
                            Err(anyhow::anyhow!("the job panicked: {msg}"))
                        })
                });
                let result = match streamed {
                    Some(Ok(images)) => {
                        report_fetch(&mut sink, &prepared.report, &images);
                        result
                    }
                    Some(Err(e)) => Err(e.context("streaming the dataset")),
                    None => result,
                };
                for line in prepared.artifacts.take_fetches() {
                    sink.log("info", line);
                }
                result
            });
        outbox.close();
        let _ = sender.join();
        let outcome = if outbox.is_lost() {
            None
        } else {
            let (status, error) = match (outbox.refusal(), &result) {
                // A refused event is the run's failure even when the job itself went on fine:
                // its result (say the model) never reached the server.
                (Some(refused), Err(e)) => (
                    RunStatus::Failed,
                    Some(format!("{refused}; the job then failed: {e:#}")),
                ),
                (Some(refused), Ok(_)) => (RunStatus::Failed, Some(refused)),
                (None, Ok(JobOutcome::Succeeded)) => (RunStatus::Succeeded, None),
                (None, Ok(JobOutcome::Stopped)) if cancel_requested.load(Ordering::SeqCst) => {
                    (RunStatus::Cancelled, None)
                }
                (None, Ok(JobOutcome::Stopped)) => (
                    RunStatus::Failed,
                    Some("the job stopped without a cancel request".to_string()),
                ),
                (None, Err(e)) => (RunStatus::Failed, Some(format!("{e:#}"))),
            };
            let update = StatusUpdate {
                attempt: spec.attempt,
                status,
                error,
                retryable: result.as_ref().is_err_and(crate::dist::is_rank_lost),
            };
            match retry_transient(&outbox, || client.status(spec.run_id, &update)) {
                Ok(()) => Some(status),
                Err(e) => {
                    eprintln!("run #{}: final status not accepted: {e}", spec.run_id);
                    None
                }
            }
        };
        job_done.store(true, Ordering::SeqCst);
        outcome
    });
    let _ = std::fs::remove_dir_all(&work_dir);
    // Only succeeds when empty: an idle worker leaves no scratch folder behind.
    let _ = std::fs::remove_dir(work_root);
    match outcome {
        Some(status) => eprintln!("run #{} attempt {}: {status}", spec.run_id, spec.attempt),
        None => eprintln!("run #{} attempt {}: abandoned", spec.run_id, spec.attempt),
    }
    outcome
}

/// What fetching the dataset cost, in the run's log and as metrics (step 0): a warm cache
/// fetches nothing. `annotations` came before the job started, `images` while it ran.
fn report_fetch(sink: &mut HttpSink, annotations: &CacheReport, images: &CacheReport) {
    let mut all = images.clone();
    all.add(annotations);
    sink.log(
        "info",
        format!(
            "dataset inputs: {} files, {} from the cache, {} fetched ({:.1} MB, {} resumed, {} \
             corrupt cache files replaced); the annotations took {:.2} s before the job started, \
             the images {:.2} s while it ran",
            all.blobs,
            all.hits,
            all.fetched,
            all.bytes_fetched as f64 / 1e6,
            all.resumed,
            all.corrupt,
            annotations.seconds,
            images.seconds
        ),
    );
    sink.metric("data/fetch_seconds", 0, annotations.seconds);
    sink.metric("data/stream_seconds", 0, images.seconds);
    sink.metric("data/fetched_bytes", 0, all.bytes_fetched as f64);
    sink.metric("data/cache_hits", 0, all.hits as f64);
}
