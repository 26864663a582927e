//! FCOS in its AlignDet pre-training form (method notes, 6.2), on our FCOS's towers and FPN:
//!
//! - the classification tower feeds the embedding projector (conv 3×3 → ReLU → conv 1×1, one
//!   embedding per location);
//! - the regression tower feeds `bbox_reg` (conv 3×3 → 4, ReLU: distances l, t, r, b in units of
//!   the level's location size) and `bbox_ctrness`, exactly as the fine-tuning FCOS
//!   (torchvision's) does, so both predictors transfer. The reference puts centerness on the
//!   classification tower and regresses exp(scale·x); with that form only the regression tower
//!   transferred, and a fresh `bbox_reg` on the pre-trained tower started with every output
//!   below zero, where the ReLU passes no gradient: fine-tuning's box loss stayed at 1.0 (no
//!   overlap) for 30+ steps in 2 of 3 seeds and AP fell from ~15 to ~0.3 (see the README);
//! - locations are assigned without centre sampling: inside a pseudo-box, in the level's size
//!   range, the smallest box wins; strides are the true 8…128 (A3 corrected);
//! - 2,048 locations are sampled per view over the whole batch, positives first;
//! - losses: −log IoU on the sampled positives weighted by the centerness target and divided by
//!   its sum, and centerness BCE averaged over the sampled positives.
//!
//! Every predictor conv starts N(0, 0.01) with zero bias; the towers are our FCOS's (GroupNorm),
//! so they transfer to fine-tuning under the same names.

use super::detector::{
    BACKGROUND, BoxPretrainer, ViewOutput, count_instances, frozen_features, instance_offsets,
    to_instances,
};
use crate::models::anchors::pyramid_anchors;
use crate::models::backbone::{Body, BodyKind, build_body};
use crate::models::fcos::{LEVEL_SIZES, Tower};
use crate::models::fcos_loss::match_locations_with;
use crate::models::fpn::{ExtraLevels, Fpn};
use crate::models::head::{flatten_level, head_conv, head_conv3x3};
use crate::models::losses::log_iou_loss;
use crate::models::norm::NormKind;
use crate::models::sampler::BalancedSampler;
use crate::models::transform::{DetectionTransform, ImageBatch};
use tch::nn::{self, Module};
use tch::{Kind, Reduction, Tensor};

#[derive(Debug)]
pub struct FcosPretrainer {
    body: Box<dyn Body>,
    fpn: Fpn,
    cls_tower: Tower,
    reg_tower: Tower,
    projector: (nn::Conv2D, nn::Conv2D),
    /// `head.regression_head.bbox_ctrness`, transferred.
    centerness: nn::Conv2D,
    /// `head.regression_head.bbox_reg`, transferred.
    regression: nn::Conv2D,
    transform: DetectionTransform,
    embedding_dim: i64,
    sampler: BalancedSampler,
}

impl FcosPretrainer {
    pub fn new(
        vs: &nn::Path,
        body: BodyKind,
        norm: NormKind,
        embedding_dim: i64,
        samples: i64,
    ) -> FcosPretrainer {
        let bb = vs / "backbone";
        let body = build_body(&(&bb / "body"), body, norm);
        let chans = body.out_channels();
        let transform = DetectionTransform::for_body(body.as_ref());
        let cls = vs / "head" / "classification_head";
        let reg = vs / "head" / "regression_head";
        let c = 256;
        FcosPretrainer {
            fpn: Fpn::new(&(&bb / "fpn"), &chans[1..], c, ExtraLevels::P6P7),
            cls_tower: Tower::new(&(&cls / "conv"), c, 4),
            reg_tower: Tower::new(&(&reg / "conv"), c, 4),
            projector: (
                head_conv3x3(&cls / "projector" / 0, c, c, 0.0),
                head_conv(&cls / "projector" / 2, c, embedding_dim, 1, 0.0),
            ),
            centerness: head_conv3x3(&reg / "bbox_ctrness", c, 1, 0.0),
            regression: head_conv3x3(&reg / "bbox_reg", c, 4, 0.0),
            body,
            transform,
            embedding_dim,
            sampler: BalancedSampler::new(samples, 1.0),
        }
    }

