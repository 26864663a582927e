//! Where a detector's weights start: scratch, the shipped ImageNet backbone, or another run's
//! checkpoint, loaded non-strictly with a report of what was loaded.

use crate::jobs::inputs::ArtifactSource;
use crate::models::weights::{LoadReport, load_safetensors_mapped};
use aligndet_common::train_config::{BackboneKind, InitConfig};
use anyhow::Context;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where the body lives in every detector's VarStore (torchvision's names).
pub const BODY_PREFIX: &str = "backbone.body";

#[derive(Debug, Serialize)]
pub struct InitReport {
    pub source: String,
    #[serde(flatten)]
    pub load: LoadReport,
}

/// Folder of converted weights: `ALIGNDET_WEIGHTS_DIR`, else `<cache>/weights` where the cache is
/// `ALIGNDET_CACHE` at run time or at build time, else `~/.cache/aligndet-studio`.
pub fn weights_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ALIGNDET_WEIGHTS_DIR") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("ALIGNDET_CACHE")
        .map(PathBuf::from)
        .or_else(|| option_env!("ALIGNDET_CACHE").map(PathBuf::from))
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/aligndet-studio")
        });
    cache.join("weights")
}

/// The ImageNet weights file for a backbone, if any are shipped.
pub fn imagenet_weights(backbone: BackboneKind) -> Option<PathBuf> {
    match backbone {
        BackboneKind::EfficientnetLite0 => {
            Some(weights_dir().join("efficientnet_lite0.safetensors"))
        }
        BackboneKind::MobilenetV2 => Some(weights_dir().join("mobilenet_v2.safetensors")),
        _ => None,
    }
}

/// Load the initial weights `init` names into `vs`. Checkpoints of other runs are fetched through
/// `inputs` into `work_dir`.
pub fn initialise(
    vs: &mut tch::nn::VarStore,
    init: &InitConfig,
    backbone: BackboneKind,
    inputs: &dyn ArtifactSource,
    work_dir: &Path,
) -> anyhow::Result<InitReport> {
    match init {
        InitConfig::Scratch => Ok(InitReport {
            source: "scratch".into(),
            load: LoadReport {
                missing: {
                    let mut v: Vec<String> = vs.variables().into_keys().collect();
                    v.sort();
                    v
                },
                ..LoadReport::default()
            },
        }),
        InitConfig::ImagenetBackbone => {
            let path = imagenet_weights(backbone)
                .with_context(|| format!("no ImageNet weights are shipped for {backbone:?}"))?;
            anyhow::ensure!(
                path.is_file(),
                "ImageNet weights {} not found: run scripts/setup.sh (it converts them)",
                path.display()
            );
            let rename = |name: &str| Some(format!("{BODY_PREFIX}.{name}"));
            let load = load_safetensors_mapped(vs, &path, &rename, Some(BODY_PREFIX))?;
            anyhow::ensure!(
                !load.loaded.is_empty(),
                "no tensor of {} matched the model",
                path.display()
            );
            Ok(InitReport {
                source: format!("imagenet {}", path.display()),
                load,
            })
        }
        InitConfig::Checkpoint { artifact } => {
            let bytes = inputs.fetch(artifact.run_id, &artifact.name)?;
            let path = work_dir.join("init.safetensors");
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
            // optimizer state and pre-training-only modules are not model variables here
            let rename = |name: &str| (!name.starts_with("optim.")).then(|| name.to_string());
            let load = load_safetensors_mapped(vs, &path, &rename, None).with_context(|| {
                format!(
                    "loading artifact {:?} of run {}",
                    artifact.name, artifact.run_id
                )
            })?;
            anyhow::ensure!(
                !load.loaded.is_empty(),
                "no tensor of artifact {:?} of run {} matched the model (is it a checkpoint of a detector?)",
                artifact.name,
                artifact.run_id
            );
            Ok(InitReport {
                source: format!(
                    "checkpoint run {} artifact {}",
                    artifact.run_id, artifact.name
                ),
                load,
            })
        }
    }
}
