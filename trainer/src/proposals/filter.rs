//! The AlignDet/SoCo proposal filter (`ratio3size0008`) with SoCo's fall-backs for images left
//! without boxes, plus optional NMS and top-k. Every removed box is reported with the rule that
//! removed it, so the UI can show what the filter took away.

use serde::{Deserialize, Serialize};

use super::recall::iou;

/// Filter thresholds; defaults are AlignDet's (method doc 2.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilterConfig {
    pub min_width: f32,
    pub min_height: f32,
    /// Keep `1/r <= w/h <= r`.
    pub max_aspect_ratio: f32,
    /// Keep `min <= sqrt(w*h)/sqrt(W*H) <= max`.
    pub min_relative_size: f32,
    pub max_relative_size: f32,
    /// Fall back to ratio-only, then to min-side-only, when an image would have no box.
    pub fallback: bool,
    /// Greedy NMS at this IoU after the rules (AlignDet A1 suggests 0.5); `None` = off.
    pub nms_iou: Option<f32>,
    pub nms_order: NmsOrder,
    /// Keep only the first k surviving boxes.
    pub top_k: Option<usize>,
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self {
            min_width: 32.0,
            min_height: 32.0,
            max_aspect_ratio: 3.0,
            min_relative_size: 0.0,
            max_relative_size: 0.8,
            fallback: true,
            nms_iou: None,
            nms_order: NmsOrder::AreaDescending,
            top_k: None,
        }
    }
}

/// Which box wins when NMS compares two overlapping boxes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NmsOrder {
    /// Larger boxes first (the method doc's A1 recommendation).
    AreaDescending,
    /// Earlier boxes first (the proposal ranking).
    InputOrder,
}

/// The rule that removed a box.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterRule {
    /// w < min_width or h < min_height.
    MinSide,
    /// w/h outside [1/r, r].
    AspectRatio,
    /// sqrt(w*h)/sqrt(W*H) outside [min, max].
    RelativeSize,
    Nms,
    TopK,
}

