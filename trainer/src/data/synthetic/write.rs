//! `trainer synth`: the dataset written to a staging folder and moved into place whole.

use super::{JPEG_QUALITY, SceneObject, SynthArgs, categories, generate_scene};
use aligndet_common::dataset::{CocoAnnotation, CocoDataset, CocoImage, DatasetSplits, load_coco};
use anyhow::{Context, bail};
use image::RgbImage;
use rayon::prelude::*;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// `trainer synth`: writes the dataset described in the module docs.
pub fn main(args: SynthArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let summary = write_dataset(&args)?;
    println!(
        "wrote {} images ({} train, {} val) with {} objects to {} in {:.1} s",
        summary.images,
        args.train,
        args.val,
        summary.objects,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(super) struct WriteSummary {
    images: usize,
    objects: usize,
}

pub(super) fn write_dataset(args: &SynthArgs) -> anyhow::Result<WriteSummary> {
    if !(32..=4096).contains(&args.size) {
        bail!(
            "--size must be between 32 and 4096 pixels, got {}",
            args.size
        );
    }
    let total = u64::from(args.train) + u64::from(args.val);
    if total == 0 {
        bail!("nothing to generate: --train and --val are both 0");
    }
    let staging = StagingDir::new(&args.out)?;
    let image_dir = staging.path().join("images");
    std::fs::create_dir_all(&image_dir)
        .with_context(|| format!("creating {}", image_dir.display()))?;

    let per_image: Vec<Vec<SceneObject>> = (0..total)
        .into_par_iter()
        .map(|index| -> anyhow::Result<Vec<SceneObject>> {
            let (image, objects) = generate_scene(index, args.seed, args.size);
            let path = image_dir.join(image_file_name(index));
            write_jpeg(&image, &path).with_context(|| format!("writing {}", path.display()))?;
            Ok(objects)
        })
        .collect::<anyhow::Result<_>>()?;

    let mut dataset = CocoDataset {
        categories: categories(),
        ..CocoDataset::default()
    };
    for (index, objects) in per_image.into_iter().enumerate() {
        let image_id = index as i64 + 1;
        dataset.images.push(CocoImage {
            id: image_id,
            file_name: image_file_name(index as u64),
            width: args.size,
            height: args.size,
        });
        for object in objects {
            dataset.annotations.push(CocoAnnotation {
                id: dataset.annotations.len() as i64 + 1,
                image_id,
                category_id: object.category_id,
                bbox: object.bbox,
                area: f64::from(object.visible_pixels),
                iscrowd: 0,
                segmentation: Some(serde_json::json!([object.polygon])),
            });
        }
    }
    let train_ids: Vec<i64> = (1..=i64::from(args.train)).collect();
    let val_ids: Vec<i64> = (i64::from(args.train) + 1..=total as i64).collect();
    let splits = DatasetSplits::with_default_labeled(train_ids, val_ids);
    write_json(&staging.path().join("annotations.json"), &dataset)?;
    write_json(&staging.path().join("splits.json"), &splits)?;

    // Self-check with the same validator the server uses.
    load_coco(&staging.path().join("annotations.json"), &image_dir)
        .context("the generated dataset failed validation (a generator bug)")?;
    let summary = WriteSummary {
        images: dataset.images.len(),
        objects: dataset.annotations.len(),
    };
    staging.commit()?;
    Ok(summary)
}

pub(super) fn image_file_name(index: u64) -> String {
    format!("{index:06}.jpg")
}

pub(super) fn write_jpeg(image: &RgbImage, path: &Path) -> anyhow::Result<()> {
    let mut writer = BufWriter::new(std::fs::File::create(path)?);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut writer, JPEG_QUALITY)
        .encode_image(image)?;
    writer.flush()?;
    Ok(())
}

pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut writer = BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    serde_json::to_writer(&mut writer, value)?;
    writer
        .flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A temporary folder next to the final output, renamed onto it by [`StagingDir::commit`]
/// and removed if dropped uncommitted, so no half-written dataset is ever left at `out`.
pub(crate) struct StagingDir {
    staging: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl StagingDir {
    /// Refuses a `target` that exists and is not an empty folder.
    pub(crate) fn new(target: &Path) -> anyhow::Result<Self> {
        if target.exists() {
            let empty_dir = target.is_dir()
                && std::fs::read_dir(target)
                    .with_context(|| format!("reading {}", target.display()))?
                    .next()
                    .is_none();
            if !empty_dir {
                bail!(
                    "{} already exists and is not an empty folder",
                    target.display()
                );
            }
        }
        let name = target
            .file_name()
            .with_context(|| format!("{} has no folder name", target.display()))?
            .to_string_lossy();
        let parent = match target.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .with_context(|| format!("removing stale {}", staging.display()))?;
        }
        std::fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
        Ok(Self {
            staging,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.staging
    }

    /// Moves the staged folder to the target (replacing an empty target folder).
    pub(crate) fn commit(mut self) -> anyhow::Result<()> {
        if self.target.is_dir() {
            // Only an empty folder can be here (checked in `new`); rename cannot replace it.
            std::fs::remove_dir(&self.target)
                .with_context(|| format!("replacing empty {}", self.target.display()))?;
        }
        std::fs::rename(&self.staging, &self.target).with_context(|| {
            format!(
                "moving {} to {}",
                self.staging.display(),
                self.target.display()
            )
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}
