//! Diversification strategies (colour spaces x k values x similarity sets) and the function
//! that turns an image into ranked, de-duplicated proposal boxes.

use std::collections::HashSet;
use std::str::FromStr;

use image::RgbImage;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::color::{ColorSpace, Planar, convert};
use super::features::{FeatureMaps, PixelBox, RegionFeatures, TextureKind};
use super::felzenszwalb::{Connectivity, PixelGraph, SegmentParams};
use super::grouping::{GroupedRegion, Similarities, hierarchical_grouping};

#[derive(Debug, thiserror::Error)]
pub enum StrategyError {
    #[error("unknown selective-search strategy {0:?} (expected fast, quality or aligndet)")]
    Unknown(String),
}

/// How boxes from all grouping runs are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ranking {
    /// Production order: for each run, initial segments then merges in merge order.
    MergeOrder,
    /// OpenCV / Uijlings: rank = merge level x U(0, 1) from a seeded generator, ascending,
    /// so that every run contributes small and large boxes near the top.
    RandomisedLevel,
}

/// A full selective-search configuration. Every combination of colour space, k and
/// similarity set is one hierarchical grouping run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Strategy {
    pub name: String,
    pub color_spaces: Vec<ColorSpace>,
    pub ks: Vec<f32>,
    pub sigma: f32,
    pub min_size: usize,
    /// Pixel graph of the segmentation (absent in older strategy files: 8-connected).
    #[serde(default)]
    pub connectivity: Connectivity,
    pub similarities: Vec<Similarities>,
    pub texture: TextureKind,
    /// Segment the RGB image for every colour space (SoCo's recipe); otherwise segment the
    /// converted image itself (OpenCV, Uijlings).
    pub segment_in_rgb: bool,
    pub ranking: Ranking,
    /// After ranking, a box whose IoU with an earlier kept box reaches this value goes to the
    /// end of the list (kept, in ranked order): near-copies from other runs then stop taking
    /// the first places from distinct boxes, and recall over all boxes is unchanged.
    /// `None` keeps the plain ranking.
    #[serde(default)]
    pub near_duplicate_iou: Option<f32>,
}

impl Strategy {
    /// AlignDet/SoCo (method doc 2.1): FH with scale 300, sigma 0.9, min size 100 on RGB; HSV
    /// colour + LBP texture + size + fill; initial segments then merges in merge order.
    pub fn aligndet() -> Self {
        Self {
            name: "aligndet".into(),
            color_spaces: vec![ColorSpace::Hsv],
            ks: vec![300.0],
            sigma: 0.9,
            min_size: 100,
            connectivity: Connectivity::Eight,
            similarities: vec![Similarities::ALL],
            texture: TextureKind::Lbp,
            segment_in_rgb: true,
            ranking: Ranking::MergeOrder,
            near_duplicate_iou: None,
        }
    }

    /// OpenCV's `switchToSelectiveSearchFast` (Uijlings et al.'s fast mode): OpenCV's 8-bit
    /// HSV and Lab, k in {150, 300, 450}, sigma 0.8, min size 100 on a 4-connected graph,
    /// colour+texture+size+fill and texture+size+fill (12 runs), randomised level ranking;
    /// plus near-duplicate demotion at IoU 0.5, which lifts recall at 100-300 boxes above
    /// OpenCV's on both NEON tiles and the synthetic set (docs/proposals.md).
    pub fn fast() -> Self {
        Self {
            name: "fast".into(),
            color_spaces: vec![ColorSpace::Hsv180, ColorSpace::Lab],
            ks: vec![150.0, 300.0, 450.0],
            sigma: 0.8,
            min_size: 100,
            connectivity: Connectivity::Four,
            similarities: vec![Similarities::ALL, Similarities::TEXTURE_SIZE_FILL],
            texture: TextureKind::OrientedGradients,
            segment_in_rgb: false,
            ranking: Ranking::RandomisedLevel,
            near_duplicate_iou: Some(0.5),
        }
    }

