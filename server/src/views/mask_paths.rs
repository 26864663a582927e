//! Masks drawn as SVG paths in image pixels, for the dataset page and the predictions browser.
//!
//! Polygons are drawn as given (every part turned the same way, so the nonzero fill is their
//! union, as pycocotools rasterizes them). RLE masks are decoded by
//! [`aligndet_common::mask`] and drawn as rectangles: each column's runs, with equal runs of
//! neighbouring columns merged into one rectangle, so a blob costs about one rectangle per
//! column where its outline changes rather than one per pixel.

use crate::db::datasets::ImageRow;
use aligndet_common::mask::rle::Rle;
use aligndet_common::mask::segmentation::{polygons, to_rle};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write;

/// The path of a ground-truth annotation's mask (`masks` by annotation id); `None` without
/// one or when it cannot be read (the box is drawn alone).
pub fn annotation_mask(
    masks: &HashMap<i64, Value>,
    annotation_id: i64,
    image: &ImageRow,
) -> Option<String> {
    image_mask(masks.get(&annotation_id)?, image)
}

/// The path of a segmentation on `image`; `None` when it cannot be read.
pub fn image_mask(segmentation: &Value, image: &ImageRow) -> Option<String> {
    let width = u32::try_from(image.width).ok()?;
    let height = u32::try_from(image.height).ok()?;
    mask_path(segmentation, width, height).ok()
}

/// The path (`d`) of one segmentation on an image of `width` x `height` pixels; `Err(why)`
/// when it cannot be read (the page then draws the box alone).
pub fn mask_path(segmentation: &Value, width: u32, height: u32) -> Result<String, String> {
    match segmentation {
        Value::Array(parts) => Ok(polygon_path(&polygons(parts)?)),
        _ => {
            let mask = to_rle(segmentation, 0, Some((height, width)))?;
            Ok(rects_path(&mask_rects(&mask)))
        }
    }
}

fn polygon_path(parts: &[Vec<f64>]) -> String {
    let mut d = String::new();
    for part in parts {
        let mut points: Vec<(f64, f64)> = part.chunks_exact(2).map(|p| (p[0], p[1])).collect();
        if signed_area(&points) < 0.0 {
            points.reverse();
        }
        for (i, (x, y)) in points.iter().enumerate() {
            let command = if i == 0 { 'M' } else { 'L' };
            let _ = write!(d, "{command}{} {}", round2(*x), round2(*y));
        }
        d.push('Z');
    }
    d
}

/// Twice the shoelace area: positive for one turning direction, negative for the other.
fn signed_area(points: &[(f64, f64)]) -> f64 {
    let n = points.len();
    (0..n)
        .map(|i| {
            let (a, b) = (points[i], points[(i + 1) % n]);
            a.0 * b.1 - b.0 * a.1
        })
        .sum()
}

/// Hundredths of a pixel are finer than any screen shows them.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// A rectangle of whole pixels: `[x, y, width, height]`.
pub type PixelRect = [u32; 4];

/// The mask's pixels as disjoint rectangles: the runs of each column (RLE counts run down
/// the columns), each merged with the same run in the columns right of it.
pub fn mask_rects(mask: &Rle) -> Vec<PixelRect> {
    let h = mask.height;
    let mut columns: Vec<Vec<(u32, u32)>> = vec![Vec::new(); mask.width as usize];
    let mut at: u64 = 0;
    for (i, &count) in mask.counts.iter().enumerate() {
        let (start, end) = (at, at + u64::from(count));
        at = end;
        if i.is_multiple_of(2) || count == 0 || h == 0 {
            continue;
        }
        // A run of ones may wrap from one column into the next ones.
        let mut p = start;
        while p < end {
            let column = p / u64::from(h);
            let row = (p % u64::from(h)) as u32;
            let column_end = (column + 1) * u64::from(h);
            let stop = end.min(column_end);
            let rows = (stop - p) as u32;
            columns[column as usize].push((row, row + rows));
            p = stop;
        }
    }
    let mut rects = Vec::new();
    // Rectangles still growing: (first row, end row, first column).
    let mut open: Vec<(u32, u32, u32)> = Vec::new();
    for (x, runs) in columns.iter().enumerate() {
        let x = x as u32;
        let mut next = Vec::with_capacity(runs.len());
        for &(y0, y1) in runs {
            match open.iter().position(|&(a, b, _)| (a, b) == (y0, y1)) {
                Some(i) => next.push(open.swap_remove(i)),
                None => next.push((y0, y1, x)),
            }
        }
        rects.extend(open.drain(..).map(|(y0, y1, x0)| [x0, y0, x - x0, y1 - y0]));
        open = next;
    }
    rects.extend(
        open.into_iter()
            .map(|(y0, y1, x0)| [x0, y0, mask.width - x0, y1 - y0]),
    );
    rects
}

