//! Parsing of COCO ground truth and results (detections) JSON.
//!
//! The bulk (annotations, detections) is read into small typed structs straight from the
//! bytes; unknown fields such as `segmentation` are skipped without being built.
//! Semantics follow pycocotools' `COCO` / `COCO.loadRes`:
//! - detections keep file order (pycocotools gives them ids 1..N in that order);
//! - a detection's area is `w * h` and it is never crowd;
//! - a ground-truth `ignore` field is read but, as in pycocotools (which overwrites it with
//!   `iscrowd`), has no effect.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// A COCO box: `[x, y, width, height]`.
pub type BBox = [f64; 4];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("malformed JSON: {source}{hint}")]
    Json {
        source: serde_json::Error,
        hint: &'static str,
    },
    #[error("annotation at index {index}: {problem}")]
    Annotation { index: usize, problem: String },
    #[error("detection at index {index}: {problem}")]
    Detection { index: usize, problem: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Category {
    pub id: i64,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GtAnnotation {
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    pub bbox: BBox,
    /// The annotation's `area` field (pycocotools uses it, not the box, for area ranges);
    /// `w * h` when the field is absent.
    pub area: f64,
    pub iscrowd: bool,
}

/// A COCO ground-truth dataset reduced to what bbox evaluation needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroundTruth {
    /// Image ids in file order (duplicates allowed; evaluation uses the sorted unique set).
    pub images: Vec<i64>,
    pub categories: Vec<Category>,
    pub annotations: Vec<GtAnnotation>,
}

/// One entry of a COCO results file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    pub image_id: i64,
    pub category_id: i64,
    pub bbox: BBox,
    pub score: f64,
}

impl Detection {
    /// pycocotools' `loadRes` sets a bbox result's area to `w * h`.
    pub fn area(&self) -> f64 {
        self.bbox[2] * self.bbox[3]
    }
}

#[derive(Deserialize)]
struct RawGroundTruth<'a> {
    #[serde(default)]
    images: Vec<RawImage>,
    #[serde(default, deserialize_with = "annotation_list")]
    annotations: Vec<RawAnnotation>,
    #[serde(default, borrow)]
    categories: Vec<RawCategory<'a>>,
}

#[derive(Deserialize)]
struct RawImage {
    id: i64,
}

#[derive(Deserialize)]
struct RawCategory<'a> {
    id: i64,
    #[serde(default, borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct RawAnnotation {
    id: Option<i64>,
    image_id: Option<i64>,
    category_id: Option<i64>,
    bbox: Option<BBox>,
    area: Option<f64>,
    #[serde(default, deserialize_with = "flag")]
    iscrowd: bool,
}

#[derive(Deserialize)]
struct RawDetection {
    image_id: Option<i64>,
    category_id: Option<i64>,
    bbox: Option<BBox>,
    score: Option<f64>,
}