    /// Uijlings et al.'s "quality" mode: five colour spaces, four k values, four similarity
    /// sets (80 runs).
    pub fn quality() -> Self {
        Self {
            name: "quality".into(),
            color_spaces: vec![
                ColorSpace::Hsv,
                ColorSpace::Lab,
                ColorSpace::RgI,
                ColorSpace::Hue,
                ColorSpace::Gray,
            ],
            ks: vec![50.0, 100.0, 150.0, 300.0],
            sigma: 0.8,
            min_size: 100,
            connectivity: Connectivity::Eight,
            similarities: vec![
                Similarities::ALL,
                Similarities::TEXTURE_SIZE_FILL,
                Similarities::FILL,
                Similarities::SIZE,
            ],
            texture: TextureKind::OrientedGradients,
            segment_in_rgb: false,
            ranking: Ranking::RandomisedLevel,
            near_duplicate_iou: None,
        }
    }

    pub fn by_name(name: &str) -> Result<Self, StrategyError> {
        match name {
            "aligndet" => Ok(Self::aligndet()),
            "fast" => Ok(Self::fast()),
            "quality" => Ok(Self::quality()),
            other => Err(StrategyError::Unknown(other.to_string())),
        }
    }

    fn needs_color(&self) -> bool {
        self.similarities.iter().any(|s| s.color)
    }

    fn needs_texture(&self) -> bool {
        self.similarities.iter().any(|s| s.texture)
    }
}

impl FromStr for Strategy {
    type Err = StrategyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::by_name(s)
    }
}

/// Selective-search proposals for one image as `[x, y, w, h]` (pixels), ranked according to
/// the strategy and de-duplicated. Deterministic for a given `(image, strategy, seed)`.
pub fn propose(image: &RgbImage, strategy: &Strategy, seed: u64) -> Vec<[f32; 4]> {
    let runs = grouping_runs(image, strategy);
    let ranked = rank_and_dedup(runs, strategy.ranking, seed);
    let ranked = match strategy.near_duplicate_iou {
        Some(threshold) => demote_near_duplicates(ranked, threshold),
        None => ranked,
    };
    ranked.into_iter().map(PixelBox::xywh).collect()
}

/// All grouping runs in the order colour space, k, similarity set (OpenCV's loop order).
pub fn grouping_runs(image: &RgbImage, strategy: &Strategy) -> Vec<Vec<GroupedRegion>> {
    if image.width() == 0 || image.height() == 0 {
        return Vec::new();
    }
    // With `segment_in_rgb` the segmentations are shared by every colour space.
    let rgb_graph = strategy.segment_in_rgb.then(|| {
        PixelGraph::new(
            &convert(image, ColorSpace::Rgb),
            strategy.sigma,
            strategy.connectivity,
        )
    });
    let mut runs = Vec::new();
    for &space in &strategy.color_spaces {
        let planar: Planar = convert(image, space);
        let maps = FeatureMaps::new(&planar, strategy.texture);
        let own_graph;
        let graph = match &rgb_graph {
            Some(g) => g,
            None => {
                own_graph = PixelGraph::new(&planar, strategy.sigma, strategy.connectivity);
                &own_graph
            }
        };
        for &k in &strategy.ks {
            let seg = graph.segment(SegmentParams {
                k,
                min_size: strategy.min_size,
            });
            let features = RegionFeatures::compute(
                &seg,
                &maps,
                strategy.needs_color(),
                strategy.needs_texture(),
            );
            for &sims in &strategy.similarities {
                runs.push(hierarchical_grouping(&features, sims));
            }
        }
    }
    runs
}

fn rank_and_dedup(runs: Vec<Vec<GroupedRegion>>, ranking: Ranking, seed: u64) -> Vec<PixelBox> {
    let ordered: Vec<PixelBox> = match ranking {
        Ranking::MergeOrder => runs.into_iter().flatten().map(|r| r.bbox).collect(),
        Ranking::RandomisedLevel => {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut ranked: Vec<(f64, PixelBox)> = runs
                .into_iter()
                .flatten()
                .map(|r| (rng.random::<f64>() * f64::from(r.level), r.bbox))
                .collect();
            // Stable: equal ranks keep production order.
            ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
            ranked.into_iter().map(|(_, b)| b).collect()
        }
    };
    let mut seen = HashSet::with_capacity(ordered.len());
    ordered.into_iter().filter(|b| seen.insert(*b)).collect()
}

