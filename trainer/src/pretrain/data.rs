//! Pre-training data: the images of a split with their pseudo-boxes (from a `proposals` run's
//! `pseudo_boxes.json`), and batches of two views built by the threaded loader.

use crate::data::augment::decode_image;
use crate::data::detection::DetectionSplit;
use crate::data::loader::{BuildFn, Loader, batch_indices, rank_share, rng_for};
use crate::data::multiview::{MultiViewConfig, two_views};
use aligndet_common::pretrain_config::{BoxSelection, PretrainBoxConfig, PseudoBoxes};
use anyhow::Context;
use rand::seq::index::sample;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tch::Tensor;

/// Pseudo-boxes smaller than this (px) are dropped, as mmdet's FilterAnnotations would.
const MIN_BOX_SIDE: f32 = 1.0;

#[derive(Debug, Clone)]
pub struct PretrainImage {
    pub image_id: i64,
    pub path: PathBuf,
    /// xyxy in original pixels, in the proposals run's order.
    pub boxes: Vec<[f32; 4]>,
}

/// What the pre-training images are, and how many were left out.
#[derive(Debug)]
pub struct PretrainSet {
    pub images: Vec<PretrainImage>,
    /// Images of the split without any pseudo-box (dropped, as mmdet's `filter_empty_gt`).
    pub without_boxes: usize,
    /// Images of the split the proposals run did not cover.
    pub not_covered: usize,
    pub boxes: usize,
}

/// Join the split's images with the pseudo-boxes file.
pub fn pretrain_set(split: &DetectionSplit, pseudo: &PseudoBoxes) -> anyhow::Result<PretrainSet> {
    let by_image: HashMap<i64, &Vec<[f32; 4]>> = pseudo
        .images
        .iter()
        .map(|i| (i.image_id, &i.boxes))
        .collect();
    let (mut images, mut without_boxes, mut not_covered, mut total) = (vec![], 0, 0, 0);
    for s in &split.samples {
        let Some(boxes) = by_image.get(&s.image_id) else {
            not_covered += 1;
            continue;
        };
        let boxes: Vec<[f32; 4]> = boxes
            .iter()
            .filter(|b| {
                b[2] >= MIN_BOX_SIDE && b[3] >= MIN_BOX_SIDE && b.iter().all(|v| v.is_finite())
            })
            .map(|&[x, y, w, h]| [x, y, x + w, y + h])
            .collect();
        if boxes.is_empty() {
            without_boxes += 1;
            continue;
        }
        total += boxes.len();
        images.push(PretrainImage {
            image_id: s.image_id,
            path: s.path.clone(),
            boxes,
        });
    }
    anyhow::ensure!(
        !images.is_empty(),
        "no image of the split has a pseudo-box ({} images without boxes, {} not covered by the proposals run)",
        without_boxes,
        not_covered
    );
    Ok(PretrainSet {
        images,
        without_boxes,
        not_covered,
        boxes: total,
    })
}

/// One view of a batch: images (`[3, H, W]`, 0..1, already resized) and their boxes.
pub struct ViewBatch {
    pub images: Vec<Tensor>,
    pub boxes: Vec<Tensor>,
}

/// View 1 (online) and view 2 (momentum) of the same images, box order shared.
pub struct PairBatch {
    pub image_ids: Vec<i64>,
    pub online: ViewBatch,
    pub target: ViewBatch,
}

impl PairBatch {
    /// Consecutive groups of `size` pairs (the last may be smaller); 0: one group.
    pub fn into_groups(self, size: usize) -> Vec<PairBatch> {
        let n = self.image_ids.len();
        let size = if size == 0 { n.max(1) } else { size };
        let take = |v: &[Tensor], at: usize| -> Vec<Tensor> {
            v[at..(at + size).min(n)]
                .iter()
                .map(Tensor::shallow_clone)
                .collect()
        };
        (0..n)
            .step_by(size)
            .map(|at| PairBatch {
                image_ids: self.image_ids[at..(at + size).min(n)].to_vec(),
                online: ViewBatch {
                    images: take(&self.online.images, at),
                    boxes: take(&self.online.boxes, at),
                },
                target: ViewBatch {
                    images: take(&self.target.images, at),
                    boxes: take(&self.target.boxes, at),
                },
            })
            .collect()
    }
}

