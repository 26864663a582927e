//! One training job as `world_size` data-parallel ranks on this machine, one process each.
//!
//! The process that holds the job (the worker, or `trainer run`) is rank 0. It starts the
//! rendezvous store, spawns `trainer rank --launch FILE` for ranks 1…N−1, joins the Gloo group
//! with them and runs the job; rank 0 alone reports metrics, logs, checkpoints and artifacts.
//! The other ranks get the job's inputs stored as artifacts of other runs through rank 0: each
//! one rank 0 fetches is written into a shared folder, where the other ranks find it (they fetch
//! in the same order, so they only wait). When any rank dies, the next collective fails on the
//! others, and the attempt ends with that error; a re-claimed run resumes from its checkpoint.

use super::inputs::ArtifactSource;
use super::sink::{EventSink, StopFlag};
use super::{JobContext, JobOutcome, parse_device};
use crate::dist::{self, ProcessGroup, Store};
use aligndet_common::api::{ImageProposals, JobSpec, MetricPoint};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long ranks wait for each other: to join, and in any one collective (rank 0 may be
/// evaluating while the others wait at the next step).
const RANK_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long ranks may take to start and join the group.
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);
/// The store and Gloo transports of ranks on one machine.
const LOCAL_HOST: &str = "127.0.0.1";

/// What rank r > 0 needs to run its share of a job (written by rank 0, read by `trainer rank`).
#[derive(Serialize, Deserialize)]
pub struct RankLaunch {
    pub spec: JobSpec,
    pub rank: usize,
    pub world_size: usize,
    pub store_host: String,
    pub store_port: u16,
    /// cpu or cuda:N.
    pub device: String,
    /// Where rank 0 publishes the artifacts it fetched.
    pub shared_inputs: PathBuf,
    pub work_dir: PathBuf,
    /// Intra-op threads for this rank (CPU ranks share the cores).
    pub threads: i32,
}

#[derive(clap::Args)]
pub struct RankArgs {
    /// The launch file rank 0 wrote.
    #[arg(long)]
    pub launch: PathBuf,
}

/// The devices of `world_size` ranks: the first of `given` (`--gpus`), or when none are given
/// and rank 0 runs on `device`, the CPU for all, or consecutive GPUs from rank 0's.
fn rank_devices(
    device: tch::Device,
    given: &[tch::Device],
    world_size: usize,
) -> anyhow::Result<Vec<String>> {
    if !given.is_empty() {
        anyhow::ensure!(
            world_size <= given.len(),
            "optim.world_size {world_size} needs {world_size} devices; this worker has {} (--gpus)",
            given.len()
        );
        return Ok(given[..world_size]
            .iter()
            .map(|&d| dist::device_name(d))
            .collect());
    }
    match device {
        tch::Device::Cuda(first) => {
            let visible = tch::Cuda::device_count() as usize;
            anyhow::ensure!(
                first + world_size <= visible,
                "optim.world_size {world_size} needs {world_size} GPUs from cuda:{first}, but {visible} are visible"
            );
            Ok((first..first + world_size)
                .map(|i| format!("cuda:{i}"))
                .collect())
        }
        _ => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            anyhow::ensure!(
                world_size <= cores,
                "optim.world_size {world_size} asks for more CPU ranks than this machine's {cores} cores"
            );
            Ok(vec!["cpu".to_string(); world_size])
        }
    }
}

/// Threads per CPU rank, so that the ranks together use the machine's cores once.
fn threads_per_rank(device: tch::Device, world_size: usize) -> i32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match device {
        tch::Device::Cuda(_) => tch::get_num_threads(),
        _ => (cores / world_size).max(1) as i32,
    }
}

