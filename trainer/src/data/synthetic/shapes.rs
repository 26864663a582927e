//! The eight shape families: placing an object, painting its texture and visible pixels, and
//! its outline as a polygon clipped to the image.

use super::paint::{contrasting_color, hash2, lerp_color, random_color, to_rgb};
use image::RgbImage;
use rand::Rng;
use rand::rngs::StdRng;
use std::f64::consts::{PI, TAU};

/// Smallest object extent (pixels); the largest is half the image.
pub const MIN_OBJECT_PX: f64 = 12.0;

/// The shape families, one per category (same order as [`super::CATEGORY_NAMES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Category {
    GradientDisc,
    StripedSquare,
    CheckeredTriangle,
    SectorRing,
    GradientCross,
    BandedStar,
    DottedEllipse,
    NoisyHexagon,
}

pub(super) const ALL_CATEGORIES: [Category; 8] = [
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
pub(super) struct PlacedShape {
    pub(super) category: Category,
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
    pub(super) fn random(size: u32, rng: &mut StdRng) -> Self {
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
    pub(super) fn contains(&self, u: f64, v: f64) -> bool {
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
    pub(super) fn unit_outline(&self) -> Vec<(f64, f64)> {
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
    pub(super) fn outline(&self) -> Vec<(f64, f64)> {
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
    pub(super) fn texture(&self, u: f64, v: f64, x: u32, y: u32) -> [f64; 3] {
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
    pub(super) fn paint(&self, image: &mut RgbImage, owner: &mut [u8], order: u8) -> u32 {
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
pub(super) fn point_in_polygon(x: f64, y: f64, polygon: &[(f64, f64)]) -> bool {
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
pub(super) fn clip_polygon_to_square(polygon: &[(f64, f64)], side: f64) -> Vec<(f64, f64)> {
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
pub(super) fn intersect(a: (f64, f64), b: (f64, f64), which: usize, side: f64) -> (f64, f64) {
    let boundary = if which.is_multiple_of(2) { 0.0 } else { side };
    if which < 2 {
        let t = (boundary - a.0) / (b.0 - a.0);
        (boundary, a.1 + t * (b.1 - a.1))
    } else {
        let t = (boundary - a.1) / (b.1 - a.1);
        (a.0 + t * (b.0 - a.0), boundary)
    }
}
