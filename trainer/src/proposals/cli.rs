//! `trainer proposals`: selective-search boxes for one image, or for a whole COCO dataset with
//! a recall report against its ground truth.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aligndet_common::images::ImageLimits;
use anyhow::{Context, anyhow, bail};
use rayon::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use super::filter::{FilterConfig, filter_boxes};
use super::recall::{DEFAULT_COUNTS, ImageBoxes, RecallCurve, RecallReport, recall_curve};
use super::strategy::{Strategy, propose};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["image", "dataset"])))]
pub struct ProposalsArgs {
    /// One image: writes a JSON list of [x, y, w, h] in ranked order.
    #[arg(long, value_name = "IMG", conflicts_with_all = ["dataset", "images", "no_filter", "report"])]
    pub image: Option<PathBuf>,
    /// A COCO annotation file: proposals for all its images, written as COCO with one
    /// category `selective_search`; recall against its boxes is printed.
    #[arg(long, value_name = "COCO_JSON", requires = "images")]
    pub dataset: Option<PathBuf>,
    /// Folder the dataset's `file_name`s are relative to.
    #[arg(long, value_name = "DIR", requires = "dataset")]
    pub images: Option<PathBuf>,
    /// Selective-search preset.
    #[arg(long, default_value = "aligndet", value_parser = ["aligndet", "fast", "quality"])]
    pub strategy: String,
    /// A full Strategy as JSON (overrides --strategy), e.g. to try other k values.
    #[arg(long, value_name = "JSON")]
    pub strategy_file: Option<PathBuf>,
    /// Single image: apply the AlignDet filter (the default writes all proposals).
    #[arg(long)]
    pub filter: bool,
    /// Dataset: keep all proposals (the default applies the AlignDet filter).
    #[arg(long)]
    pub no_filter: bool,
    /// Filter thresholds as a JSON FilterConfig; missing fields keep the AlignDet defaults.
    #[arg(long, value_name = "JSON")]
    pub filter_config: Option<PathBuf>,
    /// Greedy NMS at this IoU after the filter rules.
    #[arg(long, value_name = "IOU")]
    pub nms_iou: Option<f32>,
    /// Keep at most this many boxes per image after filtering.
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Seed of the randomised ranking (fast, quality).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads for a dataset (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Dataset: also write the recall report as JSON here.
    #[arg(long, value_name = "JSON")]
    pub report: Option<PathBuf>,
    /// Output file (written atomically).
    #[arg(long, value_name = "JSON")]
    pub out: PathBuf,
}

pub fn main(args: ProposalsArgs) -> anyhow::Result<()> {
    let strategy = match &args.strategy_file {
        Some(path) => {
            let text = fs::read_to_string(path)
                .with_context(|| format!("reading strategy file {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| {
                format!("strategy file {} is not a valid Strategy", path.display())
            })?
        }
        None => Strategy::by_name(&args.strategy)?,
    };
    let filter = filter_config(&args)?;
    match (&args.image, &args.dataset, &args.images) {
        (Some(image), _, _) => single_image(image, &strategy, &args, &filter),
        (None, Some(dataset), Some(dir)) => {
            let run = || whole_dataset(dataset, dir, &strategy, &args, &filter);
            match args.threads {
                Some(n) => rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .context("starting the worker threads")?
                    .install(run),
                None => run(),
            }
        }
        _ => bail!("give either --image IMG or --dataset COCO.json --images DIR"),
    }
}

fn filter_config(args: &ProposalsArgs) -> anyhow::Result<FilterConfig> {
    let mut config = match &args.filter_config {
        Some(path) => {
            let text = fs::read_to_string(path)
                .with_context(|| format!("reading filter config {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| {
                format!(
                    "filter config {} is not a valid FilterConfig",
                    path.display()
                )
            })?
        }
        None => FilterConfig::default(),
    };
    if args.nms_iou.is_some() {
        config.nms_iou = args.nms_iou;
    }
    if args.top_k.is_some() {
        config.top_k = args.top_k;
    }
    Ok(config)
}

fn single_image(
    path: &Path,
    strategy: &Strategy,
    args: &ProposalsArgs,
    filter: &FilterConfig,
) -> anyhow::Result<()> {
    let image = load_rgb(path)?;
    let start = Instant::now();
    let boxes = propose(&image, strategy, args.seed);
    let elapsed = start.elapsed();
    let written = if args.filter {
        filter_boxes(&boxes, image.width(), image.height(), filter).kept
    } else {
        boxes.clone()
    };
    let list: Vec<[i64; 4]> = written.iter().map(|b| to_int(*b)).collect();
    write_atomic(&args.out, &serde_json::to_vec(&list)?)?;
    println!(
        "{}: {} proposals ({} written) in {:.3} s, strategy {}",
        path.display(),
        boxes.len(),
        written.len(),
        elapsed.as_secs_f64(),
        strategy.name
    );
    Ok(())
}

fn to_int(b: [f32; 4]) -> [i64; 4] {
    b.map(|v| v.round() as i64)
}

fn load_rgb(path: &Path) -> anyhow::Result<image::RgbImage> {
    if !path.exists() {
        bail!("image {} does not exist", path.display());
    }
    // No job spec here: the default decoded-size limits.
    let image = aligndet_common::images::open_checked(path, ImageLimits::default())
        .map_err(|e| anyhow!("image {} {e}", path.display()))?;
    Ok(image.to_rgb8())
}

#[derive(Deserialize)]
struct CocoInput {
    images: Vec<Value>,
    #[serde(default)]
    annotations: Vec<CocoAnnotation>,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    image_id: u64,
    bbox: [f32; 4],
    #[serde(default)]
    iscrowd: u8,
}

struct ImageResult {
    proposals: Vec<[f32; 4]>,
    written: Vec<[f32; 4]>,
}

fn whole_dataset(
    dataset: &Path,
    dir: &Path,
    strategy: &Strategy,
    args: &ProposalsArgs,
    filter: &FilterConfig,
) -> anyhow::Result<()> {
    let text = fs::read_to_string(dataset)
        .with_context(|| format!("reading dataset {}", dataset.display()))?;
    let coco: CocoInput = serde_json::from_str(&text)
        .with_context(|| format!("dataset {} is not valid COCO JSON", dataset.display()))?;
    let entries: Vec<(u64, String)> = coco
        .images
        .iter()
        .enumerate()
        .map(|(i, img)| {
            let id = img.get("id").and_then(Value::as_u64);
            let name = img.get("file_name").and_then(Value::as_str);
            match (id, name) {
                (Some(id), Some(name)) => Ok((id, name.to_string())),
                _ => Err(anyhow!(
                    "dataset {}: images[{i}] needs an integer id and a file_name",
                    dataset.display()
                )),
            }
        })
        .collect::<anyhow::Result<_>>()?;

    let start = Instant::now();
    let results: Vec<ImageResult> = entries
        .par_iter()
        .map(|(_, name)| {
            let image = load_rgb(&dir.join(name))?;
            let proposals = propose(&image, strategy, args.seed);
            let written = if args.no_filter {
                proposals.clone()
            } else {
                filter_boxes(&proposals, image.width(), image.height(), filter).kept
            };
            Ok(ImageResult { proposals, written })
        })
        .collect::<anyhow::Result<_>>()?;
    let elapsed = start.elapsed().as_secs_f64();

    let mut annotations = Vec::new();
    for ((image_id, _), result) in entries.iter().zip(&results) {
        for b in &result.written {
            let [x, y, w, h] = to_int(*b);
            annotations.push(json!({
                "id": annotations.len() + 1,
                "image_id": image_id,
                "category_id": 1,
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
            }));
        }
    }
    let output = json!({
        "info": {
            "description": "selective-search pseudo-boxes",
            "strategy": strategy,
            "seed": args.seed,
            "filter": if args.no_filter { Value::Null } else { serde_json::to_value(filter)? },
        },
        "images": coco.images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "selective_search", "supercategory": "selective_search"}],
    });
    write_atomic(&args.out, &serde_json::to_vec(&output)?)?;

    let mut gt: HashMap<u64, Vec<[f32; 4]>> = HashMap::new();
    for a in coco.annotations.iter().filter(|a| a.iscrowd == 0) {
        gt.entry(a.image_id).or_default().push(a.bbox);
    }
    let no_gt = Vec::new();
    let pairs = |pick: fn(&ImageResult) -> &Vec<[f32; 4]>| -> Vec<ImageBoxes<'_>> {
        entries
            .iter()
            .zip(&results)
            .map(|((id, _), r)| ImageBoxes {
                gt: gt.get(id).unwrap_or(&no_gt),
                proposals: pick(r),
            })
            .collect()
    };
    let all = recall_curve(&pairs(|r| &r.proposals), &DEFAULT_COUNTS);
    let kept = recall_curve(&pairs(|r| &r.written), &DEFAULT_COUNTS);
    println!(
        "{} images in {:.1} s ({:.3} s/image), strategy {}, {} boxes written to {}",
        results.len(),
        elapsed,
        elapsed / results.len().max(1) as f64,
        strategy.name,
        annotations.len(),
        args.out.display()
    );
    print_curve("all proposals", &all.overall);
    if !args.no_filter {
        print_curve("after the filter", &kept.overall);
    }
    for (name, curve) in [
        ("small", &all.small),
        ("medium", &all.medium),
        ("large", &all.large),
    ] {
        print_curve(&format!("all proposals, {name} GT"), curve);
    }
    if let Some(path) = &args.report {
        let report: [(&str, &RecallReport); 2] = [("all_proposals", &all), ("written", &kept)];
        let map: serde_json::Map<String, Value> = report
            .iter()
            .map(|(k, r)| Ok((k.to_string(), serde_json::to_value(r)?)))
            .collect::<anyhow::Result<_>>()?;
        write_atomic(path, &serde_json::to_vec_pretty(&Value::Object(map))?)?;
    }
    Ok(())
}

