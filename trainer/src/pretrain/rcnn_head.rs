//! Faster R-CNN in its AlignDet pre-training form (method notes, 6.1), on our Faster R-CNN's
//! FPN, RPN, RoIAlign and box head:
//!
//! - the RPN trains on the pseudo-boxes as objects (IoU ≥ 0.7 / < 0.3, up to `samples`
//!   anchors per image, positives first) and proposes 1,000 boxes per image;
//! - RoIs: the proposals plus the pseudo-boxes themselves, matched at IoU ≥ 0.5; only positives
//!   are kept, every pseudo-box among them, up to `samples` per image;
//! - each RoI's box-head feature (`roi_heads.box_head`, which transfers) feeds the projector MLP
//!   (Linear 1024→1024, ReLU, Linear 1024→d, N(0, 0.01)) and a class-agnostic regression
//!   (Linear 1024→4, N(0, 0.001); the reference's class-specific one indexes by instance id,
//!   defect A6);
//! - losses: the RPN's two terms (torchvision's: BCE and smooth-L1 β = 1/9; the reference uses
//!   L1), and L1 on the deltas (weights 10, 10, 5, 5) averaged over the sampled RoIs.
//!
//! There are no background RoIs, so the contrastive negatives are the other instances' RoIs.

use super::contrastive::normalize;
use super::detector::{
    BoxPretrainer, ViewOutput, count_instances, frozen_features, instance_offsets,
};
use crate::models::backbone::{Body, BodyKind, build_body};
use crate::models::box_coder::BoxCoder;
use crate::models::box_ops::box_iou;
use crate::models::detector::Targets;
use crate::models::fpn::{ExtraLevels, Fpn};
use crate::models::losses::l1_sum;
use crate::models::matcher::Matcher;
use crate::models::norm::NormKind;
use crate::models::roi_align::MultiScaleRoIAlign;
use crate::models::roi_heads::TwoMlpHead;
use crate::models::rpn::Rpn;
use crate::models::sampler::BalancedSampler;
use crate::models::transform::{DetectionTransform, ImageBatch};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// P2–P5 are pooled (P6 only feeds the RPN), as in our Faster R-CNN.
const POOLED_LEVELS: usize = 4;
const REPRESENTATION: i64 = 1024;
/// The norm the pre-training regressor's input is rescaled to (see `forward_view`).
const REGRESSION_FEATURE_NORM: f64 = 8.0;

fn linear(vs: nn::Path, cin: i64, cout: i64, std: f64) -> nn::Linear {
    nn::linear(
        vs,
        cin,
        cout,
        nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: std,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        },
    )
}

#[derive(Debug)]
pub struct RcnnPretrainer {
    body: Box<dyn Body>,
    fpn: Fpn,
    rpn: Rpn,
    box_roi_pool: MultiScaleRoIAlign,
    box_head: TwoMlpHead,
    projector: (nn::Linear, nn::Linear),
    regression: nn::Linear,
    transform: DetectionTransform,
    roi_matcher: Matcher,
    rois_per_image: i64,
    box_coder: BoxCoder,
    embedding_dim: i64,
}

impl RcnnPretrainer {
    pub fn new(
        vs: &nn::Path,
        body: BodyKind,
        norm: NormKind,
        embedding_dim: i64,
        samples_per_image: i64,
    ) -> RcnnPretrainer {
        let bb = vs / "backbone";
        let body = build_body(&(&bb / "body"), body, norm);
        let chans = body.out_channels();
        let transform = DetectionTransform::for_body(body.as_ref());
        let mut rpn = Rpn::new(&(vs / "rpn"), 256);
        rpn.sampler = BalancedSampler::new(samples_per_image, 1.0);
        rpn.settings.post_nms_top_n_train = 1000;
        let pool = MultiScaleRoIAlign::default();
        let (ph, pw) = pool.output_size;
        let roi = vs / "roi_heads";
        RcnnPretrainer {
            fpn: Fpn::new(&(&bb / "fpn"), &chans, 256, ExtraLevels::MaxPool),
            rpn,
            box_head: TwoMlpHead::new(&(&roi / "box_head"), 256 * ph * pw, REPRESENTATION),
            box_roi_pool: pool,
            projector: (
                linear(&roi / "projector" / 0, REPRESENTATION, REPRESENTATION, 0.01),
                linear(&roi / "projector" / 2, REPRESENTATION, embedding_dim, 0.01),
            ),
            regression: linear(&roi / "pretrain_reg", REPRESENTATION, 4, 0.001),
            body,
            transform,
            roi_matcher: Matcher {
                high_threshold: 0.5,
                low_threshold: 0.5,
                allow_low_quality_matches: true,
            },
            rois_per_image: samples_per_image,
            box_coder: BoxCoder::new([10.0, 10.0, 5.0, 5.0]),
            embedding_dim,
        }
    }
}

