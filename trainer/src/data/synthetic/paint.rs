//! Background, clutter strokes and blobs, colours, and the hashes that seed textures.

use image::{Rgb, RgbImage};
use rand::Rng;
use rand::rngs::StdRng;
use std::f64::consts::TAU;

/// Smooth value noise (bilinear on a coarse random grid) blended with a linear gradient
/// and fine pixel noise; the mix differs per image.
pub(super) fn paint_background(image: &mut RgbImage, rng: &mut StdRng) {
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

pub(super) fn smooth(t: f64) -> f64 {
    t * t * (3.0 - 2.0 * t)
}

/// A straight thick stroke of random colour; with `owner`, it also hides objects under it.
pub(super) fn paint_stroke(
    image: &mut RgbImage,
    mut owner: Option<&mut Vec<u8>>,
    rng: &mut StdRng,
) {
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
pub(super) fn paint_blob(image: &mut RgbImage, rng: &mut StdRng) {
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
pub(super) fn fill_disc(
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

pub(super) fn random_color(rng: &mut StdRng) -> [f64; 3] {
    [
        rng.random_range(0.0..255.0),
        rng.random_range(0.0..255.0),
        rng.random_range(0.0..255.0),
    ]
}

/// A random colour at least clearly different from `base` (so textures stay visible).
pub(super) fn contrasting_color(base: [f64; 3], rng: &mut StdRng) -> [f64; 3] {
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

pub(super) fn lerp_color(a: [f64; 3], b: [f64; 3], t: f64) -> [f64; 3] {
    [0, 1, 2].map(|i| a[i] + (b[i] - a[i]) * t)
}

pub(super) fn to_rgb(color: [f64; 3]) -> Rgb<u8> {
    Rgb(color.map(|c| c.round().clamp(0.0, 255.0) as u8))
}

/// Cheap deterministic per-pixel hash for grain.
pub(super) fn hash2(x: u32, y: u32, salt: u32) -> u32 {
    let mut h =
        x.wrapping_mul(0x27D4_EB2F) ^ y.wrapping_mul(0x1656_67B1) ^ salt.wrapping_mul(0x9E37_79B9);
    h ^= h >> 15;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

/// SplitMix64 finaliser: decorrelates `(seed, index)` before seeding each image's RNG.
pub(super) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
