//! Cutting a Pascal VOC-style dataset into square tiles, written as COCO.
//!
//! Large aerial images (e.g. the NEON tree-crown crops) are too big to train on whole;
//! `trainer tile-voc` cuts each into non-overlapping `tile`×`tile` tiles from the top-left,
//! dropping partial tiles at the right and bottom edges. A box is kept in a tile, clipped
//! to it, when at least [`MIN_KEPT_FRACTION`] of its area lies inside that tile, so each
//! box lands in at most one tile.
//!
//! Input: the standard layout (`Annotations/` + `JPEGImages/`) or a flat folder of XML files
//! beside their images, each XML's `<filename>` naming its image. If that image cannot be
//! decoded (e.g. a `.tif`, which this build does not read) but an image with the same stem
//! and a `.png`/`.jpg`/`.jpeg` extension exists beside it, that one is used (with a warning).
//!
//! Output: `OUT/images/{stem}_{x}_{y}.png` (x, y = tile's top-left pixel in the source) and
//! `OUT/annotations.json` (COCO; `file_name`s relative to `OUT/images`; image ids 1.. in
//! XML-name then row-major tile order; category ids 1..K in sorted class-name order; boxes
//! converted with [`voc_box_to_coco`]; `difficult` becomes `iscrowd = 1`). Written to a
//! temporary folder beside OUT and renamed at the end.

use super::synthetic::{StagingDir, write_json};
use aligndet_common::dataset::{
    CocoAnnotation, CocoCategory, CocoDataset, CocoImage, MAX_VOC_XML_BYTES, ValidationReport,
    VocAnnotation, list_xml_files, load_coco, parse_voc_xml, unsafe_file_name_reason,
    voc_box_to_coco, voc_layout,
};
use aligndet_common::images::ImageLimits;
use anyhow::{Context, bail};
use image::RgbImage;
use rayon::prelude::*;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// A box is kept in a tile if at least this fraction of its area is inside the tile.
pub const MIN_KEPT_FRACTION: f64 = 0.5;

/// Extensions tried, in order, when an XML's named image cannot be decoded.
const FALLBACK_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "PNG", "JPG", "JPEG"];

/// Cut a Pascal VOC dataset into non-overlapping square tiles, written as COCO.
#[derive(clap::Args, Debug, Clone)]
pub struct TileArgs {
    /// VOC folder: `Annotations/` + `JPEGImages/`, or XML files beside their images.
    #[arg(long)]
    pub src: PathBuf,
    /// Output folder (must not exist or be empty); written atomically.
    #[arg(long)]
    pub out: PathBuf,
    /// Tile width and height in pixels.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(8..=16384))]
    pub tile: u32,
}

/// What [`tile_voc`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileSummary {
    pub source_images: usize,
    pub tiles: usize,
    /// Boxes written (over all tiles).
    pub boxes: usize,
    /// Source boxes with no tile holding at least [`MIN_KEPT_FRACTION`] of them.
    pub dropped_boxes: usize,
}

/// `trainer tile-voc`.
pub fn main(args: TileArgs) -> anyhow::Result<()> {
    let summary = tile_voc(&args.src, &args.out, args.tile)?;
    println!(
        "cut {} images into {} tiles of {}×{} with {} boxes ({} boxes dropped: under {:.0}% inside any tile) → {}",
        summary.source_images,
        summary.tiles,
        args.tile,
        args.tile,
        summary.boxes,
        summary.dropped_boxes,
        MIN_KEPT_FRACTION * 100.0,
        args.out.display()
    );
    Ok(())
}

