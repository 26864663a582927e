//! `trainer slurm-agent`: put the platform in front of a Slurm cluster. The agent registers with
//! the server like a worker, with the profile of the jobs it submits (`--gres`, `--label`, …) as
//! its capabilities, then loops:
//!
//! 1. follow its live placements: report what `squeue` (or `sacct`, once `squeue` forgot the
//!    job) says to the server, `scancel` jobs the server no longer wants (a cancelled run), and
//!    submit or adopt placements that were reserved but never recorded (an agent that died
//!    between reserving and `sbatch` answering);
//! 2. place queued runs it may take, up to `--max-jobs`: reserve the placement on the server
//!    (refused when the run already has a live one), then `sbatch` one job whose script runs
//!    `trainer worker --once --run ID` ([`script`]). A job already in `squeue` under the run's
//!    name is adopted instead of submitted again.
//!
//! The agent keeps nothing on disk: restarted under the same `--name`, it finds its placements on
//! the server and their jobs among its user's in `squeue`, by id or by name. Slurm itself is
//! reached only through [`cli`].

pub mod cli;
pub mod script;

use crate::worker::client::{ApiCallError, ApiClient};
use aligndet_common::capabilities::{Capabilities, DeviceKind};
use aligndet_common::slurm::{
    LivePlacement, PlaceableRequest, PlaceableRun, Rejected, ReserveRequest, Reserved, StateReport,
    Submitted, is_terminal, job_name,
};
use cli::{JobInfo, SlurmCli, SlurmError, Submission};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct AgentArgs {
    /// Server base URL as the compute nodes reach it, e.g. http://10.0.0.1:8080
    #[arg(long)]
    pub server: String,
    /// File holding the worker token; without it, ALIGNDET_WORKER_TOKEN.
    #[arg(long, value_name = "PATH", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The worker token (visible in `ps`: prefer --token-file or ALIGNDET_WORKER_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
    /// Slurm partition the jobs go to.
    #[arg(long)]
    pub partition: String,
    /// Generic resources per job, e.g. gpu:1 or gpu:a100:4 (the GPUs the runs may use).
    #[arg(long)]
    pub gres: Option<String>,
    /// Time limit per job, e.g. 04:00:00.
    #[arg(long)]
    pub time: Option<String>,
    /// Slurm account to charge.
    #[arg(long)]
    pub account: Option<String>,
    /// CPU cores per job (also the data-parallel CPU ranks a run may ask for).
    #[arg(long)]
    pub cpus_per_task: Option<u32>,
    /// Memory of each GPU in MiB, for runs that require a minimum.
    #[arg(long, default_value_t = 0)]
    pub gpu_memory_mb: u64,
    /// A label runs may require (repeat).
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Slurm jobs of this agent alive at once.
    #[arg(long, default_value_t = 4)]
    pub max_jobs: u32,
    /// Seconds between looks at the queue and at Slurm.
    #[arg(long, default_value_t = 10.0)]
    pub poll_seconds: f64,
    /// The trainer binary as the compute nodes see it (default: this one).
    #[arg(long)]
    pub trainer: Option<PathBuf>,
    /// Folder for the jobs' output files (default: Slurm's, the folder sbatch ran in).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// The agent's name: a restarted agent finds its jobs by it (default slurm-agent-PARTITION).
    #[arg(long)]
    pub name: Option<String>,
}

/// A job `squeue` no longer lists and `sacct` does not know is reported gone after this many
/// looks in a row (one miss may be a job between the two).
const MISSES_BEFORE_VANISHED: u32 = 3;

