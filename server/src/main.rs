//! `aligndet-server`: the AlignDet Studio web app and worker API.

use clap::Parser;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cfg = aligndet_server::config::ServerConfig::parse();
    let command = cfg.command.take();
    // An account command's stdout is its answer (a token, a user list): logs go to stderr.
    let writer = match command {
        Some(_) => BoxMakeWriter::new(std::io::stderr),
        None => BoxMakeWriter::new(std::io::stdout),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".into()),
        )
        .with_writer(writer)
        .init();
    use aligndet_server::config::Command;
    match command {
        Some(Command::Admin(command)) => aligndet_server::administer(&cfg, command).await,
        Some(Command::MatchDetections) => aligndet_server::matching::cli::run(),
        None => aligndet_server::serve(cfg).await,
    }
}