/// Clips COCO box `bbox` to the `tile`×`tile` tile at `(tile_x, tile_y)`; returns it in tile
/// coordinates if at least [`MIN_KEPT_FRACTION`] of its area is inside, else `None`.
/// Boxes of non-positive or non-finite size give `None`.
pub fn clip_box_to_tile(bbox: [f64; 4], tile_x: f64, tile_y: f64, tile: f64) -> Option<[f64; 4]> {
    let [x, y, w, h] = bbox;
    if !bbox.iter().all(|v| v.is_finite()) || w <= 0.0 || h <= 0.0 {
        return None;
    }
    let left = x.max(tile_x);
    let top = y.max(tile_y);
    let right = (x + w).min(tile_x + tile);
    let bottom = (y + h).min(tile_y + tile);
    if right <= left || bottom <= top {
        return None;
    }
    let clipped_area = (right - left) * (bottom - top);
    (clipped_area >= MIN_KEPT_FRACTION * w * h).then_some([
        left - tile_x,
        top - tile_y,
        right - left,
        bottom - top,
    ])
}

/// Tiles every image of the VOC dataset at `src` into `out` (see the module docs).
pub fn tile_voc(src: &Path, out: &Path, tile: u32) -> anyhow::Result<TileSummary> {
    if tile == 0 {
        bail!("the tile size must be positive");
    }
    let layout = voc_layout(src)?;
    let xml_files = list_xml_files(&layout.annotation_dir)?;
    let annotations = read_annotations(&xml_files)?;

    let category_names: BTreeSet<&str> = annotations
        .iter()
        .flat_map(|a| a.objects.iter().map(|o| o.name.as_str()))
        .collect();
    let category_id = |name: &str| -> i64 {
        category_names
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| i as i64 + 1)
    };
    let mut dataset = CocoDataset {
        categories: category_names
            .iter()
            .zip(1..)
            .map(|(name, id)| CocoCategory {
                id,
                name: (*name).to_string(),
                supercategory: None,
            })
            .collect(),
        ..CocoDataset::default()
    };

    let staging = StagingDir::new(out)?;
    let image_dir = staging.path().join("images");
    std::fs::create_dir_all(&image_dir)
        .with_context(|| format!("creating {}", image_dir.display()))?;
    let mut used_stems = HashSet::new();
    let mut dropped_boxes = 0;
    for annotation in &annotations {
        let (image, image_path) = open_image(&layout.image_root, &annotation.filename)?;
        let (width, height) = image.dimensions();
        if let Some((declared_w, declared_h)) = annotation.size
            && (declared_w, declared_h) != (width, height)
        {
            eprintln!(
                "warning: {} is {width}×{height} but its XML says {declared_w}×{declared_h}; using the file's size",
                image_path.display()
            );
        }
        let stem = tile_stem(&annotation.filename);
        if !used_stems.insert(stem.clone()) {
            bail!("two images are named {stem:?}: their tiles would collide");
        }
        let origins: Vec<(u32, u32)> = (0..height / tile)
            .flat_map(|row| (0..width / tile).map(move |col| (col * tile, row * tile)))
            .collect();
        let names: Vec<String> = origins
            .iter()
            .map(|(x, y)| format!("{stem}_{x}_{y}.png"))
            .collect();
        origins
            .par_iter()
            .zip(&names)
            .try_for_each(|(&(x, y), name)| -> anyhow::Result<()> {
                let path = image_dir.join(name);
                image::imageops::crop_imm(&image, x, y, tile, tile)
                    .to_image()
                    .save(&path)
                    .with_context(|| format!("writing {}", path.display()))
            })?;

        let boxes: Vec<([f64; 4], i64, u8)> = annotation
            .objects
            .iter()
            .map(|o| {
                (
                    voc_box_to_coco(o.bndbox),
                    category_id(&o.name),
                    u8::from(o.difficult),
                )
            })
            .collect();
        let mut kept_per_box = vec![false; boxes.len()];
        for (&(x, y), name) in origins.iter().zip(names) {
            let image_id = dataset.images.len() as i64 + 1;
            dataset.images.push(CocoImage {
                id: image_id,
                file_name: name,
                width: tile,
                height: tile,
            });
            for (i, &(bbox, category_id, iscrowd)) in boxes.iter().enumerate() {
                let Some(clipped) =
                    clip_box_to_tile(bbox, f64::from(x), f64::from(y), f64::from(tile))
                else {
                    continue;
                };
                kept_per_box[i] = true;
                dataset.annotations.push(CocoAnnotation {
                    id: dataset.annotations.len() as i64 + 1,
                    image_id,
                    category_id,
                    bbox: clipped,
                    area: clipped[2] * clipped[3],
                    iscrowd,
                    segmentation: None,
                });
            }
        }
        dropped_boxes += kept_per_box.iter().filter(|kept| !**kept).count();
    }
    if dataset.images.is_empty() {
        bail!("no image is at least {tile}×{tile} pixels: no tiles to write");
    }
    write_json(&staging.path().join("annotations.json"), &dataset)?;
    load_coco(&staging.path().join("annotations.json"), &image_dir)
        .context("the tiled dataset failed validation (a tiling bug)")?;
    let summary = TileSummary {
        source_images: annotations.len(),
        tiles: dataset.images.len(),
        boxes: dataset.annotations.len(),
        dropped_boxes,
    };
    staging.commit()?;
    Ok(summary)
}

