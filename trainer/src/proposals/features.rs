//! Region descriptors for hierarchical grouping: size, bounding box, adjacency, an L1-normalised
//! colour histogram (25 bins per channel) and a texture histogram (10 bins per channel and
//! orientation). Per-pixel bin indices depend only on the image, so [`FeatureMaps`] computes
//! them once and [`RegionFeatures`] only accumulates them for each segmentation.

use serde::{Deserialize, Serialize};

use super::color::Planar;
use super::felzenszwalb::{Segmentation, gaussian_blur};

pub const COLOR_BINS: usize = 25;
pub const TEXTURE_BINS: usize = 10;

/// How texture is described.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextureKind {
    /// Gaussian (sigma 1) derivatives in 8 orientations per channel, as in Uijlings et al. and
    /// OpenCV: 4 directions x {positive, negative} part, each normalised by its image maximum.
    OrientedGradients,
    /// Rotation-invariant uniform LBP (8 neighbours, radius 1) per channel: exactly 10 codes,
    /// one bin each (the SoCo/AlignDet recipe's "LBP, 10 bins per channel").
    Lbp,
}

/// Per-pixel histogram bins of one image.
pub struct FeatureMaps {
    pub width: usize,
    pub height: usize,
    /// One plane per colour channel, values in 0..COLOR_BINS.
    color_bins: Vec<Vec<u8>>,
    /// One plane per texture channel (channel x orientation), values in 0..TEXTURE_BINS.
    texture_bins: Vec<Vec<u8>>,
}

impl FeatureMaps {
    pub fn new(image: &Planar, texture: TextureKind) -> Self {
        let color_bins = image
            .planes
            .iter()
            .map(|plane| {
                plane
                    .iter()
                    .map(|&v| (v as usize * COLOR_BINS / 256) as u8)
                    .collect()
            })
            .collect();
        let texture_bins = image
            .planes
            .iter()
            .flat_map(|plane| match texture {
                TextureKind::OrientedGradients => {
                    oriented_gradient_bins(plane, image.width, image.height)
                }
                TextureKind::Lbp => vec![lbp_bins(plane, image.width, image.height)],
            })
            .collect();
        Self {
            width: image.width,
            height: image.height,
            color_bins,
            texture_bins,
        }
    }

    pub fn color_len(&self) -> usize {
        self.color_bins.len() * COLOR_BINS
    }

    pub fn texture_len(&self) -> usize {
        self.texture_bins.len() * TEXTURE_BINS
    }
}

/// Inclusive pixel bounding box.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PixelBox {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl PixelBox {
    pub fn union(self, other: Self) -> Self {
        Self {
            x0: self.x0.min(other.x0),
            y0: self.y0.min(other.y0),
            x1: self.x1.max(other.x1),
            y1: self.y1.max(other.y1),
        }
    }

    pub fn area(self) -> u64 {
        u64::from(self.x1 - self.x0 + 1) * u64::from(self.y1 - self.y0 + 1)
    }

    /// `[x, y, w, h]` with w, h counted in pixels.
    pub fn xywh(self) -> [f32; 4] {
        [
            self.x0 as f32,
            self.y0 as f32,
            (self.x1 - self.x0 + 1) as f32,
            (self.y1 - self.y0 + 1) as f32,
        ]
    }
}

/// Descriptors of the initial regions of one segmentation.
pub struct RegionFeatures {
    pub image_area: u64,
    pub sizes: Vec<u32>,
    pub boxes: Vec<PixelBox>,
    /// Unique pairs `(a, b)`, `a < b`, of 8-connected regions.
    pub adjacent_pairs: Vec<(u32, u32)>,
    pub color_len: usize,
    /// `sizes.len() * color_len` values; empty when colour is not needed.
    pub color: Vec<f32>,
    pub texture_len: usize,
    /// `sizes.len() * texture_len` values; empty when texture is not needed.
    pub texture: Vec<f32>,
}

