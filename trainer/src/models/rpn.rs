//! torchvision's region proposal network: `RPNHead` (3×3 conv + ReLU, 1×1 objectness and box
//! deltas per anchor), anchors of one size and three aspect ratios per level, proposal filtering
//! (per-level top-k, clip, small-box and score filters, per-level NMS, top-k) and the training
//! losses (anchor matching 0.7 / 0.3 with low-quality matches, balanced sampling, BCE and
//! smooth-L1).

use super::anchors::pyramid_anchors;
use super::box_coder::BoxCoder;
use super::box_ops::clip_boxes;
use super::box_ops::{box_iou, nms};
use super::detector::{Losses, Targets};
use super::head::{flatten_level, head_conv};
use super::losses::smooth_l1_sum;
use super::matcher::{BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher, clamp_matches};
use super::sampler::BalancedSampler;
use super::transform::ImageBatch;
use tch::nn::{self, Module};
use tch::{Kind, Reduction, Tensor};

/// `RPNHead` with torchvision's names: `conv.0.0` (the conv of a conv-ReLU block),
/// `cls_logits`, `bbox_pred`.
#[derive(Debug)]
pub struct RpnHead {
    conv: nn::Conv2D,
    cls_logits: nn::Conv2D,
    bbox_pred: nn::Conv2D,
}

impl RpnHead {
    /// `vs` is the `rpn.head` path.
    pub fn new(vs: &nn::Path, channels: i64, num_anchors: i64) -> RpnHead {
        RpnHead {
            conv: head_conv(vs / "conv" / 0 / 0, channels, channels, 3, 0.0),
            cls_logits: head_conv(vs / "cls_logits", channels, num_anchors, 1, 0.0),
            bbox_pred: head_conv(vs / "bbox_pred", channels, num_anchors * 4, 1, 0.0),
        }
    }

    /// Per level: objectness `[N, A, H, W]` and deltas `[N, 4A, H, W]`.
    pub fn forward(&self, features: &[Tensor]) -> (Vec<Tensor>, Vec<Tensor>) {
        features
            .iter()
            .map(|f| {
                let t = self.conv.forward(f).relu();
                (self.cls_logits.forward(&t), self.bbox_pred.forward(&t))
            })
            .unzip()
    }
}

/// torchvision's defaults for `fasterrcnn_resnet50_fpn`.
#[derive(Debug, Clone)]
pub struct RpnSettings {
    pub pre_nms_top_n_train: i64,
    pub pre_nms_top_n_test: i64,
    pub post_nms_top_n_train: i64,
    pub post_nms_top_n_test: i64,
    pub nms_thresh: f64,
    pub min_size: f64,
    pub score_thresh: f64,
}

impl Default for RpnSettings {
    fn default() -> Self {
        RpnSettings {
            pre_nms_top_n_train: 2000,
            pre_nms_top_n_test: 1000,
            post_nms_top_n_train: 2000,
            post_nms_top_n_test: 1000,
            nms_thresh: 0.7,
            min_size: 1e-3,
            score_thresh: 0.0,
        }
    }
}

#[derive(Debug)]
pub struct Rpn {
    pub head: RpnHead,
    /// One anchor size per pyramid level (P2–P6).
    pub anchor_sizes: Vec<f64>,
    pub aspect_ratios: Vec<f64>,
    pub settings: RpnSettings,
    pub matcher: Matcher,
    pub sampler: BalancedSampler,
    pub box_coder: BoxCoder,
}

/// Head outputs flattened over levels, with the anchors they refer to.
struct RpnOutputs {
    /// `[N, ΣHWA]`
    objectness: Tensor,
    /// `[N, ΣHWA, 4]`
    deltas: Tensor,
    /// `[ΣHWA, 4]`, the same for every image of the batch
    anchors: Tensor,
    level_sizes: Vec<i64>,
}

