//! Seeded synthetic multi-object detection dataset.
//!
//! Each image is a cluttered, textured background with 3–12 objects of
//! [`CATEGORY_NAMES`]; every category has its own shape *and* texture family (colours are
//! random), so a detector must use both. Objects range from ~12 px to half the image,
//! later objects occlude earlier ones, objects more than 70% hidden are dropped, and each
//! kept object's box is the tight box of its visible pixels. Masks are the (amodal) shape
//! outline as a polygon, clipped to the image.
//!
//! Every image is generated from its own RNG seeded by `(seed, index)`, so the output is
//! byte-identical whatever the number of threads.
//!
//! Output (`trainer synth --out OUT`):
//! - `OUT/images/000000.jpg …` (JPEG quality [`JPEG_QUALITY`]);
//! - `OUT/annotations.json`: COCO; `file_name`s are relative to `OUT/images`; image ids are
//!   `index + 1`; category ids are 1..=8 in [`CATEGORY_NAMES`] order; `area` is the number
//!   of visible pixels;
//! - `OUT/splits.json`: [`DatasetSplits`]; train = the first `--train` images, val = the rest.

use aligndet_common::dataset::CocoCategory;
use image::RgbImage;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

mod paint;
mod shapes;
mod write;

use paint::{mix64, paint_background, paint_blob, paint_stroke};
pub use shapes::MIN_OBJECT_PX;
use shapes::{PlacedShape, clip_polygon_to_square};
pub use write::main;
pub(crate) use write::{StagingDir, write_json};

/// Category names, in category-id order (id = position + 1).
pub const CATEGORY_NAMES: [&str; 8] = [
    "gradient_disc",
    "striped_square",
    "checkered_triangle",
    "sector_ring",
    "gradient_cross",
    "banded_star",
    "dotted_ellipse",
    "noisy_hexagon",
];

pub const JPEG_QUALITY: u8 = 92;
/// Objects with less than this fraction of their drawn pixels visible are dropped.
pub const MIN_VISIBLE_FRACTION: f64 = 0.3;
/// Objects with fewer visible pixels than this are dropped (unrecognisable slivers).
const MIN_VISIBLE_PIXELS: u32 = 24;

/// Generate the seeded synthetic multi-object dataset.
#[derive(clap::Args, Debug, Clone)]
pub struct SynthArgs {
    /// Output folder (must not exist or be empty); written atomically.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of training images.
    #[arg(long, default_value_t = 2000)]
    pub train: u32,
    /// Number of validation images.
    #[arg(long, default_value_t = 300)]
    pub val: u32,
    /// Image width and height in pixels.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(32..=4096))]
    pub size: u32,
    /// Dataset seed; the same seed gives the same files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// One labelled object of a generated scene.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneObject {
    /// 1-based index into [`CATEGORY_NAMES`].
    pub category_id: i64,
    /// COCO `[x, y, w, h]`: tight box of the visible pixels (pixel `i` spans `[i, i+1)`).
    pub bbox: [f64; 4],
    /// Shape outline `[x1, y1, x2, y2, …]`, clipped to the image (includes occluded parts).
    pub polygon: Vec<f64>,
    /// Number of visible pixels.
    pub visible_pixels: u32,
}

/// The COCO categories of the synthetic dataset.
pub fn categories() -> Vec<CocoCategory> {
    CATEGORY_NAMES
        .iter()
        .zip(1..)
        .map(|(name, id)| CocoCategory {
            id,
            name: (*name).to_string(),
            supercategory: Some("shape".into()),
        })
        .collect()
}

/// Renders image `index` of the dataset with `seed`, `size`×`size` pixels.
pub fn generate_scene(index: u64, seed: u64, size: u32) -> (RgbImage, Vec<SceneObject>) {
    let scene = render_scene(index, seed, size);
    (scene.image, scene.objects)
}

/// A rendered scene plus, per pixel, which object (1-based draw order, 0 = none) shows.
struct RenderedScene {
    image: RgbImage,
    objects: Vec<SceneObject>,
    /// Draw order (1-based) of each kept object, parallel to `objects`.
    #[cfg_attr(not(test), allow(dead_code))]
    draw_order: Vec<u8>,
    #[cfg_attr(not(test), allow(dead_code))]
    owner: Vec<u8>,
}

