//! `trainer bench-step`: time training steps (forward, backward, optimizer step) of a detector,
//! fed by our data pipeline, and report the medians as JSON. scripts/bench_train.py runs it
//! beside torchvision's same model in one run and prints the ratio.

use super::optim::{Optimizer, Param};
use crate::data::detection::load_split;
use crate::data::loader::{Loader, LoaderConfig};
use crate::models::build::build_detector;
use crate::models::detector::{Targets, total_loss};
use crate::models::norm::NormKind;
use crate::models::transform::DetectionTransform;
use aligndet_common::api::DatasetLocation;
use aligndet_common::optim_config::OptimizerKind;
use aligndet_common::train_config::{BackboneKind, DetectorKind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchStepArgs {
    #[arg(long, value_enum, default_value = "fcos")]
    pub detector: DetectorArg,
    #[arg(long, value_enum, default_value = "resnet50")]
    pub backbone: BackboneArg,
    #[arg(long, default_value_t = 2)]
    pub batch_size: usize,
    /// Images are resized to SIZE×SIZE (square inputs).
    #[arg(long, default_value_t = 512)]
    pub size: u32,
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// COCO dataset (with splits.json beside it) whose train split feeds the steps.
    #[arg(long)]
    pub dataset: PathBuf,
    #[arg(long)]
    pub images: PathBuf,
    #[arg(long, default_value_t = 2)]
    pub loader_threads: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum DetectorArg {
    Fcos,
    Retinanet,
    FasterRcnn,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum BackboneArg {
    Resnet18,
    Resnet50,
    EfficientnetLite0,
    MobilenetV2,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

pub fn main(args: BenchStepArgs) -> anyhow::Result<()> {
    let detector = match args.detector {
        DetectorArg::Fcos => DetectorKind::Fcos,
        DetectorArg::Retinanet => DetectorKind::Retinanet,
        DetectorArg::FasterRcnn => DetectorKind::FasterRcnn,
    };
    let backbone = match args.backbone {
        BackboneArg::Resnet18 => BackboneKind::Resnet18,
        BackboneArg::Resnet50 => BackboneKind::Resnet50,
        BackboneArg::EfficientnetLite0 => BackboneKind::EfficientnetLite0,
        BackboneArg::MobilenetV2 => BackboneKind::MobilenetV2,
    };
    let splits_path = args.dataset.with_file_name("splits.json");
    let splits: serde_json::Value = serde_json::from_slice(&std::fs::read(&splits_path)?)?;
    let location = DatasetLocation {
        dataset_id: 0,
        name: "bench".into(),
        annotations_path: args.dataset.display().to_string(),
        image_root: args.images.display().to_string(),
        splits: Some(splits),
    };
    let train = Arc::new(load_split(&location, Some("train"))?);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    // torchvision without pretrained weights: ordinary batch norm, every stage trainable
    let model = build_detector(
        &vs.root(),
        detector,
        backbone,
        NormKind::Bn,
        train.num_classes() as i64 + 1,
    )?;
    let transform = DetectionTransform {
        min_size: args.size as f64,
        max_size: args.size as f64,
        ..model.transform().clone()
    };
    let params: Vec<Param> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(name, tensor)| Param {
            name,
            tensor,
            decay: true,
        })
        .collect();
    let mut opt = Optimizer::new(OptimizerKind::Sgd, params, 0.9, 1e-4);
    let mut loader = Loader::start(
        train,
        LoaderConfig {
            batch_size: args.batch_size,
            seed: 0,
            hflip: true,
            color_jitter: 0.0,
            min_sizes: vec![args.size],
            threads: args.loader_threads,
            prefetch: 2 * args.loader_threads,
            masks: false,
        },
        0,
    )?;
    let (mut step_s, mut wait_ms) = (vec![], vec![]);
    let (mut forward_s, mut optim_s) = (vec![], vec![]);
    for i in 0..args.warmup + args.steps {
        let t0 = Instant::now();
        let batch = loader.next_batch()?;
        let wait = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let targets: Vec<Targets> = batch.targets.iter().map(Targets::shallow_clone).collect();
        let (b, t) = transform.batch_with_targets(&batch.images, &targets);
        let loss = total_loss(&model.losses(&b, &t, true));
        let forward = t1.elapsed().as_secs_f64();
        opt.zero_grad();
        loss.backward();
        let t2 = Instant::now();
        opt.step(0.001);
        if i >= args.warmup {
            step_s.push(t1.elapsed().as_secs_f64());
            wait_ms.push(wait * 1000.0);
            forward_s.push(forward);
            optim_s.push(t2.elapsed().as_secs_f64());
        }
    }
    let out = serde_json::json!({
        "detector": format!("{detector:?}"),
        "backbone": format!("{backbone:?}"),
        "batch_size": args.batch_size,
        "size": args.size,
        "threads": tch::get_num_threads(),
        "median_step_s": median(&mut step_s.clone()),
        "step_s": step_s,
        "median_data_wait_ms": median(&mut wait_ms.clone()),
        "median_forward_s": median(&mut forward_s),
        "median_optimizer_s": median(&mut optim_s),
        "data_wait_ms": wait_ms,
    });
    println!("{out}");
    Ok(())
}
