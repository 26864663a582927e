//! `trainer predict --config CFG --weights W --images DIR --out dets.json`: detections of a
//! trained model as a COCO results file.
//!
//! Image ids come from `--dataset COCO.json` (matched by file name) when given, else images are
//! numbered 1..N in file-name order (the mapping is printed on stderr). Category ids come from
//! the model file's metadata.

use super::checkpoint::read_metadata;
use super::evaluation::predict_split_masks;
use super::results::{results_json, segm_results_json};
use crate::data::detection::{DetectionSplit, Sample};
use crate::models::build::{body_norm, build_detector};
use crate::models::detector::Detector;
use crate::models::weights::load_safetensors;
use aligndet_common::train_config::TrainConfig;
use anyhow::Context;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct PredictArgs {
    /// Training config (JSON, as a finetune job's config); default: the one stored in --weights.
    #[arg(long, value_name = "CFG.json")]
    pub config: Option<PathBuf>,
    /// Model weights (a finetune run's `model.safetensors` or `checkpoint.safetensors`).
    #[arg(long, value_name = "W.safetensors")]
    pub weights: PathBuf,
    /// Folder of images (.jpg, .jpeg, .png).
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// COCO file whose image ids (matched by file name) the results should use.
    #[arg(long, value_name = "COCO.json")]
    pub dataset: Option<PathBuf>,
    #[arg(long, value_name = "dets.json")]
    pub out: PathBuf,
    /// Lowest score written.
    #[arg(long, default_value_t = 0.05)]
    pub score_threshold: f64,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
}

#[derive(serde::Deserialize)]
struct CategoryMeta {
    id: i64,
    name: String,
}

pub fn main(args: PredictArgs) -> anyhow::Result<()> {
    let device = crate::jobs::parse_device(&args.device)?;
    let meta = read_metadata(&args.weights)?;
    let cfg: TrainConfig = match &args.config {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?
        }
        None => serde_json::from_str(meta.get("config").with_context(|| {
            format!(
                "{} stores no training config: pass --config",
                args.weights.display()
            )
        })?)
        .context("reading the config stored in the weights")?,
    };
    let categories: Vec<CategoryMeta> =
        serde_json::from_str(meta.get("categories").with_context(|| {
            format!(
                "{} stores no categories (not a model of ours?)",
                args.weights.display()
            )
        })?)
        .context("reading the categories stored in the weights")?;

    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.images)
        .with_context(|| format!("listing {}", args.images.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "no .jpg/.jpeg/.png images in {}",
        args.images.display()
    );
    let ids_by_name: Option<HashMap<String, i64>> = match &args.dataset {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let coco: aligndet_common::dataset::CocoDataset = serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?;
            Some(
                coco.images
                    .into_iter()
                    .map(|i| {
                        let base = i
                            .file_name
                            .rsplit('/')
                            .next()
                            .unwrap_or(&i.file_name)
                            .to_string();
                        (base, i.id)
                    })
                    .collect(),
            )
        }
        None => None,
    };
    let mut samples = Vec::new();
    for (k, path) in files.iter().enumerate() {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let image_id = match &ids_by_name {
            Some(map) => match map.get(&name) {
                Some(&id) => id,
                None => {
                    eprintln!("skipping {name}: not in the dataset file");
                    continue;
                }
            },
            None => {
                eprintln!("image {} = {name}", k + 1);
                k as i64 + 1
            }
        };
        samples.push(Sample {
            image_id,
            path: path.clone(),
            width: 0,
            height: 0,
            boxes: vec![],
            labels: vec![],
            segmentations: vec![],
        });
    }
    let split = DetectionSplit {
        samples,
        category_ids: categories.iter().map(|c| c.id).collect(),
        category_names: categories.into_iter().map(|c| c.name).collect(),
    };

    let mut vs = tch::nn::VarStore::new(device);
    let mut model: Box<dyn Detector> = build_detector(
        &vs.root(),
        cfg.detector,
        cfg.backbone,
        body_norm(&cfg.init),
        split.num_classes() as i64 + 1,
    )?;
    let report = load_safetensors(&mut vs, &args.weights, None)?;
    anyhow::ensure!(
        report.missing.is_empty() && report.shape_mismatch.is_empty(),
        "{} does not fit the model the config describes: {} missing, {} with other shapes (first: {:?})",
        args.weights.display(),
        report.missing.len(),
        report.shape_mismatch.len(),
        report
            .missing
            .first()
            .or(report.shape_mismatch.first().map(|m| &m.0))
    );
    model.set_score_threshold(args.score_threshold);
    let transform = crate::models::transform::DetectionTransform {
        min_size: cfg.augment.min_sizes.first().copied().unwrap_or(512) as f64,
        max_size: cfg.augment.max_size as f64,
        ..model.transform().clone()
    };
    let (dets, masks) = predict_split_masks(
        model.as_ref(),
        &transform,
        &split,
        0,
        args.batch_size,
        device,
        &mut |_, _| {},
    )?;
    let tmp = args.out.with_extension("json.tmp");
    let results = if cfg.detector.has_masks() {
        segm_results_json(&dets, &masks)
    } else {
        results_json(&dets)
    };
    std::fs::write(&tmp, serde_json::to_vec(&results)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "{} detections on {} images → {}",
        dets.len(),
        split.samples.len(),
        args.out.display()
    );
    Ok(())
}
