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

use aligndet_common::dataset::{
    CocoAnnotation, CocoCategory, CocoDataset, CocoImage, DatasetSplits, load_coco,
};
use anyhow::{Context, bail};
use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::f64::consts::{PI, TAU};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

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
/// Smallest object extent (pixels); the largest is half the image.
pub const MIN_OBJECT_PX: f64 = 12.0;
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

// ---------------------------------------------------------------- objects

/// The shape families, one per category (same order as [`CATEGORY_NAMES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    GradientDisc,
    StripedSquare,
    CheckeredTriangle,
    SectorRing,
    GradientCross,
    BandedStar,
    DottedEllipse,
    NoisyHexagon,
}

const ALL_CATEGORIES: [Category; 8] = [
    Category::GradientDisc,
    Category::StripedSquare,
    Category::CheckeredTriangle,
    Category::SectorRing,
    Category::GradientCross,
    Category::BandedStar,
    Category::DottedEllipse,
    Category::NoisyHexagon,
];

/// An object instance: shape in a unit frame (`u, v` in about [-1, 1]) placed by centre,
/// radius and rotation, plus its texture parameters.
struct PlacedShape {
    category: Category,
    center: (f64, f64),
    radius: f64,
    rotation: f64,
    /// Ellipse minor/major ratio (used by the ellipse only).
    aspect: f64,
    colors: [[f64; 3]; 2],
    /// Texture frequency: stripes, checks, sectors, bands or dots per unit.
    frequency: f64,
    phase: f64,
    noise_salt: u32,
}

impl PlacedShape {
    fn random(size: u32, rng: &mut StdRng) -> Self {
        let category = ALL_CATEGORIES[rng.random_range(0..ALL_CATEGORIES.len())];
        let size_f = f64::from(size);
        // Log-uniform extent so small objects are as common as large ones.
        let (min_extent, max_extent) = (MIN_OBJECT_PX, (size_f / 2.0).max(MIN_OBJECT_PX + 1.0));
        let extent = (rng.random_range(min_extent.ln()..max_extent.ln())).exp();
        let radius = extent / 2.0;
        // Centre may sit up to half a radius outside the frame edge band: mild truncation.
        let margin = radius * 0.5;
        let center = (
            rng.random_range(margin..(size_f - margin).max(margin + 1.0)),
            rng.random_range(margin..(size_f - margin).max(margin + 1.0)),
        );
        let base = random_color(rng);
        let second = contrasting_color(base, rng);
        let frequency = match category {
            Category::StripedSquare => rng.random_range(2.0..4.0),
            Category::CheckeredTriangle => rng.random_range(2.0..3.5),
            Category::SectorRing => f64::from(rng.random_range(3..=6u32) * 2),
            Category::BandedStar => rng.random_range(2.5..4.5),
            Category::DottedEllipse => rng.random_range(2.5..4.5),
            _ => 1.0,
        };
        Self {
            category,
            center,
            radius,
            rotation: rng.random_range(0.0..TAU),
            aspect: rng.random_range(0.5..0.75),
            colors: [base, second],
            frequency,
            phase: rng.random_range(0.0..1.0),
            noise_salt: rng.random(),
        }
    }

    /// Whether unit-frame point `(u, v)` is inside the shape.
    fn contains(&self, u: f64, v: f64) -> bool {
        match self.category {
            Category::GradientDisc => u * u + v * v <= 1.0,
            Category::StripedSquare => u.abs() <= 0.72 && v.abs() <= 0.72,
            Category::SectorRing => (0.3025..=1.0).contains(&(u * u + v * v)),
            Category::GradientCross => {
                (u.abs() <= 0.3 && v.abs() <= 0.95) || (v.abs() <= 0.3 && u.abs() <= 0.95)
            }
            Category::DottedEllipse => u * u + (v / self.aspect).powi(2) <= 1.0,
            Category::CheckeredTriangle | Category::BandedStar | Category::NoisyHexagon => {
                point_in_polygon(u, v, &self.unit_outline())
            }
        }
    }

