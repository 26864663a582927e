//! The built-in demo: datasets prepared by scripts/setup.sh in the cache, imported once.

use crate::db;
use crate::import::{self, Format, ServerPathImport};
use crate::state::AppState;

pub const NEON_NAME: &str = "NEON tree crowns (400x400 tiles)";
pub const SYNTHETIC_NAME: &str = "Synthetic shapes";

pub async fn import_demo_datasets(state: &AppState) -> anyhow::Result<()> {
    let demo = state.cfg.cache_dir.join("demo");
    for (name, folder) in [(NEON_NAME, "neon"), (SYNTHETIC_NAME, "synthetic")] {
        if db::datasets::get_by_name(&state.pool, name)
            .await?
            .is_some()
        {
            continue;
        }
        let dir = demo.join(folder);
        let ann = dir.join("annotations.json");
        if !ann.exists() {
            tracing::warn!(
                "demo dataset {name:?} not found at {} (run scripts/setup.sh)",
                ann.display()
            );
            continue;
        }
        let req = ServerPathImport {
            name: name.to_string(),
            format: Format::Coco,
            annotations: ann.to_string_lossy().into_owned(),
            images: dir.join("images").to_string_lossy().into_owned(),
            created_by: None,
        };
        match import::import_server_paths(state, req).await {
            Ok(id) => tracing::info!("imported demo dataset {name:?} as #{id}"),
            Err(e) => anyhow::bail!("importing demo dataset {name:?}: {e}"),
        }
    }
    Ok(())
}
