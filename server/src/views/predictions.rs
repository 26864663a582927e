//! The predictions browser's model: which predictions are shown (score threshold, top k per
//! image), what each is at the chosen IoU ([`crate::matching`]), the split's honest counts,
//! the image order (by id or by errors) and where each label goes ([`super::labels`]).
//! Pure: the route loads `predictions.json`, the split and its ground truth.

use super::labels::{self, Placed, Rect};
use super::mask_paths::{annotation_mask, image_mask};
use crate::db::datasets::{BoxRow, ImageRow};
use crate::matching::{self, Counts, ImageMatch, PredictionOutcome, TruthOutcome};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// The view the page opens at: a readable handful of boxes per image.
pub const DEFAULT_TOP: usize = 10;
pub const DEFAULT_THRESHOLD: f64 = 0.3;
pub const DEFAULT_IOU: f64 = 0.5;
/// Most predictions one image may show.
pub const MAX_TOP: usize = 300;

/// One entry of a COCO results file.
#[derive(Debug, Clone, Deserialize)]
pub struct Prediction {
    pub image_id: i64,
    pub category_id: i64,
    pub bbox: [f64; 4],
    pub score: f64,
    /// The predicted mask (compressed RLE from Mask R-CNN), when the detector has one.
    #[serde(default)]
    pub segmentation: Option<Value>,
}

/// How images are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Id,
    /// Most false positives + misses first.
    Errors,
}

impl Sort {
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Id => "id",
            Sort::Errors => "errors",
        }
    }
}

/// The browser's view, from the URL (validated by the route).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    pub threshold: f64,
    pub top: usize,
    pub iou: f64,
    pub sort: Sort,
}

impl View {
    /// The query string of this view (the page number is added by the pager).
    pub fn query(&self) -> String {
        format!(
            "threshold={}&top={}&iou={}&sort={}",
            self.threshold,
            self.top,
            self.iou,
            self.sort.as_str()
        )
    }
}

/// Reads the view's parameters; the error names the one that does not fit.
pub fn parse_view(
    threshold: Option<f64>,
    top: Option<usize>,
    iou: Option<f64>,
    sort: Option<&str>,
) -> Result<View, String> {
    let threshold = threshold.unwrap_or(DEFAULT_THRESHOLD);
    if !(0.0..=1.0).contains(&threshold) {
        return Err(format!(
            "threshold={threshold} does not fit: the score threshold is from 0 to 1"
        ));
    }
    let top = top.unwrap_or(DEFAULT_TOP);
    if !(1..=MAX_TOP).contains(&top) {
        return Err(format!(
            "top={top} does not fit: show from 1 to {MAX_TOP} predictions per image"
        ));
    }
    let iou = iou.unwrap_or(DEFAULT_IOU);
    if !(iou > 0.0 && iou <= 1.0) {
        return Err(format!(
            "iou={iou} does not fit: the IoU threshold is above 0 and at most 1"
        ));
    }
    let sort = match sort.map(str::trim) {
        None | Some("") | Some("id") => Sort::Id,
        Some("errors") => Sort::Errors,
        Some(other) => {
            return Err(format!(
                "sort={other} does not fit: sort by id or by errors"
            ));
        }
    };
    Ok(View {
        threshold,
        top,
        iou,
        sort,
    })
}

/// One image's shown predictions (best first), its ground truth and their matching.
pub struct Matched {
    pub predictions: Vec<Prediction>,
    pub truths: Vec<BoxRow>,
    pub result: ImageMatch,
}

impl Matched {
    fn inputs(&self) -> (Vec<matching::Truth>, Vec<matching::Predicted>) {
        let truths = self
            .truths
            .iter()
            .map(|b| matching::Truth {
                category: b.category_id,
                bbox: [b.x, b.y, b.w, b.h],
                crowd: b.iscrowd,
            })
            .collect();
        let preds = self
            .predictions
            .iter()
            .map(|p| matching::Predicted {
                category: p.category_id,
                bbox: p.bbox,
                score: p.score,
            })
            .collect();
        (truths, preds)
    }
}

/// Per-class counts of the split.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassCounts {
    /// Predictions shown (after threshold and top k).
    pub shown: usize,
    /// Ground-truth boxes, crowd regions left out.
    pub truths: usize,
    pub counts: Counts,
}

