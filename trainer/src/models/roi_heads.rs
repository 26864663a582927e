//! torchvision's Faster R-CNN box branch: RoIAlign over P2–P5, `TwoMLPHead` (fc6, fc7 with
//! 1024 units), `FastRCNNPredictor` (class scores and per-class box deltas), the training
//! losses (`fastrcnn_loss`) and the post-processing into detections.

use super::box_coder::BoxCoder;
use super::box_ops::box_iou;
use super::box_ops::clip_boxes;
use super::detector::{Detections, Losses, Targets};
use super::linear::torch_linear;
use super::losses::smooth_l1_sum;
use super::mask_targets::Positives;
use super::matcher::{BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher, clamp_matches};
use super::roi_align::MultiScaleRoIAlign;
use super::rpn::grouped_nms;
use super::sampler::BalancedSampler;
use tch::nn::{self, Module};
use tch::{Kind, Reduction, Tensor};

/// `TwoMLPHead`: flattened RoI features → fc6 → ReLU → fc7 → ReLU.
#[derive(Debug)]
pub struct TwoMlpHead {
    fc6: nn::Linear,
    fc7: nn::Linear,
}

impl TwoMlpHead {
    /// `vs` is the `roi_heads.box_head` path.
    pub fn new(vs: &nn::Path, in_features: i64, representation: i64) -> TwoMlpHead {
        TwoMlpHead {
            fc6: torch_linear(vs / "fc6", in_features, representation),
            fc7: torch_linear(vs / "fc7", representation, representation),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let x = self.fc6.forward(&x.flatten(1, -1)).relu();
        self.fc7.forward(&x).relu()
    }
}

/// `FastRCNNPredictor`: class logits `[K, C]` and box deltas `[K, 4C]` (background included).
#[derive(Debug)]
pub struct FastRcnnPredictor {
    cls_score: nn::Linear,
    bbox_pred: nn::Linear,
}

impl FastRcnnPredictor {
    /// `vs` is the `roi_heads.box_predictor` path.
    pub fn new(vs: &nn::Path, in_features: i64, num_classes: i64) -> FastRcnnPredictor {
        FastRcnnPredictor {
            cls_score: torch_linear(vs / "cls_score", in_features, num_classes),
            bbox_pred: torch_linear(vs / "bbox_pred", in_features, num_classes * 4),
        }
    }

    pub fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let x = x.flatten(1, -1);
        (self.cls_score.forward(&x), self.bbox_pred.forward(&x))
    }
}

/// torchvision's defaults for inference.
#[derive(Debug, Clone)]
pub struct RoiHeadsSettings {
    pub score_thresh: f64,
    pub nms_thresh: f64,
    pub detections_per_img: i64,
    /// Boxes with a side below this are dropped after decoding.
    pub min_size: f64,
}

impl Default for RoiHeadsSettings {
    fn default() -> Self {
        RoiHeadsSettings {
            score_thresh: 0.05,
            nms_thresh: 0.5,
            detections_per_img: 100,
            min_size: 1e-2,
        }
    }
}

#[derive(Debug)]
pub struct RoiHeads {
    pub box_roi_pool: MultiScaleRoIAlign,
    pub box_head: TwoMlpHead,
    pub box_predictor: FastRcnnPredictor,
    pub matcher: Matcher,
    pub sampler: BalancedSampler,
    pub box_coder: BoxCoder,
    pub settings: RoiHeadsSettings,
    pub num_classes: i64,
}

/// Proposals chosen for training one image, with their targets.
struct Sampled {
    proposals: Tensor,
    labels: Tensor,
    /// Index of the ground truth each proposal matched (0 where it matched none).
    matched: Tensor,
    regression_targets: Tensor,
}

impl Sampled {
    /// The positives among the sampled proposals (what the mask branch trains on).
    fn positives(&self) -> Positives {
        let pos = self.labels.gt(0).nonzero().squeeze_dim(1);
        Positives {
            boxes: self.proposals.index_select(0, &pos),
            matched: self.matched.index_select(0, &pos),
            labels: self.labels.index_select(0, &pos),
        }
    }
}