/// The rule set whose result was kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterStage {
    /// Min side + aspect ratio + relative size.
    Full,
    /// Fall-back 1: min side + aspect ratio.
    RatioOnly,
    /// Fall-back 2: min side only.
    MinSideOnly,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemovedBox {
    /// Index in the input list.
    pub index: usize,
    pub bbox: [f32; 4],
    pub rule: FilterRule,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FilterOutcome {
    /// Surviving boxes in input order.
    pub kept: Vec<[f32; 4]>,
    pub kept_indices: Vec<usize>,
    /// Removed boxes in input order.
    pub removed: Vec<RemovedBox>,
    pub stage: FilterStage,
}

impl FilterOutcome {
    pub fn removed_by(&self, rule: FilterRule) -> usize {
        self.removed.iter().filter(|r| r.rule == rule).count()
    }
}

/// Filters `[x, y, w, h]` boxes of an `img_w` x `img_h` image.
pub fn filter_boxes(
    boxes: &[[f32; 4]],
    img_w: u32,
    img_h: u32,
    config: &FilterConfig,
) -> FilterOutcome {
    let stages: &[FilterStage] = if config.fallback {
        &[
            FilterStage::Full,
            FilterStage::RatioOnly,
            FilterStage::MinSideOnly,
        ]
    } else {
        &[FilterStage::Full]
    };
    let image_side = (f64::from(img_w) * f64::from(img_h)).sqrt() as f32;
    let mut verdicts = Vec::new();
    let mut stage = FilterStage::Full;
    for &s in stages {
        stage = s;
        verdicts = boxes
            .iter()
            .map(|b| failed_rule(b, s, image_side, config))
            .collect::<Vec<_>>();
        if verdicts.iter().any(Option::is_none) {
            break;
        }
    }
    let mut survivors: Vec<usize> = (0..boxes.len())
        .filter(|&i| verdicts[i].is_none())
        .collect();

    if let Some(threshold) = config.nms_iou {
        let suppressed = nms(boxes, &survivors, threshold, config.nms_order);
        for &i in &suppressed {
            verdicts[i] = Some(FilterRule::Nms);
        }
        survivors.retain(|i| verdicts[*i].is_none());
    }
    if let Some(k) = config.top_k {
        for &i in survivors.iter().skip(k) {
            verdicts[i] = Some(FilterRule::TopK);
        }
        survivors.truncate(k);
    }
    let removed = verdicts
        .iter()
        .enumerate()
        .filter_map(|(index, v)| {
            v.map(|rule| RemovedBox {
                index,
                bbox: boxes[index],
                rule,
            })
        })
        .collect();
    FilterOutcome {
        kept: survivors.iter().map(|&i| boxes[i]).collect(),
        kept_indices: survivors,
        removed,
        stage,
    }
}

/// The first rule of `stage` that `b` breaks, if any.
fn failed_rule(
    b: &[f32; 4],
    stage: FilterStage,
    image_side: f32,
    c: &FilterConfig,
) -> Option<FilterRule> {
    let [_, _, w, h] = *b;
    if w < c.min_width || h < c.min_height {
        return Some(FilterRule::MinSide);
    }
    if stage == FilterStage::MinSideOnly {
        return None;
    }
    let ratio = w / h;
    if !(ratio >= 1.0 / c.max_aspect_ratio && ratio <= c.max_aspect_ratio) {
        return Some(FilterRule::AspectRatio);
    }
    if stage == FilterStage::RatioOnly {
        return None;
    }
    let relative = (w * h).sqrt() / image_side;
    if !(relative >= c.min_relative_size && relative <= c.max_relative_size) {
        return Some(FilterRule::RelativeSize);
    }
    None
}

/// Greedy NMS over `candidates` (indices into `boxes`); returns the suppressed indices.
fn nms(boxes: &[[f32; 4]], candidates: &[usize], threshold: f32, order: NmsOrder) -> Vec<usize> {
    let mut order_idx = candidates.to_vec();
    if order == NmsOrder::AreaDescending {
        // Stable, so equal areas keep input order.
        order_idx.sort_by(|&a, &b| {
            let area = |i: usize| boxes[i][2] * boxes[i][3];
            area(b).total_cmp(&area(a))
        });
    }
    let mut winners: Vec<usize> = Vec::new();
    let mut suppressed = Vec::new();
    for i in order_idx {
        if winners
            .iter()
            .any(|&w| iou(&boxes[w], &boxes[i]) > threshold)
        {
            suppressed.push(i);
        } else {
            winners.push(i);
        }
    }
    suppressed
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u32 = 400;
    const H: u32 = 300;

    fn run(boxes: &[[f32; 4]]) -> FilterOutcome {
        filter_boxes(boxes, W, H, &FilterConfig::default())
    }

    #[test]
    fn min_side_rule() {
        let out = run(&[
            [0.0, 0.0, 31.0, 50.0],
            [0.0, 0.0, 50.0, 31.0],
            [0.0, 0.0, 32.0, 32.0],
        ]);
        assert_eq!(out.kept_indices, vec![2]);
        assert_eq!(out.removed_by(FilterRule::MinSide), 2);
        assert_eq!(out.stage, FilterStage::Full);
    }

    #[test]
    fn aspect_ratio_rule() {
        let out = run(&[
            [0.0, 0.0, 40.0, 121.0],
            [0.0, 0.0, 40.0, 120.0],
            [0.0, 0.0, 150.0, 49.0],
        ]);
        assert_eq!(out.kept_indices, vec![1]);
        assert_eq!(out.removed_by(FilterRule::AspectRatio), 2);
    }

    #[test]
    fn relative_size_rule() {
        // sqrt(400*300) * 0.8 = 277.1
        let out = run(&[
            [0.0, 0.0, 300.0, 270.0],
            [0.0, 0.0, 277.0, 277.0],
            [5.0, 5.0, 100.0, 100.0],
        ]);
        assert_eq!(out.kept_indices, vec![1, 2]);
        assert_eq!(
            out.removed,
            vec![RemovedBox {
                index: 0,
                bbox: [0.0, 0.0, 300.0, 270.0],
                rule: FilterRule::RelativeSize
            }]
        );
        let cfg = FilterConfig {
            min_relative_size: 0.3,
            ..FilterConfig::default()
        };
        let out = filter_boxes(
            &[[5.0, 5.0, 100.0, 100.0], [0.0, 0.0, 200.0, 200.0]],
            W,
            H,
            &cfg,
        );
        assert_eq!(out.kept_indices, vec![1]);
        assert_eq!(out.removed_by(FilterRule::RelativeSize), 1);
    }

    #[test]
    fn falls_back_to_ratio_only() {
        // Only the too-large box passes ratio; nothing passes the full filter.
        let out = run(&[
            [0.0, 0.0, 390.0, 290.0],
            [0.0, 0.0, 200.0, 40.0],
            [0.0, 0.0, 10.0, 10.0],
        ]);
        assert_eq!(out.stage, FilterStage::RatioOnly);
        assert_eq!(out.kept_indices, vec![0]);
        assert_eq!(out.removed_by(FilterRule::AspectRatio), 1);
        assert_eq!(out.removed_by(FilterRule::MinSide), 1);
    }

    #[test]
    fn falls_back_to_min_side_only() {
        let out = run(&[[0.0, 0.0, 200.0, 40.0], [0.0, 0.0, 10.0, 10.0]]);
        assert_eq!(out.stage, FilterStage::MinSideOnly);
        assert_eq!(out.kept_indices, vec![0]);
        assert_eq!(out.removed_by(FilterRule::MinSide), 1);
    }

    #[test]
    fn nothing_left_and_no_fallback() {
        let out = run(&[[0.0, 0.0, 10.0, 10.0]]);
        assert!(out.kept.is_empty());
        assert_eq!(out.stage, FilterStage::MinSideOnly);
        let cfg = FilterConfig {
            fallback: false,
            ..FilterConfig::default()
        };
        let out = filter_boxes(&[[0.0, 0.0, 200.0, 40.0]], W, H, &cfg);
        assert!(out.kept.is_empty());
        assert_eq!(out.stage, FilterStage::Full);
        assert_eq!(out.removed_by(FilterRule::AspectRatio), 1);
        assert!(run(&[]).kept.is_empty());
    }

    #[test]
    fn nms_prefers_larger_boxes_and_keeps_input_order() {
        let boxes = [
            [10.0, 10.0, 50.0, 50.0],
            [10.0, 10.0, 52.0, 52.0],
            [200.0, 100.0, 60.0, 60.0],
        ];
        let cfg = FilterConfig {
            nms_iou: Some(0.5),
            ..FilterConfig::default()
        };
        let out = filter_boxes(&boxes, W, H, &cfg);
        assert_eq!(out.kept_indices, vec![1, 2]);
        assert_eq!(out.removed_by(FilterRule::Nms), 1);
        let cfg = FilterConfig {
            nms_order: NmsOrder::InputOrder,
            ..cfg
        };
        assert_eq!(filter_boxes(&boxes, W, H, &cfg).kept_indices, vec![0, 2]);
    }

    #[test]
    fn top_k_keeps_the_first_boxes() {
        let boxes: Vec<[f32; 4]> = (0..5).map(|i| [i as f32 * 60.0, 0.0, 50.0, 50.0]).collect();
        let cfg = FilterConfig {
            top_k: Some(2),
            ..FilterConfig::default()
        };
        let out = filter_boxes(&boxes, W, H, &cfg);
        assert_eq!(out.kept_indices, vec![0, 1]);
        assert_eq!(out.removed_by(FilterRule::TopK), 3);
    }

    #[test]
    fn config_serde_defaults() {
        let cfg: FilterConfig = serde_json::from_str(r#"{"nms_iou": 0.5}"#).unwrap_or_default();
        assert_eq!(cfg.nms_iou, Some(0.5));
        assert_eq!(cfg.min_width, 32.0);
        assert_eq!(cfg.max_relative_size, 0.8);
    }
}
