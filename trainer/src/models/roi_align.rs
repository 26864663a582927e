//! RoIAlign (`torchvision.ops.roi_align` with `aligned=False`) and torchvision's
//! `MultiScaleRoIAlign`, on libtorch tensor ops so that it runs on any device and back-propagates
//! into the feature maps.
//!
//! Each output bin averages `sampling_ratio²` bilinear samples placed regularly in the bin, with
//! the boundary rules of torchvision's kernel: a sample more than one pixel outside the map counts
//! as zero, a sample within one pixel of the map reads the border. Bilinear weights factor into a
//! y part and an x part (the out-of-map rule too), so the whole operation is one weighted gather:
//! an `embedding_bag` over the feature maps laid out as rows of channels.

use tch::{Kind, Tensor};

/// Per-RoI geometry of the map it samples: the map's size and scale, and the row of the
/// gather table where that map's image starts.
struct RoiMaps {
    height: Tensor,
    width: Tensor,
    scale: Tensor,
    base: Tensor,
}

/// Sample positions along one axis: `[K, pooled, sr, 2]` indices of the low and high neighbour
/// and their weights (zero for samples outside the map).
fn axis(start: &Tensor, end: &Tensor, len: &Tensor, pooled: i64, sr: i64) -> (Tensor, Tensor) {
    let opts = (Kind::Float, start.device());
    // aligned=False: degenerate RoIs are widened to one map pixel
    let size = (end - start).clamp_min(1.0);
    let bin = (size / pooled as f64).view([-1, 1, 1]);
    let p = Tensor::arange(pooled, opts).view([1, -1, 1]);
    let i = (Tensor::arange(sr, opts) + 0.5).view([1, 1, -1]);
    // same association as the kernel: (start + p·bin) + ((i + ½)·bin) / sr
    let coord = (start.view([-1, 1, 1]) + p * &bin) + (i * &bin) / sr as f64;
    let len_f = len.to_kind(Kind::Float).view([-1, 1, 1]);
    let last = (len - 1).view([-1, 1, 1]);
    let valid = coord.ge(-1.0).logical_and(&coord.le_tensor(&len_f));
    let c = coord.clamp_min(0.0);
    let low = c.to_kind(Kind::Int64);
    let at_edge = low.ge_tensor(&last);
    let high = (&low + 1).where_self(&at_edge.logical_not(), &last);
    let low = low.where_self(&at_edge.logical_not(), &last);
    let c = c.where_self(&at_edge.logical_not(), &last.to_kind(Kind::Float));
    let l = c - low.to_kind(Kind::Float);
    let h = 1.0 - &l;
    let valid = valid.to_kind(Kind::Float);
    let w = Tensor::stack(&[h * &valid, l * &valid], -1);
    (Tensor::stack(&[low, high], -1), w)
}

/// Pool `boxes` `[K, 4]` (image coordinates) from `table` `[rows, C]` → `[K, C, PH, PW]`.
fn pool(table: &Tensor, boxes: &Tensor, maps: &RoiMaps, out: (i64, i64), sr: i64) -> Tensor {
    assert!(sr > 0, "only a fixed sampling ratio is supported here");
    pool_grid(table, boxes, maps, out, (sr, sr))
}

/// [`pool`] with `(sy, sx)` samples per bin along y and x.
fn pool_grid(
    table: &Tensor,
    boxes: &Tensor,
    maps: &RoiMaps,
    out: (i64, i64),
    (sy, sx): (i64, i64),
) -> Tensor {
    let k = boxes.size()[0];
    let c = table.size()[1];
    let (ph, pw) = out;
    if k == 0 {
        return Tensor::zeros([0, c, ph, pw], (table.kind(), table.device()));
    }
    let b = boxes.to_kind(Kind::Float) * maps.scale.unsqueeze(1);
    let (yi, wy) = axis(&b.select(1, 1), &b.select(1, 3), &maps.height, ph, sy);
    let (xi, wx) = axis(&b.select(1, 0), &b.select(1, 2), &maps.width, pw, sx);
    // [K, PH, PW, sy, sx, corner y, corner x]: the kernel's per-sample corner order
    let weights = wy.view(&[k, ph, 1, sy, 1, 2, 1][..]) * wx.view(&[k, 1, pw, 1, sx, 1, 2][..]);
    let rows = (yi * maps.width.view([-1, 1, 1, 1]) + maps.base.view([-1, 1, 1, 1]))
        .view(&[k, ph, 1, sy, 1, 2, 1][..])
        + xi.view(&[k, 1, pw, 1, sx, 1, 2][..]);
    let per_bin = sy * sx * 4;
    let offsets = Tensor::arange(k * ph * pw, (Kind::Int64, table.device())) * per_bin;
    let (sum, _, _, _) = Tensor::embedding_bag(
        table,
        &rows.reshape([-1]),
        &offsets,
        false,
        0,
        false,
        Some(weights.reshape([-1]).to_kind(table.kind())),
        false,
    );
    sum.view([k, ph, pw, c]).permute([0, 3, 1, 2]) / (sy * sx) as f64
}