impl RoiHeads {
    /// `vs` is the `roi_heads` path; `num_classes` includes the background (index 0).
    pub fn new(vs: &nn::Path, channels: i64, num_classes: i64) -> RoiHeads {
        let pool = MultiScaleRoIAlign::default();
        let (ph, pw) = pool.output_size;
        let representation = 1024;
        RoiHeads {
            box_head: TwoMlpHead::new(&(vs / "box_head"), channels * ph * pw, representation),
            box_predictor: FastRcnnPredictor::new(
                &(vs / "box_predictor"),
                representation,
                num_classes,
            ),
            box_roi_pool: pool,
            matcher: Matcher {
                high_threshold: 0.5,
                low_threshold: 0.5,
                allow_low_quality_matches: false,
            },
            sampler: BalancedSampler::new(512, 0.25),
            box_coder: BoxCoder::new([10.0, 10.0, 5.0, 5.0]),
            settings: RoiHeadsSettings::default(),
            num_classes,
        }
    }

    /// Class logits and box deltas for the proposals of every image (concatenated).
    fn predict(
        &self,
        features: &[Tensor],
        proposals: &[Tensor],
        image_sizes: &[(i64, i64)],
    ) -> (Tensor, Tensor) {
        let pooled = self.box_roi_pool.forward(features, proposals, image_sizes);
        self.box_predictor.forward(&self.box_head.forward(&pooled))
    }

    /// torchvision's `select_training_samples` for one image: add the ground truth to the
    /// proposals, match at 0.5, sample 512 with at most a quarter positive.
    fn sample(&self, proposals: &Tensor, target: &Targets) -> Sampled {
        let device = proposals.device();
        let gt = target.boxes.to_kind(proposals.kind());
        let proposals = Tensor::cat(&[proposals, &gt], 0);
        let n = proposals.size()[0];
        let (matched, labels) = if gt.size()[0] == 0 {
            let z = Tensor::zeros([n], (Kind::Int64, device));
            (z.shallow_clone(), z)
        } else {
            let matches = self.matcher.assign(&box_iou(&gt, &proposals));
            let clamped = clamp_matches(&matches);
            let labels = target
                .labels
                .to_kind(Kind::Int64)
                .index_select(0, &clamped)
                .masked_fill(&matches.eq(BELOW_LOW_THRESHOLD), 0)
                .masked_fill(&matches.eq(BETWEEN_THRESHOLDS), -1);
            (clamped, labels)
        };
        let (pos, neg) = self.sampler.sample(&labels);
        let (keep, _) = Tensor::cat(&[pos, neg], 0).sort(0, false);
        let proposals = proposals.index_select(0, &keep);
        let matched = matched.index_select(0, &keep);
        let gt = if gt.size()[0] == 0 {
            Tensor::zeros([1, 4], (proposals.kind(), device))
        } else {
            gt
        };
        let matched_gt = gt.index_select(0, &matched);
        Sampled {
            regression_targets: self.box_coder.encode(&matched_gt, &proposals),
            labels: labels.index_select(0, &keep),
            matched,
            proposals,
        }
    }

    /// `loss_classifier` (cross-entropy over the sampled proposals) and `loss_box_reg`
    /// (smooth-L1, β = 1/9, of the true class's deltas on positives, divided by the number of
    /// sampled proposals).
    pub fn losses(
        &self,
        features: &[Tensor],
        proposals: &[Tensor],
        image_sizes: &[(i64, i64)],
        targets: &[Targets],
    ) -> Losses {
        self.losses_and_positives(features, proposals, image_sizes, targets)
            .0
    }

