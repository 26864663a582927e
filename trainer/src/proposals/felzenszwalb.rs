//! Felzenszwalb–Huttenlocher graph segmentation ("Efficient graph-based image segmentation",
//! IJCV 2004): Gaussian smoothing, a 4- or 8-connected pixel graph weighted by colour distance,
//! Kruskal-style merging with the adaptive threshold Int(C) + k/|C|, then a post-merge of
//! components smaller than `min_size`.
//!
//! The sorted graph depends only on the image and sigma, so it is built once ([`PixelGraph`])
//! and segmented for several k values.

use serde::{Deserialize, Serialize};

use super::color::Planar;

/// Which neighbours a pixel is joined to in the segmentation graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Connectivity {
    /// Left, right, up, down: OpenCV's `GraphSegmentation`. Fewer paths between pixels, so
    /// thin or low-contrast objects stay separate at a given k.
    Four,
    /// Also the diagonals: the original paper's graph (and SoCo's scikit-image one).
    #[default]
    Eight,
}

impl Connectivity {
    /// How many of [`DIRECTIONS`] this connectivity uses (they are ordered so that the
    /// 4-connected ones come first).
    fn directions(self) -> usize {
        match self {
            Self::Four => 2,
            Self::Eight => 4,
        }
    }
}

/// Parameters of one segmentation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SegmentParams {
    /// Scale: larger k prefers larger components.
    pub k: f32,
    /// Minimum component size in pixels after the post-merge.
    pub min_size: usize,
}

/// A label per pixel (row-major), labels numbered 0.. in raster order of first appearance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segmentation {
    pub width: usize,
    pub height: usize,
    pub labels: Vec<u32>,
    pub num_segments: usize,
}

/// The 4- or 8-connected pixel graph of a smoothed image with its edges sorted by weight.
/// Each edge is packed as `weight_bits << 32 | edge_id` with `edge_id = pixel * 4 + direction`.
pub struct PixelGraph {
    width: usize,
    height: usize,
    edges: Vec<u64>,
}

/// Forward neighbours that make every pair appear exactly once: right, down (4-connected),
/// then down-right, up-right (the diagonals of 8-connectivity).
const DIRECTIONS: [(isize, isize); 4] = [(1, 0), (0, 1), (1, 1), (1, -1)];

impl PixelGraph {
    /// Smooths each plane with a Gaussian of `sigma` and builds the sorted graph.
    pub fn new(image: &Planar, sigma: f32, connectivity: Connectivity) -> Self {
        let (w, h) = (image.width, image.height);
        let smoothed: Vec<Vec<f32>> = image
            .planes
            .iter()
            .map(|plane| {
                let plane: Vec<f32> = plane.iter().map(|&v| f32::from(v)).collect();
                gaussian_blur(&plane, w, h, sigma)
            })
            .collect();
        let directions = &DIRECTIONS[..connectivity.directions()];
        let mut edges = Vec::with_capacity(w * h * directions.len());
        for y in 0..h {
            for x in 0..w {
                let p = y * w + x;
                for (dir, &(dx, dy)) in directions.iter().enumerate() {
                    let (nx, ny) = (x as isize + dx, y as isize + dy);
                    if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                        continue;
                    }
                    let q = ny as usize * w + nx as usize;
                    let dist2: f32 = smoothed
                        .iter()
                        .map(|plane| {
                            let d = plane[p] - plane[q];
                            d * d
                        })
                        .sum();
                    let id = (p * 4 + dir) as u64;
                    edges.push((u64::from(dist2.sqrt().to_bits()) << 32) | id);
                }
            }
        }
        radix_sort_by_weight(&mut edges);
        Self {
            width: w,
            height: h,
            edges,
        }
    }

    fn endpoints(&self, edge: u64) -> (usize, usize) {
        let id = (edge & 0xffff_ffff) as usize;
        let p = id / 4;
        let (dx, dy) = DIRECTIONS[id % 4];
        let q = (p as isize + dy * self.width as isize + dx) as usize;
        (p, q)
    }

    /// Segments the graph with threshold function k/|C| and the min-size post-merge.
    pub fn segment(&self, params: SegmentParams) -> Segmentation {
        let n = self.width * self.height;
        let mut sets = DisjointSets::new(n);
        // Int(C) + k/|C| for each root; singletons start at k.
        let mut threshold = vec![params.k; n];
        for &edge in &self.edges {
            let weight = f32::from_bits((edge >> 32) as u32);
            let (p, q) = self.endpoints(edge);
            let (a, b) = (sets.find(p), sets.find(q));
            if a != b && weight <= threshold[a] && weight <= threshold[b] {
                let root = sets.union(a, b);
                threshold[root] = weight + params.k / sets.size(root) as f32;
            }
        }
        // Small components join the neighbour across their cheapest remaining edge.
        for &edge in &self.edges {
            let (p, q) = self.endpoints(edge);
            let (a, b) = (sets.find(p), sets.find(q));
            if a != b && (sets.size(a) < params.min_size || sets.size(b) < params.min_size) {
                sets.union(a, b);
            }
        }
        let mut label_of_root = vec![u32::MAX; n];
        let mut num_segments = 0u32;
        let labels = (0..n)
            .map(|p| {
                let root = sets.find(p);
                if label_of_root[root] == u32::MAX {
                    label_of_root[root] = num_segments;
                    num_segments += 1;
                }
                label_of_root[root]
            })
            .collect();
        Segmentation {
            width: self.width,
            height: self.height,
            labels,
            num_segments: num_segments as usize,
        }
    }
}