/// The split matched under one view.
pub struct SplitMatch {
    pub images: BTreeMap<i64, Matched>,
    /// Predictions in the file on the split's images, before threshold and top k.
    pub total_predictions: usize,
    pub shown: usize,
    pub truths: usize,
    pub crowd: usize,
    pub counts: Counts,
    pub per_class: BTreeMap<i64, ClassCounts>,
}

/// The predictions an image shows: score ≥ threshold, the `top` best (ties in file order).
fn shown(mut preds: Vec<Prediction>, view: &View) -> Vec<Prediction> {
    preds.retain(|p| p.score >= view.threshold);
    preds.sort_by(|a, b| b.score.total_cmp(&a.score));
    preds.truncate(view.top);
    preds
}

/// Matches every image of the split (`ids`) under `view`.
pub fn match_split(
    ids: &[i64],
    mut predictions: HashMap<i64, Vec<Prediction>>,
    mut truths: HashMap<i64, Vec<BoxRow>>,
    view: &View,
) -> SplitMatch {
    let mut out = SplitMatch {
        images: BTreeMap::new(),
        total_predictions: 0,
        shown: 0,
        truths: 0,
        crowd: 0,
        counts: Counts::default(),
        per_class: BTreeMap::new(),
    };
    for &id in ids {
        let all = predictions.remove(&id).unwrap_or_default();
        out.total_predictions += all.len();
        let mut m = Matched {
            predictions: shown(all, view),
            truths: truths.remove(&id).unwrap_or_default(),
            result: ImageMatch {
                predictions: Vec::new(),
                truths: Vec::new(),
            },
        };
        let (t, p) = m.inputs();
        m.result = matching::match_image(&t, &p, view.iou);
        out.shown += p.len();
        out.crowd += t.iter().filter(|t| t.crowd).count();
        out.truths += t.iter().filter(|t| !t.crowd).count();
        out.counts.add(m.result.counts());
        for (cat, c) in m.result.counts_by_category(&t, &p) {
            out.per_class.entry(cat).or_default().counts.add(c);
        }
        for x in &p {
            out.per_class.entry(x.category).or_default().shown += 1;
        }
        for x in t.iter().filter(|t| !t.crowd) {
            out.per_class.entry(x.category).or_default().truths += 1;
        }
        out.images.insert(id, m);
    }
    out
}

/// The split's image ids in the view's order: by id, or most errors first (then by id).
pub fn ordered(split: &SplitMatch, sort: Sort) -> Vec<i64> {
    let mut ids: Vec<i64> = split.images.keys().copied().collect();
    if sort == Sort::Errors {
        ids.sort_by_key(|id| std::cmp::Reverse(split.images[id].result.counts().errors()));
    }
    ids
}

/// A box as drawn: where, what it is, its hover text and its label (if one fits).
pub struct DrawnBox {
    pub category_id: i64,
    /// `tp`, `fp`, `ignored` for predictions; `matched`, `missed`, `crowd` for ground truth.
    pub outcome: &'static str,
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub title: String,
    pub label: String,
    pub label_at: Option<Placed>,
    /// The mask as an SVG path in image pixels, drawn under the box.
    pub mask: Option<String>,
}

impl DrawnBox {
    /// A box at `[x, y, w, h]` with its hover text and label, the label not placed yet.
    fn new(
        category_id: i64,
        outcome: &'static str,
        [x, y, w, h]: [f64; 4],
        [title, label]: [String; 2],
        mask: Option<String>,
    ) -> DrawnBox {
        DrawnBox {
            category_id,
            outcome,
            x,
            y,
            w,
            h,
            title,
            label,
            label_at: None,
            mask,
        }
    }
}

pub struct DrawnImage {
    pub dataset_id: i64,
    pub image: ImageRow,
    /// Lowest score first, so the most confident boxes are drawn on top.
    pub predictions: Vec<DrawnBox>,
    pub gt: Vec<DrawnBox>,
    pub counts: Counts,
    /// Label size in image pixels (the overlay scales with the image).
    pub font: f64,
}

