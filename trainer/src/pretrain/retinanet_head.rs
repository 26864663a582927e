//! RetinaNet in its AlignDet pre-training form (method notes, 6.3), on our RetinaNet's towers,
//! FPN and anchors:
//!
//! - the classification tower feeds the projector (conv 1×1 → ReLU → conv 1×1 to A·d: one
//!   embedding per anchor), the regression tower a conv 3×3 to A·4 deltas (unit weights);
//! - per image, anchors are matched to the pseudo-boxes at IoU ≥ 0.5 (background < 0.4, low-
//!   quality matches kept) and 2,048 are sampled, positives first;
//! - losses: L1 on the deltas of the sampled positives, divided by their number.
//!
//! Embeddings and instance ids are flattened in the same (image, level, y, x, anchor) order, so
//! they stay aligned with more than one image per batch (the reference's defect A4).

use super::detector::{
    BoxPretrainer, ViewOutput, count_instances, frozen_features, instance_offsets, to_instances,
};
use crate::models::anchors::pyramid_anchors;
use crate::models::backbone::{Body, BodyKind, build_body};
use crate::models::box_coder::BoxCoder;
use crate::models::box_ops::box_iou;
use crate::models::fpn::{ExtraLevels, Fpn};
use crate::models::head::{flatten_level, head_conv, head_conv3x3};
use crate::models::losses::l1_sum;
use crate::models::matcher::{BETWEEN_THRESHOLDS, Matcher};
use crate::models::norm::NormKind;
use crate::models::retinanet::{ASPECT_RATIOS, default_anchor_sizes, run_tower, tower};
use crate::models::sampler::BalancedSampler;
use crate::models::transform::{DetectionTransform, ImageBatch};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

#[derive(Debug)]
pub struct RetinanetPretrainer {
    body: Box<dyn Body>,
    fpn: Fpn,
    cls_conv: Vec<nn::Conv2D>,
    reg_conv: Vec<nn::Conv2D>,
    projector: (nn::Conv2D, nn::Conv2D),
    regression: nn::Conv2D,
    transform: DetectionTransform,
    anchor_sizes: Vec<[f64; 3]>,
    embedding_dim: i64,
    matcher: Matcher,
    sampler: BalancedSampler,
    box_coder: BoxCoder,
}

impl RetinanetPretrainer {
    pub fn new(
        vs: &nn::Path,
        body: BodyKind,
        norm: NormKind,
        embedding_dim: i64,
        samples_per_image: i64,
    ) -> RetinanetPretrainer {
        let bb = vs / "backbone";
        let body = build_body(&(&bb / "body"), body, norm);
        let chans = body.out_channels();
        let transform = DetectionTransform::for_body(body.as_ref());
        let anchor_sizes = default_anchor_sizes();
        let num_anchors = (anchor_sizes[0].len() * ASPECT_RATIOS.len()) as i64;
        let cls = vs / "head" / "classification_head";
        let reg = vs / "head" / "regression_head";
        let c = 256;
        RetinanetPretrainer {
            fpn: Fpn::new(&(&bb / "fpn"), &chans[1..], c, ExtraLevels::P6P7),
            cls_conv: tower(&(&cls / "conv"), c),
            reg_conv: tower(&(&reg / "conv"), c),
            projector: (
                head_conv(&cls / "projector" / 0, c, c, 1, 0.0),
                head_conv(
                    &cls / "projector" / 2,
                    c,
                    num_anchors * embedding_dim,
                    1,
                    0.0,
                ),
            ),
            // torchvision's `bbox_reg` (same deltas, same unit-weight coder): it transfers
            regression: head_conv3x3(&reg / "bbox_reg", c, num_anchors * 4, 0.0),
            body,
            transform,
            anchor_sizes,
            embedding_dim,
            matcher: Matcher {
                high_threshold: 0.5,
                low_threshold: 0.4,
                allow_low_quality_matches: true,
            },
            sampler: BalancedSampler::new(samples_per_image, 1.0),
            box_coder: BoxCoder::new([1.0, 1.0, 1.0, 1.0]),
        }
    }

    fn anchors(&self, batch: &ImageBatch, features: &[Tensor]) -> Tensor {
        let sizes = self.anchor_sizes.iter().map(|s| s.as_slice());
        Tensor::cat(
            &pyramid_anchors(&batch.tensor, features, sizes, &ASPECT_RATIOS),
            0,
        )
    }
}

impl BoxPretrainer for RetinanetPretrainer {
    fn transform(&self) -> &DetectionTransform {
        &self.transform
    }

    fn body(&self) -> &dyn Body {
        self.body.as_ref()
    }

