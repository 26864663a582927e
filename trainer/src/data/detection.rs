//! A detection split as training and evaluation read it: image paths, boxes in xyxy pixels and
//! contiguous labels (category k of the sorted category ids → label k, 1-based, as the detectors
//! expect; see `models::detector::Targets`).

use aligndet_common::api::DatasetLocation;
use aligndet_common::dataset::{CocoDataset, DatasetSplits};
use anyhow::Context;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Sample {
    pub image_id: i64,
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    /// xyxy in original pixels; crowd regions and boxes under 1 px are left out.
    pub boxes: Vec<[f32; 4]>,
    pub labels: Vec<i64>,
    /// The segmentation of each kept annotation (parallel to `boxes`), decoded only for mask
    /// detectors.
    pub segmentations: Vec<Segmentation>,
}

/// The segmentation of one kept annotation, as the dataset gives it.
#[derive(Debug, Clone)]
pub struct Segmentation {
    pub annotation_id: i64,
    pub value: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct DetectionSplit {
    pub samples: Vec<Sample>,
    /// category id of label k is `category_ids[k - 1]`.
    pub category_ids: Vec<i64>,
    pub category_names: Vec<String>,
}

impl DetectionSplit {
    pub fn num_classes(&self) -> usize {
        self.category_ids.len()
    }

    pub fn category_of_label(&self, label: i64) -> Option<i64> {
        usize::try_from(label - 1)
            .ok()
            .and_then(|i| self.category_ids.get(i).copied())
    }
}

/// Image ids of a named split: `train`, `val`, a labeled subset (e.g. `5pct_seed0`), or `all`.
pub fn split_image_ids(location: &DatasetLocation, split: &str) -> anyhow::Result<HashSet<i64>> {
    let splits: DatasetSplits = location
        .splits
        .clone()
        .with_context(|| format!("dataset {:?} has no splits", location.name))
        .and_then(|v| serde_json::from_value(v).context("reading the dataset's splits"))?;
    let ids = match split {
        "train" => splits.train.clone(),
        "val" => splits.val.clone(),
        other => splits.labeled.get(other).cloned().with_context(|| {
            let mut names: Vec<_> = splits.labeled.keys().cloned().collect();
            names.sort();
            format!(
                "split {other:?} not found; the dataset has train, val and {}",
                names.join(", ")
            )
        })?,
    };
    Ok(ids.into_iter().collect())
}

/// Read the dataset's COCO file and keep the images of `split` (`None`: every image).
pub fn load_split(
    location: &DatasetLocation,
    split: Option<&str>,
) -> anyhow::Result<DetectionSplit> {
    let bytes = std::fs::read(&location.annotations_path)
        .with_context(|| format!("reading {}", location.annotations_path))?;
    let coco: CocoDataset = serde_json::from_slice(&bytes)
        .with_context(|| format!("parsing {}", location.annotations_path))?;
    let keep = split.map(|s| split_image_ids(location, s)).transpose()?;
    Ok(from_coco(
        &coco,
        &PathBuf::from(&location.image_root),
        keep.as_ref(),
    ))
}

pub fn from_coco(
    coco: &CocoDataset,
    image_root: &std::path::Path,
    keep: Option<&HashSet<i64>>,
) -> DetectionSplit {
    let mut cats: Vec<_> = coco
        .categories
        .iter()
        .map(|c| (c.id, c.name.clone()))
        .collect();
    cats.sort_by_key(|c| c.0);
    let label_of: HashMap<i64, i64> = cats
        .iter()
        .enumerate()
        .map(|(i, c)| (c.0, i as i64 + 1))
        .collect();
    let mut by_image: HashMap<i64, Vec<&aligndet_common::dataset::CocoAnnotation>> = HashMap::new();
    for a in &coco.annotations {
        by_image.entry(a.image_id).or_default().push(a);
    }
    let mut images: Vec<_> = coco
        .images
        .iter()
        .filter(|i| keep.is_none_or(|k| k.contains(&i.id)))
        .collect();
    images.sort_by_key(|i| i.id);
    let samples = images
        .into_iter()
        .map(|img| {
            let (mut boxes, mut labels, mut segmentations) = (vec![], vec![], vec![]);
            for a in by_image.get(&img.id).map(|v| v.as_slice()).unwrap_or(&[]) {
                if !a.is_trained_on() {
                    continue;
                }
                let [x, y, w, h] = a.bbox;
                if let Some(&label) = label_of.get(&a.category_id) {
                    boxes.push([x as f32, y as f32, (x + w) as f32, (y + h) as f32]);
                    labels.push(label);
                    segmentations.push(Segmentation {
                        annotation_id: a.id,
                        value: a.segmentation.clone(),
                    });
                }
            }
            Sample {
                image_id: img.id,
                path: image_root.join(&img.file_name),
                width: img.width,
                height: img.height,
                boxes,
                labels,
                segmentations,
            }
        })
        .collect();
    DetectionSplit {
        samples,
        category_ids: cats.iter().map(|c| c.0).collect(),
        category_names: cats.into_iter().map(|c| c.1).collect(),
    }
}