/// Reads and parses every XML file; fails with the full report if any has problems.
fn read_annotations(xml_files: &[PathBuf]) -> anyhow::Result<Vec<VocAnnotation>> {
    let mut report = ValidationReport::new();
    let mut annotations = Vec::with_capacity(xml_files.len());
    for path in xml_files {
        let label = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let size = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        if size > MAX_VOC_XML_BYTES {
            bail!(
                "{} is {size} bytes, over the {MAX_VOC_XML_BYTES}-byte limit",
                path.display()
            );
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        if let Some(annotation) = parse_voc_xml(&text, &label, &mut report) {
            annotations.push(annotation);
        }
    }
    if !report.is_empty() {
        bail!("the VOC annotations have problems:\n{report}");
    }
    Ok(annotations)
}

/// Decodes the image an XML names (relative to `image_root`), or a same-stem PNG/JPEG
/// beside it if that one cannot be decoded. Returns the image and the path used.
fn open_image(image_root: &Path, file_name: &str) -> anyhow::Result<(RgbImage, PathBuf)> {
    if let Some(reason) = unsafe_file_name_reason(file_name) {
        bail!("refusing image file name {file_name:?}: {reason}");
    }
    let named = image_root.join(file_name);
    let first_error = match decode(&named) {
        Ok(image) => return Ok((image, named)),
        Err(e) => e,
    };
    for extension in FALLBACK_EXTENSIONS {
        let candidate = named.with_extension(extension);
        if candidate == named || !candidate.is_file() {
            continue;
        }
        if let Ok(image) = decode(&candidate) {
            eprintln!(
                "warning: {}: {first_error:#}; using {} instead",
                named.display(),
                candidate.display()
            );
            return Ok((image, candidate));
        }
    }
    Err(first_error.context(format!(
        "no decodable image for {file_name:?} (also tried .png/.jpg/.jpeg beside it)"
    )))
}

/// The whole image under the default decoded-size limits (no job spec on this CLI path).
fn decode(path: &Path) -> anyhow::Result<RgbImage> {
    let image = aligndet_common::images::open_checked(path, ImageLimits::default())
        .map_err(|e| anyhow::anyhow!("image {} {e}", path.display()))?;
    Ok(image.into_rgb8())
}

/// The tile-name prefix for an image: its file stem, with characters that are awkward in
/// file names replaced by `_`.
fn tile_stem(file_name: &str) -> String {
    let stem = Path::new(file_name)
        .file_stem()
        .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
    stem.chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_clipped_and_kept_only_if_mostly_inside() {
        let tile = 100.0;
        // Fully inside: unchanged, in tile coordinates.
        assert_eq!(
            clip_box_to_tile([110.0, 120.0, 30.0, 40.0], 100.0, 100.0, tile),
            Some([10.0, 20.0, 30.0, 40.0])
        );
        // Exactly half inside: kept and clipped.
        assert_eq!(
            clip_box_to_tile([80.0, 10.0, 40.0, 10.0], 0.0, 0.0, tile),
            Some([80.0, 10.0, 20.0, 10.0])
        );
        // Under half inside: dropped here, kept in the neighbouring tile.
        let straddling = [90.0, 10.0, 30.0, 10.0];
        assert_eq!(clip_box_to_tile(straddling, 0.0, 0.0, tile), None);
        assert_eq!(
            clip_box_to_tile(straddling, 100.0, 0.0, tile),
            Some([0.0, 10.0, 20.0, 10.0])
        );
        // Straddling a corner with a quarter in each tile: dropped everywhere.
        let corner = [90.0, 90.0, 20.0, 20.0];
        for (x, y) in [(0.0, 0.0), (100.0, 0.0), (0.0, 100.0), (100.0, 100.0)] {
            assert_eq!(clip_box_to_tile(corner, x, y, tile), None);
        }
        // Outside, empty or NaN boxes.
        assert_eq!(
            clip_box_to_tile([300.0, 0.0, 5.0, 5.0], 0.0, 0.0, tile),
            None
        );
        assert_eq!(clip_box_to_tile([0.0, 0.0, 0.0, 5.0], 0.0, 0.0, tile), None);
        assert_eq!(
            clip_box_to_tile([f64::NAN, 0.0, 5.0, 5.0], 0.0, 0.0, tile),
            None
        );
    }

    #[test]
    fn tiles_a_flat_voc_folder_with_fallback_image() {
        let root = std::env::temp_dir().join(format!("aligndet-tiling-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let src = root.join("src");
        std::fs::create_dir_all(&src).unwrap();
        // 250×130 image: 2×1 tiles of 100 (the partial edge tiles are dropped).
        RgbImage::from_pixel(250, 130, image::Rgb([10, 200, 30]))
            .save(src.join("scene one.png"))
            .unwrap();
        // The XML names a .tif that is absent: the same-stem PNG is used.
        let xml = "<annotation><filename>scene one.tif</filename>\
            <size><width>250</width><height>130</height></size>\
            <object><name>tree</name><bndbox><xmin>11</xmin><ymin>11</ymin><xmax>30</xmax><ymax>30</ymax></bndbox></object>\
            <object><name>tree</name><bndbox><xmin>91</xmin><ymin>11</ymin><xmax>130</xmax><ymax>20</ymax></bndbox></object>\
            <object><name>dead</name><difficult>1</difficult><bndbox><xmin>191</xmin><ymin>91</ymin><xmax>210</xmax><ymax>110</ymax></bndbox></object>\
            </annotation>";
        std::fs::write(src.join("scene one.xml"), xml).unwrap();
        let out = root.join("out");
        let summary = tile_voc(&src, &out, 100).unwrap();
        assert_eq!(
            summary,
            TileSummary {
                source_images: 1,
                tiles: 2,
                boxes: 2,
                dropped_boxes: 1
            }
        );
        let dataset = load_coco(&out.join("annotations.json"), &out.join("images")).unwrap();
        let names: Vec<&str> = dataset
            .images
            .iter()
            .map(|i| i.file_name.as_str())
            .collect();
        assert_eq!(names, ["scene_one_0_0.png", "scene_one_100_0.png"]);
        let categories: Vec<&str> = dataset.categories.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(categories, ["dead", "tree"]);
        assert_eq!(dataset.annotations[0].bbox, [10.0, 10.0, 20.0, 20.0]);
        assert_eq!(
            (dataset.annotations[1].image_id, dataset.annotations[1].bbox),
            (2, [0.0, 10.0, 30.0, 10.0]),
            "the straddling box lands in the tile holding most of it"
        );
        // An existing non-empty output is refused; nothing else is left beside it.
        assert!(tile_voc(&src, &out, 100).is_err());
        let entries = std::fs::read_dir(&root).unwrap().count();
        assert_eq!(entries, 2, "src and out only");
        let _ = std::fs::remove_dir_all(&root);
    }
}
