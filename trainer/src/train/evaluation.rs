//! Running a detector over a split and scoring it with our COCO evaluator.

use super::results::{as_written, masks_to_rles};
use crate::data::augment::decode_image;
use crate::data::detection::DetectionSplit;
use crate::eval::coco::mask::rle::Rle;
use crate::eval::coco::{Detection, EvalParams, EvalResult, GroundTruth, evaluate};
use crate::models::detector::Detector;
use crate::models::transform::DetectionTransform;
use tch::Device;

/// How many images of `split` a prediction pass over its first `max_images` covers (0: all).
pub fn images_to_predict(split: &DetectionSplit, max_images: usize) -> usize {
    match max_images {
        0 => split.samples.len(),
        m => m.min(split.samples.len()),
    }
}

/// COCO-style detections of `model` on the first `max_images` images of `split` (all when 0),
/// `batch_size` images at a time, boxes in original pixels as `[x, y, w, h]` (rounded as
/// `predictions.json` writes them, [`as_written`]), and each
/// detection's mask as RLE where the detector predicts masks (aligned with the detections; empty
/// for box detectors). `progress` hears (images done, images in all) after each batch.
pub fn predict_split_masks(
    model: &dyn Detector,
    transform: &DetectionTransform,
    split: &DetectionSplit,
    max_images: usize,
    batch_size: usize,
    device: Device,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<(Vec<Detection>, Vec<Rle>)> {
    let n = images_to_predict(split, max_images);
    let (mut out, mut masks) = (Vec::new(), Vec::new());
    let mut done = 0;
    for chunk in split.samples[..n].chunks(batch_size.max(1)) {
        let images = chunk
            .iter()
            .map(|s| decode_image(&s.path).map(|t| t.to_device(device)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let dets = tch::no_grad(|| model.detect_batch(&transform.batch(&images)));
        for (sample, d) in chunk.iter().zip(dets) {
            let boxes: Vec<f32> = Vec::try_from(d.boxes.to_device(Device::Cpu).view([-1]))?;
            let scores: Vec<f32> = Vec::try_from(d.scores.to_device(Device::Cpu))?;
            let labels: Vec<i64> = Vec::try_from(d.labels.to_device(Device::Cpu))?;
            let rles = d.masks.as_ref().map(masks_to_rles).transpose()?;
            for (k, ((b, score), label)) in boxes.chunks(4).zip(scores).zip(labels).enumerate() {
                let Some(category_id) = split.category_of_label(label) else {
                    continue; // the never-trained logit 0
                };
                if let Some(r) = &rles {
                    masks.push(r[k].clone());
                }
                out.push(as_written(Detection {
                    image_id: sample.image_id,
                    category_id,
                    bbox: [
                        b[0] as f64,
                        b[1] as f64,
                        (b[2] - b[0]) as f64,
                        (b[3] - b[1]) as f64,
                    ],
                    score: score as f64,
                }));
            }
        }
        done += chunk.len();
        progress(done, n);
    }
    Ok((out, masks))
}

/// Score detections against `gt` restricted to the images that were predicted.
pub fn score(
    gt: &GroundTruth,
    detections: &[Detection],
    images: &[i64],
) -> anyhow::Result<(GroundTruth, EvalResult)> {
    let keep: std::collections::HashSet<i64> = images.iter().copied().collect();
    let mut gt = gt.clone();
    gt.images.retain(|i| keep.contains(i));
    gt.annotations.retain(|a| keep.contains(&a.image_id));
    let result = evaluate(&gt, detections, &EvalParams::default())?;
    Ok((gt, result))
}