fn render_scene(index: u64, seed: u64, size: u32) -> RenderedScene {
    let mut rng = StdRng::seed_from_u64(mix64(seed ^ mix64(index.wrapping_add(0xA5A5_5A5A))));
    let mut image = RgbImage::new(size, size);
    paint_background(&mut image, &mut rng);
    for _ in 0..rng.random_range(4..=14) {
        if rng.random_bool(0.5) {
            paint_stroke(&mut image, None, &mut rng);
        } else {
            paint_blob(&mut image, &mut rng);
        }
    }

    let mut owner = vec![0u8; (size * size) as usize];
    let object_count = rng.random_range(3..=12);
    let mut placed = Vec::with_capacity(object_count);
    for order in 1..=object_count as u8 {
        let shape = PlacedShape::random(size, &mut rng);
        let drawn = shape.paint(&mut image, &mut owner, order);
        placed.push((shape, drawn));
    }
    // A few strokes over the objects: clutter that also occludes.
    for _ in 0..rng.random_range(0..=2) {
        paint_stroke(&mut image, Some(&mut owner), &mut rng);
    }

    let visible = visible_extents(&owner, size, placed.len());
    let mut objects = Vec::new();
    let mut draw_order = Vec::new();
    for (i, ((shape, drawn), extent)) in placed.iter().zip(visible).enumerate() {
        let Some(extent) = extent else { continue };
        if extent.pixels < MIN_VISIBLE_PIXELS
            || f64::from(extent.pixels) < MIN_VISIBLE_FRACTION * f64::from(*drawn)
        {
            continue;
        }
        let polygon = clip_polygon_to_square(&shape.outline(), f64::from(size));
        if polygon.len() < 3 {
            continue;
        }
        objects.push(SceneObject {
            category_id: shape.category as i64 + 1,
            bbox: [
                f64::from(extent.min_x),
                f64::from(extent.min_y),
                f64::from(extent.max_x - extent.min_x + 1),
                f64::from(extent.max_y - extent.min_y + 1),
            ],
            polygon: polygon
                .iter()
                .flat_map(|&(x, y)| [round2(x), round2(y)])
                .collect(),
            visible_pixels: extent.pixels,
        });
        draw_order.push(i as u8 + 1);
    }
    RenderedScene {
        image,
        objects,
        draw_order,
        owner,
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Visible pixel count and inclusive pixel box of one object.
#[derive(Debug, Clone, Copy)]
struct VisibleExtent {
    pixels: u32,
    min_x: u32,
    min_y: u32,
    max_x: u32,
    max_y: u32,
}

/// Per object (by draw order − 1), its visible extent, or `None` if fully hidden.
fn visible_extents(owner: &[u8], size: u32, object_count: usize) -> Vec<Option<VisibleExtent>> {
    let mut extents: Vec<Option<VisibleExtent>> = vec![None; object_count];
    for (i, &order) in owner.iter().enumerate() {
        if order == 0 {
            continue;
        }
        let (x, y) = (i as u32 % size, i as u32 / size);
        let extent = extents[order as usize - 1].get_or_insert(VisibleExtent {
            pixels: 0,
            min_x: x,
            min_y: y,
            max_x: x,
            max_y: y,
        });
        extent.pixels += 1;
        extent.min_x = extent.min_x.min(x);
        extent.min_y = extent.min_y.min(y);
        extent.max_x = extent.max_x.max(x);
        extent.max_y = extent.max_y.max(y);
    }
    extents
}

#[cfg(test)]
mod tests {
    use super::write::write_dataset;
    use super::*;
    use aligndet_common::dataset::{DatasetSplits, load_coco};
    use std::collections::BTreeSet;

    fn temp_dir(name: &str) -> PathBuf {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("aligndet-synth-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn same_seed_same_scene_other_seed_differs() {
        let (image_a, objects_a) = generate_scene(3, 7, 128);
        let (image_b, objects_b) = generate_scene(3, 7, 128);
        assert_eq!(image_a.as_raw(), image_b.as_raw());
        assert_eq!(objects_a, objects_b);
        let (image_c, objects_c) = generate_scene(3, 8, 128);
        assert_ne!(image_a.as_raw(), image_c.as_raw());
        assert_ne!(objects_a, objects_c);
        let (image_d, _) = generate_scene(4, 7, 128);
        assert_ne!(image_a.as_raw(), image_d.as_raw(), "index matters too");
    }

    #[test]
    fn boxes_are_tight_around_visible_pixels_and_inside() {
        for index in 0..30 {
            let size = 160;
            let scene = render_scene(index, 1, size);
            assert!(!scene.objects.is_empty(), "image {index} has no objects");
            for (object, &order) in scene.objects.iter().zip(&scene.draw_order) {
                let [x, y, w, h] = object.bbox;
                assert!(x >= 0.0 && y >= 0.0 && w >= 1.0 && h >= 1.0);
                assert!(x + w <= f64::from(size) && y + h <= f64::from(size));
                let mut pixels = 0;
                let (mut min_x, mut min_y, mut max_x, mut max_y) = (u32::MAX, u32::MAX, 0, 0);
                for (i, &o) in scene.owner.iter().enumerate() {
                    if o == order {
                        let (px, py) = (i as u32 % size, i as u32 / size);
                        pixels += 1;
                        (min_x, min_y) = (min_x.min(px), min_y.min(py));
                        (max_x, max_y) = (max_x.max(px), max_y.max(py));
                    }
                }
                assert_eq!(pixels, object.visible_pixels);
                assert_eq!(
                    object.bbox,
                    [
                        f64::from(min_x),
                        f64::from(min_y),
                        f64::from(max_x - min_x + 1),
                        f64::from(max_y - min_y + 1)
                    ]
                );
                assert!(object.polygon.len() >= 6 && object.polygon.len() % 2 == 0);
                assert!(
                    object
                        .polygon
                        .iter()
                        .all(|&c| (0.0..=f64::from(size)).contains(&c))
                );
            }
        }
    }

    #[test]
    fn categories_and_scales_cover_the_range() {
        let size = 256;
        let mut seen = BTreeSet::new();
        let (mut smallest, mut largest) = (f64::MAX, 0.0f64);
        let mut counts = Vec::new();
        for index in 0..50 {
            let (_, objects) = generate_scene(index, 0, size);
            counts.push(objects.len());
            for object in objects {
                seen.insert(object.category_id);
                let extent = object.bbox[2].max(object.bbox[3]);
                smallest = smallest.min(extent);
                largest = largest.max(extent);
            }
        }
        assert_eq!(
            seen.len(),
            CATEGORY_NAMES.len(),
            "categories seen: {seen:?}"
        );
        assert!(smallest <= 16.0, "smallest object {smallest} px");
        assert!(
            largest >= 0.4 * f64::from(size),
            "largest object {largest} px"
        );
        assert!(counts.iter().any(|&c| c >= 6), "object counts {counts:?}");
    }

    #[test]
    fn polygon_clipping_keeps_the_inside_part() {
        let square = [(-5.0, -5.0), (5.0, -5.0), (5.0, 5.0), (-5.0, 5.0)];
        let clipped = clip_polygon_to_square(&square, 100.0);
        let xs: Vec<f64> = clipped.iter().map(|p| p.0).collect();
        assert!(xs.iter().all(|&x| (0.0..=5.0).contains(&x)), "{clipped:?}");
        assert!(
            clip_polygon_to_square(&[(-9.0, -9.0), (-8.0, -9.0), (-8.0, -8.0)], 10.0).is_empty()
        );
    }

    #[test]
    fn writes_an_identical_valid_dataset_whatever_the_thread_count() {
        let root = temp_dir("write");
        let run = |threads: usize, name: &str| {
            let args = SynthArgs {
                out: root.join(name),
                train: 12,
                val: 4,
                size: 64,
                seed: 5,
            };
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| write_dataset(&args))
                .unwrap();
            args.out
        };
        let one = run(1, "one");
        let two = run(2, "two");
        for file in [
            "annotations.json",
            "splits.json",
            "images/000000.jpg",
            "images/000015.jpg",
        ] {
            assert_eq!(
                std::fs::read(one.join(file)).unwrap(),
                std::fs::read(two.join(file)).unwrap(),
                "{file}"
            );
        }
        let dataset = load_coco(&one.join("annotations.json"), &one.join("images")).unwrap();
        assert_eq!(dataset.images.len(), 16);
        let splits = DatasetSplits::load(&one.join("splits.json")).unwrap();
        assert_eq!((splits.train.len(), splits.val.len()), (12, 4));
        assert_eq!(splits.labeled.len(), 15);
        assert!(splits.check(&dataset).is_empty());
        // Nothing half-written left beside the outputs; a non-empty target is refused.
        let leftovers: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
        let again = SynthArgs {
            out: one.clone(),
            train: 1,
            val: 0,
            size: 64,
            seed: 0,
        };
        assert!(write_dataset(&again).is_err());
        let _ = std::fs::remove_dir_all(&root);
    }
}
