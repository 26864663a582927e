// PLACEHOLDER (to be replaced by the dataset-format work): lets the workspace compile meanwhile.
use super::{CocoDataset, DatasetError};
use std::path::{Path, PathBuf};
pub fn load_voc(root: &Path) -> Result<(CocoDataset, PathBuf), DatasetError> {
    Err(DatasetError::Path {
        path: root.display().to_string(),
        message: "not implemented yet".into(),
    })
}
