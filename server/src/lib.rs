//! AlignDet Studio server. Where things are:
//! - [`config`]: command line and environment.
//! - [`postgres`]: the embedded cluster used when DATABASE_URL is unset.
//! - [`db`]: every SQL query, per table group; [`queue`]: claim / lease / reap.
//! - [`experiments`]: the experiment planner, its creation and summaries.
//! - [`compare`]: comparing any set of runs (pure; `routes::compare` loads the data).
//! - [`forms`]: the HTML forms as text and their text → config step, with the shared field helpers.
//! - [`routes`]: one thin module per page or API area; no route module imports another.
//! - [`views`]: page models of the run pages (charts, evaluations, fine-tune and pre-training
//!   sections, the new-run page); templates live in `templates/`.
//! - [`content`]: a job's inputs by sha256 for remote workers (hashing on first use).
//! - [`import`]: dataset import (server paths and uploaded zips), validated and transactional.
//! - [`plots`]: plotters SVG charts.
//! - [`matching`]: TP/FP/miss matching of predictions to ground truth (pycocotools' rules).
//! - [`security`]: worker token, CSRF, safe paths.
//! - [`search`]: the runs table's search language (pure); [`manage`]: tags, delete, exports,
//!   the runs table's view and the reproducibility stamp.
//! - [`accounts`]: users, roles, sessions, personal API tokens (the role gates are here).

pub mod accounts;
pub mod compare;
pub mod config;
pub mod content;
pub mod db;
pub mod demo;
pub mod error;
pub mod experiments;
pub mod forms;
pub mod import;
pub mod limits;
pub mod manage;
pub mod matching;
pub mod numbers;
pub mod plots;
pub mod postgres;
pub mod queue;
pub mod routes;
pub mod search;
pub mod secrets;
pub mod security;
pub mod serving;
pub mod state;
pub mod stats;
pub mod submit;
#[cfg(test)]
mod test_db;
pub mod views;
pub mod worker_auth;

use anyhow::Context;
use std::time::Duration;

/// The database a command works on: pools on `--database-url`, or on the embedded cluster
/// (started here, or found running under a live server), migrated.
pub struct Database {
    pub url: String,
    pub pool: sqlx::PgPool,
    pub data_dir: std::path::PathBuf,
    embedded: Option<postgres::EmbeddedPostgres>,
}

impl Database {
    /// Close the pool; stop the embedded cluster unless it was running before we came.
    pub async fn close(self) {
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            let _ = tokio::task::spawn_blocking(move || {
                if pg.was_running() {
                    pg.leave_running();
                } else {
                    drop(pg);
                }
            })
            .await;
        }
    }
}

/// Open (and migrate) the database `cfg` names: `--database-url`, else the embedded cluster.
pub async fn open_database(cfg: &config::ServerConfig) -> anyhow::Result<Database> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let data_dir = cfg.data_dir.canonicalize()?;
    // DATABASE_URL set: use it. Unset: run our own cluster, stopped at the end (or when `embedded` drops).
    let (url, embedded) = match &cfg.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let pg = tokio::task::spawn_blocking({
                let d = data_dir.clone();
                move || postgres::EmbeddedPostgres::start(&d)
            })
            .await??;
            tracing::info!(
                "embedded Postgres running ({})",
                postgres::redact_url(&pg.database_url())
            );
            (pg.database_url(), Some(pg))
        }
    };
    // Messages name the database, never its password.
    let shown_url = postgres::redact_url(&url);
    let pool = connect(&url, 16)
        .await
        .with_context(|| format!("connecting to Postgres at {shown_url}"))?;
    db::migrate(&pool).await.context("applying migrations")?;
    Ok(Database {
        url,
        pool,
        data_dir,
        embedded,
    })
}

async fn connect(url: &str, max_connections: u32) -> sqlx::Result<sqlx::PgPool> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await
}

