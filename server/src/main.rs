//! `aligndet-server`: the AlignDet Studio web app and worker API.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".into()),
        )
        .init();
    let cfg = aligndet_server::config::ServerConfig::parse();
    aligndet_server::serve(cfg).await
}
