//! Polygon and box rasterization exactly as pycocotools' `rleFrPoly` / `rleFrBbox`: the
//! outline is traced on a 5x upsampled integer grid, the points where it crosses pixel
//! columns are downsampled to column boundaries, and the sorted boundary offsets become
//! runs. Matching this step for step is what makes polygon areas and IoUs bit-identical.

use super::rle::Rle;

/// Coordinates beyond this magnitude are rejected: the C code casts `5 * x` to `int`, and
/// tracing a huge outline would allocate without bound.
pub const MAX_COORDINATE: f64 = 1e5;

/// `rleFrPoly` for one polygon `[x0, y0, x1, y1, ...]` (an even number of at least 2 values,
/// all finite and within [`MAX_COORDINATE`]; the caller checks).
pub fn from_polygon(xy: &[f64], height: u32, width: u32) -> Rle {
    const SCALE: f64 = 5.0;
    let k = xy.len() / 2;
    debug_assert!(k >= 1);
    // C's `(int)(v + .5)` truncates toward zero.
    let x: Vec<i32> = (0..=k)
        .map(|j| (SCALE * xy[(j % k) * 2] + 0.5) as i32)
        .collect();
    let y: Vec<i32> = (0..=k)
        .map(|j| (SCALE * xy[(j % k) * 2 + 1] + 0.5) as i32)
        .collect();

    // Dense points along every edge of the upsampled outline.
    let mut u: Vec<i32> = Vec::new();
    let mut v: Vec<i32> = Vec::new();
    for j in 0..k {
        let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
        let dx = (xe - xs).abs();
        let dy = (ys - ye).abs();
        let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
        if flip {
            std::mem::swap(&mut xs, &mut xe);
            std::mem::swap(&mut ys, &mut ye);
        }
        // A zero-length edge gives 0/0 = NaN here, as in C; its single point shares its
        // column with its neighbours, so its row is never read.
        if dx >= dy {
            let s = f64::from(ye - ys) / f64::from(dx);
            for d in 0..=dx {
                let t = if flip { dx - d } else { d };
                u.push(t + xs);
                v.push((f64::from(ys) + s * f64::from(t) + 0.5) as i32);
            }
        } else {
            let s = f64::from(xe - xs) / f64::from(dy);
            for d in 0..=dy {
                let t = if flip { dy - d } else { d };
                v.push(t + ys);
                u.push((f64::from(xs) + s * f64::from(t) + 0.5) as i32);
            }
        }
    }

    // Points where the outline moves to another column, downsampled to pixel boundaries.
    let (h, w) = (f64::from(height), f64::from(width));
    // C compares against `w - 1` computed in unsigned `siz`.
    let max_x = if width == 0 { u64::MAX as f64 } else { w - 1.0 };
    let mut boundary: Vec<u32> = Vec::new();
    for j in 1..u.len() {
        if u[j] == u[j - 1] {
            continue;
        }
        let xd = f64::from(if u[j] < u[j - 1] { u[j] } else { u[j] - 1 });
        let xd = (xd + 0.5) / SCALE - 0.5;
        if xd.floor() != xd || xd < 0.0 || xd > max_x {
            continue;
        }
        let yd = f64::from(v[j].min(v[j - 1]));
        let mut yd = (yd + 0.5) / SCALE - 0.5;
        if yd < 0.0 {
            yd = 0.0;
        } else if yd > h {
            yd = h;
        }
        let yd = yd.ceil();
        let offset = (xd as i32)
            .wrapping_mul(height as i32)
            .wrapping_add(yd as i32);
        boundary.push(offset as u32);
    }

    // Sorted offsets -> run lengths; a zero-length run cancels with the next one.
    boundary.push(height.wrapping_mul(width));
    boundary.sort_unstable();
    let mut previous = 0u32;
    for a in boundary.iter_mut() {
        let t = *a;
        *a = a.wrapping_sub(previous);
        previous = t;
    }
    let mut counts = Vec::with_capacity(boundary.len());
    counts.push(boundary[0]);
    let mut j = 1;
    while j < boundary.len() {
        if boundary[j] > 0 {
            counts.push(boundary[j]);
            j += 1;
        } else {
            j += 1;
            if j < boundary.len() {
                *counts.last_mut().expect("counts is not empty") += boundary[j];
                j += 1;
            }
        }
    }
    Rle {
        height,
        width,
        counts,
    }
}

/// `rleFrBbox`: the box `[x, y, w, h]` rasterized as the polygon through its corners.
pub fn from_bbox(bbox: &[f64; 4], height: u32, width: u32) -> Rle {
    let (xs, ys) = (bbox[0], bbox[1]);
    let (xe, ye) = (xs + bbox[2], ys + bbox[3]);
    from_polygon(&[xs, ys, xs, ye, xe, ye, xe, ys], height, width)
}

