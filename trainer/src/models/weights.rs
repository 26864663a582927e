//! Loading safetensors state dicts (torchvision key names) into a VarStore, non-strictly, with a
//! report of what was loaded, what the model expected but the file lacked, and what the file had
//! that the model does not use.

use serde::Serialize;
use std::collections::HashSet;
use std::path::Path;
use tch::nn::VarStore;

#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// (name, model shape, file shape)
    pub shape_mismatch: Vec<(String, Vec<i64>, Vec<i64>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: tch::TchError },
    #[error("copying {name}: {source}")]
    Copy { name: String, source: tch::TchError },
}

/// Copy every tensor of `file` whose name (after stripping `strip_prefix`, if given) matches a
/// variable of `vs` with the same shape. Buffers such as `num_batches_tracked` that the model has
/// no variable for are reported as unexpected.
pub fn load_safetensors(
    vs: &mut VarStore,
    file: &Path,
    strip_prefix: Option<&str>,
) -> Result<LoadReport, WeightsError> {
    let rename = |name: &str| match strip_prefix {
        Some(p) => name.strip_prefix(p).map(str::to_string),
        None => Some(name.to_string()),
    };
    load_safetensors_mapped(vs, file, &rename, None)
}

/// Like [`load_safetensors`] with any renaming (`None`: the tensor is unexpected), reporting as
/// missing only the variables under `scope` (e.g. `backbone.body` when loading a backbone).
pub fn load_safetensors_mapped(
    vs: &mut VarStore,
    file: &Path,
    rename: &dyn Fn(&str) -> Option<String>,
    scope: Option<&str>,
) -> Result<LoadReport, WeightsError> {
    let tensors = tch::Tensor::read_safetensors(file).map_err(|source| WeightsError::Read {
        path: file.display().to_string(),
        source,
    })?;
    let mut vars = vs.variables();
    let mut report = LoadReport::default();
    let mut seen = HashSet::new();
    tch::no_grad(|| -> Result<(), WeightsError> {
        for (name, t) in &tensors {
            let Some(key) = rename(name) else {
                report.unexpected.push(name.clone());
                continue;
            };
            match vars.get_mut(&key) {
                Some(var) if var.size() == t.size() => {
                    var.f_copy_(&t.to_kind(var.kind()).to_device(var.device()))
                        .map_err(|source| WeightsError::Copy {
                            name: key.clone(),
                            source,
                        })?;
                    report.loaded.push(key.clone());
                    seen.insert(key);
                }
                Some(var) => report.shape_mismatch.push((key, var.size(), t.size())),
                None => report.unexpected.push(name.clone()),
            }
        }
        Ok(())
    })?;
    report.missing = vars
        .keys()
        .filter(|k| !seen.contains(*k))
        .filter(|k| scope.is_none_or(|p| k.starts_with(p)))
        .cloned()
        .collect();
    report.missing.sort();
    report.loaded.sort();
    report.unexpected.sort();
    Ok(report)
}