impl RegionFeatures {
    pub fn compute(
        seg: &Segmentation,
        maps: &FeatureMaps,
        need_color: bool,
        need_texture: bool,
    ) -> Self {
        let n = seg.num_segments;
        let (w, h) = (seg.width, seg.height);
        let labels = &seg.labels;
        let mut sizes = vec![0u32; n];
        let mut boxes = vec![
            PixelBox {
                x0: u32::MAX,
                y0: u32::MAX,
                x1: 0,
                y1: 0,
            };
            n
        ];
        for y in 0..h {
            for (x, &l) in labels[y * w..(y + 1) * w].iter().enumerate() {
                let l = l as usize;
                sizes[l] += 1;
                let b = &mut boxes[l];
                b.x0 = b.x0.min(x as u32);
                b.x1 = b.x1.max(x as u32);
                b.y0 = b.y0.min(y as u32);
                b.y1 = b.y1.max(y as u32);
            }
        }
        let color = if need_color {
            normalised_histograms(labels, &sizes, &maps.color_bins, COLOR_BINS)
        } else {
            Vec::new()
        };
        let texture = if need_texture {
            normalised_histograms(labels, &sizes, &maps.texture_bins, TEXTURE_BINS)
        } else {
            Vec::new()
        };
        Self {
            image_area: (w * h) as u64,
            sizes,
            boxes,
            adjacent_pairs: adjacent_pairs(labels, w, h),
            color_len: maps.color_len(),
            color,
            texture_len: maps.texture_len(),
            texture,
        }
    }
}

/// Per-region histograms over all planes, normalised so each region's histogram sums to 1.
fn normalised_histograms(
    labels: &[u32],
    sizes: &[u32],
    planes: &[Vec<u8>],
    bins: usize,
) -> Vec<f32> {
    let stride = planes.len() * bins;
    let mut counts = vec![0u32; sizes.len() * stride];
    for (c, plane) in planes.iter().enumerate() {
        for (&l, &bin) in labels.iter().zip(plane) {
            counts[l as usize * stride + c * bins + bin as usize] += 1;
        }
    }
    let mut hist = vec![0.0f32; counts.len()];
    for ((row, counts), &size) in hist
        .chunks_exact_mut(stride)
        .zip(counts.chunks_exact(stride))
        .zip(sizes)
    {
        let total = (size as usize * planes.len()).max(1) as f32;
        for (h, &c) in row.iter_mut().zip(counts) {
            *h = c as f32 / total;
        }
    }
    hist
}

fn adjacent_pairs(labels: &[u32], w: usize, h: usize) -> Vec<(u32, u32)> {
    let mut packed: Vec<u64> = Vec::new();
    let mut last = u64::MAX;
    let mut add = |a: u32, b: u32| {
        if a != b {
            let key = (u64::from(a.min(b)) << 32) | u64::from(a.max(b));
            // Boundaries repeat the same pair along their length: skip the run cheaply.
            if key != last {
                packed.push(key);
                last = key;
            }
        }
    };
    for y in 0..h {
        let row = &labels[y * w..(y + 1) * w];
        for x in 0..w {
            let l = row[x];
            if x + 1 < w {
                add(l, row[x + 1]);
            }
            if y + 1 < h {
                let below = &labels[(y + 1) * w..(y + 2) * w];
                add(l, below[x]);
                if x + 1 < w {
                    add(l, below[x + 1]);
                }
                if x > 0 {
                    add(l, below[x - 1]);
                }
            }
        }
    }
    packed.sort_unstable();
    packed.dedup();
    packed
        .into_iter()
        .map(|k| ((k >> 32) as u32, (k & 0xffff_ffff) as u32))
        .collect()
}