    /// Locations of every level as boxes of the level's size centred on the point (our FCOS's
    /// anchors), `[ΣHW, 4]`; a level's stride is the padded size over its grid size.
    fn locations(&self, batch: &ImageBatch, features: &[Tensor]) -> Tensor {
        let sizes = LEVEL_SIZES.iter().map(std::slice::from_ref);
        Tensor::cat(&pyramid_anchors(&batch.tensor, features, sizes, &[1.0]), 0)
    }
}

impl BoxPretrainer for FcosPretrainer {
    fn transform(&self) -> &DetectionTransform {
        &self.transform
    }

    fn body(&self) -> &dyn Body {
        self.body.as_ref()
    }

    fn forward_view(&self, batch: &ImageBatch, boxes: &[Tensor], with_losses: bool) -> ViewOutput {
        let c = frozen_features(self.body.as_ref(), &batch.tensor);
        let features = self.fpn.forward(&c[1..]);
        let (mut emb, mut ctr, mut dist, mut sizes) = (vec![], vec![], vec![], vec![]);
        for (f, size) in features.iter().zip(LEVEL_SIZES) {
            let s = f.size();
            sizes.push(s[2] * s[3]);
            let ct = self.cls_tower.forward(f);
            let e = self
                .projector
                .1
                .forward(&self.projector.0.forward(&ct).relu());
            emb.push(flatten_level(&e, self.embedding_dim));
            let rt = self.reg_tower.forward(f);
            ctr.push(flatten_level(&self.centerness.forward(&rt), 1));
            // torchvision's BoxLinearCoder with normalize_by_size: codes × the location's size
            let r = self.regression.forward(&rt).relu() * size;
            dist.push(flatten_level(&r, 4));
        }
        let (emb, ctr, dist) = (
            Tensor::cat(&emb, 1),
            Tensor::cat(&ctr, 1),
            Tensor::cat(&dist, 1),
        );
        let locations = self.locations(batch, &features);
        let offsets = instance_offsets(boxes);
        let device = emb.device();
        let per_image = locations.size()[0];

        // assignment per image, then one sampling over the whole flattened batch
        let (mut instances, mut matched_boxes) = (vec![], vec![]);
        for (i, b) in boxes.iter().enumerate() {
            let b = b.to_device(device).to_kind(Kind::Float);
            let m = match_locations_with(&locations, &b, &sizes, None);
            instances.push(to_instances(&m, offsets[i]));
            let safe = m.clamp_min(0);
            matched_boxes.push(if b.size()[0] > 0 {
                b.index_select(0, &safe)
            } else {
                Tensor::zeros([per_image, 4], (Kind::Float, device))
            });
        }
        let instances = Tensor::cat(&instances, 0);
        let labels = instances.ge(0).to_kind(Kind::Int64); // 1 positive, 0 negative
        let (pos, neg) = self.sampler.sample(&labels);
        let picked = Tensor::cat(&[&pos, &neg], 0);
        let embeddings = emb
            .reshape([-1, self.embedding_dim])
            .index_select(0, &picked);
        let sampled_instances = instances.index_select(0, &picked);

        let mut losses = vec![];
        if with_losses {
            let n_pos = pos.size()[0];
            let centers = {
                let l = locations.repeat([boxes.len() as i64, 1]);
                (l.narrow(1, 0, 2) + l.narrow(1, 2, 2)) / 2.0
            };
            let gt = Tensor::cat(&matched_boxes, 0).index_select(0, &pos);
            let p = centers.index_select(0, &pos);
            let d = dist.reshape([-1, 4]).index_select(0, &pos);
            let pred = Tensor::cat(&[&p - d.narrow(1, 0, 2), &p + d.narrow(1, 2, 2)], 1);
            // centerness target from the distances to the pseudo-box's sides
            let (l, t) = (
                p.select(1, 0) - gt.select(1, 0),
                p.select(1, 1) - gt.select(1, 1),
            );
            let (r, b) = (
                gt.select(1, 2) - p.select(1, 0),
                gt.select(1, 3) - p.select(1, 1),
            );
            let lr = Tensor::stack(&[&l, &r], 1);
            let tb = Tensor::stack(&[&t, &b], 1);
            let ctr_target = ((lr.amin(1, false) / lr.amax(1, false).clamp_min(1e-6))
                * (tb.amin(1, false) / tb.amax(1, false).clamp_min(1e-6)))
            .clamp_min(0.0)
            .sqrt()
            .detach();
            let (box_loss, ctr_loss) = if n_pos == 0 {
                let zero = dist.sum(Kind::Float) * 0.0;
                (zero.shallow_clone(), zero + ctr.sum(Kind::Float) * 0.0)
            } else {
                let box_loss = (log_iou_loss(&pred, &gt) * &ctr_target).sum(Kind::Float)
                    / ctr_target.sum(Kind::Float).clamp_min(1e-6);
                let ctr_logits = ctr.reshape([-1]).index_select(0, &pos);
                let ctr_loss = ctr_logits.binary_cross_entropy_with_logits::<Tensor>(
                    &ctr_target,
                    None,
                    None,
                    Reduction::Mean,
                );
                (box_loss, ctr_loss)
            };
            losses.push(("regression".to_string(), box_loss));
            losses.push(("centerness".to_string(), ctr_loss));
        }
        let stats = vec![
            ("positives".to_string(), pos.size()[0] as f64),
            ("negatives".to_string(), neg.size()[0] as f64),
            ("instances".to_string(), count_instances(&sampled_instances)),
        ];
        debug_assert!(
            sampled_instances
                .lt(BACKGROUND)
                .sum(Kind::Int64)
                .int64_value(&[])
                == 0
        );
        ViewOutput {
            embeddings,
            instances: sampled_instances,
            losses,
            stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn model(samples: i64) -> (nn::VarStore, FcosPretrainer) {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = FcosPretrainer::new(
            &vs.root(),
            BodyKind::Resnet18,
            NormKind::FrozenBn,
            32,
            samples,
        );
        (vs, m)
    }

    fn view(images: usize) -> (ImageBatch, Vec<Tensor>) {
        let imgs: Vec<Tensor> = (0..images)
            .map(|_| Tensor::rand([3, 128, 160], (Kind::Float, Device::Cpu)))
            .collect();
        let boxes: Vec<Tensor> = (0..images)
            .map(|i| {
                Tensor::from_slice(&[
                    10.0f32,
                    10.0,
                    90.0 + i as f32,
                    70.0,
                    40.0,
                    30.0,
                    150.0,
                    120.0,
                ])
                .view([2, 4])
            })
            .collect();
        let (_, m) = model(64);
        (m.transform().pad_batch(&imgs), boxes)
    }

    #[test]
    fn sampler_never_returns_more_than_its_budget_and_fills_with_negatives() {
        let (batch, boxes) = view(2);
        for budget in [16i64, 64, 2048] {
            let (_, m) = model(budget);
            let out = m.forward_view(&batch, &boxes, true);
            let n = out.instances.size()[0];
            let pos = out.instances.ge(0).sum(Kind::Int64).int64_value(&[]);
            // 2 images of 128×160: 320 + 80 + 20 + 6 + 2 locations each
            let total_locations = 2 * (320 + 80 + 20 + 6 + 2);
            assert_eq!(n, budget.min(total_locations), "budget {budget}");
            assert!(pos > 0 && pos <= budget);
            assert_eq!(out.embeddings.size(), vec![n, 32]);
            // the instance ids are those of the batch's 4 boxes
            let fg =
                Vec::<i64>::try_from(&out.instances.masked_select(&out.instances.ge(0))).unwrap();
            assert!(fg.iter().all(|&i| (0..4).contains(&i)));
        }
    }

    #[test]
    fn losses_are_finite_and_reach_only_the_neck_and_heads() {
        let (vs, m) = model(64);
        for (_, t) in vs.variables() {
            let _ = t.set_requires_grad(true);
        }
        let (batch, boxes) = view(2);
        let out = m.forward_view(&batch, &boxes, true);
        let total = out
            .losses
            .iter()
            .fold(out.embeddings.sum(Kind::Float) * 0.0, |a, (_, l)| {
                assert!(l.double_value(&[]).is_finite());
                a + l
            })
            + out.embeddings.sum(Kind::Float);
        total.backward();
        for (name, t) in vs.variables() {
            let g = t.grad();
            let has = g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0;
            if name.starts_with("backbone.body") {
                assert!(!has, "{name} got a gradient through the frozen body");
            }
        }
        let g = vs.variables()["head.regression_head.bbox_reg.weight"].grad();
        assert!(g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
}
