//! Selective-search hierarchical grouping (Uijlings et al., IJCV 2013): repeatedly merge the
//! most similar pair of adjacent regions until one region is left. Every initial region and
//! every merge becomes a candidate box.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

use super::features::{PixelBox, RegionFeatures};

/// Which similarity measures are averaged into the merge score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Similarities {
    pub color: bool,
    pub texture: bool,
    pub size: bool,
    pub fill: bool,
}

impl Similarities {
    pub const ALL: Self = Self {
        color: true,
        texture: true,
        size: true,
        fill: true,
    };
    pub const TEXTURE_SIZE_FILL: Self = Self {
        color: false,
        texture: true,
        size: true,
        fill: true,
    };
    pub const FILL: Self = Self {
        color: false,
        texture: false,
        size: false,
        fill: true,
    };
    pub const SIZE: Self = Self {
        color: false,
        texture: false,
        size: true,
        fill: false,
    };

    fn count(self) -> usize {
        [self.color, self.texture, self.size, self.fill]
            .into_iter()
            .filter(|&on| on)
            .count()
    }
}

/// One region of the hierarchy: level 1 for initial segments, max(children) + 1 for merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupedRegion {
    pub bbox: PixelBox,
    pub level: u32,
}

/// A candidate merge in the priority queue; higher similarity first, then lower ids.
struct Candidate {
    similarity: f32,
    a: u32,
    b: u32,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.similarity
            .total_cmp(&other.similarity)
            .then_with(|| other.a.cmp(&self.a))
            .then_with(|| other.b.cmp(&self.b))
    }
}

/// Mutable region table: initial regions first, each merge appended as a new id.
struct Regions {
    sims: Similarities,
    image_area: f32,
    color_len: usize,
    texture_len: usize,
    color: Vec<f32>,
    texture: Vec<f32>,
    sizes: Vec<u32>,
    boxes: Vec<PixelBox>,
    levels: Vec<u32>,
}

impl Regions {
    fn similarity(&self, a: usize, b: usize) -> f32 {
        let mut total = 0.0;
        if self.sims.color {
            let l = self.color_len;
            total += intersection(
                &self.color[a * l..(a + 1) * l],
                &self.color[b * l..(b + 1) * l],
            );
        }
        if self.sims.texture {
            let l = self.texture_len;
            total += intersection(
                &self.texture[a * l..(a + 1) * l],
                &self.texture[b * l..(b + 1) * l],
            );
        }
        let both = (self.sizes[a] + self.sizes[b]) as f32;
        if self.sims.size {
            total += (1.0 - both / self.image_area).clamp(0.0, 1.0);
        }
        if self.sims.fill {
            let gap = self.boxes[a].union(self.boxes[b]).area() as f32 - both;
            total += (1.0 - gap / self.image_area).clamp(0.0, 1.0);
        }
        total / self.sims.count() as f32
    }

    /// Appends the union of `a` and `b` and returns its id.
    fn merge(&mut self, a: usize, b: usize) -> usize {
        let (sa, sb) = (self.sizes[a] as f32, self.sizes[b] as f32);
        let inv = 1.0 / (sa + sb);
        // Size-weighted average of the histograms = histogram of the union.
        for (hist, len) in [
            (&mut self.color, self.color_len),
            (&mut self.texture, self.texture_len),
        ] {
            if hist.is_empty() {
                continue;
            }
            for i in 0..len {
                let v = (hist[a * len + i] * sa + hist[b * len + i] * sb) * inv;
                hist.push(v);
            }
        }
        self.sizes.push(self.sizes[a] + self.sizes[b]);
        self.boxes.push(self.boxes[a].union(self.boxes[b]));
        self.levels.push(self.levels[a].max(self.levels[b]) + 1);
        self.sizes.len() - 1
    }
}

