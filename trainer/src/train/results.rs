//! COCO results JSON: each detection's box and score, and a mask detector's binary masks as RLE
//! (column-major, as pycocotools encodes them) beside them as
//! `segmentation: {size: [h, w], counts: "<compressed>"}`.

use crate::eval::coco::Detection;
use crate::eval::coco::mask::rle::Rle;
use tch::{Device, Kind, Tensor};

/// COCO results JSON (`[{image_id, category_id, bbox, score}]`).
pub fn results_json(detections: &[Detection]) -> serde_json::Value {
    serde_json::Value::Array(
        detections
            .iter()
            .map(|d| {
                let d = as_written(*d);
                serde_json::json!({
                    "image_id": d.image_id,
                    "category_id": d.category_id,
                    "bbox": d.bbox,
                    "score": d.score,
                })
            })
            .collect(),
    )
}

/// A detection as a results file writes it: box to 0.01 px, score to 1e-5. Predictions are
/// rounded where they are made, so that a run's own evaluation and any evaluator reading its
/// `predictions.json` (pycocotools, `trainer eval`) score the same numbers. Rounding twice
/// changes nothing.
pub fn as_written(d: Detection) -> Detection {
    Detection {
        bbox: d.bbox.map(|v| (v * 100.0).round() / 100.0),
        score: (d.score * 1e5).round() / 1e5,
        ..d
    }
}

/// `[n, H, W]` binary masks → one RLE per mask.
pub fn masks_to_rles(masks: &Tensor) -> anyhow::Result<Vec<Rle>> {
    let s = masks.size();
    let (n, h, w) = (s[0], s[1], s[2]);
    // column-major: x outer, y inner
    let cols = masks
        .to_device(Device::Cpu)
        .to_kind(Kind::Bool)
        .transpose(1, 2)
        .contiguous()
        .view([-1]);
    let flat: Vec<bool> = Vec::try_from(cols)?;
    let (hu, wu) = (u32::try_from(h)?, u32::try_from(w)?);
    Ok((0..n as usize)
        .map(|i| {
            let len = (h * w) as usize;
            Rle::encode(&flat[i * len..(i + 1) * len], hu, wu)
        })
        .collect())
}

/// COCO results JSON with masks: `results_json`'s fields plus each detection's `segmentation`
/// (`masks` aligned with `detections`).
pub fn segm_results_json(detections: &[Detection], masks: &[Rle]) -> serde_json::Value {
    let mut results = results_json(detections);
    if let serde_json::Value::Array(items) = &mut results {
        for (item, m) in items.iter_mut().zip(masks) {
            item["segmentation"] = serde_json::json!({
                "size": [m.height, m.width],
                "counts": m.to_compressed(),
            });
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_encode_column_major_and_round_trip() {
        let m = Tensor::zeros([2, 3, 4], (Kind::Bool, Device::Cpu));
        // mask 0: the pixel at row 0, column 1 → column-major index 1·3 + 0 = 3
        let _ = m.get(0).get(0).get(1).fill_(1);
        let _ = m.get(1).fill_(1);
        let rles = masks_to_rles(&m).unwrap();
        assert_eq!(rles[0].counts, vec![3, 1, 8]);
        assert_eq!(rles[1].area(), 12);
        let decoded = rles[0].decode();
        assert!(decoded[3] && decoded.iter().filter(|&&b| b).count() == 1);
        let d = Detection {
            image_id: 1,
            category_id: 2,
            bbox: [0.0, 0.0, 1.0, 1.0],
            score: 0.9,
        };
        let json = segm_results_json(&[d], &rles[..1]);
        assert_eq!(json[0]["segmentation"]["size"], serde_json::json!([3, 4]));
        let counts = json[0]["segmentation"]["counts"].as_str().unwrap();
        assert_eq!(Rle::from_compressed(counts, 3, 4).unwrap(), rles[0]);
    }

    #[test]
    fn written_detections_read_back_as_they_were_scored() {
        // the run scores `as_written` detections; the file must give an evaluator the same
        let scored: Vec<Detection> = [
            ([10.123456, 20.987654, 30.333333, 5.55555], 0.123456789),
            ([0.004999, 1.0 / 3.0, 2.0 / 3.0, 99.995001], 0.999995),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (bbox, score))| {
            as_written(Detection {
                image_id: i as i64 + 1,
                category_id: 1,
                bbox,
                score,
            })
        })
        .collect();
        assert_eq!(
            scored.iter().map(|d| as_written(*d)).collect::<Vec<_>>(),
            scored
        );
        let bytes = serde_json::to_vec(&results_json(&scored)).unwrap();
        let read = crate::eval::coco::parse_detections(&bytes).unwrap();
        assert_eq!(read, scored);
    }
}