/// Which boxes of an image take part: all, the first `k`, or `k` drawn at random (in order).
pub fn select_boxes(
    boxes: &[[f32; 4]],
    max: usize,
    selection: BoxSelection,
    rng: &mut impl rand::Rng,
) -> Vec<[f32; 4]> {
    if max == 0 || boxes.len() <= max {
        return boxes.to_vec();
    }
    match selection {
        BoxSelection::First => boxes[..max].to_vec(),
        BoxSelection::Random => {
            let mut idx = sample(rng, boxes.len(), max).into_vec();
            idx.sort_unstable();
            idx.into_iter().map(|i| boxes[i]).collect()
        }
    }
}

/// Batch `step` of the run: a pure function of (seed, step), so a resumed run sees the same data.
pub fn build_pair_batch(
    set: &PretrainSet,
    cfg: &PretrainBoxConfig,
    views: &MultiViewConfig,
    step: u64,
) -> anyhow::Result<PairBatch> {
    let idx = batch_indices(
        set.images.len(),
        cfg.optim.batch_size as usize,
        cfg.optim.seed,
        step,
    );
    let mut batch = PairBatch {
        image_ids: vec![],
        online: ViewBatch {
            images: vec![],
            boxes: vec![],
        },
        target: ViewBatch {
            images: vec![],
            boxes: vec![],
        },
    };
    for (j, i) in rank_share(&idx) {
        let img = &set.images[i];
        let mut rng = rng_for(cfg.optim.seed, step, j as u64);
        let chosen = select_boxes(
            &img.boxes,
            cfg.max_boxes_per_image as usize,
            cfg.box_selection,
            &mut rng,
        );
        let flat: Vec<f32> = chosen.iter().flatten().copied().collect();
        let boxes = Tensor::from_slice(&flat).view([-1, 4]);
        let image = decode_image(&img.path)?;
        let ((i1, b1, _), (i2, b2, _)) = two_views(&image, &boxes, &mut rng, views)
            .with_context(|| format!("making the views of {}", img.path.display()))?;
        batch.image_ids.push(img.image_id);
        batch.online.images.push(i1);
        batch.online.boxes.push(b1);
        batch.target.images.push(i2);
        batch.target.boxes.push(b2);
    }
    Ok(batch)
}

/// Threads building pair batches from `first_step` on.
pub fn pair_loader(
    set: Arc<PretrainSet>,
    cfg: &PretrainBoxConfig,
    first_step: u64,
) -> Loader<PairBatch> {
    let views = MultiViewConfig {
        min_sizes: cfg.views.min_sizes.clone(),
        max_size: cfg.views.max_size,
        hflip: cfg.views.hflip,
        color_ops: cfg.views.color_ops,
    };
    let threads = cfg.optim.loader_threads as usize;
    let cfg = cfg.clone();
    let build: BuildFn<PairBatch> =
        Arc::new(move |step| build_pair_batch(&set, &cfg, &views, step));
    Loader::with_builder(threads, 2 * threads, first_step, build)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn box_selection_keeps_order() {
        let boxes: Vec<[f32; 4]> = (0..10).map(|i| [i as f32, 0.0, 1.0, 1.0]).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(
            select_boxes(&boxes, 0, BoxSelection::First, &mut rng).len(),
            10
        );
        assert_eq!(
            select_boxes(&boxes, 3, BoxSelection::First, &mut rng),
            boxes[..3].to_vec()
        );
        let r = select_boxes(&boxes, 4, BoxSelection::Random, &mut rng);
        assert_eq!(r.len(), 4);
        assert!(r.windows(2).all(|w| w[0][0] < w[1][0]));
    }
}