/// The RoI sampler of pre-training: the pseudo-boxes themselves, then randomly drawn other
/// positive proposals (IoU ≥ 0.5 with a pseudo-box) up to `budget` RoIs in all; never a
/// negative. Returns the RoIs `[k, 4]` and the index of the pseudo-box each one belongs to.
pub fn sample_positive_rois(
    proposals: &Tensor,
    pseudo_boxes: &Tensor,
    matcher: &Matcher,
    budget: i64,
) -> (Tensor, Tensor) {
    let device = proposals.device();
    let n_gt = pseudo_boxes.size()[0];
    let gt_idx = Tensor::arange(n_gt, (Kind::Int64, device));
    if n_gt == 0 || proposals.size()[0] == 0 {
        return (pseudo_boxes.shallow_clone(), gt_idx);
    }
    let matches = matcher.assign(&box_iou(pseudo_boxes, proposals));
    let positive = matches.ge(0).nonzero().squeeze_dim(1);
    let room = (budget - n_gt).max(0).min(positive.size()[0]);
    let drawn = positive.index_select(
        0,
        &Tensor::randperm(positive.size()[0], (Kind::Int64, device)).narrow(0, 0, room),
    );
    let rois = Tensor::cat(&[pseudo_boxes, &proposals.index_select(0, &drawn)], 0);
    let owner = Tensor::cat(&[gt_idx, matches.index_select(0, &drawn)], 0);
    (rois, owner)
}

impl BoxPretrainer for RcnnPretrainer {
    fn transform(&self) -> &DetectionTransform {
        &self.transform
    }

    fn body(&self) -> &dyn Body {
        self.body.as_ref()
    }