pub fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    let token = crate::worker::token_from(args.token_file.as_deref(), args.token.as_deref())?;
    for label in &args.labels {
        aligndet_common::capabilities::check_label(label).map_err(anyhow::Error::msg)?;
    }
    let gpus = script::gpus_in_gres(args.gres.as_deref()).map_err(anyhow::Error::msg)?;
    let trainer = match &args.trainer {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let client = ApiClient::new(&args.server, &token)?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("slurm-agent-{}", args.partition));
    let profile = Capabilities {
        device: if gpus > 0 {
            DeviceKind::Cuda
        } else {
            DeviceKind::Cpu
        },
        gpu_memory_mb: args.gpu_memory_mb,
        gpu_count: gpus,
        cpu_threads: args.cpus_per_task.unwrap_or(1),
        labels: args.labels.clone(),
        ..Capabilities::default()
    };
    let device = if gpus > 0 { "cuda" } else { "cpu" };
    let registration = crate::worker::register_with_retry(&client, &name, device, profile)?;
    eprintln!(
        "slurm agent {name} registered as #{} on {}; partition {}",
        registration.worker_id, args.server, args.partition
    );
    let launch = script::WorkerLaunch {
        trainer: trainer.display().to_string(),
        server: args.server.clone(),
        gpus,
        labels: args.labels.clone(),
    };
    let mut agent = Agent {
        args,
        client,
        token,
        launch,
        slurm: SlurmCli,
        misses: HashMap::new(),
    };
    loop {
        if let Err(e) = agent.step() {
            eprintln!("slurm agent: {e:#}; trying again");
        }
        std::thread::sleep(Duration::from_secs_f64(agent.args.poll_seconds.max(0.1)));
    }
}

struct Agent {
    args: AgentArgs,
    client: ApiClient,
    token: String,
    launch: script::WorkerLaunch,
    slurm: SlurmCli,
    /// Looks in a row that did not find a job, by Slurm job id.
    misses: HashMap<i64, u32>,
}

impl Agent {
    fn step(&mut self) -> anyhow::Result<()> {
        // Without Slurm's view nothing can be followed or placed safely: skip this round.
        let jobs = self.slurm.jobs()?;
        let live: Vec<LivePlacement> = self.client.get("slurm/placements")?.unwrap_or_default();
        for p in &live {
            if let Err(e) = self.follow(p, &jobs) {
                eprintln!("run {}: {e:#}", p.run_id);
            }
        }
        let free = self.args.max_jobs.saturating_sub(live.len() as u32);
        if free == 0 {
            return Ok(());
        }
        let runs: Vec<PlaceableRun> = self
            .client
            .post("slurm/placeable", &PlaceableRequest { limit: free })?
            .unwrap_or_default();
        for run in runs {
            if let Err(e) = self.place(run.run_id, &jobs) {
                eprintln!("run {}: {e:#}", run.run_id);
            }
        }
        Ok(())
    }

