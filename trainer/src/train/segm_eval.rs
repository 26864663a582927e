//! Mask AP of a mask detector's predictions on a dataset split (`iouType="segm"`, the
//! evaluator of `eval::coco::mask`): the ground-truth masks are rasterized from the dataset's
//! annotations file, the predictions' masks are the RLEs of `predict_split_masks`.

use crate::eval::coco::mask::MaskSet;
use crate::eval::coco::mask::load::ground_truth_masks;
use crate::eval::coco::mask::rle::Rle;
use crate::eval::coco::{Detection, EvalParams, EvalResult, GroundTruth, IouType, evaluate_segm};
use aligndet_common::api::DatasetLocation;
use anyhow::Context;
use std::collections::HashSet;

/// segm evaluation of `detections` (with `masks`, aligned) on the dataset's `images`.
pub fn score_segm(
    location: &DatasetLocation,
    images: &[i64],
    detections: &[Detection],
    masks: &[Rle],
) -> anyhow::Result<EvalResult> {
    anyhow::ensure!(
        detections.len() == masks.len(),
        "{} detections but {} masks",
        detections.len(),
        masks.len()
    );
    let bytes = std::fs::read(&location.annotations_path)
        .with_context(|| format!("reading {}", location.annotations_path))?;
    let full = GroundTruth::from_json_bytes(&bytes)?;
    let (gt_masks, _) = ground_truth_masks(&bytes, &full)
        .with_context(|| format!("the masks of {}", location.annotations_path))?;
    // keep the annotations of the evaluated images with their masks, as `score` does for boxes
    let keep: HashSet<i64> = images.iter().copied().collect();
    let mut gt = full.clone();
    gt.images.retain(|i| keep.contains(i));
    let (annotations, gt_masks): (Vec<_>, Vec<_>) = full
        .annotations
        .into_iter()
        .zip(gt_masks)
        .filter(|(a, _)| keep.contains(&a.image_id))
        .unzip();
    gt.annotations = annotations;
    let crowd = gt.annotations.iter().map(|a| a.iscrowd).collect();
    // pycocotools' loadRes gives a segm result its mask's area
    let areas = masks.iter().map(|m| f64::from(m.area())).collect();
    let set = MaskSet::new(gt_masks, crowd, masks.to_vec(), areas);
    let params = EvalParams {
        iou_type: IouType::Segm,
        ..EvalParams::default()
    };
    Ok(evaluate_segm(&gt, detections, &set, &params)?)
}