    fn forward_view(&self, batch: &ImageBatch, boxes: &[Tensor], with_losses: bool) -> ViewOutput {
        let c = frozen_features(self.body.as_ref(), &batch.tensor);
        let features = self.fpn.forward(&c[1..]);
        let (mut emb, mut reg) = (vec![], vec![]);
        for f in &features {
            let ct = run_tower(&self.cls_conv, f);
            let e = self
                .projector
                .1
                .forward(&self.projector.0.forward(&ct).relu());
            emb.push(flatten_level(&e, self.embedding_dim));
            let r = self.regression.forward(&run_tower(&self.reg_conv, f));
            reg.push(flatten_level(&r, 4));
        }
        let (emb, reg) = (Tensor::cat(&emb, 1), Tensor::cat(&reg, 1));
        debug_assert_eq!(emb.size()[1], reg.size()[1]);
        let anchors = self.anchors(batch, &features);
        let offsets = instance_offsets(boxes);
        let device = emb.device();

        let (mut embeddings, mut instances) = (vec![], vec![]);
        let (mut pred, mut target) = (vec![], vec![]);
        let (mut n_pos, mut n_neg) = (0i64, 0i64);
        for (i, b) in boxes.iter().enumerate() {
            let b = b.to_device(device).to_kind(Kind::Float);
            let n = anchors.size()[0];
            let matches = if b.size()[0] == 0 {
                Tensor::full([n], -1, (Kind::Int64, device))
            } else {
                self.matcher.assign(&box_iou(&b, &anchors))
            };
            // 1 positive, 0 background, −1 ignored (between the thresholds)
            let labels = matches
                .ge(0)
                .to_kind(Kind::Int64)
                .masked_fill(&matches.eq(BETWEEN_THRESHOLDS), -1);
            let (pos, neg) = self.sampler.sample(&labels);
            n_pos += pos.size()[0];
            n_neg += neg.size()[0];
            let picked = Tensor::cat(&[&pos, &neg], 0);
            let ids = to_instances(&matches.clamp_min(-1), offsets[i]);
            embeddings.push(emb.get(i as i64).index_select(0, &picked));
            instances.push(ids.index_select(0, &picked));
            if with_losses && pos.size()[0] > 0 {
                let gt = b.index_select(0, &matches.index_select(0, &pos));
                target.push(self.box_coder.encode(&gt, &anchors.index_select(0, &pos)));
                pred.push(reg.get(i as i64).index_select(0, &pos));
            }
        }
        let embeddings = Tensor::cat(&embeddings, 0);
        let instances = Tensor::cat(&instances, 0);
        let mut losses = vec![];
        if with_losses {
            let loss = if pred.is_empty() {
                reg.sum(Kind::Float) * 0.0
            } else {
                l1_sum(&Tensor::cat(&pred, 0), &Tensor::cat(&target, 0)) / n_pos.max(1) as f64
            };
            losses.push(("regression".to_string(), loss));
        }
        let stats = vec![
            ("positives".to_string(), n_pos as f64),
            ("negatives".to_string(), n_neg as f64),
            ("instances".to_string(), count_instances(&instances)),
        ];
        ViewOutput {
            embeddings,
            instances,
            losses,
            stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn samples_per_image_within_budget_and_aligned_with_ids() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let budget = 100;
        let m = RetinanetPretrainer::new(
            &vs.root(),
            BodyKind::Resnet18,
            NormKind::FrozenBn,
            16,
            budget,
        );
        let imgs: Vec<Tensor> = (0..2)
            .map(|_| Tensor::rand([3, 128, 128], (Kind::Float, Device::Cpu)))
            .collect();
        let boxes = vec![
            Tensor::from_slice(&[8.0f32, 8.0, 72.0, 72.0]).view([1, 4]),
            Tensor::from_slice(&[20.0f32, 20.0, 100.0, 90.0, 0.0, 64.0, 64.0, 128.0]).view([2, 4]),
        ];
        let batch = m.transform().pad_batch(&imgs);
        let out = m.forward_view(&batch, &boxes, true);
        assert_eq!(out.embeddings.size(), vec![2 * budget, 16]);
        assert_eq!(out.instances.size(), vec![2 * budget]);
        // image 0's positives carry id 0, image 1's ids 1 and 2 (offset 1)
        let first = Vec::<i64>::try_from(&out.instances.narrow(0, 0, budget)).unwrap();
        let second = Vec::<i64>::try_from(&out.instances.narrow(0, budget, budget)).unwrap();
        assert!(first.iter().all(|&i| i == -1 || i == 0) && first.contains(&0));
        assert!(second.iter().all(|&i| i == -1 || i == 1 || i == 2));
        assert!(second.contains(&1) && second.contains(&2));
        assert!(out.losses[0].1.double_value(&[]).is_finite());
    }
}
