//! `trainer`: the compute side of AlignDet Studio. The CLI stays thin: each subcommand hands
//! its parsed arguments to the module that owns the work.

use clap::{Parser, Subcommand};

use aligndet_trainer::{data, doctor, eval, jobs, proposals, slurm, train, worker};

#[derive(Parser)]
#[command(
    name = "trainer",
    version,
    about = "AlignDet Studio trainer and worker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the libtorch version, CUDA availability, device count and thread count.
    Doctor,
    /// Claim and run jobs from a server until stopped.
    Worker(worker::WorkerArgs),
    /// Place queued runs on a Slurm cluster: one sbatch job per run, followed until it ends.
    SlurmAgent(slurm::AgentArgs),
    /// Run one job spec without a server; events go to DIR/events.jsonl, artifacts to DIR/artifacts.
    Run(jobs::RunArgs),
    /// One data-parallel rank (> 0) of a job; started by rank 0, not by hand.
    #[command(hide = true)]
    Rank(jobs::ranks::RankArgs),
    /// COCO bbox or segm evaluation with pycocotools' semantics.
    Eval(eval::cli::EvalArgs),
    /// Single RLE mask operations as JSON, for the segm parity script.
    #[command(hide = true)]
    EvalMaskOps(eval::mask_ops::MaskOpsArgs),
    /// Time training steps of a detector fed by our data pipeline (see scripts/bench_train.py).
    BenchStep(train::bench_cli::BenchStepArgs),
    /// Time the remote path delivering a dataset's images against local files (see
    /// scripts/bench_remote.py).
    #[command(hide = true)]
    BenchDelivery(worker::bench_delivery::BenchDeliveryArgs),
    /// Detections of a trained model on a folder of images, as a COCO results file.
    Predict(train::predict_cli::PredictArgs),
    /// Selective-search pseudo-boxes for one image or a whole COCO dataset.
    Proposals(proposals::cli::ProposalsArgs),
    /// Generate the seeded synthetic multi-object dataset (COCO boxes and polygon masks).
    Synth(data::synthetic::SynthArgs),
    /// Cut a Pascal VOC dataset into non-overlapping square tiles, written as COCO.
    TileVoc(data::tiling::TileArgs),
}

/// Keep freed tensor memory in the heap instead of returning it to the kernel: glibc serves big
/// blocks with mmap by default, so every step's activations were mapped, page-faulted and unmapped
/// again. Measured on ResNet-50 training at 2×512² on CPU: 1.55 s → 1.42 s per step
/// (docs/training.md). Must run before the first allocation of any size that matters.
fn keep_freed_memory_in_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const LARGE: libc::c_int = 1 << 30;
        // SAFETY: mallopt only changes allocator parameters; called once at start, single-threaded.
        // glibc refuses mmap thresholds above half its heap size (32 MiB on 64-bit): fall back.
        unsafe {
            if libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE) == 0 {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            }
            libc::mallopt(libc::M_TRIM_THRESHOLD, LARGE);
        }
    }
}

/// NCCL's errors come back as errors: a collective that fails or times out throws from its wait
/// (blocking wait), instead of NCCL's watchdog tearing the whole process down (its default,
/// `TORCH_NCCL_ASYNC_ERROR_HANDLING=3`). A worker then reports the lost rank as retryable and
/// stays up. Values the user set are kept.
fn make_nccl_errors_return() {
    for (key, value) in [
        ("TORCH_NCCL_BLOCKING_WAIT", "1"),
        ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "0"),
    ] {
        if std::env::var_os(key).is_none() {
            // SAFETY: at the start of main, before any other thread exists.
            unsafe { std::env::set_var(key, value) };
        }
    }
}

fn main() -> anyhow::Result<()> {
    keep_freed_memory_in_the_heap();
    make_nccl_errors_return();
    let cli = Cli::parse();
    match cli.command {
        Command::Doctor => doctor::print_report(),
        Command::Worker(args) => worker::run_worker(args),
        Command::SlurmAgent(args) => slurm::run_agent(args),
        Command::Run(args) => jobs::run_local(args),
        Command::Rank(args) => jobs::ranks::run_rank(args),
        Command::Eval(args) => eval::cli::main(args),
        Command::EvalMaskOps(args) => eval::mask_ops::main(args),
        Command::BenchStep(args) => train::bench_cli::main(args),
        Command::BenchDelivery(args) => worker::bench_delivery::main(args),
        Command::Predict(args) => train::predict_cli::main(args),
        Command::Proposals(args) => proposals::cli::main(args),
        Command::Synth(args) => data::synthetic::main(args),
        Command::TileVoc(args) => data::tiling::main(args),
    }
}