    /// The outline in the unit frame (circles and ellipses as 40-gons).
    fn unit_outline(&self) -> Vec<(f64, f64)> {
        let regular = |corners: usize, start: f64, radii: &[f64]| -> Vec<(f64, f64)> {
            (0..corners)
                .map(|i| {
                    let angle = start + TAU * i as f64 / corners as f64;
                    let r = radii[i % radii.len()];
                    (r * angle.cos(), r * angle.sin())
                })
                .collect()
        };
        match self.category {
            Category::GradientDisc | Category::SectorRing => regular(40, 0.0, &[1.0]),
            Category::DottedEllipse => regular(40, 0.0, &[1.0])
                .into_iter()
                .map(|(u, v)| (u, v * self.aspect))
                .collect(),
            Category::StripedSquare => {
                vec![(-0.72, -0.72), (0.72, -0.72), (0.72, 0.72), (-0.72, 0.72)]
            }
            Category::CheckeredTriangle => regular(3, -PI / 2.0, &[1.0]),
            Category::BandedStar => regular(10, -PI / 2.0, &[1.0, 0.45]),
            Category::NoisyHexagon => regular(6, 0.0, &[1.0]),
            Category::GradientCross => {
                let (a, b) = (0.3, 0.95);
                vec![
                    (-a, -b),
                    (a, -b),
                    (a, -a),
                    (b, -a),
                    (b, a),
                    (a, a),
                    (a, b),
                    (-a, b),
                    (-a, a),
                    (-b, a),
                    (-b, -a),
                    (-a, -a),
                ]
            }
        }
    }

    /// The outline in image coordinates.
    fn outline(&self) -> Vec<(f64, f64)> {
        let (sin, cos) = self.rotation.sin_cos();
        self.unit_outline()
            .into_iter()
            .map(|(u, v)| {
                let (x, y) = (u * self.radius, v * self.radius);
                (
                    self.center.0 + x * cos - y * sin,
                    self.center.1 + x * sin + y * cos,
                )
            })
            .collect()
    }

    /// Texture colour at unit-frame point `(u, v)`, image pixel `(x, y)`.
    fn texture(&self, u: f64, v: f64, x: u32, y: u32) -> [f64; 3] {
        let [a, b] = self.colors;
        let pick = |second: bool| if second { b } else { a };
        match self.category {
            Category::GradientDisc => lerp_color(a, b, (u * u + v * v).sqrt()),
            Category::StripedSquare => {
                pick(((u + 1.0) * self.frequency + self.phase).floor() as i64 % 2 == 0)
            }
            Category::CheckeredTriangle => {
                let cell = (u * self.frequency + self.phase).floor() + (v * self.frequency).floor();
                pick(cell.rem_euclid(2.0) < 1.0)
            }
            Category::SectorRing => {
                let angle = v.atan2(u) / TAU + 0.5 + self.phase;
                pick(((angle * self.frequency).floor() as i64) % 2 == 0)
            }
            Category::GradientCross => lerp_color(a, b, ((u + v) / 1.9 + 0.5).clamp(0.0, 1.0)),
            Category::BandedStar => pick(
                (((u * u + v * v).sqrt() * self.frequency * 2.0 + self.phase).floor() as i64) % 2
                    == 0,
            ),
            Category::DottedEllipse => {
                let (cu, cv) = (
                    (u * self.frequency * 2.0 + self.phase).rem_euclid(1.0) - 0.5,
                    (v * self.frequency * 2.0 + self.phase).rem_euclid(1.0) - 0.5,
                );
                pick(cu * cu + cv * cv < 0.09)
            }
            Category::NoisyHexagon => {
                let noise = f64::from(hash2(x, y, self.noise_salt) % 1024) / 1023.0;
                lerp_color(a, b, noise * 0.8)
            }
        }
    }

    /// Draws the shape, marking its pixels in `owner` with `order`; returns pixels drawn.
    fn paint(&self, image: &mut RgbImage, owner: &mut [u8], order: u8) -> u32 {
        let size = image.width();
        let reach = self.radius * 1.01;
        let lo = |c: f64| (c - reach).floor().max(0.0) as u32;
        let hi = |c: f64| ((c + reach).ceil().max(0.0) as u32).min(size);
        let (sin, cos) = self.rotation.sin_cos();
        let mut drawn = 0;
        for y in lo(self.center.1)..hi(self.center.1) {
            for x in lo(self.center.0)..hi(self.center.0) {
                let (dx, dy) = (
                    f64::from(x) + 0.5 - self.center.0,
                    f64::from(y) + 0.5 - self.center.1,
                );
                // Inverse rotation into the unit frame.
                let u = (dx * cos + dy * sin) / self.radius;
                let v = (-dx * sin + dy * cos) / self.radius;
                if !self.contains(u, v) {
                    continue;
                }
                image.put_pixel(x, y, to_rgb(self.texture(u, v, x, y)));
                owner[(y * size + x) as usize] = order;
                drawn += 1;
            }
        }
        drawn
    }
}

