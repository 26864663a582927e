//! AlignDet Studio server. Where things are:
//! - [`config`]: command line and environment.
//! - [`postgres`]: the embedded cluster used when DATABASE_URL is unset.
//! - [`db`]: every SQL query, per table group; [`queue`]: claim / lease / reap.
//! - [`routes`]: one module per page or API area; templates live in `templates/`.
//! - [`import`]: dataset import (server paths and uploaded zips), validated and transactional.
//! - [`plots`]: plotters SVG charts.
//! - [`security`]: worker token, CSRF, safe paths.

pub mod compare;
pub mod config;
pub mod db;
pub mod demo;
pub mod error;
pub mod import;
pub mod plots;
pub mod postgres;
pub mod queue;
pub mod routes;
pub mod security;
pub mod state;

use anyhow::Context;
use std::time::Duration;

/// Start everything and serve until Ctrl-C / SIGTERM.
pub async fn serve(cfg: config::ServerConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let data_dir = cfg.data_dir.canonicalize()?;

    // DATABASE_URL set: use it. Unset: run our own cluster, stopped when `_embedded` drops.
    let (database_url, _embedded) = match &cfg.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let pg = tokio::task::spawn_blocking({
                let d = data_dir.clone();
                move || postgres::EmbeddedPostgres::start(&d)
            })
            .await??;
            tracing::info!("embedded Postgres running ({})", pg.database_url());
            (pg.database_url(), Some(pg))
        }
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&database_url)
        .await
        .with_context(|| format!("connecting to Postgres at {database_url}"))?;
    db::migrate(&pool).await.context("applying migrations")?;

    let worker_token = security::load_or_create_worker_token(&cfg, &data_dir)?;
    let state = state::AppState::new(pool.clone(), cfg.clone(), data_dir.clone(), worker_token);

    if cfg.demo {
        demo::import_demo_datasets(&state).await?;
    }

    state::spawn_background_tasks(&state, &database_url).await?;

    let app = routes::router(state.clone());
    let listener = tokio::net::TcpListener::bind(&cfg.bind)
        .await
        .with_context(|| format!("binding {}", cfg.bind))?;
    tracing::info!(
        "AlignDet Studio listening on http://{}",
        listener.local_addr()?
    );
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    pool.close().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
