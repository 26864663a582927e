//! Reading segmentations for segm evaluation, as pycocotools' `COCO.annToRLE` and
//! `COCO.loadRes` do.
//!
//! The bbox loader ([`crate::eval::coco::load`]) skips `segmentation` to stay fast; segm
//! evaluation reads the files a second time for the masks and image sizes only.
//!
//! Ground truth: polygons (rasterized at the image's `height` x `width`), uncompressed RLE
//! (`counts` a list) or compressed RLE (`counts` a string). Annotations on images or
//! categories outside the ground truth are not evaluated, so they are not converted.
//!
//! Results follow `loadRes`, whose branch is chosen by the *first* result:
//! - it has a non-empty `bbox`: every result's area is its box's `w * h` (even though the
//!   IoU uses the mask), and a result without `segmentation` is its box as a polygon;
//! - otherwise every result needs a `segmentation`; its area is the mask's area and its box
//!   the mask's `toBbox`. pycocotools accepts only compressed RLE here; polygons and list
//!   counts are converted as for the ground truth instead of failing.
//!
//! Deliberate differences, all on inputs pycocotools mishandles: an RLE whose `size` is not
//! its image's height/width is an error (pycocotools scores it IoU -1, never matching), as
//! are counts that do not cover the mask exactly and polygons with an odd number of values.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use super::super::load::{Detection, GroundTruth, IndexedList, ItemName, LoadError, json_error};
use super::poly;
use super::rle::Rle;
pub use aligndet_common::mask::segmentation::{need_size, to_rle};

/// Image id -> `(height, width)` where the image gives both.
pub type ImageSizes = HashMap<i64, Option<(u32, u32)>>;

#[derive(Deserialize)]
struct RawGt {
    #[serde(default)]
    images: Vec<RawImage>,
    #[serde(default)]
    annotations: Vec<RawSegmentation>,
}

#[derive(Deserialize)]
struct RawImage {
    id: i64,
    height: Option<u32>,
    width: Option<u32>,
}

#[derive(Deserialize)]
struct RawSegmentation {
    segmentation: Option<Value>,
}

impl ItemName for RawResult {
    const NAME: &'static str = "detection";
}

#[derive(Deserialize)]
struct RawResult {
    image_id: Option<i64>,
    category_id: Option<i64>,
    bbox: Option<Vec<f64>>,
    score: Option<f64>,
    segmentation: Option<Value>,
}

/// Detections of a segm results file with their masks and the areas pycocotools gives them.
#[derive(Debug)]
pub struct SegmResults {
    pub detections: Vec<Detection>,
    pub masks: Vec<Rle>,
    pub areas: Vec<f64>,
}