/// Feature maps `[N, C, H, W]` as gather rows `[N·H·W, C]`.
fn as_table(features: &Tensor) -> Tensor {
    let c = features.size()[1];
    features.permute([0, 2, 3, 1]).reshape([-1, c])
}

/// `torchvision.ops.roi_align(input, rois, output_size, spatial_scale, sampling_ratio,
/// aligned=False)`: `rois` `[K, 5]` rows (batch index, x1, y1, x2, y2) → `[K, C, PH, PW]`.
/// `sampling_ratio` must be positive (torchvision's adaptive mode is not implemented).
pub fn roi_align(
    input: &Tensor,
    rois: &Tensor,
    output_size: (i64, i64),
    spatial_scale: f64,
    sampling_ratio: i64,
) -> Tensor {
    let s = input.size();
    let (h, w) = (s[2], s[3]);
    let k = rois.size()[0];
    let batch = rois.select(1, 0).to_kind(Kind::Int64);
    let full = |v: i64| Tensor::full([k], v, (Kind::Int64, input.device()));
    let maps = RoiMaps {
        height: full(h),
        width: full(w),
        scale: Tensor::full([k], spatial_scale, (Kind::Float, input.device())),
        base: batch * (h * w),
    };
    pool(
        &as_table(input),
        &rois.narrow(1, 1, 4),
        &maps,
        output_size,
        sampling_ratio,
    )
}

/// `torchvision.ops.roi_align(input, rois, output_size, spatial_scale)` with its default
/// adaptive sampling (`sampling_ratio=-1`): each RoI takes `ceil(roi side / bins)` samples per
/// bin along each axis, computed in float32 as the kernel does. RoIs are pooled in groups of
/// equal sample grids. Used for mask targets, where no gradient is needed.
pub fn roi_align_adaptive(
    input: &Tensor,
    rois: &Tensor,
    output_size: (i64, i64),
    spatial_scale: f64,
) -> Tensor {
    let s = input.size();
    let (c, h, w) = (s[1], s[2], s[3]);
    let k = rois.size()[0];
    let (ph, pw) = output_size;
    let mut out = Tensor::zeros([k, c, ph, pw], (input.kind(), input.device()));
    if k == 0 {
        return out;
    }
    let r: Vec<f32> = Vec::try_from(rois.to_kind(Kind::Float).reshape([-1]))
        .expect("float RoIs convert to a vector");
    let scale = spatial_scale as f32;
    let mut groups: std::collections::BTreeMap<(i64, i64), Vec<i64>> = Default::default();
    for (i, row) in r.chunks(5).enumerate() {
        let rw = (row[3] * scale - row[1] * scale).max(1.0);
        let rh = (row[4] * scale - row[2] * scale).max(1.0);
        let grid = (
            (rh / ph as f32).ceil() as i64,
            (rw / pw as f32).ceil() as i64,
        );
        groups.entry(grid).or_default().push(i as i64);
    }
    let table = as_table(input);
    for (grid, idx) in groups {
        let idx = Tensor::from_slice(&idx).to_device(input.device());
        let sub = rois.index_select(0, &idx);
        let n = idx.size()[0];
        let full = |v: i64| Tensor::full([n], v, (Kind::Int64, input.device()));
        let maps = RoiMaps {
            height: full(h),
            width: full(w),
            scale: Tensor::full([n], spatial_scale, (Kind::Float, input.device())),
            base: sub.select(1, 0).to_kind(Kind::Int64) * (h * w),
        };
        let pooled = pool_grid(&table, &sub.narrow(1, 1, 4), &maps, output_size, grid);
        let _ = out.index_copy_(0, &idx, &pooled);
    }
    out
}

/// torchvision's `LevelMapper`: the pyramid level (counted from `k_min`) each box `[K, 4]` is
/// pooled from, `floor(level₀ + log2(√area / scale₀) + ε)` clamped to `k_min..=k_max`.
pub fn map_levels(
    boxes: &Tensor,
    k_min: i64,
    k_max: i64,
    canonical_scale: f64,
    canonical_level: f64,
) -> Tensor {
    let area =
        (boxes.select(1, 2) - boxes.select(1, 0)) * (boxes.select(1, 3) - boxes.select(1, 1));
    let s = area.sqrt();
    let lvl = ((s / canonical_scale).log2() + canonical_level + 1e-6).floor();
    lvl.clamp(k_min as f64, k_max as f64).to_kind(Kind::Int64) - k_min
}

/// torchvision's `MultiScaleRoIAlign` over FPN levels given fine to coarse (Faster R-CNN: P2–P5,
/// the maps named "0"–"3"; the max-pool level is not pooled from).
#[derive(Debug, Clone)]
pub struct MultiScaleRoIAlign {
    pub output_size: (i64, i64),
    pub sampling_ratio: i64,
    pub canonical_scale: f64,
    pub canonical_level: f64,
}

impl Default for MultiScaleRoIAlign {
    fn default() -> Self {
        MultiScaleRoIAlign {
            output_size: (7, 7),
            sampling_ratio: 2,
            canonical_scale: 224.0,
            canonical_level: 4.0,
        }
    }
}