/// Convenience: smooth, build the 8-connected graph and segment once.
pub fn segment(image: &Planar, sigma: f32, params: SegmentParams) -> Segmentation {
    PixelGraph::new(image, sigma, Connectivity::Eight).segment(params)
}

/// Union-find with path halving and union by size.
struct DisjointSets {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl DisjointSets {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }

    fn find(&mut self, mut p: usize) -> usize {
        while self.parent[p] as usize != p {
            let grandparent = self.parent[self.parent[p] as usize];
            self.parent[p] = grandparent;
            p = grandparent as usize;
        }
        p
    }

    fn size(&self, root: usize) -> usize {
        self.size[root] as usize
    }

    /// Joins two roots; returns the new root.
    fn union(&mut self, a: usize, b: usize) -> usize {
        let (big, small) = if self.size[a] >= self.size[b] {
            (a, b)
        } else {
            (b, a)
        };
        self.parent[small] = big as u32;
        self.size[big] += self.size[small];
        big
    }
}

/// Separable Gaussian blur with replicated borders; the kernel is cut at 4 sigma.
pub fn gaussian_blur(plane: &[f32], w: usize, h: usize, sigma: f32) -> Vec<f32> {
    let radius = (4.0 * sigma).ceil() as usize;
    if sigma <= 0.0 || radius == 0 || w == 0 || h == 0 {
        return plane.to_vec();
    }
    let mut kernel: Vec<f32> = (0..=radius)
        .map(|i| (-((i * i) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let total = kernel[0] + 2.0 * kernel[1..].iter().sum::<f32>();
    kernel.iter_mut().for_each(|v| *v /= total);

    let mut horizontal = vec![0.0f32; w * h];
    for (src, dst) in plane.chunks_exact(w).zip(horizontal.chunks_exact_mut(w)) {
        for (x, out) in dst.iter_mut().enumerate() {
            let mut acc = kernel[0] * src[x];
            for (i, &kv) in kernel.iter().enumerate().skip(1) {
                acc += kv * (src[x.saturating_sub(i)] + src[(x + i).min(w - 1)]);
            }
            *out = acc;
        }
    }
    let mut out = vec![0.0f32; w * h];
    for y in 0..h {
        let dst = &mut out[y * w..(y + 1) * w];
        let row = |r: usize| &horizontal[r * w..(r + 1) * w];
        for (d, &s) in dst.iter_mut().zip(row(y)) {
            *d = kernel[0] * s;
        }
        for (i, &kv) in kernel.iter().enumerate().skip(1) {
            let (above, below) = (row(y.saturating_sub(i)), row((y + i).min(h - 1)));
            for ((d, &a), &b) in dst.iter_mut().zip(above).zip(below) {
                *d += kv * (a + b);
            }
        }
    }
    out
}

/// Stable LSD radix sort on the upper 32 bits (non-negative f32 bits sort like the floats).
/// Stability keeps ties in edge-id order, so the result is deterministic.
fn radix_sort_by_weight(edges: &mut Vec<u64>) {
    const BITS: u32 = 11;
    const BUCKETS: usize = 1 << BITS;
    let mut buffer = vec![0u64; edges.len()];
    for pass in 0..3 {
        let shift = 32 + pass * BITS;
        let digit = |e: u64| ((e >> shift) as usize) & (BUCKETS - 1);
        let mut offsets = vec![0usize; BUCKETS];
        for &e in edges.iter() {
            offsets[digit(e)] += 1;
        }
        if offsets.contains(&edges.len()) {
            continue; // every key has the same digit: this pass would not move anything
        }
        let mut running = 0;
        for slot in offsets.iter_mut() {
            let count = *slot;
            *slot = running;
            running += count;
        }
        for &e in edges.iter() {
            let d = digit(e);
            buffer[offsets[d]] = e;
            offsets[d] += 1;
        }
        std::mem::swap(edges, &mut buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planar_from_fn(w: usize, h: usize, f: impl Fn(usize, usize) -> [u8; 3]) -> Planar {
        let mut planes = vec![vec![0u8; w * h]; 3];
        for y in 0..h {
            for x in 0..w {
                for (c, v) in f(x, y).into_iter().enumerate() {
                    planes[c][y * w + x] = v;
                }
            }
        }
        Planar {
            width: w,
            height: h,
            planes,
        }
    }

    #[test]
    fn radix_sort_orders_by_weight_then_id() {
        let mut edges: Vec<u64> = [3.5f32, 0.0, 1.25, 3.5, 400.0, 0.5]
            .iter()
            .enumerate()
            .map(|(i, w)| (u64::from(w.to_bits()) << 32) | i as u64)
            .collect();
        radix_sort_by_weight(&mut edges);
        let ids: Vec<u64> = edges.iter().map(|e| e & 0xffff_ffff).collect();
        assert_eq!(ids, vec![1, 5, 2, 0, 3, 4]);
    }

    #[test]
    fn blur_keeps_constant_image() {
        let plane = vec![7.0f32; 20 * 10];
        let out = gaussian_blur(&plane, 20, 10, 1.5);
        assert!(out.iter().all(|&v| (v - 7.0).abs() < 1e-4));
    }

    #[test]
    fn flat_image_is_one_segment() {
        let img = planar_from_fn(40, 30, |_, _| [90, 90, 90]);
        let seg = segment(
            &img,
            0.8,
            SegmentParams {
                k: 100.0,
                min_size: 20,
            },
        );
        assert_eq!(seg.num_segments, 1);
    }

    #[test]
    fn rectangle_is_its_own_segment_with_exact_extent() {
        let inside = |x: usize, y: usize| (10..30).contains(&x) && (5..25).contains(&y);
        let img = planar_from_fn(50, 40, |x, y| {
            if inside(x, y) {
                [200, 30, 30]
            } else {
                [40, 40, 160]
            }
        });
        // Without smoothing: exactly the rectangle and the background.
        let seg = segment(
            &img,
            0.0,
            SegmentParams {
                k: 300.0,
                min_size: 50,
            },
        );
        assert_eq!(seg.num_segments, 2);
        // With smoothing, the blurred border may form thin extra segments (flat regions have
        // zero internal difference) and corners get rounded, but away from the corners the
        // two pixels on either side of the edge must be in different segments.
        for sigma in [0.8, 0.9] {
            let seg = segment(
                &img,
                sigma,
                SegmentParams {
                    k: 300.0,
                    min_size: 50,
                },
            );
            let label = |x: usize, y: usize| seg.labels[y * 50 + x];
            for x in 13..27 {
                assert_ne!(label(x, 4), label(x, 5), "sigma {sigma}, top edge at x {x}");
                assert_ne!(
                    label(x, 24),
                    label(x, 25),
                    "sigma {sigma}, bottom edge at x {x}"
                );
            }
            for y in 8..22 {
                assert_ne!(
                    label(9, y),
                    label(10, y),
                    "sigma {sigma}, left edge at y {y}"
                );
                assert_ne!(
                    label(29, y),
                    label(30, y),
                    "sigma {sigma}, right edge at y {y}"
                );
            }
        }
    }

    #[test]
    fn four_connectivity_keeps_diagonal_neighbours_apart() {
        // A checkerboard: every 4-neighbour differs, every diagonal neighbour is identical.
        let img = planar_from_fn(12, 12, |x, y| {
            if (x + y) % 2 == 0 {
                [250, 250, 250]
            } else {
                [0, 0, 0]
            }
        });
        let params = SegmentParams {
            k: 1.0,
            min_size: 1,
        };
        let eight = PixelGraph::new(&img, 0.0, Connectivity::Eight);
        let four = PixelGraph::new(&img, 0.0, Connectivity::Four);
        // 4-connected: (w-1)h + w(h-1) edges; 8-connected adds 2(w-1)(h-1) diagonals.
        assert_eq!(four.edges.len(), 2 * 11 * 12);
        assert_eq!(eight.edges.len(), 2 * 11 * 12 + 2 * 11 * 11);
        // Diagonals join each colour into one segment; without them no pixel has a
        // same-coloured neighbour.
        assert_eq!(eight.segment(params).num_segments, 2);
        assert_eq!(four.segment(params).num_segments, 144);
    }

    #[test]
    fn min_size_merges_small_components() {
        // A 3x3 speck is below min_size and must be absorbed.
        let img = planar_from_fn(30, 30, |x, y| {
            if (10..13).contains(&x) && (10..13).contains(&y) {
                [255, 255, 255]
            } else {
                [0, 0, 0]
            }
        });
        let seg = segment(
            &img,
            0.0,
            SegmentParams {
                k: 1.0,
                min_size: 20,
            },
        );
        assert_eq!(seg.num_segments, 1);
        let seg = segment(
            &img,
            0.0,
            SegmentParams {
                k: 1.0,
                min_size: 5,
            },
        );
        assert_eq!(seg.num_segments, 2);
    }
}