/// Eight orientation planes of bins: derivatives of the Gaussian-smoothed channel along
/// 0°, 45°, 90° and 135°, each split into its positive and negative part.
fn oriented_gradient_bins(plane: &[u8], w: usize, h: usize) -> Vec<Vec<u8>> {
    let n = w * h;
    let values: Vec<f32> = plane.iter().map(|&v| f32::from(v)).collect();
    let smooth = gaussian_blur(&values, w, h, 1.0);
    let at = |x: usize, y: usize| smooth[y * w + x];
    let mut responses = vec![vec![0.0f32; n]; 8];
    let diag = std::f32::consts::FRAC_1_SQRT_2;
    for y in 0..h {
        for x in 0..w {
            let gx = 0.5 * (at((x + 1).min(w - 1), y) - at(x.saturating_sub(1), y));
            let gy = 0.5 * (at(x, (y + 1).min(h - 1)) - at(x, y.saturating_sub(1)));
            let directional = [gx, diag * (gx + gy), gy, diag * (gx - gy)];
            let p = y * w + x;
            for (d, v) in directional.into_iter().enumerate() {
                responses[2 * d][p] = v.max(0.0);
                responses[2 * d + 1][p] = (-v).max(0.0);
            }
        }
    }
    responses
        .into_iter()
        .map(|r| {
            let max = r.iter().copied().fold(0.0f32, f32::max);
            if max <= 0.0 {
                return vec![0u8; n];
            }
            let scale = TEXTURE_BINS as f32 / max;
            r.iter()
                .map(|&v| ((v * scale) as usize).min(TEXTURE_BINS - 1) as u8)
                .collect()
        })
        .collect()
}

/// Rotation-invariant uniform LBP code (0..=9) of every pixel; borders use replicated pixels.
fn lbp_bins(plane: &[u8], w: usize, h: usize) -> Vec<u8> {
    let table = uniform_lbp_table();
    // Neighbours in circular order, so bit transitions are counted around the circle.
    const RING: [(isize, isize); 8] = [
        (1, 0),
        (1, 1),
        (0, 1),
        (-1, 1),
        (-1, 0),
        (-1, -1),
        (0, -1),
        (1, -1),
    ];
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let centre = plane[y * w + x];
            let mut code = 0usize;
            for (bit, &(dx, dy)) in RING.iter().enumerate() {
                let nx = (x as isize + dx).clamp(0, w as isize - 1) as usize;
                let ny = (y as isize + dy).clamp(0, h as isize - 1) as usize;
                if plane[ny * w + nx] >= centre {
                    code |= 1 << bit;
                }
            }
            out[y * w + x] = table[code];
        }
    }
    out
}

/// Maps an 8-bit LBP pattern to its number of set bits when it has at most two 0/1
/// transitions around the circle ("uniform"), and to 9 otherwise.
fn uniform_lbp_table() -> [u8; 256] {
    std::array::from_fn(|code: usize| {
        let rotated = ((code >> 1) | ((code & 1) << 7)) & 0xff;
        let transitions = (code ^ rotated).count_ones();
        if transitions <= 2 {
            code.count_ones() as u8
        } else {
            9
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_lbp_has_ten_codes() {
        let table = uniform_lbp_table();
        let mut seen: Vec<u8> = table.to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, (0..10).collect::<Vec<u8>>());
        assert_eq!(table[0], 0);
        assert_eq!(table[0xff], 8);
        assert_eq!(table[0b0000_1110], 3);
        assert_eq!(table[0b0101_0101], 9);
    }

    #[test]
    fn histograms_sizes_boxes_and_adjacency() {
        // Three vertical stripes 0 | 1 | 2 on a 6x2 image.
        let seg = Segmentation {
            width: 6,
            height: 2,
            labels: vec![0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2],
            num_segments: 3,
        };
        let image = Planar {
            width: 6,
            height: 2,
            planes: vec![vec![0, 0, 255, 255, 128, 128, 0, 0, 255, 255, 128, 128]],
        };
        let maps = FeatureMaps::new(&image, TextureKind::Lbp);
        let f = RegionFeatures::compute(&seg, &maps, true, true);
        assert_eq!(f.sizes, vec![4, 4, 4]);
        assert_eq!(
            f.boxes[1],
            PixelBox {
                x0: 2,
                y0: 0,
                x1: 3,
                y1: 1
            }
        );
        assert_eq!(f.adjacent_pairs, vec![(0, 1), (1, 2)]);
        assert_eq!(f.color_len, COLOR_BINS);
        let region1 = &f.color[COLOR_BINS..2 * COLOR_BINS];
        assert_eq!(region1[COLOR_BINS - 1], 1.0);
        for r in 0..3 {
            let sum: f32 = f.texture[r * f.texture_len..(r + 1) * f.texture_len]
                .iter()
                .sum();
            assert!((sum - 1.0).abs() < 1e-6);
        }
    }
}
