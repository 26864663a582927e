use crate::config::ServerConfig;
use crate::queue;
use aligndet_common::artifacts;
use aligndet_common::report::EvaluationReport;
use sqlx::PgPool;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// Pages and scripts.
    pub pool: PgPool,
    /// Worker calls only (register, claim, heartbeat, reports): many page viewers can never
    /// starve a worker's heartbeat of connections.
    pub worker_pool: PgPool,
    pub cfg: Arc<ServerConfig>,
    pub data_dir: PathBuf,
    pub worker_token: Arc<str>,
    /// Run ids whose data changed (from Postgres NOTIFY), for live pages.
    pub run_changed: broadcast::Sender<i64>,
    /// Set on SIGTERM / Ctrl-C: live streams and background tasks end on it.
    pub shutdown: Shutdown,
    /// Failed sign-ins per user name and client address.
    pub login_limit: Arc<crate::accounts::login_limit::LoginLimiter>,
}

impl AppState {
    pub fn new(
        pool: PgPool,
        worker_pool: PgPool,
        cfg: ServerConfig,
        data_dir: PathBuf,
        worker_token: String,
    ) -> AppState {
        let (run_changed, _) = broadcast::channel(1024);
        AppState {
            pool,
            worker_pool,
            cfg: Arc::new(cfg),
            data_dir,
            worker_token: worker_token.into(),
            run_changed,
            shutdown: Shutdown::new(),
            login_limit: Arc::default(),
        }
    }

    pub fn artifacts_dir(&self, run_id: i64) -> PathBuf {
        self.data_dir.join("artifacts").join(run_id.to_string())
    }

    pub fn datasets_dir(&self) -> PathBuf {
        self.data_dir.join("datasets")
    }

    /// Where a run's artifact lives, if it may be read. The name is checked against the
    /// artifact rules and the artifacts table (read through `pool`) before any path is made, so
    /// nothing outside the store can be opened.
    pub async fn locate_artifact(
        &self,
        pool: &PgPool,
        run_id: i64,
        name: &str,
    ) -> anyhow::Result<ArtifactFile> {
        if let Err(why) = aligndet_common::artifacts::check_artifact_name(name) {
            return Ok(ArtifactFile::BadName(why));
        }
        let known = crate::db::runs::artifacts(pool, run_id)
            .await?
            .into_iter()
            .any(|a| a.name == name);
        if !known {
            return Ok(ArtifactFile::Missing(format!(
                "run {run_id} has no artifact {name:?}"
            )));
        }
        Ok(ArtifactFile::Found(self.artifacts_dir(run_id).join(name)))
    }

    /// The bytes of a run's artifact, for the small ones pages parse (downloads stream from the
    /// file: `serving::artifacts`).
    pub async fn read_artifact(&self, run_id: i64, name: &str) -> anyhow::Result<ArtifactRead> {
        Ok(
            match self.locate_artifact(&self.pool, run_id, name).await? {
                ArtifactFile::BadName(why) => ArtifactRead::BadName(why),
                ArtifactFile::Missing(msg) => ArtifactRead::Missing(msg),
                ArtifactFile::Found(path) => ArtifactRead::Found(tokio::fs::read(path).await?),
            },
        )
    }

    /// A run's final evaluation report (`eval.json`, written by fine-tune and evaluate runs):
    /// `Ok(None)` when the run has none, `Err(why)` when its file is not a report.
    pub async fn eval_report(
        &self,
        run_id: i64,
    ) -> anyhow::Result<Result<Option<EvaluationReport>, String>> {
        Ok(
            match self.read_artifact(run_id, artifacts::EVAL_REPORT).await? {
                ArtifactRead::Found(bytes) => serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| format!("run {run_id}: eval.json could not be read ({e})")),
                ArtifactRead::BadName(_) | ArtifactRead::Missing(_) => Ok(None),
            },
        )
    }
}

/// Where [`AppState::locate_artifact`] found a run's artifact.
pub enum ArtifactFile {
    /// The name breaks the artifact rules (the reason).
    BadName(String),
    /// No such artifact (a message naming run and artifact).
    Missing(String),
    Found(PathBuf),
}

/// What [`AppState::read_artifact`] found.
pub enum ArtifactRead {
    /// The name breaks the artifact rules (the reason).
    BadName(String),
    /// No such artifact (a message naming run and artifact).
    Missing(String),
    Found(Vec<u8>),
}

/// Set once when the server starts shutting down; everything long-lived waits on it.
#[derive(Clone)]
pub struct Shutdown(Arc<watch::Sender<bool>>);

impl Shutdown {
    fn new() -> Shutdown {
        Shutdown(Arc::new(watch::channel(false).0))
    }

    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has begun (at once if it already has).
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + use<> {
        let mut rx = self.0.subscribe();
        async move {
            // An error means the sender is gone, which only happens when everything is.
            let _ = rx.wait_for(|down| *down).await;
        }
    }
}

/// How often the server records that it is alive (`db::liveness`).
const LIVENESS_TICK: Duration = Duration::from_secs(1);
/// A gap between ticks this long means the server or its database was not serving: leases are
/// extended by it before the reaper looks at them.
const LIVENESS_GAP: f64 = 2.0;

/// The lease keeper (liveness tick, then the reaper) and the NOTIFY → broadcast bridge. Both
/// end on shutdown; the returned handle finishes when the keeper has stopped, so no lease is
/// reaped while workers cannot reach a server that is going down.
pub async fn spawn_background_tasks(
    state: &AppState,
    database_url: &str,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let keeper = state.clone();
    let keeper_task = tokio::spawn(async move {
        let reap_every = Duration::from_secs_f64((keeper.cfg.lease_seconds / 4.0).clamp(0.25, 5.0));
        let period = reap_every.min(LIVENESS_TICK);
        let stop = keeper.shutdown.wait();
        tokio::pin!(stop);
        let mut last_reap: Option<std::time::Instant> = None;
        loop {
            // Tick first, so a gap extends the leases before they can be reaped; no reaping
            // without a tick (the database is unreachable then anyway).
            let ticked = match crate::db::liveness::tick(&keeper.pool, LIVENESS_GAP).await {
                Ok(t) => {
                    if !t.extended.is_empty() {
                        tracing::warn!(
                            "server or database was unavailable for {:.1} s; leases of runs {:?} extended by that",
                            t.gap_s,
                            t.extended
                        );
                    }
                    true
                }
                Err(e) => {
                    tracing::error!("liveness tick: {e}");
                    false
                }
            };
            if ticked && last_reap.is_none_or(|t| t.elapsed() >= reap_every) {
                match queue::reap_expired_leases(&keeper.pool).await {
                    Ok(ids) if !ids.is_empty() => {
                        tracing::warn!("leases expired for runs {ids:?}")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!("lease reaper: {e}"),
                }
                last_reap = Some(std::time::Instant::now());
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(period) => {}
            }
        }
        tracing::info!("lease reaper stopped");
    });

    let mut listener = sqlx::postgres::PgListener::connect(database_url).await?;
    listener.listen("run_changed").await?;
    let tx = state.run_changed.clone();
    let stop = state.shutdown.wait();
    tokio::spawn(async move {
        tokio::pin!(stop);
        loop {
            let received = tokio::select! {
                _ = &mut stop => break,
                r = listener.recv() => r,
            };
            match received {
                Ok(n) => {
                    if let Ok(id) = n.payload().parse::<i64>() {
                        let _ = tx.send(id);
                    }
                }
                Err(e) => {
                    // PgListener reconnects by itself on the next recv.
                    tracing::warn!("notification listener: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    Ok(keeper_task)
}
