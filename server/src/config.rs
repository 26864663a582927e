use aligndet_common::images::ImageLimits;
use clap::Parser;
use std::path::PathBuf;

/// AlignDet Studio server.
#[derive(Debug, Clone, Parser)]
#[command(name = "aligndet-server", version)]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(long, env = "ALIGNDET_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Where the embedded Postgres, artifacts and uploaded datasets live.
    #[arg(long, env = "ALIGNDET_DATA", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// Address(es) people reach this server at, e.g. `https://aligndet.lab.example` (repeat for
    /// several). Pages answer only requests whose `Host` is the bind address, `localhost`, or one
    /// of these, which stops DNS-rebinding pages from driving a server on 127.0.0.1.
    #[arg(long = "public-url")]
    pub public_urls: Vec<String>,
    /// Use this Postgres instead of the embedded cluster.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Token workers must present (prefer the environment or --worker-token-file: a command
    /// line is visible to every local user); default: read or create <data-dir>/worker-token.
    #[arg(long, env = "ALIGNDET_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: Option<String>,
    /// Read the worker token from this file.
    #[arg(long, conflicts_with = "worker_token")]
    pub worker_token_file: Option<PathBuf>,
    /// Import the demo datasets (NEON tiles, synthetic) from the setup cache if missing.
    #[arg(long)]
    pub demo: bool,
    /// Folder holding demo/neon and demo/synthetic (written by scripts/setup.sh).
    #[arg(long, env = "ALIGNDET_CACHE", default_value_os_t = default_cache_dir())]
    pub cache_dir: PathBuf,
    /// Folders server-side imports may read from (besides the data dir's imports/ and the cache).
    #[arg(long = "import-root")]
    pub import_roots: Vec<PathBuf>,
    /// A job's lease: a worker that misses heartbeats this long loses the job.
    #[arg(long, default_value_t = 30.0)]
    pub lease_seconds: f64,
    /// How often workers heartbeat.
    #[arg(long, default_value_t = 5.0)]
    pub heartbeat_seconds: f64,
    /// How many claims a run gets before an expired lease fails it.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: i32,
    /// Largest dataset upload, in MiB.
    #[arg(long, default_value_t = 2048)]
    pub upload_limit_mib: u64,
    /// Largest artifact upload, in MiB.
    #[arg(long, default_value_t = 4096)]
    pub artifact_limit_mib: u64,
    /// Largest image (width × height) accepted at import and opened by workers.
    #[arg(long, default_value_t = ImageLimits::default().max_pixels)]
    pub max_image_pixels: u64,
    /// Largest decoded image buffer, in MiB, accepted at import and opened by workers.
    #[arg(long, default_value_t = ImageLimits::default().max_decoded_bytes >> 20)]
    pub max_image_mib: u64,
    /// Without a command: serve. With one: administer accounts in the same database (the
    /// options above, such as --data-dir and --database-url, go before it).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the binary does instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    #[command(flatten)]
    Admin(crate::accounts::cli::AdminCommand),
    /// Match detections to ground truth as the predictions browser does (a COCO-style JSON
    /// on stdin, outcomes as JSON on stdout): what `scripts/match_parity.py` checks.
    #[command(hide = true)]
    MatchDetections,
}

impl ServerConfig {
    /// The decoded-image limits, as applied at import and sent to workers.
    pub fn image_limits(&self) -> ImageLimits {
        ImageLimits {
            max_pixels: self.max_image_pixels,
            max_decoded_bytes: self.max_image_mib << 20,
        }
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

fn default_data_dir() -> PathBuf {
    home().join(".local/share/aligndet-studio")
}

fn default_cache_dir() -> PathBuf {
    home().join(".cache/aligndet-studio")
}