/// One image's boxes with labels placed: predictions by score, then the misses; masks from
/// the predictions and from `gt_masks` (segmentations by annotation id).
pub fn draw(
    dataset_id: i64,
    image: ImageRow,
    m: &Matched,
    gt_masks: &HashMap<i64, Value>,
    name_of: &dyn Fn(i64) -> String,
) -> DrawnImage {
    let font = (image.width.max(image.height) as f64 / 36.0).max(4.0);
    let mut preds: Vec<DrawnBox> = m
        .predictions
        .iter()
        .zip(&m.result.predictions)
        .map(|(p, o)| {
            let name = name_of(p.category_id);
            let what = match o {
                PredictionOutcome::TruePositive { iou, .. } => {
                    format!("true positive (IoU {iou:.2})")
                }
                PredictionOutcome::FalsePositive => "false positive".to_string(),
                PredictionOutcome::Ignored { .. } => "on a crowd region".to_string(),
            };
            let outcome = o.name();
            let title = format!("{name} {:.3}: {what}", p.score);
            let label = format!("{} {name} {:.2}", outcome.to_uppercase(), p.score);
            let mask = p.segmentation.as_ref().and_then(|s| image_mask(s, &image));
            DrawnBox::new(p.category_id, outcome, p.bbox, [title, label], mask)
        })
        .collect();
    let mut gt: Vec<DrawnBox> = m
        .truths
        .iter()
        .zip(&m.result.truths)
        .map(|(b, o)| {
            let name = name_of(b.category_id);
            let what = match o {
                TruthOutcome::Matched { .. } => "found",
                TruthOutcome::Missed => "missed (false negative)",
                TruthOutcome::Crowd => "crowd region",
            };
            let outcome = o.name();
            let title = format!("ground truth {name}: {what}");
            let texts = [title, format!("FN {name}")];
            let mask = annotation_mask(gt_masks, b.id, &image);
            DrawnBox::new(b.category_id, outcome, [b.x, b.y, b.w, b.h], texts, mask)
        })
        .collect();
    place_labels(&mut preds, &mut gt, font, &image);
    // Drawn lowest score first: the best boxes end on top.
    preds.reverse();
    DrawnImage {
        dataset_id,
        counts: m.result.counts(),
        image,
        predictions: preds,
        gt,
        font,
    }
}

