//! `trainer run SPEC.json --out DIR`: one job without a server.
//!
//! Writes the same events a worker would send, as JSON lines in DIR/events.jsonl, and artifacts
//! into DIR/artifacts/. SPEC.json is either a full job spec or just a job config.

use super::sink::LogNumbering;
use super::{EventSink, JobContext, JobOutcome, StopFlag, devices, run_job};
use aligndet_common::api::{ImageProposals, JobEvent, JobSpec, MetricPoint};
use aligndet_common::artifacts::check_artifact_name;
use aligndet_common::jobs::{JobConfig, RunStatus};
use anyhow::Context;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct RunArgs {
    /// Job spec or job config (JSON).
    pub spec: PathBuf,
    /// Output folder (created).
    #[arg(long)]
    pub out: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Folder with inputs stored as artifacts of other runs: DIR/<run id>/<artifact name>.
    #[arg(long)]
    pub inputs: Option<PathBuf>,
    /// CUDA devices of a data-parallel job's ranks, e.g. 0,1,2,3 (rank 0 runs on the first).
    #[arg(long, conflicts_with = "device")]
    pub gpus: Option<String>,
}

/// Appends events to DIR/events.jsonl, flushing after each so a crash loses nothing written.
pub struct FileSink {
    events: BufWriter<File>,
    artifacts_dir: PathBuf,
    log_numbering: LogNumbering,
}

impl FileSink {
    pub fn create(out: &Path) -> anyhow::Result<FileSink> {
        let artifacts_dir = out.join("artifacts");
        std::fs::create_dir_all(&artifacts_dir)
            .with_context(|| format!("creating {}", artifacts_dir.display()))?;
        let path = out.join("events.jsonl");
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(FileSink {
            events: BufWriter::new(file),
            artifacts_dir,
            log_numbering: LogNumbering::default(),
        })
    }

    pub fn write_event(&mut self, event: &JobEvent) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.events, event)?;
        self.events.write_all(b"\n")?;
        self.events.flush()?;
        Ok(())
    }
}

impl EventSink for FileSink {
    fn metrics(&mut self, points: Vec<MetricPoint>) {
        if let Err(e) = self.write_event(&JobEvent::Metrics { points }) {
            eprintln!("cannot write metrics event: {e:#}");
        }
    }

    fn log_line(&mut self, level: &str, code: Option<&str>, text: String) {
        let line = self.log_numbering.line(level, code, text);
        if let Err(e) = self.write_event(&JobEvent::Log { line }) {
            eprintln!("cannot write log event: {e:#}");
        }
    }

    fn proposals(&mut self, images: Vec<ImageProposals>) {
        if let Err(e) = self.write_event(&JobEvent::Proposals { images }) {
            eprintln!("cannot write proposals event: {e:#}");
        }
    }

    fn artifact(&mut self, name: &str, path: &Path) -> anyhow::Result<()> {
        check_artifact_name(name).map_err(|e| anyhow::anyhow!(e))?;
        let dest = self.artifacts_dir.join(name);
        let bytes = std::fs::copy(path, &dest)
            .with_context(|| format!("copying {} to {}", path.display(), dest.display()))?;
        self.write_event(&JobEvent::Artifact {
            name: name.to_string(),
            bytes,
        })
    }
}

/// Read SPEC.json as a job spec, or as a bare job config wrapped into a local spec. The config
/// may be written as for the API: only what differs from the kind's defaults
/// ([`JobConfig::from_written`]).
pub fn read_spec(path: &Path) -> anyhow::Result<JobSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let written_config = |v: serde_json::Value| {
        JobConfig::from_written(v)
            .with_context(|| format!("{} is not a valid job config", path.display()))
    };
    let spec = if let Some(config) = value.get_mut("config") {
        *config = serde_json::to_value(written_config(config.take())?)?;
        serde_json::from_value::<JobSpec>(value)
            .with_context(|| format!("{} is not a valid job spec", path.display()))?
    } else {
        let config = written_config(value)?;
        JobSpec::standalone(0, "local", config)
    };
    spec.config.validate()?;
    Ok(spec)
}

pub fn run_local(args: RunArgs) -> anyhow::Result<()> {
    let spec = read_spec(&args.spec)?;
    let (device, rank_devices) = devices(&args.device, args.gpus.as_deref())?;
    let mut sink = FileSink::create(&args.out)?;
    let inputs = super::FolderArtifacts(args.inputs.clone());
    let work_dir = args.out.join("work");
    std::fs::create_dir_all(&work_dir)?;
    let result = {
        let mut ctx = JobContext {
            spec: &spec,
            device,
            rank_devices,
            sink: &mut sink,
            work_dir,
            stop: StopFlag::default(),
            resume: Default::default(),
            inputs: &inputs,
        };
        run_job(&mut ctx)
    };
    let (status, error) = match &result {
        Ok(JobOutcome::Succeeded) => (RunStatus::Succeeded, None),
        Ok(JobOutcome::Stopped) => (RunStatus::Cancelled, None),
        Err(e) => (RunStatus::Failed, Some(format!("{e:#}"))),
    };
    sink.write_event(&JobEvent::Status { status, error })?;
    result.map(|_| ())
}