fn rects_path(rects: &[PixelRect]) -> String {
    let mut d = String::with_capacity(rects.len() * 20);
    for [x, y, w, h] in rects {
        let _ = write!(d, "M{x} {y}h{w}v{h}h-{w}z");
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The pixels the path's rectangles cover, column-major as RLE decodes; panics on a
    /// pixel covered twice (the rectangles must be disjoint).
    fn paint(d: &str, width: u32, height: u32) -> Vec<bool> {
        let mut pixels = vec![false; (width * height) as usize];
        for rect in d.split('M').filter(|r| !r.is_empty()) {
            let nums: Vec<u32> = rect
                .trim_end_matches('z')
                .split(['h', 'v', ' '])
                .filter(|s| !s.is_empty())
                .map(|s| s.trim_start_matches('-').parse().unwrap())
                .collect();
            let [x, y, w, h] = nums[..4] else {
                panic!("{rect}")
            };
            assert_eq!(nums[4], w, "{rect} closes");
            for cx in x..x + w {
                for cy in y..y + h {
                    let cell = &mut pixels[(cx * height + cy) as usize];
                    assert!(!*cell, "pixel {cx},{cy} drawn twice");
                    *cell = true;
                }
            }
        }
        pixels
    }

    #[test]
    fn rle_paths_cover_exactly_the_decoded_pixels() {
        let (w, h) = (7, 5);
        // A blob whose runs wrap across columns, a column with two runs, equal neighbours.
        let pattern = "0011100 0111110 0110110 0000000 1111111";
        let rows: Vec<&str> = pattern.split(' ').collect();
        let mut pixels = vec![false; (w * h) as usize];
        for (y, row) in rows.iter().enumerate() {
            for (x, c) in row.bytes().enumerate() {
                pixels[x * h as usize + y] = c == b'1';
            }
        }
        let mask = Rle::encode(&pixels, h, w);
        let segmentation = json!({"size": [h, w], "counts": mask.to_compressed()});
        let d = mask_path(&segmentation, w, h).unwrap();
        assert_eq!(paint(&d, w, h), mask.decode());
        assert_eq!(paint(&d, w, h), pixels);
        // Equal runs merge: the bottom row is one rectangle across the image.
        assert!(d.contains("M0 4h7v1h-7z"), "{d}");

        // A mask reaching the last pixel, given as uncompressed counts.
        let full = json!({"size": [2, 3], "counts": [0, 6]});
        assert_eq!(mask_path(&full, 3, 2).unwrap(), "M0 0h3v2h-3z");
        let empty = json!({"size": [2, 3], "counts": [6]});
        assert_eq!(mask_path(&empty, 3, 2).unwrap(), "");
    }

    #[test]
    fn random_masks_round_trip() {
        // A fixed linear congruential sequence: many shapes, no dependency.
        let mut state = 12345u64;
        for _ in 0..50 {
            let (w, h) = (9, 6);
            let pixels: Vec<bool> = (0..w * h)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (state >> 33).is_multiple_of(3)
                })
                .collect();
            let mask = Rle::encode(&pixels, h, w);
            let d = rects_path(&mask_rects(&mask));
            assert_eq!(paint(&d, w, h), pixels);
        }
    }

    #[test]
    fn polygons_are_drawn_as_given_turned_one_way() {
        let clockwise = json!([[0, 0, 4, 0, 4, 4], [10.006, 10, 12, 12, 14, 10]]);
        let d = mask_path(&clockwise, 20, 20).unwrap();
        // The second part turns the other way: it is reversed, so the union is filled.
        assert_eq!(d, "M0 0L4 0L4 4ZM14 10L12 12L10.01 10Z");
        assert!(mask_path(&json!([[0, 0, 4]]), 20, 20).is_err());
        let wrong_size = json!({"size": [3, 3], "counts": [9]});
        assert!(
            mask_path(&wrong_size, 20, 20)
                .unwrap_err()
                .contains("differs")
        );
    }
}
