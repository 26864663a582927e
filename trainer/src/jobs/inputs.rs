//! Where a job's inputs stored as artifacts of other runs come from: the server in worker mode,
//! a folder in `trainer run` mode.

use aligndet_common::artifacts;
use std::path::PathBuf;

/// Fetches artifacts of runs (e.g. the detections an `evaluate` job scores): from the server in
/// worker mode, from a folder in `trainer run` mode.
pub trait ArtifactSource: Send + Sync {
    /// The artifact's bytes, or `None` when the run has no artifact of that name.
    fn fetch_optional(&self, run_id: i64, name: &str) -> anyhow::Result<Option<Vec<u8>>>;

    /// The artifact's bytes; a missing artifact is an error naming it.
    fn fetch(&self, run_id: i64, name: &str) -> anyhow::Result<Vec<u8>> {
        self.fetch_optional(run_id, name)?
            .ok_or_else(|| anyhow::anyhow!("run {run_id} has no artifact {name:?}"))
    }
}

/// `trainer run --inputs DIR`: artifact `name` of run `id` is the file DIR/id/name.
pub struct FolderArtifacts(pub Option<PathBuf>);

impl ArtifactSource for FolderArtifacts {
    fn fetch(&self, run_id: i64, name: &str) -> anyhow::Result<Vec<u8>> {
        self.fetch_optional(run_id, name)?.ok_or_else(|| {
            anyhow::anyhow!(
                "the job needs artifact {name:?} of run {run_id}: pass --inputs DIR holding DIR/{run_id}/{name}"
            )
        })
    }

    fn fetch_optional(&self, run_id: i64, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
        artifacts::check_artifact_name(name).map_err(|e| anyhow::anyhow!(e))?;
        let Some(dir) = &self.0 else {
            return Ok(None);
        };
        let path = dir.join(run_id.to_string()).join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }
}
