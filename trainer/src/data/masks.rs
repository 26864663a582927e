//! Instance masks on the fine-tune data path: each kept annotation's COCO `segmentation`
//! (polygons or RLE) is checked when a mask detector's job starts, so that a bad one is named
//! before anything trains, and decoded to a bitmap of its image when a batch is built (RLE is
//! kept until then: bitmaps of a whole split would not fit in memory).

use super::detection::{DetectionSplit, Sample};
use crate::eval::coco::mask::load::to_rle;
use crate::eval::coco::mask::rle::Rle;
use tch::Tensor;

/// Why an annotation has no usable mask.
#[derive(Debug, thiserror::Error)]
#[error("image {image_id}, annotation {annotation_id}: {message}")]
pub struct MaskError {
    pub image_id: i64,
    pub annotation_id: i64,
    pub message: String,
}

/// Every kept annotation of `sample` as an RLE mask of its image (`COCO.annToRLE`).
pub fn sample_rles(sample: &Sample) -> Result<Vec<Rle>, MaskError> {
    sample
        .segmentations
        .iter()
        .map(|s| {
            let error = |message: String| MaskError {
                image_id: sample.image_id,
                annotation_id: s.annotation_id,
                message,
            };
            let value = s.value.as_ref().ok_or_else(|| {
                error(
                    "has no `segmentation` (a mask detector needs a mask for every object)".into(),
                )
            })?;
            to_rle(value, sample.image_id, Some((sample.height, sample.width))).map_err(error)
        })
        .collect()
}

/// The first annotation of `split` without a usable mask, as an error.
pub fn check_split(split: &DetectionSplit) -> Result<(), MaskError> {
    split
        .samples
        .iter()
        .try_for_each(|s| sample_rles(s).map(drop))
}

/// RLE masks of one `height × width` image → `[n, H, W]` uint8 0/1.
pub fn bitmaps(rles: &[Rle], height: u32, width: u32) -> Tensor {
    let (h, w) = (i64::from(height), i64::from(width));
    let mut data: Vec<u8> = Vec::with_capacity(rles.len() * (h * w) as usize);
    for r in rles {
        data.extend(r.decode().into_iter().map(u8::from));
    }
    // RLE runs are column-major: x outer, y inner
    Tensor::from_slice(&data)
        .view([rles.len() as i64, w, h])
        .transpose(1, 2)
        .contiguous()
}

/// `sample`'s masks as `[n, H, W]` uint8 at its recorded size.
pub fn sample_masks(sample: &Sample) -> Result<Tensor, MaskError> {
    Ok(bitmaps(&sample_rles(sample)?, sample.height, sample.width))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::detection::Segmentation;
    use serde_json::json;
    use tch::Kind;

    fn sample(segs: Vec<Option<serde_json::Value>>) -> Sample {
        Sample {
            image_id: 7,
            path: "x.png".into(),
            width: 6,
            height: 4,
            boxes: vec![[0.0, 0.0, 1.0, 1.0]; segs.len()],
            labels: vec![1; segs.len()],
            segmentations: segs
                .into_iter()
                .enumerate()
                .map(|(i, value)| Segmentation {
                    annotation_id: 100 + i as i64,
                    value,
                })
                .collect(),
        }
    }

    #[test]
    fn polygons_and_rle_decode_to_row_major_bitmaps() {
        // a rectangle x 1..4, y 0..2 as a polygon; and an RLE whose one pixel is (x 0, y 3)
        let s = sample(vec![
            Some(json!([[1, 0, 4, 0, 4, 2, 1, 2]])),
            Some(json!({"size": [4, 6], "counts": [3, 1, 20]})),
        ]);
        let m = sample_masks(&s).unwrap();
        assert_eq!(m.size(), vec![2, 4, 6]);
        assert_eq!(m.get(1).sum(Kind::Int64).int64_value(&[]), 1);
        assert_eq!(m.get(1).int64_value(&[3, 0]), 1);
        assert_eq!(m.get(0).int64_value(&[1, 2]), 1);
        assert_eq!(m.get(0).int64_value(&[3, 2]), 0);
        assert_eq!(m.get(0).int64_value(&[1, 5]), 0);
    }

    #[test]
    fn bad_masks_name_the_annotation() {
        for (seg, needle) in [
            (None, "has no `segmentation`"),
            (Some(json!([[1, 0, 4, 0]])), "at least 3 points"),
            (
                Some(json!({"size": [5, 6], "counts": [30]})),
                "differs from image",
            ),
            (Some(json!("a string")), "polygons or an RLE"),
        ] {
            let e = check_split(&DetectionSplit {
                samples: vec![sample(vec![Some(json!([[0, 0, 2, 0, 2, 2]])), seg])],
                category_ids: vec![1],
                category_names: vec!["a".into()],
            })
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("image 7, annotation 101") && e.contains(needle),
                "{e}"
            );
        }
    }
}