fn print_curve(title: &str, curve: &RecallCurve) {
    println!("recall, {title} ({} GT boxes):", curve.num_gt);
    println!(
        "  {:>6} {:>8} {:>7} {:>7} {:>7}",
        "top", "mean", "R@0.5", "R@0.7", "AR"
    );
    for p in &curve.points {
        let top = p.max_proposals.map_or("all".to_string(), |n| n.to_string());
        println!(
            "  {:>6} {:>8.1} {:>7.3} {:>7.3} {:>7.3}",
            top, p.mean_proposals, p.recall_50, p.recall_70, p.average_recall
        );
    }
}

/// Writes to a temporary file beside `path`, then renames, so no half-written file is left.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("output path {} has no file name", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e)
            .with_context(|| format!("moving the output into place at {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("proposals-cli-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let out = dir.join("boxes.json");
        write_atomic(&out, b"[1]").expect("first write");
        write_atomic(&out, b"[2]").expect("second write");
        assert_eq!(fs::read(&out).expect("read back"), b"[2]");
        let leftovers = fs::read_dir(&dir).expect("list").count();
        assert_eq!(leftovers, 1);
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_image_names_the_file() {
        let err = load_rgb(Path::new("/nonexistent/x.png")).expect_err("must fail");
        assert!(err.to_string().contains("/nonexistent/x.png"));
    }
}