/// Scale of a map relative to the largest image, a power of two as torchvision infers it from
/// the heights (float32 log2, rounded half to even).
fn infer_scale(feature_height: i64, max_image_height: i64) -> f64 {
    let approx = (feature_height as f64 / max_image_height as f64) as f32;
    2f64.powf(approx.log2().round_ties_even() as f64)
}

impl MultiScaleRoIAlign {
    /// `features` `[N, C, Hl, Wl]` per level, `boxes` `[Ki, 4]` per image (image coordinates),
    /// `image_sizes` the (height, width) of each image before padding → `[ΣKi, C, PH, PW]`, rows
    /// in image order.
    pub fn forward(
        &self,
        features: &[Tensor],
        boxes: &[Tensor],
        image_sizes: &[(i64, i64)],
    ) -> Tensor {
        let device = features[0].device();
        let max_h = image_sizes.iter().map(|s| s.0).max().unwrap_or(1).max(1);
        let scales: Vec<f64> = features
            .iter()
            .map(|f| infer_scale(f.size()[2], max_h))
            .collect();
        let k_min = -scales[0].log2() as i64;
        let k_max = -scales[scales.len() - 1].log2() as i64;
        let all = Tensor::cat(boxes, 0);
        let image = Tensor::cat(
            &boxes
                .iter()
                .enumerate()
                .map(|(i, b)| Tensor::full([b.size()[0]], i as i64, (Kind::Int64, device)))
                .collect::<Vec<_>>(),
            0,
        );
        let level = if features.len() == 1 {
            Tensor::zeros([all.size()[0]], (Kind::Int64, device))
        } else {
            map_levels(
                &all,
                k_min,
                k_max,
                self.canonical_scale,
                self.canonical_level,
            )
        };
        // per-level lookups: map size, scale, first row of the level in the table
        let (mut hs, mut ws, mut starts) = (vec![], vec![], vec![]);
        let mut rows = 0;
        for f in features {
            let s = f.size();
            hs.push(s[2]);
            ws.push(s[3]);
            starts.push(rows);
            rows += s[0] * s[2] * s[3];
        }
        let lookup = |v: &[i64]| {
            Tensor::from_slice(v)
                .to_device(device)
                .index_select(0, &level)
        };
        let (height, width) = (lookup(&hs), lookup(&ws));
        let scales_f: Vec<f32> = scales.iter().map(|&s| s as f32).collect();
        let scale = Tensor::from_slice(&scales_f)
            .to_device(device)
            .index_select(0, &level);
        let base = lookup(&starts) + image * &height * &width;
        let table = Tensor::cat(&features.iter().map(as_table).collect::<Vec<_>>(), 0);
        let maps = RoiMaps {
            height,
            width,
            scale,
            base,
        };
        pool(&table, &all, &maps, self.output_size, self.sampling_ratio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_map_pools_to_the_constant_inside_and_zero_far_outside() {
        let f = Tensor::ones([1, 2, 8, 8], (Kind::Float, tch::Device::Cpu)) * 3.0;
        let rois = Tensor::from_slice(&[0.0f32, 1.0, 1.0, 6.0, 6.0, 0.0, 20.0, 20.0, 30.0, 30.0])
            .view([2, 5]);
        let out = roi_align(&f, &rois, (2, 2), 1.0, 2);
        assert_eq!(out.size(), vec![2, 2, 2, 2]);
        let inside = out.get(0);
        assert!((inside - 3.0).abs().max().double_value(&[]) < 1e-6);
        assert_eq!(out.get(1).abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn linear_ramp_is_sampled_at_bin_sample_points() {
        // f(y, x) = x: bilinear interpolation is exact, so each bin is the mean sample x.
        let x = Tensor::arange(16, (Kind::Float, tch::Device::Cpu))
            .view([1, 1, 1, 16])
            .expand([1, 1, 16, 16], false)
            .contiguous();
        let rois = Tensor::from_slice(&[0.0f32, 2.0, 2.0, 10.0, 10.0]).view([1, 5]);
        let out = roi_align(&x, &rois, (1, 2), 1.0, 2);
        // bins [2, 6] and [6, 10]; samples at 3, 5 and 7, 9
        let v: Vec<f32> = Vec::try_from(out.reshape([-1])).unwrap();
        assert!(
            (v[0] - 4.0).abs() < 1e-5 && (v[1] - 8.0).abs() < 1e-5,
            "{v:?}"
        );
    }

    #[test]
    fn level_mapper_follows_the_fpn_heuristic() {
        let b = Tensor::from_slice(&[
            0.0f32, 0.0, 224.0, 224.0, 0.0, 0.0, 112.0, 112.0, 0.0, 0.0, 10.0, 10.0, 0.0, 0.0,
            1000.0, 1000.0,
        ])
        .view([4, 4]);
        let l: Vec<i64> = Vec::try_from(map_levels(&b, 2, 5, 224.0, 4.0)).unwrap();
        assert_eq!(l, vec![2, 1, 0, 3]);
    }
}
