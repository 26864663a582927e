//! Checkpoints as safetensors files: model tensors under their VarStore names, optimizer state
//! under `optim.<param>.<state>`, and JSON metadata (what was trained, the step reached) in the
//! safetensors header, so a file says what it is without a side file.

use super::optim::Optimizer;
use anyhow::Context;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::Path;
use tch::{Kind, Tensor};

const OPTIM_PREFIX: &str = "optim.";

fn dtype(kind: Kind) -> anyhow::Result<(Dtype, usize)> {
    Ok(match kind {
        Kind::Float => (Dtype::F32, 4),
        Kind::Double => (Dtype::F64, 8),
        Kind::Int64 => (Dtype::I64, 8),
        other => anyhow::bail!("cannot store tensors of kind {other:?}"),
    })
}

/// Write `tensors` with `metadata` atomically (temp file, then rename).
pub fn write_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> anyhow::Result<()> {
    let mut raw = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.detach().to_device(tch::Device::Cpu).contiguous();
        let (dt, width) = dtype(t.kind()).with_context(|| format!("tensor {name}"))?;
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * width];
        t.copy_data_u8(&mut bytes, numel);
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        raw.push((name.clone(), dt, shape, bytes));
    }
    let views = raw
        .iter()
        .map(|(name, dt, shape, bytes)| {
            TensorView::new(*dt, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| anyhow::anyhow!("tensor {name}: {e:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::tensor::serialize_to_file(views, &Some(metadata), &tmp)
        .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// The metadata of a safetensors file (empty when it has none).
pub fn read_metadata(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a safetensors file: {e:?}", path.display()))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Save the model's variables (and, for a resumable checkpoint, the optimizer state).
pub fn save(
    path: &Path,
    vs: &tch::nn::VarStore,
    optimizer: Option<&Optimizer>,
    metadata: HashMap<String, String>,
) -> anyhow::Result<()> {
    save_with_extra(path, vs, optimizer, vec![], metadata)
}

/// [`save`] plus `extra` tensors under their own names (e.g. the momentum detector of
/// pre-training, under a prefix the model's variables never use).
pub fn save_with_extra(
    path: &Path,
    vs: &tch::nn::VarStore,
    optimizer: Option<&Optimizer>,
    extra: Vec<(String, Tensor)>,
    mut metadata: HashMap<String, String>,
) -> anyhow::Result<()> {
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    if let Some(opt) = optimizer {
        for (k, t) in &opt.state {
            tensors.push((format!("{OPTIM_PREFIX}{k}"), t.shallow_clone()));
        }
        metadata.insert("optimizer_step".into(), opt.step.to_string());
    }
    tensors.extend(extra);
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    write_tensors(path, &tensors, metadata)
}

/// Copy the tensors stored as `prefix` + name into the variables of `vs` (every one must be
/// there, with its shape).
pub fn restore_prefixed(
    path: &Path,
    prefix: &str,
    vs: &mut tch::nn::VarStore,
) -> anyhow::Result<()> {
    let tensors =
        Tensor::read_safetensors(path).with_context(|| format!("reading {}", path.display()))?;
    let by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let key = format!("{prefix}{name}");
            let src = by_name
                .get(&key)
                .with_context(|| format!("checkpoint {} lacks {key}", path.display()))?;
            anyhow::ensure!(
                src.size() == var.size(),
                "checkpoint {key}: shape {:?}, model {:?}",
                src.size(),
                var.size()
            );
            var.copy_(src);
        }
        Ok(())
    })
}

pub fn restore(
    path: &Path,
    vs: &mut tch::nn::VarStore,
    optimizer: &mut Optimizer,
) -> anyhow::Result<HashMap<String, String>> {
    let metadata = read_metadata(path)?;
    let tensors =
        Tensor::read_safetensors(path).with_context(|| format!("reading {}", path.display()))?;
    let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
    let device = vs.device();
    tch::no_grad(|| -> anyhow::Result<()> {
        for (name, mut var) in vs.variables() {
            let src = by_name
                .remove(&name)
                .with_context(|| format!("checkpoint {} lacks {name}", path.display()))?;
            anyhow::ensure!(
                src.size() == var.size(),
                "checkpoint {name}: shape {:?}, model {:?}",
                src.size(),
                var.size()
            );
            var.copy_(&src);
        }
        Ok(())
    })?;
    optimizer.state.clear();
    for (name, t) in by_name {
        if let Some(k) = name.strip_prefix(OPTIM_PREFIX) {
            optimizer.state.insert(k.to_string(), t.to_device(device));
        }
    }
    optimizer.step = metadata
        .get("optimizer_step")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(metadata)
}