/// What `COCO.annToRLE` does with a polygon list: each part rasterized, then merged
/// (union). The caller has validated the parts with [`check_parts`].
pub fn from_parts(parts: &[Vec<f64>], height: u32, width: u32) -> Rle {
    let masks: Vec<Rle> = parts
        .iter()
        .map(|p| from_polygon(p, height, width))
        .collect();
    Rle::merge(&masks, false)
}

/// Why a polygon list cannot be rasterized the way pycocotools would. pycocotools 2.0.11
/// raises when the first part has 4 values or fewer (`frPyObjects` takes a 4-value first
/// part for boxes and then fails), reads out of bounds on an empty part and silently drops
/// the last value of an odd-length one; later parts of 1 or 2 points are rasterized.
pub fn check_parts(parts: &[Vec<f64>]) -> Result<(), String> {
    let Some(first) = parts.first() else {
        return Err("polygon segmentation is an empty list".into());
    };
    if first.len() <= 4 {
        return Err(format!(
            "polygon 0 has {} values; the first polygon needs at least 3 points (6 values)",
            first.len()
        ));
    }
    for (i, part) in parts.iter().enumerate() {
        if part.len() < 2 || part.len() % 2 != 0 {
            return Err(format!(
                "polygon {i} has {} values; it needs an even number (x, y pairs)",
                part.len()
            ));
        }
        if let Some(v) = part
            .iter()
            .find(|v| !v.is_finite() || v.abs() > MAX_COORDINATE)
        {
            return Err(format!(
                "polygon {i} has the coordinate {v}, which is not finite or beyond \
                 ±{MAX_COORDINATE}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values from pycocotools 2.0.11 (`frPyObjects` + `merge`, `_mask.frBbox`).

    #[test]
    fn concave_polygon_matches_pycocotools() {
        let poly = vec![vec![1.2, 0.5, 8.7, 2.1, 6.3, 7.9, 3.0, 4.0, 0.4, 6.6]];
        let rle = from_parts(&poly, 9, 10);
        assert_eq!(rle.to_compressed(), ":45O1002N100OM3N9");
        assert_eq!(rle.area(), 31);
        assert_eq!(rle.to_bbox(), [1.0, 1.0, 8.0, 7.0]);
    }

    #[test]
    fn box_matches_pycocotools() {
        let rle = from_bbox(&[1.5, 2.0, 4.0, 3.2], 8, 9);
        assert_eq!(rle.to_compressed(), "b03500000f0");
        assert_eq!(rle.area(), 12);
        assert_eq!(rle.to_bbox(), [2.0, 2.0, 4.0, 3.0]);
    }

    #[test]
    fn multi_part_polygons_are_a_union() {
        let a = vec![0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 0.0, 4.0];
        let b = vec![2.0, 2.0, 8.0, 2.0, 8.0, 8.0, 2.0, 8.0];
        let union = from_parts(&[a.clone(), b.clone()], 10, 10);
        let separate = [from_polygon(&a, 10, 10), from_polygon(&b, 10, 10)];
        assert_eq!(union, Rle::merge(&separate, false));
        assert!(union.area() < separate[0].area() + separate[1].area());
        // The sum of runs is always the image.
        assert_eq!(union.counts.iter().sum::<u32>(), 100);
    }

    #[test]
    fn polygon_outside_the_image_is_empty() {
        let rle = from_polygon(&[-20.0, -20.0, -10.0, -20.0, -10.0, -10.0], 6, 7);
        assert_eq!(rle.counts, vec![42]);
        assert_eq!(rle.area(), 0);
    }

    #[test]
    fn malformed_polygons_are_errors() {
        assert!(check_parts(&[]).unwrap_err().contains("empty"));
        assert!(
            check_parts(&[vec![0.0, 0.0, 5.0, 5.0]])
                .unwrap_err()
                .contains("at least 3 points")
        );
        let odd = [vec![0.0, 0.0, 5.0, 0.0, 5.0, 5.0], vec![1.0, 2.0, 3.0]];
        assert!(check_parts(&odd).unwrap_err().contains("polygon 1"));
        let nan = [vec![0.0, 0.0, 5.0, f64::NAN, 5.0, 5.0]];
        assert!(check_parts(&nan).unwrap_err().contains("not finite"));
        let ok = [vec![0.0, 0.0, 5.0, 0.0, 5.0, 5.0], vec![1.0, 2.0]];
        assert!(check_parts(&ok).is_ok());
    }
}