impl Rpn {
    /// `vs` is the `rpn` path.
    pub fn new(vs: &nn::Path, channels: i64) -> Rpn {
        let aspect_ratios = vec![0.5, 1.0, 2.0];
        Rpn {
            head: RpnHead::new(&(vs / "head"), channels, aspect_ratios.len() as i64),
            anchor_sizes: vec![32.0, 64.0, 128.0, 256.0, 512.0],
            aspect_ratios,
            settings: RpnSettings::default(),
            matcher: Matcher {
                high_threshold: 0.7,
                low_threshold: 0.3,
                allow_low_quality_matches: true,
            },
            sampler: BalancedSampler::new(256, 0.5),
            box_coder: BoxCoder::new([1.0, 1.0, 1.0, 1.0]),
        }
    }

    fn outputs(&self, batch: &ImageBatch, features: &[Tensor]) -> RpnOutputs {
        let (logits, deltas) = self.head.forward(features);
        let sizes = self.anchor_sizes.iter().map(std::slice::from_ref);
        let anchors = pyramid_anchors(&batch.tensor, features, sizes, &self.aspect_ratios);
        let level_sizes = anchors.iter().map(|a| a.size()[0]).collect();
        let objectness: Vec<Tensor> = logits.iter().map(|t| flatten_level(t, 1)).collect();
        let deltas: Vec<Tensor> = deltas.iter().map(|t| flatten_level(t, 4)).collect();
        RpnOutputs {
            objectness: Tensor::cat(&objectness, 1).squeeze_dim(2),
            deltas: Tensor::cat(&deltas, 1),
            anchors: Tensor::cat(&anchors, 0),
            level_sizes,
        }
    }

    /// Proposals per image (`[P, 4]`, by decreasing objectness) and, when `targets` are given,
    /// the losses `loss_objectness` and `loss_rpn_box_reg`. With targets the training top-n
    /// settings apply, as in torchvision's training mode.
    pub fn forward(
        &self,
        batch: &ImageBatch,
        features: &[Tensor],
        targets: Option<&[Targets]>,
    ) -> (Vec<Tensor>, Losses) {
        let out = self.outputs(batch, features);
        let n = out.objectness.size()[0];
        let num_anchors = out.anchors.size()[0];
        // Faster R-CNN does not back-propagate through the proposals.
        let proposals = self
            .box_coder
            .decode(
                &out.deltas.detach().reshape([-1, 4]),
                &out.anchors.repeat([n, 1]),
            )
            .view([n, num_anchors, 4]);
        let training = targets.is_some();
        let proposals = self.filter_proposals(&proposals, &out, &batch.image_sizes, training);
        let losses = match targets {
            Some(t) => self.losses(&out, t),
            None => vec![],
        };
        (proposals, losses)
    }

    fn filter_proposals(
        &self,
        proposals: &Tensor,
        out: &RpnOutputs,
        image_sizes: &[(i64, i64)],
        training: bool,
    ) -> Vec<Tensor> {
        let s = &self.settings;
        let (pre, post) = if training {
            (s.pre_nms_top_n_train, s.post_nms_top_n_train)
        } else {
            (s.pre_nms_top_n_test, s.post_nms_top_n_test)
        };
        let device = proposals.device();
        let objectness = out.objectness.detach();
        // best `pre` anchors of every level, per image
        let mut top = vec![];
        let mut levels = vec![];
        let mut offset = 0;
        for (lvl, &len) in out.level_sizes.iter().enumerate() {
            let k = pre.min(len);
            let (_, idx) = objectness.narrow(1, offset, len).topk(k, 1, true, true);
            top.push(idx + offset);
            levels.push(Tensor::full([k], lvl as i64, (Kind::Int64, device)));
            offset += len;
        }
        let top = Tensor::cat(&top, 1);
        let levels = Tensor::cat(&levels, 0);
        (0..proposals.size()[0])
            .map(|i| {
                let idx = top.get(i);
                let boxes = clip_boxes(
                    &proposals.get(i).index_select(0, &idx),
                    image_sizes[i as usize],
                );
                let scores = objectness.get(i).index_select(0, &idx).sigmoid();
                let w = boxes.select(1, 2) - boxes.select(1, 0);
                let h = boxes.select(1, 3) - boxes.select(1, 1);
                let keep = w
                    .ge(s.min_size)
                    .logical_and(&h.ge(s.min_size))
                    .logical_and(&scores.ge(s.score_thresh))
                    .nonzero()
                    .squeeze_dim(1);
                let boxes = boxes.index_select(0, &keep);
                let scores = scores.index_select(0, &keep);
                let lvl = levels.index_select(0, &keep);
                let num_levels = out.level_sizes.len() as i64;
                let keep = grouped_nms(&boxes, &scores, &lvl, num_levels, s.nms_thresh);
                let keep = keep.narrow(0, 0, keep.size()[0].min(post));
                boxes.index_select(0, &keep)
            })
            .collect()
    }