impl GroundTruth {
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, LoadError> {
        let raw: RawGroundTruth =
            serde_json::from_slice(bytes).map_err(|e| json_error(bytes, e))?;
        let annotations = raw
            .annotations
            .into_iter()
            .enumerate()
            .map(|(index, a)| {
                validate_annotation(a).map_err(|problem| LoadError::Annotation { index, problem })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GroundTruth {
            images: raw.images.into_iter().map(|i| i.id).collect(),
            categories: raw
                .categories
                .into_iter()
                .map(|c| Category {
                    id: c.id,
                    name: c.name.into_owned(),
                })
                .collect(),
            annotations,
        })
    }
}

/// Parses a COCO results file (a JSON array of `{image_id, category_id, bbox, score}`).
/// Image and category ids are checked against the ground truth by
/// [`crate::eval::coco::validate_detections`].
pub fn parse_detections(bytes: &[u8]) -> Result<Vec<Detection>, LoadError> {
    let raw = serde_json::from_slice::<IndexedList<RawDetection>>(bytes)
        .map_err(|e| json_error(bytes, e))?
        .0;
    raw.into_iter()
        .enumerate()
        .map(|(index, d)| {
            validate_detection(d).map_err(|problem| LoadError::Detection { index, problem })
        })
        .collect()
}

/// Adds a hint when the parser stopped at a `NaN` or `Infinity` token (which Python's
/// `json.dump` writes but JSON does not allow).
pub(super) fn json_error(bytes: &[u8], source: serde_json::Error) -> LoadError {
    let line_start = bytes
        .split(|&b| b == b'\n')
        .take(source.line().saturating_sub(1))
        .map(|line| line.len() + 1)
        .sum::<usize>();
    let at = (line_start + source.column()).saturating_sub(1);
    let near = bytes
        .get(at.saturating_sub(1)..(at + 9).min(bytes.len()))
        .unwrap_or_default();
    let is_non_finite = |token: &[u8]| near.windows(token.len()).any(|w| w == token);
    let hint = if is_non_finite(b"NaN") || is_non_finite(b"Infinity") {
        " (NaN and Infinity are not valid JSON numbers; scores and boxes must be finite)"
    } else {
        ""
    };
    LoadError::Json { source, hint }
}

fn missing(field: &str) -> String {
    format!("missing field `{field}`")
}

fn check_box(bbox: &BBox) -> Result<(), String> {
    if bbox.iter().any(|v| !v.is_finite()) {
        return Err(format!("bbox {bbox:?} has a non-finite value"));
    }
    if bbox[2] < 0.0 || bbox[3] < 0.0 {
        return Err(format!("bbox {bbox:?} has a negative width or height"));
    }
    Ok(())
}

fn validate_annotation(a: RawAnnotation) -> Result<GtAnnotation, String> {
    let bbox = a.bbox.ok_or_else(|| missing("bbox"))?;
    check_box(&bbox)?;
    let area = a.area.unwrap_or(bbox[2] * bbox[3]);
    if !area.is_finite() || area < 0.0 {
        return Err(format!("area {area} is negative or not finite"));
    }
    Ok(GtAnnotation {
        id: a.id.ok_or_else(|| missing("id"))?,
        image_id: a.image_id.ok_or_else(|| missing("image_id"))?,
        category_id: a.category_id.ok_or_else(|| missing("category_id"))?,
        bbox,
        area,
        iscrowd: a.iscrowd,
    })
}

fn validate_detection(d: RawDetection) -> Result<Detection, String> {
    let image_id = d.image_id.ok_or_else(|| missing("image_id"))?;
    let category_id = d.category_id.ok_or_else(|| missing("category_id"))?;
    let bbox = d.bbox.ok_or_else(|| missing("bbox"))?;
    let score = d.score.ok_or_else(|| missing("score"))?;
    check_box(&bbox)?;
    if !score.is_finite() {
        return Err(format!("score {score} is not finite"));
    }
    Ok(Detection {
        image_id,
        category_id,
        bbox,
        score,
    })
}

/// A JSON array whose element errors name the element's index.
pub(super) struct IndexedList<T>(pub Vec<T>);

/// How an element of an [`IndexedList`] is called in error messages.
pub(super) trait ItemName {
    const NAME: &'static str;
}

impl ItemName for RawDetection {
    const NAME: &'static str = "detection";
}

impl ItemName for RawAnnotation {
    const NAME: &'static str = "annotation";
}

impl<'de, T: Deserialize<'de> + ItemName> Deserialize<'de> for IndexedList<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_seq(IndexedListVisitor(std::marker::PhantomData))
            .map(IndexedList)
    }
}

fn annotation_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RawAnnotation>, D::Error> {
    IndexedList::deserialize(d).map(|l| l.0)
}

struct IndexedListVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de> + ItemName> Visitor<'de> for IndexedListVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        loop {
            match seq.next_element::<T>() {
                Ok(Some(item)) => items.push(item),
                Ok(None) => return Ok(items),
                Err(e) => {
                    return Err(de::Error::custom(format_args!(
                        "{} at index {}: {e}",
                        T::NAME,
                        items.len()
                    )));
                }
            }
        }
    }
}

/// `iscrowd` appears as 0/1 or as a boolean; pycocotools treats any truthy value as crowd.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct FlagVisitor;
    impl Visitor<'_> for FlagVisitor {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a boolean or a number")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
            Ok(v != 0)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
            Ok(v != 0)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
            Ok(v != 0.0)
        }
    }
    d.deserialize_any(FlagVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ground_truth_and_skips_unknown_fields() {
        let gt = GroundTruth::from_json_bytes(
            br#"{"info": {"x": 1}, "images": [{"id": 3, "file_name": "a.jpg"}],
                "categories": [{"id": 7, "name": "cat\u00e9"}],
                "annotations": [{"id": 1, "image_id": 3, "category_id": 7, "bbox": [1, 2, 3, 4],
                                 "segmentation": [[1, 2, 3]], "iscrowd": true}]}"#,
        )
        .unwrap();
        assert_eq!(gt.images, vec![3]);
        assert_eq!(gt.categories[0].name, "caté");
        assert_eq!(gt.annotations[0].area, 12.0);
        assert!(gt.annotations[0].iscrowd);
    }

    #[test]
    fn detection_errors_name_the_index() {
        let err = parse_detections(
            br#"[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5},
                 {"image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 1], "score": 0.5}]"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("index 1") && err.contains("negative"), "{err}");

        let err = parse_detections(br#"[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("index 0") && err.contains("score"), "{err}");

        let err = parse_detections(br#"[{}, {"image_id": 1, "bbox": [0, 1]}]"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("detection at index 1"), "{err}");

        let err = parse_detections(b"[{\"score\": 1},\n {\"score\": NaN}]")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("detection at index 1") && err.contains("NaN"),
            "{err}"
        );
    }
}
