use crate::config::ServerConfig;
use crate::queue;
use sqlx::PgPool;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub cfg: Arc<ServerConfig>,
    pub data_dir: PathBuf,
    pub worker_token: Arc<str>,
    /// Run ids whose data changed (from Postgres NOTIFY), for live pages.
    pub run_changed: broadcast::Sender<i64>,
}

impl AppState {
    pub fn new(
        pool: PgPool,
        cfg: ServerConfig,
        data_dir: PathBuf,
        worker_token: String,
    ) -> AppState {
        let (run_changed, _) = broadcast::channel(1024);
        AppState {
            pool,
            cfg: Arc::new(cfg),
            data_dir,
            worker_token: worker_token.into(),
            run_changed,
        }
    }

    pub fn artifacts_dir(&self, run_id: i64) -> PathBuf {
        self.data_dir.join("artifacts").join(run_id.to_string())
    }

    pub fn datasets_dir(&self) -> PathBuf {
        self.data_dir.join("datasets")
    }

    /// The bytes of a run's artifact. The name is checked against the artifact rules and the
    /// artifacts table before any file is opened, so no path outside the store can be read.
    pub async fn read_artifact(&self, run_id: i64, name: &str) -> anyhow::Result<ArtifactRead> {
        if let Err(why) = aligndet_common::api::check_artifact_name(name) {
            return Ok(ArtifactRead::BadName(why));
        }
        let known = crate::db::runs::artifacts(&self.pool, run_id)
            .await?
            .into_iter()
            .any(|a| a.name == name);
        if !known {
            return Ok(ArtifactRead::Missing(format!(
                "run {run_id} has no artifact {name:?}"
            )));
        }
        Ok(ArtifactRead::Found(
            tokio::fs::read(self.artifacts_dir(run_id).join(name)).await?,
        ))
    }
}

/// What [`AppState::read_artifact`] found.
pub enum ArtifactRead {
    /// The name breaks the artifact rules (the reason).
    BadName(String),
    /// No such artifact (a message naming run and artifact).
    Missing(String),
    Found(Vec<u8>),
}

/// The lease reaper and the NOTIFY → broadcast bridge.
pub async fn spawn_background_tasks(state: &AppState, database_url: &str) -> anyhow::Result<()> {
    let reaper = state.clone();
    tokio::spawn(async move {
        let period = Duration::from_secs_f64((reaper.cfg.lease_seconds / 4.0).clamp(0.25, 5.0));
        loop {
            match queue::reap_expired_leases(&reaper.pool).await {
                Ok(ids) if !ids.is_empty() => tracing::warn!("leases expired for runs {ids:?}"),
                Ok(_) => {}
                Err(e) => tracing::error!("lease reaper: {e}"),
            }
            tokio::time::sleep(period).await;
        }
    });

    let mut listener = sqlx::postgres::PgListener::connect(database_url).await?;
    listener.listen("run_changed").await?;
    let tx = state.run_changed.clone();
    tokio::spawn(async move {
        loop {
            match listener.recv().await {
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
    Ok(())
}