/// Masks of every ground-truth annotation (aligned with `gt.annotations`, which must come
/// from the same `bytes`) and the image sizes. Annotations that are not evaluated get an
/// empty mask.
pub fn ground_truth_masks(
    bytes: &[u8],
    gt: &GroundTruth,
) -> Result<(Vec<Rle>, ImageSizes), LoadError> {
    let raw: RawGt = serde_json::from_slice(bytes).map_err(|e| json_error(bytes, e))?;
    let sizes: ImageSizes = raw
        .images
        .iter()
        .map(|i| (i.id, i.height.zip(i.width)))
        .collect();
    let categories: std::collections::HashSet<i64> = gt.categories.iter().map(|c| c.id).collect();
    debug_assert_eq!(raw.annotations.len(), gt.annotations.len());
    // Rasterizing is the slow part: convert in parallel, then report the first error in
    // file order.
    let masks = raw
        .annotations
        .par_iter()
        .zip(&gt.annotations)
        .enumerate()
        .map(|(index, (raw, ann))| {
            let Some(&size) = sizes.get(&ann.image_id) else {
                return Ok(Rle::default());
            };
            if !categories.contains(&ann.category_id) {
                return Ok(Rle::default());
            }
            let segmentation = raw
                .segmentation
                .as_ref()
                .ok_or_else(|| "missing field `segmentation`".to_string());
            segmentation
                .and_then(|s| to_rle(s, ann.image_id, size))
                .map_err(|problem| LoadError::Annotation {
                    index,
                    problem: format!("(id {}) {problem}", ann.id),
                })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok((masks, sizes))
}

/// Parses a results file for segm evaluation (see the module comment for the rules).
pub fn parse_segm_results(bytes: &[u8], sizes: &ImageSizes) -> Result<SegmResults, LoadError> {
    RawSegmResults::parse(bytes)?.convert(sizes)
}

/// A results file parsed but not yet converted to masks: parsing needs no ground truth, so it
/// can run while the ground truth's masks are rasterized.
pub struct RawSegmResults(Vec<RawResult>);

impl RawSegmResults {
    pub fn parse(bytes: &[u8]) -> Result<Self, LoadError> {
        let raw = serde_json::from_slice::<IndexedList<RawResult>>(bytes)
            .map_err(|e| json_error(bytes, e))?
            .0;
        Ok(Self(raw))
    }

    /// The masks, at the ground truth's image sizes.
    pub fn convert(self, sizes: &ImageSizes) -> Result<SegmResults, LoadError> {
        convert_results(self.0, sizes)
    }
}

fn convert_results(raw: Vec<RawResult>, sizes: &ImageSizes) -> Result<SegmResults, LoadError> {
    let area_from_box = match raw.first() {
        None => false,
        Some(r) if r.bbox.as_ref().is_some_and(|b| !b.is_empty()) => true,
        Some(r) if r.segmentation.is_some() => false,
        Some(_) => {
            return Err(LoadError::Detection {
                index: 0,
                problem: "has neither `bbox` nor `segmentation`".into(),
            });
        }
    };
    let converted = raw
        .into_par_iter()
        .enumerate()
        .map(|(index, r)| {
            result(r, area_from_box, sizes)
                .map_err(|problem| LoadError::Detection { index, problem })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = SegmResults {
        detections: Vec::with_capacity(converted.len()),
        masks: Vec::with_capacity(converted.len()),
        areas: Vec::with_capacity(converted.len()),
    };
    for (det, mask, area) in converted {
        out.detections.push(det);
        out.masks.push(mask);
        out.areas.push(area);
    }
    Ok(out)
}

fn result(
    r: RawResult,
    area_from_box: bool,
    sizes: &ImageSizes,
) -> Result<(Detection, Rle, f64), String> {
    let missing = |field: &str| format!("missing field `{field}`");
    let image_id = r.image_id.ok_or_else(|| missing("image_id"))?;
    let category_id = r.category_id.ok_or_else(|| missing("category_id"))?;
    let score = r.score.ok_or_else(|| missing("score"))?;
    if !score.is_finite() {
        return Err(format!("score {score} is not finite"));
    }
    let size = *sizes
        .get(&image_id)
        .ok_or_else(|| format!("image_id {image_id} is not an image of the ground truth"))?;
    let given_box = match r.bbox.as_deref() {
        Some([x, y, w, h]) => Some([*x, *y, *w, *h]),
        Some(other) if area_from_box => {
            return Err(format!(
                "bbox has {} values, expected [x, y, w, h] (the first result has a bbox, so \
                 areas come from boxes)",
                other.len()
            ));
        }
        _ => None,
    };
    if area_from_box
        && let Some(b) = &given_box
        && (b.iter().any(|v| !v.is_finite()) || b[2] < 0.0 || b[3] < 0.0)
    {
        return Err(format!(
            "bbox {b:?} has a non-finite value or a negative size"
        ));
    }
    let (bbox, mask, area) = match (area_from_box, given_box, &r.segmentation) {
        (true, Some(b), Some(s)) => (b, to_rle(s, image_id, size)?, b[2] * b[3]),
        (true, Some(b), None) => {
            let (x1, y1, x2, y2) = (b[0], b[1], b[0] + b[2], b[1] + b[3]);
            let outline = [vec![x1, y1, x1, y2, x2, y2, x2, y1]];
            let (h, w) = need_size(image_id, size)?;
            (b, poly::from_parts(&outline, h, w), b[2] * b[3])
        }
        (true, None, _) => return Err(missing("bbox")),
        (false, _, None) => {
            return Err(
                "missing field `segmentation` (the first result has no bbox, so every \
                 result needs a mask)"
                    .into(),
            );
        }
        (false, _, Some(s)) => {
            let mask = to_rle(s, image_id, size)?;
            let area = f64::from(mask.area());
            (mask.to_bbox(), mask, area)
        }
    };
    let detection = Detection {
        image_id,
        category_id,
        bbox,
        score,
    };
    Ok((detection, mask, area))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GT: &[u8] = br#"{
        "images": [{"id": 1, "height": 4, "width": 5}, {"id": 2}],
        "categories": [{"id": 3, "name": "a"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "area": 7,
             "segmentation": {"size": [4, 5], "counts": "522000OO2"}},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "iscrowd": 1,
             "segmentation": {"size": [4, 5], "counts": [8, 12]}},
            {"id": 12, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1],
             "segmentation": [[0, 0, 3, 0, 3, 3]]},
            {"id": 13, "image_id": 9, "category_id": 3, "bbox": [0, 0, 1, 1],
             "segmentation": "not evaluated: unknown image"}
        ]}"#;

    fn gt() -> (GroundTruth, Vec<Rle>, ImageSizes) {
        let gt = GroundTruth::from_json_bytes(GT).unwrap();
        let (masks, sizes) = ground_truth_masks(GT, &gt).unwrap();
        (gt, masks, sizes)
    }

    #[test]
    fn ground_truth_forms() {
        let (_, masks, sizes) = gt();
        assert_eq!(masks[0].area(), 7);
        assert_eq!(masks[1].counts, vec![8, 12]);
        assert_eq!(masks[2].height, 4);
        assert_eq!(masks[3], Rle::default());
        assert_eq!(sizes[&2], None);
    }

    #[test]
    fn result_areas_follow_the_first_result() {
        let (_, _, sizes) = gt();
        // No bbox first: area and box from the mask, later boxes ignored.
        let dt = br#"[{"image_id": 1, "category_id": 3, "score": 0.5,
                       "segmentation": {"size": [4, 5], "counts": "522000OO2"}},
                      {"image_id": 1, "category_id": 3, "score": 0.5, "bbox": [0, 0, 1, 1],
                       "segmentation": {"size": [4, 5], "counts": [8, 12]}}]"#;
        let r = parse_segm_results(dt, &sizes).unwrap();
        assert_eq!(r.areas, vec![7.0, 12.0]);
        assert_eq!(r.detections[0].bbox, [1.0, 0.0, 4.0, 3.0]);
        // A bbox first: areas are w * h; no segmentation means the box itself.
        let dt = br#"[{"image_id": 1, "category_id": 3, "score": 0.5, "bbox": [0, 0, 2, 3],
                       "segmentation": {"size": [4, 5], "counts": "522000OO2"}},
                      {"image_id": 1, "category_id": 3, "score": 0.5, "bbox": [1, 1, 2, 2]}]"#;
        let r = parse_segm_results(dt, &sizes).unwrap();
        assert_eq!(r.areas, vec![6.0, 4.0]);
        assert_eq!(r.masks[1].area(), 4);
    }

    #[test]
    fn errors_name_the_annotation_or_result() {
        let bad_gt = br#"{"images": [{"id": 1, "height": 4, "width": 5}],
            "categories": [{"id": 3}],
            "annotations": [{"id": 77, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1],
                             "segmentation": [[0, 0, 3, 0, 3]]}]}"#;
        let truth = GroundTruth::from_json_bytes(bad_gt).unwrap();
        let err = ground_truth_masks(bad_gt, &truth).unwrap_err().to_string();
        assert!(err.contains("index 0") && err.contains("id 77") && err.contains("even"));

        let (_, _, sizes) = gt();
        let dt = br#"[{"image_id": 1, "category_id": 3, "score": 0.5,
                       "segmentation": {"size": [4, 5], "counts": "522000OO2"}},
                      {"image_id": 2, "category_id": 3, "score": 0.5,
                       "segmentation": [[0, 0, 3, 0, 3, 3]]}]"#;
        let err = parse_segm_results(dt, &sizes).unwrap_err().to_string();
        assert!(err.contains("index 1") && err.contains("height"), "{err}");
        let dt = br#"[{"image_id": 1, "category_id": 3, "score": 0.5,
                       "segmentation": {"size": [5, 4], "counts": "522000OO2"}}]"#;
        let err = parse_segm_results(dt, &sizes).unwrap_err().to_string();
        assert!(err.contains("index 0") && err.contains("differs"), "{err}");
    }
}