/// Start everything and serve until Ctrl-C / SIGTERM.
/// Run one account command against the server's database, then leave.
pub async fn administer(
    cfg: &config::ServerConfig,
    command: accounts::cli::AdminCommand,
) -> anyhow::Result<()> {
    let db = open_database(cfg).await?;
    let result = accounts::cli::run(&db.pool, command).await;
    db.close().await;
    result
}

pub async fn serve(cfg: config::ServerConfig) -> anyhow::Result<()> {
    let Database {
        url: database_url,
        pool,
        data_dir,
        embedded,
    } = open_database(&cfg).await?;
    let worker_pool = connect(&database_url, 8).await.with_context(|| {
        format!(
            "connecting to Postgres at {}",
            postgres::redact_url(&database_url)
        )
    })?;
    // Before binding: no user on a non-loopback address is refused; none on loopback gets a
    // first admin whose password is in a 0600 file (its path, never the password, is printed).
    match accounts::bootstrap(&pool, &data_dir, &cfg.bind).await? {
        accounts::Bootstrap::CreatedAdmin(file) => println!(
            "created the user `admin`; its one-time password is in {} (readable only by you)",
            file.display()
        ),
        accounts::Bootstrap::HasUsers => {
            let file = accounts::first_admin_password_file(&data_dir);
            if file.exists() {
                println!(
                    "the first admin's one-time password is still in {} (setting a new one on /account removes it)",
                    file.display()
                );
            }
        }
    }
    // Before anything can reap: the time the server was down does not count against leases.
    let resumed = db::liveness::tick(&pool, 0.0)
        .await
        .context("recording server liveness")?;
    if !resumed.extended.is_empty() {
        tracing::info!(
            "server was down for {:.1} s: leases of running runs {:?} extended by that",
            resumed.gap_s,
            resumed.extended
        );
    }

    let worker_token = security::load_or_create_worker_token(&cfg, &data_dir)?;
    let state = state::AppState::new(
        pool.clone(),
        worker_pool,
        cfg.clone(),
        data_dir.clone(),
        worker_token,
    );

    if cfg.demo {
        demo::import_demo_datasets(&state).await?;
    }

    let keeper = state::spawn_background_tasks(&state, &database_url).await?;

    let app = routes::router(state.clone());
    let listener = tokio::net::TcpListener::bind(&cfg.bind)
        .await
        .with_context(|| format!("binding {}", cfg.bind))?;
    tracing::info!(
        "AlignDet Studio listening on http://{}",
        listener.local_addr()?
    );
    println!("listening on http://{}", listener.local_addr()?);
    let shutdown = state.shutdown.clone();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            shutdown.trigger();
        }
    });
    // The reaper stops before the listener does: no lease is reaped while workers cannot reach us.
    let drained = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.wait().await;
            if tokio::time::timeout(Duration::from_secs(2), keeper)
                .await
                .is_err()
            {
                tracing::warn!("lease reaper did not stop in 2 s");
            }
        }
    };
    // Without TCP_NODELAY a response written in two parts (headers, then a small file) waits for
    // the client's delayed ACK: 20-40 ms per request, measured on one-image blob fetches.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("TCP_NODELAY on an incoming connection: {e}");
        }
    });
    let serving = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(drained);
    // Live streams end on the shutdown signal; whatever else is still open gets GRACE to finish.
    tokio::select! {
        r = serving => r?,
        _ = async { shutdown.wait().await; tokio::time::sleep(GRACE).await } => {
            tracing::warn!("requests still open {GRACE:?} after the shutdown signal; closing them");
        }
    }
    for p in [&pool, &state.worker_pool] {
        if tokio::time::timeout(Duration::from_secs(2), p.close())
            .await
            .is_err()
        {
            tracing::warn!("database connections still busy at shutdown; closing anyway");
        }
    }
    if let Some(pg) = embedded {
        // pg_ctl stop blocks: keep it off the async workers.
        let _ = tokio::task::spawn_blocking(move || drop(pg)).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long requests other than live streams may take to finish after SIGTERM.
const GRACE: Duration = Duration::from_secs(3);

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
