//! `aligndet-server match-detections` (hidden): the matching of [`super`] over a COCO-style
//! JSON on stdin, for `scripts/match_parity.py` to set against pycocotools.
//!
//! Input: `{"iou": 0.5, "annotations": [{"id", "image_id", "category_id", "bbox",
//! "iscrowd"}], "detections": [{"image_id", "category_id", "bbox", "score"}]}`.
//! Output: per image (ascending id) its TP/FP/FN counts, and per detection and per annotation
//! (input order) its outcome: `tp` / `fp` / `ignored`, `matched` / `missed` / `crowd`.

use super::{Counts, Predicted, Truth, match_image};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;

#[derive(Deserialize)]
struct Input {
    #[serde(default = "default_iou")]
    iou: f64,
    annotations: Vec<Annotation>,
    detections: Vec<Detection>,
}

fn default_iou() -> f64 {
    0.5
}

#[derive(Deserialize)]
struct Annotation {
    image_id: i64,
    category_id: i64,
    bbox: [f64; 4],
    #[serde(default)]
    iscrowd: u8,
}

#[derive(Deserialize)]
struct Detection {
    image_id: i64,
    category_id: i64,
    bbox: [f64; 4],
    score: f64,
}

impl Annotation {
    fn truth(&self) -> Truth {
        Truth {
            category: self.category_id,
            bbox: self.bbox,
            crowd: self.iscrowd != 0,
        }
    }
}

impl Detection {
    fn predicted(&self) -> Predicted {
        Predicted {
            category: self.category_id,
            bbox: self.bbox,
            score: self.score,
        }
    }
}

#[derive(Serialize, PartialEq, Debug)]
struct ImageCounts {
    image_id: i64,
    #[serde(flatten)]
    counts: Counts,
}

#[derive(Serialize, PartialEq, Debug)]
struct Output {
    images: Vec<ImageCounts>,
    detections: Vec<&'static str>,
    annotations: Vec<&'static str>,
}

/// Reads stdin, writes the outcomes to stdout.
pub fn run() -> anyhow::Result<()> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading stdin")?;
    let out = outcomes(&text)?;
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

fn outcomes(text: &str) -> anyhow::Result<Output> {
    let input: Input = serde_json::from_str(text).context("the input is not the expected JSON")?;
    if !(input.iou > 0.0 && input.iou <= 1.0) {
        bail!("iou must be above 0 and at most 1, not {}", input.iou);
    }
    // Per image: (annotation indices, detection indices) into the input lists.
    let mut by_image: BTreeMap<i64, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for (i, a) in input.annotations.iter().enumerate() {
        by_image.entry(a.image_id).or_default().0.push(i);
    }
    for (i, d) in input.detections.iter().enumerate() {
        by_image.entry(d.image_id).or_default().1.push(i);
    }
    let mut out = Output {
        images: Vec::new(),
        detections: vec![""; input.detections.len()],
        annotations: vec![""; input.annotations.len()],
    };
    for (image_id, (gts, dts)) in by_image {
        let truths: Vec<Truth> = gts.iter().map(|&i| input.annotations[i].truth()).collect();
        let preds: Vec<Predicted> = dts
            .iter()
            .map(|&i| input.detections[i].predicted())
            .collect();
        let m = match_image(&truths, &preds, input.iou);
        for (k, o) in m.predictions.iter().enumerate() {
            out.detections[dts[k]] = o.name();
        }
        for (k, o) in m.truths.iter().enumerate() {
            out.annotations[gts[k]] = o.name();
        }
        out.images.push(ImageCounts {
            image_id,
            counts: m.counts(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_input_order_and_images_are_counted() {
        let text = r#"{"iou": 0.5,
          "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 10, 10]},
                          {"id": 2, "image_id": 3, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 1}],
          "detections": [{"image_id": 7, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
                         {"image_id": 7, "category_id": 1, "bbox": [50, 0, 10, 10], "score": 0.8},
                         {"image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.7}]}"#;
        let out = outcomes(text).unwrap();
        assert_eq!(out.detections, ["tp", "fp", "ignored"]);
        assert_eq!(out.annotations, ["matched", "crowd"]);
        assert_eq!(out.images[0].image_id, 3);
        assert_eq!(
            out.images[1].counts,
            Counts {
                tp: 1,
                fp: 1,
                fn_: 0
            }
        );
    }

    #[test]
    fn bad_input_is_named() {
        let e = outcomes(r#"{"annotations": [], "detections": [{"image_id": 1}]}"#).unwrap_err();
        assert!(format!("{e:#}").contains("missing field"), "{e:#}");
        let e = outcomes(r#"{"iou": 1.5, "annotations": [], "detections": []}"#).unwrap_err();
        assert!(e.to_string().contains("iou must be"), "{e}");
    }
}