/// Even-odd rule point-in-polygon test.
fn point_in_polygon(x: f64, y: f64, polygon: &[(f64, f64)]) -> bool {
    let mut inside = false;
    let mut previous = polygon[polygon.len() - 1];
    for &current in polygon {
        let ((x1, y1), (x2, y2)) = (previous, current);
        if (y1 > y) != (y2 > y) && x < (x2 - x1) * (y - y1) / (y2 - y1) + x1 {
            inside = !inside;
        }
        previous = current;
    }
    inside
}

/// Sutherland–Hodgman clip of a polygon to `[0, side]²`.
fn clip_polygon_to_square(polygon: &[(f64, f64)], side: f64) -> Vec<(f64, f64)> {
    // Each edge: inside test and intersection with the boundary line.
    type Edge = (fn(f64, f64, f64) -> bool, usize);
    let edges: [Edge; 4] = [
        (|x, _, _| x >= 0.0, 0),
        (|x, _, s| x <= s, 1),
        (|_, y, _| y >= 0.0, 2),
        (|_, y, s| y <= s, 3),
    ];
    let mut points = polygon.to_vec();
    for (inside, which) in edges {
        if points.is_empty() {
            break;
        }
        let input = std::mem::take(&mut points);
        let mut previous = input[input.len() - 1];
        for &current in &input {
            let (current_in, previous_in) = (
                inside(current.0, current.1, side),
                inside(previous.0, previous.1, side),
            );
            if current_in != previous_in {
                points.push(intersect(previous, current, which, side));
            }
            if current_in {
                points.push(current);
            }
            previous = current;
        }
    }
    points
}

/// Where segment `a`–`b` crosses boundary `which` (0: x=0, 1: x=side, 2: y=0, 3: y=side).
fn intersect(a: (f64, f64), b: (f64, f64), which: usize, side: f64) -> (f64, f64) {
    let boundary = if which.is_multiple_of(2) { 0.0 } else { side };
    if which < 2 {
        let t = (boundary - a.0) / (b.0 - a.0);
        (boundary, a.1 + t * (b.1 - a.1))
    } else {
        let t = (boundary - a.1) / (b.1 - a.1);
        (a.0 + t * (b.0 - a.0), boundary)
    }
}

// ---------------------------------------------------------------- background and clutter

/// Smooth value noise (bilinear on a coarse random grid) blended with a linear gradient
/// and fine pixel noise; the mix differs per image.
fn paint_background(image: &mut RgbImage, rng: &mut StdRng) {
    let size = image.width();
    let grid_cells = rng.random_range(2..=8usize);
    let grid: Vec<f64> = (0..(grid_cells + 1) * (grid_cells + 1))
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    let [low, high, gradient_end] = [random_color(rng), random_color(rng), random_color(rng)];
    let gradient_angle = rng.random_range(0.0..TAU);
    let gradient_weight = rng.random_range(0.0..0.8);
    let pixel_noise = rng.random_range(4.0..28.0);
    let salt: u32 = rng.random();
    let (gsin, gcos) = gradient_angle.sin_cos();
    let scale = grid_cells as f64 / f64::from(size);
    for y in 0..size {
        for x in 0..size {
            let (gx, gy) = (f64::from(x) * scale, f64::from(y) * scale);
            let (cx, cy) = (gx.floor() as usize, gy.floor() as usize);
            let (fx, fy) = (smooth(gx.fract()), smooth(gy.fract()));
            let at =
                |i: usize, j: usize| grid[j.min(grid_cells) * (grid_cells + 1) + i.min(grid_cells)];
            let top = at(cx, cy) * (1.0 - fx) + at(cx + 1, cy) * fx;
            let bottom = at(cx, cy + 1) * (1.0 - fx) + at(cx + 1, cy + 1) * fx;
            let noise_value = top * (1.0 - fy) + bottom * fy;
            let mut color = lerp_color(low, high, noise_value);
            let t = ((f64::from(x) * gcos + f64::from(y) * gsin) / f64::from(size) * 0.7 + 0.5)
                .clamp(0.0, 1.0);
            color = lerp_color(color, gradient_end, t * gradient_weight);
            let grain = (f64::from(hash2(x, y, salt) % 1024) / 1023.0 - 0.5) * pixel_noise;
            image.put_pixel(
                x,
                y,
                to_rgb([color[0] + grain, color[1] + grain, color[2] + grain]),
            );
        }
    }
}

fn smooth(t: f64) -> f64 {
    t * t * (3.0 - 2.0 * t)
}