    fn forward_view(&self, batch: &ImageBatch, boxes: &[Tensor], with_losses: bool) -> ViewOutput {
        let c = frozen_features(self.body.as_ref(), &batch.tensor);
        let features = self.fpn.forward(&c);
        let device = features[0].device();
        let boxes: Vec<Tensor> = boxes
            .iter()
            .map(|b| b.to_device(device).to_kind(Kind::Float))
            .collect();
        let targets: Vec<Targets> = boxes
            .iter()
            .map(|b| Targets {
                boxes: b.shallow_clone(),
                labels: Tensor::ones([b.size()[0]], (Kind::Int64, device)),
                masks: None,
            })
            .collect();
        // the RPN's own losses are needed only for the online view
        let (proposals, rpn_losses) = if with_losses {
            self.rpn.forward(batch, &features, Some(&targets))
        } else {
            let (p, _) = self.rpn.forward(batch, &features, None);
            (p, vec![])
        };
        let offsets = instance_offsets(&boxes);
        let (mut rois, mut instances, mut reg_targets) = (vec![], vec![], vec![]);
        for (i, (p, b)) in proposals.iter().zip(&boxes).enumerate() {
            let (r, owner) = sample_positive_rois(p, b, &self.roi_matcher, self.rois_per_image);
            if b.size()[0] > 0 {
                reg_targets.push(self.box_coder.encode(&b.index_select(0, &owner), &r));
            }
            instances.push(owner + offsets[i]);
            rois.push(r);
        }
        let pooled =
            self.box_roi_pool
                .forward(&features[..POOLED_LEVELS], &rois, &batch.image_sizes);
        let x = self.box_head.forward(&pooled);
        let embeddings = self
            .projector
            .1
            .forward(&self.projector.0.forward(&x).relu());
        let instances = Tensor::cat(&instances, 0);
        let mut losses = rpn_losses;
        let mut stats = vec![
            ("positives".to_string(), instances.size()[0] as f64),
            ("negatives".to_string(), 0.0),
            ("instances".to_string(), count_instances(&instances)),
        ];
        if with_losses {
            let n = instances.size()[0];
            let loss = if n == 0 {
                x.sum(Kind::Float) * 0.0
            } else {
                let targets = Tensor::cat(&reg_targets, 0);
                // What leaving every RoI as it is (zero deltas) would score: the level the
                // regression must get below to have learnt anything.
                stats.push((
                    "regression_zero".to_string(),
                    targets.abs().sum(Kind::Float).double_value(&[]) / n as f64,
                ));
                // The regressor reads the box-head feature rescaled to a fixed norm. On the raw
                // fc7 output (norm about 65 per RoI, and growing) one SGD step moved its
                // predictions by several units, more than the targets span: the L1 loss rose
                // above regression_zero and the box head shrank its features to damp it, until
                // the embeddings collapsed. At norm 1 the regression barely learnt (0.03 below
                // regression_zero after 150 steps); at 8 it learns (0.37 below after 80) and
                // the embeddings keep their spread (docs/pretraining.md). The reference's
                // instance-indexed regressor spreads these updates over hundreds of rows; our
                // class-agnostic one (A6) takes them all.
                let pred = self
                    .regression
                    .forward(&(normalize(&x) * REGRESSION_FEATURE_NORM));
                l1_sum(&pred, &targets) / n as f64
            };
            losses.push(("regression".to_string(), loss));
        }
        // Diagnostics of the reported (online) view only; the momentum view's would be dropped.
        if with_losses && x.size()[0] > 0 {
            tch::no_grad(|| {
                // dead ReLUs: the share of fc7 units that fire on at least one RoI
                let active = x
                    .gt(0.0)
                    .any_dim(0, false)
                    .to_kind(Kind::Float)
                    .mean(Kind::Float);
                let norm = x
                    .norm_scalaropt_dim(2, [1i64].as_slice(), false)
                    .mean(Kind::Float);
                stats.push(("box_head_active".to_string(), active.double_value(&[])));
                stats.push(("box_head_norm".to_string(), norm.double_value(&[])));
            });
        }
        debug_assert_eq!(embeddings.size()[1], self.embedding_dim);
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

    fn matcher() -> Matcher {
        Matcher {
            high_threshold: 0.5,
            low_threshold: 0.5,
            allow_low_quality_matches: true,
        }
    }

    #[test]
    fn roi_sampler_keeps_only_positives_and_every_pseudo_box() {
        tch::manual_seed(3);
        let gt =
            Tensor::from_slice(&[0.0f32, 0.0, 10.0, 10.0, 50.0, 50.0, 90.0, 80.0]).view([2, 4]);
        // near copies of both boxes, and far-away negatives
        let mut props = vec![];
        for k in 0..30 {
            let d = (k % 3) as f32;
            props.extend_from_slice(&[d, d, 10.0 + d, 10.0]);
            props.extend_from_slice(&[50.0 + d, 50.0, 90.0, 80.0 + d]);
            props.extend_from_slice(&[200.0, 200.0, 220.0 + d, 230.0]);
        }
        let proposals = Tensor::from_slice(&props).view([-1, 4]);
        for budget in [2i64, 10, 40, 1000] {
            let (rois, owner) = sample_positive_rois(&proposals, &gt, &matcher(), budget);
            let k = rois.size()[0];
            assert_eq!(k, budget.clamp(2, 62), "budget {budget}");
            // every pseudo-box is there, as itself
            assert_eq!(
                Vec::<i64>::try_from(&owner.narrow(0, 0, 2)).unwrap(),
                vec![0, 1]
            );
            assert!(rois.narrow(0, 0, 2).equal(&gt));
            // only positives: each RoI overlaps its pseudo-box at IoU ≥ 0.5
            let iou = box_iou(&rois, &gt)
                .gather(1, &owner.view([-1, 1]), false)
                .squeeze_dim(1);
            assert!(iou.ge(0.5).all().int64_value(&[]) == 1);
        }
    }

    #[test]
    fn rpn_and_regression_losses_for_the_online_view() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = RcnnPretrainer::new(&vs.root(), BodyKind::Resnet18, NormKind::FrozenBn, 16, 64);
        let imgs: Vec<Tensor> = (0..2)
            .map(|_| Tensor::rand([3, 128, 128], (Kind::Float, Device::Cpu)))
            .collect();
        let boxes = vec![
            Tensor::from_slice(&[8.0f32, 8.0, 72.0, 72.0]).view([1, 4]),
            Tensor::from_slice(&[20.0f32, 20.0, 100.0, 90.0, 0.0, 64.0, 64.0, 128.0]).view([2, 4]),
        ];
        let batch = m.transform().pad_batch(&imgs);
        let out = m.forward_view(&batch, &boxes, true);
        let names: Vec<&str> = out.losses.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["loss_objectness", "loss_rpn_box_reg", "regression"]);
        assert!(
            out.losses
                .iter()
                .all(|(_, v)| v.double_value(&[]).is_finite())
        );
        // The regressor starts at N(0, 0.001) on a feature of norm 8: its loss is that of zero
        // deltas (within about 1 %), the level the stats report.
        let stat = |name: &str| {
            out.stats
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("no {name} stat"))
        };
        let regression = out.losses[2].1.double_value(&[]);
        let zero = stat("regression_zero");
        assert!(zero > 0.0);
        assert!(
            (regression - zero).abs() < 0.02 * zero,
            "{regression} vs {zero}"
        );
        assert!((0.0..=1.0).contains(&stat("box_head_active")));
        assert!(stat("box_head_norm") > 0.0);
        let ids = Vec::<i64>::try_from(&out.instances).unwrap();
        assert!(ids.iter().all(|&i| (0..3).contains(&i)));
        assert_eq!(count_instances(&out.instances), 3.0);
        assert_eq!(out.embeddings.size()[0], ids.len() as i64);
    }
}