    /// [`Self::losses`], and per image the positive proposals of the same sample (Mask
    /// R-CNN's mask branch trains on exactly these, as in torchvision).
    pub fn losses_and_positives(
        &self,
        features: &[Tensor],
        proposals: &[Tensor],
        image_sizes: &[(i64, i64)],
        targets: &[Targets],
    ) -> (Losses, Vec<Positives>) {
        let sampled: Vec<Sampled> = proposals
            .iter()
            .zip(targets)
            .map(|(p, t)| self.sample(p, t))
            .collect();
        let props: Vec<Tensor> = sampled
            .iter()
            .map(|s| s.proposals.shallow_clone())
            .collect();
        let (logits, deltas) = self.predict(features, &props, image_sizes);
        let labels = Tensor::cat(&sampled.iter().map(|s| &s.labels).collect::<Vec<_>>(), 0);
        let reg_targets = Tensor::cat(
            &sampled
                .iter()
                .map(|s| &s.regression_targets)
                .collect::<Vec<_>>(),
            0,
        );
        let classification =
            logits.cross_entropy_loss::<Tensor>(&labels, None, Reduction::Mean, -100, 0.0);
        let pos = labels.gt(0).nonzero().squeeze_dim(1);
        let labels_pos = labels.index_select(0, &pos);
        let k = logits.size()[0];
        let pred = deltas
            .reshape([k, -1, 4])
            .index_select(0, &pos)
            .gather(
                1,
                &labels_pos.view([-1, 1, 1]).expand([-1, 1, 4], false),
                false,
            )
            .squeeze_dim(1);
        let box_loss = smooth_l1_sum(&pred, &reg_targets.index_select(0, &pos), 1.0 / 9.0)
            / labels.size()[0] as f64;
        let losses = vec![
            ("loss_classifier".to_string(), classification),
            ("loss_box_reg".to_string(), box_loss),
        ];
        (losses, sampled.iter().map(Sampled::positives).collect())
    }

    /// Detections per image in the coordinates of the (resized) batch.
    pub fn detect(
        &self,
        features: &[Tensor],
        proposals: &[Tensor],
        image_sizes: &[(i64, i64)],
    ) -> Vec<Detections> {
        let (logits, deltas) = self.predict(features, proposals, image_sizes);
        let boxes = self.box_coder.decode(&deltas, &Tensor::cat(proposals, 0));
        let scores = logits.softmax(-1, Kind::Float);
        let mut start = 0;
        proposals
            .iter()
            .zip(image_sizes)
            .map(|(p, &size)| {
                let n = p.size()[0];
                let d = self.postprocess(
                    &boxes.narrow(0, start, n),
                    &scores.narrow(0, start, n),
                    size,
                );
                start += n;
                d
            })
            .collect()
    }

    /// One image: every (proposal, foreground class) pair is a candidate; score threshold,
    /// tiny-box filter, per-class NMS, best `detections_per_img`.
    fn postprocess(&self, boxes: &Tensor, scores: &Tensor, size: (i64, i64)) -> Detections {
        let s = &self.settings;
        let nc = self.num_classes;
        let n = boxes.size()[0];
        let boxes = clip_boxes(&boxes.reshape([-1, 4]), size).view([n, nc, 4]);
        let labels = Tensor::arange(nc, (Kind::Int64, boxes.device()))
            .view([1, -1])
            .expand([n, nc], false);
        let boxes = boxes.narrow(1, 1, nc - 1).reshape([-1, 4]);
        let scores = scores.narrow(1, 1, nc - 1).reshape([-1]);
        let labels = labels.narrow(1, 1, nc - 1).reshape([-1]);
        let w = boxes.select(1, 2) - boxes.select(1, 0);
        let h = boxes.select(1, 3) - boxes.select(1, 1);
        // torchvision filters by score first, then by size; the order does not change the set
        let keep = scores
            .gt(s.score_thresh)
            .logical_and(&w.ge(s.min_size))
            .logical_and(&h.ge(s.min_size))
            .nonzero()
            .squeeze_dim(1);
        let (boxes, scores, labels) = (
            boxes.index_select(0, &keep),
            scores.index_select(0, &keep),
            labels.index_select(0, &keep),
        );
        let keep = grouped_nms(&boxes, &scores, &labels, nc, s.nms_thresh);
        let keep = keep.narrow(0, 0, keep.size()[0].min(s.detections_per_img));
        Detections {
            boxes: boxes.index_select(0, &keep),
            scores: scores.index_select(0, &keep),
            labels: labels.index_select(0, &keep),
            masks: None,
        }
    }
}