/// A straight thick stroke of random colour; with `owner`, it also hides objects under it.
fn paint_stroke(image: &mut RgbImage, mut owner: Option<&mut Vec<u8>>, rng: &mut StdRng) {
    let size = f64::from(image.width());
    let start = (rng.random_range(0.0..size), rng.random_range(0.0..size));
    let angle = rng.random_range(0.0..TAU);
    let length = rng.random_range(size * 0.1..size * 0.7);
    let half_width = rng.random_range(0.5..2.5);
    let color = to_rgb(random_color(rng));
    let steps = (length * 2.0) as usize;
    let (dx, dy) = (
        angle.cos() * length / steps as f64,
        angle.sin() * length / steps as f64,
    );
    for step in 0..=steps {
        let (cx, cy) = (start.0 + dx * step as f64, start.1 + dy * step as f64);
        fill_disc(image, cx, cy, half_width, |image, x, y| {
            image.put_pixel(x, y, color);
            if let Some(owner) = owner.as_deref_mut() {
                owner[(y * image.width() + x) as usize] = 0;
            }
        });
    }
}

/// An irregular, half-transparent blob: clutter that is not any category's shape.
fn paint_blob(image: &mut RgbImage, rng: &mut StdRng) {
    let size = f64::from(image.width());
    let center = (rng.random_range(0.0..size), rng.random_range(0.0..size));
    let radius = rng.random_range(size * 0.03..size * 0.2);
    let lobes = f64::from(rng.random_range(2..=5u32));
    let (wobble, phase) = (rng.random_range(0.15..0.4), rng.random_range(0.0..TAU));
    let color = random_color(rng);
    let opacity = rng.random_range(0.3..0.7);
    fill_disc(
        image,
        center.0,
        center.1,
        radius * (1.0 + wobble),
        |image, x, y| {
            let (px, py) = (f64::from(x) + 0.5 - center.0, f64::from(y) + 0.5 - center.1);
            let edge = radius * (1.0 + wobble * (lobes * py.atan2(px) + phase).sin());
            if px * px + py * py <= edge * edge {
                let old = image.get_pixel(x, y).0.map(f64::from);
                image.put_pixel(x, y, to_rgb(lerp_color(old, color, opacity)));
            }
        },
    );
}

/// Calls `paint` for every in-image pixel whose centre is within `radius` of `(cx, cy)`.
fn fill_disc(
    image: &mut RgbImage,
    cx: f64,
    cy: f64,
    radius: f64,
    mut paint: impl FnMut(&mut RgbImage, u32, u32),
) {
    let size = image.width();
    let lo = |c: f64| (c - radius).floor().max(0.0) as u32;
    let hi = |c: f64| ((c + radius).ceil().max(0.0) as u32).min(size);
    for y in lo(cy)..hi(cy) {
        for x in lo(cx)..hi(cx) {
            let (dx, dy) = (f64::from(x) + 0.5 - cx, f64::from(y) + 0.5 - cy);
            if dx * dx + dy * dy <= radius * radius {
                paint(image, x, y);
            }
        }
    }
}

// ---------------------------------------------------------------- colour and hashing

fn random_color(rng: &mut StdRng) -> [f64; 3] {
    [
        rng.random_range(0.0..255.0),
        rng.random_range(0.0..255.0),
        rng.random_range(0.0..255.0),
    ]
}

/// A random colour at least clearly different from `base` (so textures stay visible).
fn contrasting_color(base: [f64; 3], rng: &mut StdRng) -> [f64; 3] {
    let candidate = random_color(rng);
    let distance: f64 = base
        .iter()
        .zip(&candidate)
        .map(|(a, b)| (a - b).abs())
        .sum();
    if distance >= 180.0 {
        candidate
    } else {
        base.map(|c| 255.0 - c)
    }
}

fn lerp_color(a: [f64; 3], b: [f64; 3], t: f64) -> [f64; 3] {
    [0, 1, 2].map(|i| a[i] + (b[i] - a[i]) * t)
}

fn to_rgb(color: [f64; 3]) -> Rgb<u8> {
    Rgb(color.map(|c| c.round().clamp(0.0, 255.0) as u8))
}

/// Cheap deterministic per-pixel hash for grain.
fn hash2(x: u32, y: u32, salt: u32) -> u32 {
    let mut h =
        x.wrapping_mul(0x27D4_EB2F) ^ y.wrapping_mul(0x1656_67B1) ^ salt.wrapping_mul(0x9E37_79B9);
    h ^= h >> 15;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

/// SplitMix64 finaliser: decorrelates `(seed, index)` before seeding each image's RNG.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------- writing the dataset

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

struct WriteSummary {
    images: usize,
    objects: usize,
}

fn write_dataset(args: &SynthArgs) -> anyhow::Result<WriteSummary> {
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

fn image_file_name(index: u64) -> String {
    format!("{index:06}.jpg")
}

fn write_jpeg(image: &RgbImage, path: &Path) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
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