/// Labels for the predictions (best first), then for the misses; the rest hover only.
fn place_labels(preds: &mut [DrawnBox], gt: &mut [DrawnBox], font: f64, image: &ImageRow) {
    let rect = |b: &DrawnBox| Rect {
        x: b.x,
        y: b.y,
        w: b.w,
        h: b.h,
    };
    let misses: Vec<usize> = (0..gt.len())
        .filter(|&i| gt[i].outcome == TruthOutcome::Missed.name())
        .collect();
    let mut items: Vec<(Rect, usize)> = preds
        .iter()
        .map(|b| (rect(b), b.label.chars().count()))
        .collect();
    items.extend(
        misses
            .iter()
            .map(|&i| (rect(&gt[i]), gt[i].label.chars().count())),
    );
    let size = (image.width as f64, image.height as f64);
    let mut placed = labels::place(&items, font, size).into_iter();
    for b in preds.iter_mut() {
        b.label_at = placed.next().flatten();
    }
    for i in misses {
        gt[i].label_at = placed.next().flatten();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(image_id: i64, cat: i64, bbox: [f64; 4], score: f64) -> Prediction {
        Prediction {
            image_id,
            category_id: cat,
            bbox,
            score,
            segmentation: None,
        }
    }

    fn truth(id: i64, image_id: i64, cat: i64, bbox: [f64; 4]) -> BoxRow {
        BoxRow {
            id,
            image_id,
            category_id: cat,
            x: bbox[0],
            y: bbox[1],
            w: bbox[2],
            h: bbox[3],
            iscrowd: false,
        }
    }

    #[test]
    fn the_view_is_read_or_refused_by_name() {
        let v = parse_view(None, None, None, None).unwrap();
        assert_eq!(
            (v.top, v.threshold, v.iou, v.sort),
            (10, 0.3, 0.5, Sort::Id)
        );
        assert_eq!(v.query(), "threshold=0.3&top=10&iou=0.5&sort=id");
        assert!(
            parse_view(Some(1.5), None, None, None)
                .unwrap_err()
                .contains("threshold=1.5")
        );
        assert!(
            parse_view(None, Some(0), None, None)
                .unwrap_err()
                .contains("top=0")
        );
        assert!(
            parse_view(None, None, Some(0.0), None)
                .unwrap_err()
                .contains("iou=0")
        );
        assert!(
            parse_view(None, None, None, Some("size"))
                .unwrap_err()
                .contains("sort=size")
        );
        let e = parse_view(None, None, None, Some("errors")).unwrap();
        assert_eq!(e.sort, Sort::Errors);
    }

    #[test]
    fn only_the_top_predictions_above_the_threshold_are_matched_and_counted() {
        let view = parse_view(Some(0.2), Some(2), None, Some("errors")).unwrap();
        let box_a = [0.0, 0.0, 10.0, 10.0];
        let predictions = HashMap::from([
            (
                1,
                vec![
                    pred(1, 1, box_a, 0.9),
                    pred(1, 1, [50.0, 50.0, 5.0, 5.0], 0.8),
                    pred(1, 1, [70.0, 70.0, 5.0, 5.0], 0.7), // beyond top 2
                    pred(1, 2, box_a, 0.1),                  // below the threshold
                ],
            ),
            (2, vec![pred(2, 1, box_a, 0.95)]),
        ]);
        let truths = HashMap::from([
            (1, vec![truth(1, 1, 1, box_a)]),
            (2, vec![truth(2, 2, 1, box_a)]),
            (3, vec![truth(3, 3, 2, box_a)]),
        ]);
        let split = match_split(&[1, 2, 3], predictions, truths, &view);
        assert_eq!(split.total_predictions, 5);
        assert_eq!(split.shown, 3);
        assert_eq!(split.truths, 3);
        assert_eq!(
            split.counts,
            Counts {
                tp: 2,
                fp: 1,
                fn_: 1
            }
        );
        assert_eq!(split.per_class[&1].shown, 3);
        assert_eq!(
            split.per_class[&2].counts,
            Counts {
                tp: 0,
                fp: 0,
                fn_: 1
            }
        );
        // Images 1 and 3 have one error each, image 2 none: it goes last.
        assert_eq!(ordered(&split, Sort::Errors), [1, 3, 2]);
        assert_eq!(ordered(&split, Sort::Id), [1, 2, 3]);
    }

    #[test]
    fn drawn_boxes_carry_their_outcome_and_non_overlapping_labels() {
        let view = parse_view(None, None, None, None).unwrap();
        let b = [20.0, 20.0, 40.0, 40.0];
        let predictions = HashMap::from([(
            1,
            vec![pred(1, 1, b, 0.9), pred(1, 1, b, 0.8), pred(1, 1, b, 0.7)],
        )]);
        let truths = HashMap::from([(
            1,
            vec![
                truth(1, 1, 1, b),
                truth(2, 1, 1, [100.0, 100.0, 20.0, 20.0]),
            ],
        )]);
        let split = match_split(&[1], predictions, truths, &view);
        let image = ImageRow {
            id: 1,
            file_name: "a.png".into(),
            width: 200,
            height: 200,
        };
        let d = draw(1, image, &split.images[&1], &HashMap::new(), &|c| {
            format!("c{c}")
        });
        let outcomes: Vec<&str> = d.predictions.iter().map(|p| p.outcome).collect();
        assert_eq!(outcomes, ["fp", "fp", "tp"], "lowest score drawn first");
        assert_eq!(d.predictions[2].label, "TP c1 0.90");
        assert_eq!(d.gt[1].outcome, "missed");
        assert!(d.gt[1].label_at.is_some());
        assert_eq!(
            d.counts,
            Counts {
                tp: 1,
                fp: 2,
                fn_: 1
            }
        );
        let rects: Vec<Rect> = d
            .predictions
            .iter()
            .chain(&d.gt)
            .filter_map(|b| b.label_at.map(|p| p.rect))
            .collect();
        for (i, a) in rects.iter().enumerate() {
            for c in &rects[i + 1..] {
                let apart =
                    a.x + a.w <= c.x || c.x + c.w <= a.x || a.y + a.h <= c.y || c.y + c.h <= a.y;
                assert!(apart, "{a:?} {c:?}");
            }
        }
    }
}