    fn losses(&self, out: &RpnOutputs, targets: &[Targets]) -> Losses {
        let num_anchors = out.anchors.size()[0];
        let device = out.anchors.device();
        let (mut labels, mut reg_targets, mut pos, mut neg) = (vec![], vec![], vec![], vec![]);
        for (i, t) in targets.iter().enumerate() {
            let (l, matched_gt) = if t.boxes.size()[0] == 0 {
                (
                    Tensor::zeros([num_anchors], (Kind::Float, device)),
                    out.anchors.zeros_like(),
                )
            } else {
                let gt = t.boxes.to_kind(Kind::Float);
                let matches = self.matcher.assign(&box_iou(&gt, &out.anchors));
                let matched_gt = gt.index_select(0, &clamp_matches(&matches));
                let l = matches
                    .ge(0)
                    .to_kind(Kind::Float)
                    .masked_fill(&matches.eq(BELOW_LOW_THRESHOLD), 0.0)
                    .masked_fill(&matches.eq(BETWEEN_THRESHOLDS), -1.0);
                (l, matched_gt)
            };
            let (p, n) = self.sampler.sample(&l);
            let base = i as i64 * num_anchors;
            pos.push(p + base);
            neg.push(n + base);
            reg_targets.push(self.box_coder.encode(&matched_gt, &out.anchors));
            labels.push(l);
        }
        let pos = Tensor::cat(&pos, 0);
        let sampled = Tensor::cat(&[pos.shallow_clone(), Tensor::cat(&neg, 0)], 0);
        let labels = Tensor::cat(&labels, 0);
        let reg_targets = Tensor::cat(&reg_targets, 0);
        let deltas = out.deltas.reshape([-1, 4]);
        let box_loss = smooth_l1_sum(
            &deltas.index_select(0, &pos),
            &reg_targets.index_select(0, &pos),
            1.0 / 9.0,
        ) / sampled.size()[0] as f64;
        let objectness_loss = out
            .objectness
            .reshape([-1])
            .index_select(0, &sampled)
            .binary_cross_entropy_with_logits::<Tensor>(
                &labels.index_select(0, &sampled),
                None,
                None,
                Reduction::Mean,
            );
        vec![
            ("loss_objectness".to_string(), objectness_loss),
            ("loss_rpn_box_reg".to_string(), box_loss),
        ]
    }
}

/// NMS within each group `0..num_groups` (pyramid level, class; groups never suppress each
/// other), kept indices by decreasing score: what torchvision's `batched_nms` returns, one
/// group at a time so that the IoU matrices stay small.
pub fn grouped_nms(
    boxes: &Tensor,
    scores: &Tensor,
    groups: &Tensor,
    num_groups: i64,
    thresh: f64,
) -> Tensor {
    let kept: Vec<Tensor> = (0..num_groups)
        .map(|g| {
            let idx = groups.eq(g).nonzero().squeeze_dim(1);
            let keep = nms(
                &boxes.index_select(0, &idx),
                &scores.index_select(0, &idx),
                thresh,
            );
            idx.index_select(0, &keep)
        })
        .collect();
    let kept = Tensor::cat(&kept, 0);
    let (_, order) = scores.index_select(0, &kept).sort(0, true);
    kept.index_select(0, &order)
}