/// Rank 0: start the other ranks, run `job` in the group, and wait for them.
pub fn run_as_rank_zero(
    ctx: &mut JobContext<'_>,
    world_size: usize,
    job: impl FnOnce(&mut JobContext<'_>) -> anyhow::Result<JobOutcome>,
) -> anyhow::Result<JobOutcome> {
    let devices = rank_devices(ctx.device, &ctx.rank_devices, world_size)?;
    let store = Store::serve(LOCAL_HOST, world_size, JOIN_TIMEOUT)?;
    let shared_inputs = ctx.work_dir.join("rank-inputs");
    std::fs::create_dir_all(&shared_inputs)?;
    let threads = threads_per_rank(ctx.device, world_size);
    let mut children = Vec::new();
    for (rank, device) in devices.iter().enumerate().skip(1) {
        let launch = RankLaunch {
            spec: ctx.spec.clone(),
            rank,
            world_size,
            store_host: LOCAL_HOST.to_string(),
            store_port: store.port(),
            device: device.clone(),
            shared_inputs: shared_inputs.clone(),
            work_dir: ctx.work_dir.join(format!("rank-{rank}")),
            threads,
        };
        match spawn_rank(&launch) {
            Ok(child) => children.push((rank, child)),
            Err(e) => {
                let _ = stop_ranks(&mut children);
                return Err(e);
            }
        }
    }
    ctx.log(format!(
        "{world_size} data-parallel ranks on {} over {} (store {LOCAL_HOST}:{}, {threads} threads each)",
        devices.join(", "),
        dist::backends(ctx.device),
        store.port()
    ));
    let joined = ProcessGroup::join(
        store,
        LOCAL_HOST,
        0,
        world_size,
        ctx.device,
        JOIN_TIMEOUT,
        RANK_TIMEOUT,
    );
    let group = match joined {
        Ok(g) => g,
        Err(e) => {
            let ends = stop_ranks(&mut children);
            return Err(with_rank_ends(e, ends));
        }
    };
    let threads_before = tch::get_num_threads();
    tch::set_num_threads(threads);
    let membership = dist::join(group);
    let sharing = SharingSource {
        inner: ctx.inputs,
        folder: shared_inputs,
    };
    let result = {
        let mut rank_ctx = JobContext {
            spec: ctx.spec,
            device: ctx.device,
            rank_devices: ctx.rank_devices.clone(),
            sink: &mut *ctx.sink,
            work_dir: ctx.work_dir.clone(),
            stop: ctx.stop.clone(),
            resume: ctx.resume.clone(),
            inputs: &sharing,
        };
        job(&mut rank_ctx)
    };
    drop(membership);
    tch::set_num_threads(threads_before);
    match result {
        Ok(outcome) => {
            let failed = wait_ranks(&mut children);
            if !failed.is_empty() {
                return Err(dist::RankLost(failed.join("; ")).into());
            }
            Ok(outcome)
        }
        // Say which rank died, when one did: the collective's own error only says it failed.
        Err(e) => {
            let ends = stop_ranks(&mut children);
            Err(with_rank_ends(e, ends))
        }
    }
}

fn spawn_rank(launch: &RankLaunch) -> anyhow::Result<Child> {
    std::fs::create_dir_all(&launch.work_dir)?;
    let file = launch.work_dir.join("launch.json");
    std::fs::write(&file, serde_json::to_vec(launch)?)?;
    let exe = std::env::current_exe().context("finding the trainer executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("rank").arg("--launch").arg(&file);
    // A rank must not outlive rank 0 (a killed worker leaves no orphans holding its GPUs).
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting rank {}", launch.rank))
}

/// Wait for ranks that finished their share; the failures, by rank.
fn wait_ranks(children: &mut Vec<(usize, Child)>) -> Vec<String> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let mut failed = Vec::new();
    for (rank, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => break,
                Ok(Some(status)) => {
                    failed.push(format!("rank {rank} ended with {status}"));
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    failed.push(format!("rank {rank} did not finish"));
                    break;
                }
            }
        }
    }
    children.clear();
    failed
}

