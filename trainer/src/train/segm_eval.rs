//! Mask AP of a mask detector's predictions on a dataset split (`iouType="segm"`, the
//! evaluator of `eval::coco::mask`): the ground-truth masks are rasterized from the dataset's
//! annotations file once per job; the predictions' masks are the RLEs of
//! `predict_split_masks` (training) or of an uploaded results file (the `evaluate` job).

use crate::eval::coco::mask::MaskSet;
use crate::eval::coco::mask::load::{ImageSizes, SegmResults, ground_truth_masks};
use crate::eval::coco::mask::rle::Rle;
use crate::eval::coco::{Detection, EvalParams, EvalResult, GroundTruth, evaluate_segm};
use aligndet_common::api::DatasetLocation;
use anyhow::Context;
use std::collections::HashSet;

/// A dataset's ground truth with every annotation's mask (aligned with `gt.annotations`).
pub struct GroundTruthMasks {
    pub gt: GroundTruth,
    pub masks: Vec<Rle>,
    /// Image sizes, which polygons in a results file are rasterized at.
    pub sizes: ImageSizes,
}

impl GroundTruthMasks {
    /// Reads and rasterizes the dataset's masks; an annotation without a usable mask is an
    /// error naming it.
    pub fn load(location: &DatasetLocation) -> anyhow::Result<Self> {
        let bytes = std::fs::read(&location.annotations_path)
            .with_context(|| format!("reading {}", location.annotations_path))?;
        let gt = GroundTruth::from_json_bytes(&bytes)?;
        let (masks, sizes) = ground_truth_masks(&bytes, &gt)
            .with_context(|| format!("the masks of {}", location.annotations_path))?;
        Ok(Self { gt, masks, sizes })
    }

    /// segm evaluation of `results` on the ground truth of `images` (the annotations of
    /// other images are left out, as `score` does for boxes).
    pub fn score(&self, images: &[i64], results: SegmResults) -> anyhow::Result<EvalResult> {
        let keep: HashSet<i64> = images.iter().copied().collect();
        let mut gt = self.gt.clone();
        gt.images.retain(|i| keep.contains(i));
        let (annotations, gt_masks): (Vec<_>, Vec<_>) = self
            .gt
            .annotations
            .iter()
            .cloned()
            .zip(self.masks.iter().cloned())
            .filter(|(a, _)| keep.contains(&a.image_id))
            .unzip();
        gt.annotations = annotations;
        let crowd = gt.annotations.iter().map(|a| a.iscrowd).collect();
        let set = MaskSet::new(gt_masks, crowd, results.masks, results.areas);
        Ok(evaluate_segm(
            &gt,
            &results.detections,
            &set,
            &EvalParams::segm(),
        )?)
    }

    /// segm evaluation of a mask detector's `detections` (with `masks`, aligned) on `images`.
    pub fn score_predictions(
        &self,
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
        // The predictions file carries boxes, so pycocotools' loadRes gives each result its
        // box's area (size ranges), as `trainer eval --iou-type segm` does on that file.
        let results = SegmResults {
            detections: detections.to_vec(),
            masks: masks.to_vec(),
            areas: detections.iter().map(Detection::area).collect(),
        };
        self.score(images, results)
    }
}