    /// Reserve the run's placement, then submit its job (or adopt one already in Slurm).
    fn place(&mut self, run_id: i64, jobs: &[JobInfo]) -> anyhow::Result<()> {
        let reserved: Reserved = match self
            .client
            .post("slurm/placements", &ReserveRequest { run_id })
        {
            Ok(Some(r)) => r,
            // Taken meanwhile (another agent, a worker, a cancel): nothing to do.
            Ok(None) | Err(ApiCallError::Conflict(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        self.submit_or_adopt(reserved.placement_id, run_id, jobs)
    }

    fn submit_or_adopt(
        &mut self,
        placement: i64,
        run_id: i64,
        jobs: &[JobInfo],
    ) -> anyhow::Result<()> {
        let name = job_name(run_id);
        if let Some(job) = jobs
            .iter()
            .find(|j| j.name == name && !is_terminal(&j.state))
        {
            eprintln!("run {run_id}: found its Slurm job {} again", job.job_id);
            return self.record_submitted(placement, job.job_id);
        }
        match self.slurm.submit(&self.submission(run_id)) {
            Ok(job_id) => {
                eprintln!("run {run_id}: submitted Slurm job {job_id}");
                self.record_submitted(placement, job_id)
            }
            Err(SlurmError::Refused { stderr, .. }) => {
                eprintln!("run {run_id}: sbatch refused the job: {stderr}");
                let path = format!("slurm/placements/{placement}/rejected");
                self.client
                    .post::<_, serde_json::Value>(&path, &Rejected { error: stderr })?;
                Ok(())
            }
            // Slurm unreachable or the answer unreadable: the reservation stays, and the next
            // round looks for the job by name before submitting again.
            Err(e) => Err(e.into()),
        }
    }

    fn record_submitted(&self, placement: i64, slurm_job_id: i64) -> anyhow::Result<()> {
        let path = format!("slurm/placements/{placement}/submitted");
        self.client
            .post::<_, serde_json::Value>(&path, &Submitted { slurm_job_id })?;
        Ok(())
    }

    fn submission(&self, run_id: i64) -> Submission {
        let a = &self.args;
        Submission {
            job_name: job_name(run_id),
            comment: format!("aligndet:run={run_id}"),
            partition: a.partition.clone(),
            gres: a.gres.clone(),
            time: a.time.clone(),
            account: a.account.clone(),
            cpus_per_task: a.cpus_per_task,
            output: a
                .log_dir
                .as_ref()
                .map(|d| d.join(format!("aligndet-run-{run_id}-%j.out"))),
            script: script::batch_script(run_id, &self.launch),
            env: vec![(crate::worker::TOKEN_ENV.to_string(), self.token.clone())],
        }
    }

    /// One live placement: submit it if it never was, cancel it if unwanted, report its state.
    fn follow(&mut self, p: &LivePlacement, jobs: &[JobInfo]) -> anyhow::Result<()> {
        let Some(job_id) = p.slurm_job_id else {
            if p.cancel && !jobs.iter().any(|j| j.name == job_name(p.run_id)) {
                // Reserved, never submitted, and no longer wanted: close it without a job.
                let path = format!("slurm/placements/{}/state", p.placement_id);
                let never = StateReport {
                    state: "CANCELLED".into(),
                    reason: Some("cancelled before it was submitted".into()),
                    ..StateReport::default()
                };
                self.client.post::<_, serde_json::Value>(&path, &never)?;
                return Ok(());
            }
            return self.submit_or_adopt(p.placement_id, p.run_id, jobs);
        };
        let info = match jobs.iter().find(|j| j.job_id == job_id) {
            Some(j) => Some(j.clone()),
            None => self.slurm.accounting(job_id)?,
        };
        let report = match info {
            Some(j) => {
                self.misses.remove(&job_id);
                if p.cancel && !is_terminal(&j.state) {
                    eprintln!("run {}: cancel asked, scancel {job_id}", p.run_id);
                    self.slurm.cancel(job_id)?;
                }
                report_of(&j)
            }
            None => {
                let misses = self.misses.entry(job_id).or_insert(0);
                *misses += 1;
                if *misses < MISSES_BEFORE_VANISHED {
                    return Ok(());
                }
                self.misses.remove(&job_id);
                StateReport {
                    state: "VANISHED".into(),
                    reason: Some("neither squeue nor sacct knows the job any more".into()),
                    ..StateReport::default()
                }
            }
        };
        let changed = report.state != p.state
            || (report.node.is_some() && report.node != p.node)
            || report.reason != p.reason;
        if changed {
            let path = format!("slurm/placements/{}/state", p.placement_id);
            self.client.post::<_, serde_json::Value>(&path, &report)?;
            if is_terminal(&report.state) {
                eprintln!(
                    "run {}: Slurm job {job_id} ended {}",
                    p.run_id, report.state
                );
            }
        }
        Ok(())
    }
}

fn report_of(j: &JobInfo) -> StateReport {
    let running = j.state != "PENDING";
    StateReport {
        state: j.state.clone(),
        reason: j.reason.clone(),
        node: j.node.clone(),
        exit_code: if is_terminal(&j.state) {
            j.exit_code.clone()
        } else {
            None
        },
        submitted_at: j.submit_time,
        // Slurm's start time of a pending job is its forecast, not a fact.
        started_at: if running && j.node.is_some() {
            j.start_time
        } else {
            None
        },
    }
}