/// Stop the other ranks after a failure; says how those that had already ended did (a rank that
/// died first is usually the cause), `None` when all were still running.
fn stop_ranks(children: &mut Vec<(usize, Child)>) -> Option<String> {
    std::thread::sleep(Duration::from_millis(200));
    let mut ends = Vec::new();
    for (rank, child) in children.iter_mut() {
        match child.try_wait() {
            Ok(Some(status)) => ends.push(format!("rank {rank} had ended with {status}")),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    children.clear();
    (!ends.is_empty()).then(|| ends.join("; "))
}

/// `e`, led by how the ranks that had died ended, when some had.
fn with_rank_ends(e: anyhow::Error, ends: Option<String>) -> anyhow::Error {
    match ends {
        Some(ends) => e.context(ends),
        None => e,
    }
}

/// Rank 0's inputs, each also written to `folder` for the other ranks.
struct SharingSource<'a> {
    inner: &'a dyn ArtifactSource,
    folder: PathBuf,
}

fn shared_path(folder: &Path, run_id: i64, name: &str) -> PathBuf {
    folder.join(format!("{run_id}-{name}"))
}

impl ArtifactSource for SharingSource<'_> {
    fn fetch_optional(&self, run_id: i64, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let found = self.inner.fetch_optional(run_id, name)?;
        let path = shared_path(&self.folder, run_id, name);
        // Written whole under a temporary name, then renamed: a rank never reads half a file.
        let tmp = path.with_extension("partial");
        match &found {
            Some(bytes) => std::fs::write(&tmp, bytes)?,
            None => std::fs::write(&tmp, b"")?,
        }
        let done = match &found {
            Some(_) => path,
            None => path.with_extension("absent"),
        };
        std::fs::rename(&tmp, &done)?;
        Ok(found)
    }
}

/// Ranks > 0: the inputs rank 0 published, waiting for them to appear.
struct SharedFolder(PathBuf);

impl ArtifactSource for SharedFolder {
    fn fetch_optional(&self, run_id: i64, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let path = shared_path(&self.0, run_id, name);
        let deadline = Instant::now() + RANK_TIMEOUT;
        loop {
            if path.exists() {
                return Ok(Some(std::fs::read(&path)?));
            }
            if path.with_extension("absent").exists() {
                return Ok(None);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "rank 0 did not provide artifact {name:?} of run {run_id}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Ranks > 0 report nothing: rank 0 speaks for the run. Their logs go to stderr.
struct RankSink(usize);

impl EventSink for RankSink {
    fn metrics(&mut self, _points: Vec<MetricPoint>) {}
    fn log_line(&mut self, level: &str, _code: Option<&str>, text: String) {
        eprintln!("[rank {}] [{level}] {text}", self.0);
    }
    fn artifact(&mut self, _name: &str, _path: &Path) -> anyhow::Result<()> {
        Ok(())
    }
    fn proposals(&mut self, _images: Vec<ImageProposals>) {}
}

/// `trainer rank --launch FILE`: rank r > 0 of a job rank 0 started.
pub fn run_rank(args: RankArgs) -> anyhow::Result<()> {
    let text = std::fs::read(&args.launch)
        .with_context(|| format!("reading {}", args.launch.display()))?;
    let launch: RankLaunch = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a rank launch file", args.launch.display()))?;
    let device = parse_device(&launch.device)?;
    tch::set_num_threads(launch.threads);
    let store = Store::connect(
        &launch.store_host,
        launch.store_port,
        launch.world_size,
        JOIN_TIMEOUT,
    )?;
    let group = ProcessGroup::join(
        store,
        LOCAL_HOST,
        launch.rank,
        launch.world_size,
        device,
        JOIN_TIMEOUT,
        RANK_TIMEOUT,
    )?;
    let _membership = dist::join(group);
    let inputs = SharedFolder(launch.shared_inputs.clone());
    let mut sink = RankSink(launch.rank);
    let mut ctx = JobContext {
        spec: &launch.spec,
        device,
        rank_devices: Vec::new(),
        sink: &mut sink,
        work_dir: launch.work_dir.clone(),
        stop: StopFlag::default(),
        resume: Default::default(),
        inputs: &inputs,
    };
    super::run_job(&mut ctx).map(|_| ())
}