fn intersection(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums let the compiler vectorise the loop.
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x.min(*y))
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += xa[i].min(xb[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Runs the grouping; returns the initial regions (in label order) and then the merges in
/// merge order.
pub fn hierarchical_grouping(features: &RegionFeatures, sims: Similarities) -> Vec<GroupedRegion> {
    let n = features.sizes.len();
    if n == 0 {
        return Vec::new();
    }
    if sims.count() == 0 {
        // No similarity at all: nothing to merge by, keep the initial regions.
        return features
            .boxes
            .iter()
            .map(|&bbox| GroupedRegion { bbox, level: 1 })
            .collect();
    }
    let capacity = 2 * n;
    let take = |hist: &Vec<f32>, needed: bool, len: usize| {
        if needed && !hist.is_empty() {
            let mut v = Vec::with_capacity(capacity * len);
            v.extend_from_slice(hist);
            v
        } else {
            Vec::new()
        }
    };
    let mut sims = sims;
    // A requested histogram that was not computed would make the measure meaningless.
    sims.color &= !features.color.is_empty();
    sims.texture &= !features.texture.is_empty();
    if sims.count() == 0 {
        sims = Similarities::SIZE;
    }
    let mut regions = Regions {
        sims,
        image_area: features.image_area.max(1) as f32,
        color_len: features.color_len,
        texture_len: features.texture_len,
        color: take(&features.color, sims.color, features.color_len),
        texture: take(&features.texture, sims.texture, features.texture_len),
        sizes: features.sizes.clone(),
        boxes: features.boxes.clone(),
        levels: vec![1; n],
    };
    regions.sizes.reserve(n);
    regions.boxes.reserve(n);
    regions.levels.reserve(n);

    let mut neighbours: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut queue = BinaryHeap::with_capacity(features.adjacent_pairs.len() * 2);
    for &(a, b) in &features.adjacent_pairs {
        neighbours[a as usize].push(b);
        neighbours[b as usize].push(a);
        queue.push(Candidate {
            similarity: regions.similarity(a as usize, b as usize),
            a,
            b,
        });
    }
    let mut alive = vec![true; n];
    while let Some(Candidate { a, b, .. }) = queue.pop() {
        let (a, b) = (a as usize, b as usize);
        // Entries that mention an already merged region are stale.
        if !alive[a] || !alive[b] {
            continue;
        }
        let t = regions.merge(a, b);
        alive[a] = false;
        alive[b] = false;
        alive.push(true);
        let mut merged: Vec<u32> = std::mem::take(&mut neighbours[a]);
        merged.append(&mut neighbours[b]);
        merged.retain(|&r| r as usize != a && r as usize != b);
        merged.sort_unstable();
        merged.dedup();
        for &r in &merged {
            let list = &mut neighbours[r as usize];
            list.retain(|&x| x as usize != a && x as usize != b);
            list.push(t as u32);
            queue.push(Candidate {
                similarity: regions.similarity(t, r as usize),
                a: t as u32,
                b: r,
            });
        }
        neighbours.push(merged);
    }
    regions
        .boxes
        .iter()
        .zip(&regions.levels)
        .map(|(&bbox, &level)| GroupedRegion { bbox, level })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(
        boxes: Vec<PixelBox>,
        sizes: Vec<u32>,
        pairs: Vec<(u32, u32)>,
        color: Vec<f32>,
    ) -> RegionFeatures {
        RegionFeatures {
            image_area: 100,
            sizes,
            boxes,
            adjacent_pairs: pairs,
            color_len: 2,
            color,
            texture_len: 0,
            texture: Vec::new(),
        }
    }

    fn bx(x0: u32, y0: u32, x1: u32, y1: u32) -> PixelBox {
        PixelBox { x0, y0, x1, y1 }
    }

    #[test]
    fn merges_most_similar_pair_first_and_ends_with_one_region() {
        // Regions 0 and 1 share a colour; 2 differs. Chain 0-1-2.
        let f = features(
            vec![bx(0, 0, 3, 9), bx(4, 0, 6, 9), bx(7, 0, 9, 9)],
            vec![40, 30, 30],
            vec![(0, 1), (1, 2)],
            vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0],
        );
        let sims = Similarities {
            color: true,
            texture: false,
            size: false,
            fill: false,
        };
        let out = hierarchical_grouping(&f, sims);
        assert_eq!(out.len(), 5);
        assert_eq!(
            out[3],
            GroupedRegion {
                bbox: bx(0, 0, 6, 9),
                level: 2
            }
        );
        assert_eq!(
            out[4],
            GroupedRegion {
                bbox: bx(0, 0, 9, 9),
                level: 3
            }
        );
    }

    #[test]
    fn disconnected_regions_are_not_merged() {
        let f = features(
            vec![bx(0, 0, 1, 1), bx(5, 5, 6, 6)],
            vec![4, 4],
            vec![],
            vec![1.0, 0.0, 1.0, 0.0],
        );
        assert_eq!(hierarchical_grouping(&f, Similarities::ALL).len(), 2);
    }

    #[test]
    fn intersection_matches_naive_sum() {
        let a: Vec<f32> = (0..75).map(|i| (i % 7) as f32 / 10.0).collect();
        let b: Vec<f32> = (0..75).map(|i| (i % 5) as f32 / 10.0).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x.min(*y)).sum();
        assert!((intersection(&a, &b) - naive).abs() < 1e-4);
    }
}