/// Stable partition of a ranked list: boxes with IoU below `threshold` against every earlier
/// kept box, then the others in their ranked order. Same boxes, new order.
fn demote_near_duplicates(ranked: Vec<PixelBox>, threshold: f32) -> Vec<PixelBox> {
    let threshold = f64::from(threshold);
    let mut kept: Vec<PixelBox> = Vec::with_capacity(ranked.len());
    let mut demoted = Vec::new();
    for b in ranked {
        if kept.iter().any(|k| pixel_iou(*k, b) >= threshold) {
            demoted.push(b);
        } else {
            kept.push(b);
        }
    }
    kept.extend(demoted);
    kept
}

/// IoU of two inclusive pixel boxes.
fn pixel_iou(a: PixelBox, b: PixelBox) -> f64 {
    let side = |lo: u32, hi: u32| if hi >= lo { u64::from(hi - lo + 1) } else { 0 };
    let inter = side(a.x0.max(b.x0), a.x1.min(b.x1)) * side(a.y0.max(b.y0), a.y1.min(b.y1));
    inter as f64 / (a.area() + b.area() - inter) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// Flat rectangles (x, y, w, h, colour) on a flat grey background.
    fn scene() -> (RgbImage, Vec<[f32; 4]>) {
        let rects: [(u32, u32, u32, u32, [u8; 3]); 3] = [
            (20, 15, 60, 40, [220, 30, 30]),
            (110, 30, 30, 70, [30, 200, 40]),
            (40, 90, 50, 50, [30, 40, 210]),
        ];
        let mut img = RgbImage::from_pixel(180, 160, Rgb([128, 128, 128]));
        for &(x, y, w, h, c) in &rects {
            for yy in y..y + h {
                for xx in x..x + w {
                    img.put_pixel(xx, yy, Rgb(c));
                }
            }
        }
        let boxes = rects
            .iter()
            .map(|&(x, y, w, h, _)| [x as f32, y as f32, w as f32, h as f32])
            .collect();
        (img, boxes)
    }

    #[test]
    fn flat_rectangles_come_back_as_exact_boxes() {
        let (img, expected) = scene();
        for strategy in [Strategy::aligndet(), Strategy::fast(), Strategy::quality()] {
            let boxes = propose(&img, &strategy, 7);
            for e in &expected {
                assert!(
                    boxes.contains(e),
                    "{}: {e:?} missing from {boxes:?}",
                    strategy.name
                );
            }
            // The whole image is the last merge of every run.
            assert!(
                boxes.contains(&[0.0, 0.0, 180.0, 160.0]),
                "{}",
                strategy.name
            );
        }
    }

    #[test]
    fn aligndet_lists_initial_segments_then_merges() {
        let (img, expected) = scene();
        let runs = grouping_runs(&img, &Strategy::aligndet());
        assert_eq!(runs.len(), 1);
        let run = &runs[0];
        let initial = run.iter().take_while(|r| r.level == 1).count();
        // One connected image: n initial segments need n - 1 merges, all after the segments.
        assert_eq!(run.len(), 2 * initial - 1);
        assert!(run[initial..].iter().all(|r| r.level > 1));
        let initial_boxes: Vec<[f32; 4]> = run[..initial].iter().map(|r| r.bbox.xywh()).collect();
        for e in &expected {
            assert!(initial_boxes.contains(e), "{e:?} is not an initial segment");
        }
        assert_eq!(
            run.last().map(|r| r.bbox.xywh()),
            Some([0.0, 0.0, 180.0, 160.0])
        );
        // propose() keeps that order and drops repeated boxes.
        let boxes = propose(&img, &Strategy::aligndet(), 0);
        let mut expected_order: Vec<[f32; 4]> = Vec::new();
        for r in run {
            if !expected_order.contains(&r.bbox.xywh()) {
                expected_order.push(r.bbox.xywh());
            }
        }
        assert_eq!(boxes, expected_order);
    }

    #[test]
    fn deterministic_for_a_seed() {
        let (img, _) = scene();
        let noisy = add_noise(&img, 3);
        for strategy in [Strategy::fast(), Strategy::aligndet()] {
            let a = propose(&noisy, &strategy, 42);
            let b = propose(&noisy, &strategy, 42);
            assert_eq!(a, b, "{}", strategy.name);
            let mut c = propose(&noisy, &strategy, 43);
            let mut a_sorted = a.clone();
            let key = |v: &[f32; 4]| v.map(|x| x as u32);
            c.sort_by_key(key);
            a_sorted.sort_by_key(key);
            assert_eq!(a_sorted, c, "another seed only reorders");
        }
    }

    fn add_noise(img: &RgbImage, seed: u64) -> RgbImage {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = img.clone();
        for p in out.pixels_mut() {
            for c in p.0.iter_mut() {
                *c = (i32::from(*c) + rng.random_range(-20..=20)).clamp(0, 255) as u8;
            }
        }
        out
    }

    #[test]
    fn strategy_names_and_serde() {
        assert_eq!(
            Strategy::by_name("fast").map(|s| s.ks).ok(),
            Some(vec![150.0, 300.0, 450.0])
        );
        assert!(matches!(
            "nope".parse::<Strategy>(),
            Err(StrategyError::Unknown(_))
        ));
        let json = serde_json::to_string(&Strategy::quality()).unwrap_or_default();
        let back: Strategy = serde_json::from_str(&json).unwrap_or_else(|_| Strategy::fast());
        assert_eq!(back, Strategy::quality());
    }

    #[test]
    fn strategy_files_without_new_fields_keep_old_behaviour() {
        // A strategy file written before `connectivity` and `near_duplicate_iou` existed.
        let mut value = serde_json::to_value(Strategy::quality()).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.remove("connectivity");
            map.remove("near_duplicate_iou");
        }
        let back: Strategy = serde_json::from_value(value).unwrap_or_else(|_| Strategy::fast());
        assert_eq!(back.connectivity, Connectivity::Eight);
        assert_eq!(back.near_duplicate_iou, None);
        assert_eq!(back, Strategy::quality());
    }

    fn bx(x0: u32, y0: u32, x1: u32, y1: u32) -> PixelBox {
        PixelBox { x0, y0, x1, y1 }
    }

    #[test]
    fn pixel_iou_counts_inclusive_pixels() {
        assert_eq!(pixel_iou(bx(0, 0, 9, 9), bx(0, 0, 9, 9)), 1.0);
        // 10x10 and 10x5 sharing 50 pixels: 50 / 100.
        assert_eq!(pixel_iou(bx(0, 0, 9, 9), bx(0, 5, 9, 9)), 0.5);
        assert_eq!(pixel_iou(bx(0, 0, 4, 4), bx(5, 5, 9, 9)), 0.0);
    }

    #[test]
    fn near_duplicates_move_behind_distinct_boxes() {
        let a = bx(0, 0, 99, 99);
        let a_shifted = bx(2, 0, 101, 99); // IoU 0.96 with a
        let b = bx(200, 200, 239, 239);
        let a_half = bx(0, 0, 99, 49); // IoU 0.5 with a
        let c = bx(0, 0, 29, 29); // IoU 0.09 with a
        let ranked = vec![a, a_shifted, b, a_half, c];
        assert_eq!(
            demote_near_duplicates(ranked.clone(), 0.5),
            vec![a, b, c, a_shifted, a_half]
        );
        // A stricter threshold only demotes the close copy.
        assert_eq!(
            demote_near_duplicates(ranked.clone(), 0.9),
            vec![a, b, a_half, c, a_shifted]
        );
        assert!(demote_near_duplicates(Vec::new(), 0.5).is_empty());
    }

    #[test]
    fn fast_demotes_but_keeps_every_box() {
        let (img, _) = scene();
        let noisy = add_noise(&img, 5);
        let mut plain = Strategy::fast();
        plain.near_duplicate_iou = None;
        let demoted = propose(&noisy, &Strategy::fast(), 3);
        let undemoted = propose(&noisy, &plain, 3);
        assert_ne!(demoted, undemoted, "the scene has near-duplicates to move");
        let key = |v: &[f32; 4]| v.map(|x| x as u32);
        let (mut d, mut u) = (demoted.clone(), undemoted.clone());
        d.sort_by_key(key);
        u.sort_by_key(key);
        assert_eq!(d, u);
    }

    #[test]
    fn empty_image_gives_no_boxes() {
        assert!(propose(&RgbImage::new(0, 0), &Strategy::fast(), 0).is_empty());
    }
}
