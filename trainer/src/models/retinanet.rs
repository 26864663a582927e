//! RetinaNet (torchvision's v1 design and parameter names): a body with an FPN P3–P7 (P6 from P5,
//! as `LastLevelP6P7(256, 256)`), 9 anchors per location, a classification head and a regression
//! head (4 × conv-ReLU towers, no norm), `BoxCoder` with unit weights; focal loss over the anchors
//! that are not ignored and L1 loss over the foreground, each divided by the image's foreground count.

use super::anchors::pyramid_anchors;
use super::backbone::{Body, BodyKind, build_body};
use super::box_coder::BoxCoder;
use super::box_ops::box_iou;
use super::dense::{DenseInference, detect_each};
use super::detector::{Detections, Detector, Losses, Targets};
use super::fpn::{ExtraLevels, Fpn};
use super::head::{flatten_level, head_conv3x3};
use super::losses::{l1_sum, sigmoid_focal_loss};
use super::matcher::{BETWEEN_THRESHOLDS, Matcher};
use super::norm::NormKind;
use super::transform::{DetectionTransform, ImageBatch};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Anchor aspect ratios (height / width) at every level.
pub const ASPECT_RATIOS: [f64; 3] = [0.5, 1.0, 2.0];

/// Base anchor size of P3–P7.
const BASE_SIZES: [f64; 5] = [32.0, 64.0, 128.0, 256.0, 512.0];

/// The three anchor sizes of every level: the base size times 2^0, 2^(1/3), 2^(2/3), truncated to
/// integers as torchvision's `_default_anchorgen` does (32 → 32, 40, 50).
pub fn default_anchor_sizes() -> Vec<[f64; 3]> {
    BASE_SIZES
        .iter()
        .map(|&x| {
            [
                x,
                (x * 2f64.powf(1.0 / 3.0)).trunc(),
                (x * 2f64.powf(2.0 / 3.0)).trunc(),
            ]
        })
        .collect()
}

/// 4 × (conv + ReLU); torchvision names them `conv.{i}.0` (`Conv2dNormActivation` without norm).
pub(crate) fn tower(vs: &nn::Path, channels: i64) -> Vec<nn::Conv2D> {
    (0..4)
        .map(|i| head_conv3x3(vs / i / 0, channels, channels, 0.0))
        .collect()
}

pub(crate) fn run_tower(convs: &[nn::Conv2D], x: &Tensor) -> Tensor {
    convs
        .iter()
        .fold(x.shallow_clone(), |x, c| c.forward(&x).relu())
}

/// `head.classification_head` and `head.regression_head`.
#[derive(Debug)]
pub struct RetinaNetHead {
    cls_conv: Vec<nn::Conv2D>,
    cls_logits: nn::Conv2D,
    reg_conv: Vec<nn::Conv2D>,
    bbox_reg: nn::Conv2D,
    pub num_classes: i64,
    pub num_anchors: i64,
}

/// Raw head outputs over all levels, `[N, ΣHWA, K]` and `[N, ΣHWA, 4]`, and the number of
/// anchors per level (H·W·A).
pub struct RetinaNetOutputs {
    pub cls_logits: Tensor,
    pub bbox_regression: Tensor,
    pub level_sizes: Vec<i64>,
}

impl RetinaNetHead {
    /// `vs` is the `head` path.
    pub fn new(vs: &nn::Path, channels: i64, num_anchors: i64, num_classes: i64) -> RetinaNetHead {
        // Focal-loss prior: every class starts at probability 0.01, so that the many
        // background anchors do not swamp the first iterations.
        let prior = 0.01f64;
        let cls = vs / "classification_head";
        let reg = vs / "regression_head";
        RetinaNetHead {
            cls_conv: tower(&(&cls / "conv"), channels),
            cls_logits: head_conv3x3(
                &cls / "cls_logits",
                channels,
                num_anchors * num_classes,
                -((1.0 - prior) / prior).ln(),
            ),
            reg_conv: tower(&(&reg / "conv"), channels),
            bbox_reg: head_conv3x3(&reg / "bbox_reg", channels, num_anchors * 4, 0.0),
            num_classes,
            num_anchors,
        }
    }

    pub fn forward(&self, features: &[Tensor]) -> RetinaNetOutputs {
        let (mut cls, mut reg, mut sizes) = (vec![], vec![], vec![]);
        for f in features {
            let s = f.size();
            sizes.push(s[2] * s[3] * self.num_anchors);
            let c = self.cls_logits.forward(&run_tower(&self.cls_conv, f));
            cls.push(flatten_level(&c, self.num_classes));
            let r = self.bbox_reg.forward(&run_tower(&self.reg_conv, f));
            reg.push(flatten_level(&r, 4));
        }
        RetinaNetOutputs {
            cls_logits: Tensor::cat(&cls, 1),
            bbox_regression: Tensor::cat(&reg, 1),
            level_sizes: sizes,
        }
    }
}

#[derive(Debug)]
pub struct RetinaNet {
    pub body: Box<dyn Body>,
    pub fpn: Fpn,
    pub head: RetinaNetHead,
    pub transform: DetectionTransform,
    pub inference: DenseInference,
    /// Foreground at IoU ≥ 0.5, background below 0.4, ignored between; every box keeps its best
    /// anchors.
    pub matcher: Matcher,
    pub box_coder: BoxCoder,
    /// Anchor sizes per level (P3–P7), each combined with every ratio of [`ASPECT_RATIOS`].
    pub anchor_sizes: Vec<[f64; 3]>,
}

impl RetinaNet {
    /// RetinaNet on a body with an FPN (P3–P7), under `vs` with torchvision's names
    /// (`backbone.body`, `backbone.fpn`, `head`). `num_classes` is the number of class logits
    /// (torchvision's convention: label = logit index, see [`Targets`]).
    pub fn new(vs: &nn::Path, body: BodyKind, norm: NormKind, num_classes: i64) -> RetinaNet {
        let bb = vs / "backbone";
        let body = build_body(&(&bb / "body"), body, norm);
        let chans = body.out_channels();
        let transform = DetectionTransform::for_body(body.as_ref());
        let anchor_sizes = default_anchor_sizes();
        let num_anchors = (anchor_sizes[0].len() * ASPECT_RATIOS.len()) as i64;
        RetinaNet {
            fpn: Fpn::new(&(&bb / "fpn"), &chans[1..], 256, ExtraLevels::P6P7),
            head: RetinaNetHead::new(&(vs / "head"), 256, num_anchors, num_classes),
            body,
            transform,
            inference: DenseInference::retinanet(),
            matcher: Matcher {
                high_threshold: 0.5,
                low_threshold: 0.4,
                allow_low_quality_matches: true,
            },
            box_coder: BoxCoder::new([1.0, 1.0, 1.0, 1.0]),
            anchor_sizes,
        }
    }

    pub fn features(&self, batch: &Tensor, train: bool) -> Vec<Tensor> {
        let c = self.body.forward_t(batch, train);
        self.fpn.forward(&c[1..])
    }

    /// Anchors of every level for a padded batch, concatenated `[ΣHWA, 4]`.
    pub fn anchors(&self, batch: &ImageBatch, features: &[Tensor]) -> Tensor {
        let sizes = self.anchor_sizes.iter().map(|s| s.as_slice());
        Tensor::cat(
            &pyramid_anchors(&batch.tensor, features, sizes, &ASPECT_RATIOS),
            0,
        )
    }

    /// One image's detections in resized-image pixels (see [`DenseInference::select`]).
    fn postprocess(
        &self,
        out: &RetinaNetOutputs,
        anchors: &Tensor,
        image: i64,
        size: (i64, i64),
    ) -> Detections {
        let (logits, reg) = (out.cls_logits.get(image), out.bbox_regression.get(image));
        self.inference.select(
            &out.level_sizes,
            size,
            |start, n| logits.narrow(0, start, n).sigmoid(),
            |start, n, idx| {
                self.box_coder.decode(
                    &reg.narrow(0, start, n).index_select(0, idx),
                    &anchors.narrow(0, start, n).index_select(0, idx),
                )
            },
        )
    }

    /// For every anchor the index of its ground-truth box, −1 (background) or −2 (ignored).
    pub fn match_anchors(&self, anchors: &Tensor, gt_boxes: &Tensor) -> Tensor {
        if gt_boxes.numel() == 0 {
            return Tensor::full([anchors.size()[0]], -1, (Kind::Int64, anchors.device()));
        }
        self.matcher.assign(&box_iou(gt_boxes, anchors))
    }
}

/// torchvision's `RetinaNetHead.compute_loss`: per image, focal loss summed over the anchors that
/// are not ignored and L1 loss of the `BoxCoder` targets summed over the foreground, each divided
/// by max(1, foreground count); both terms averaged over the images. Labels are logit indices and
/// must be below `num_classes` (the dataset layer builds the detector with K + 1 classes).
pub fn retinanet_losses(
    out: &RetinaNetOutputs,
    anchors: &Tensor,
    matched: &[Tensor],
    targets: &[Targets],
    coder: &BoxCoder,
) -> Losses {
    let device = anchors.device();
    let mut loss_cls = Tensor::zeros([], (Kind::Float, device));
    let mut loss_reg = Tensor::zeros([], (Kind::Float, device));
    for (i, (t, m)) in targets.iter().zip(matched).enumerate() {
        let logits = out.cls_logits.get(i as i64);
        let reg = out.bbox_regression.get(i as i64);
        let fg_idx = m.ge(0).nonzero().squeeze_dim(1);
        let num_fg = fg_idx.size()[0].max(1) as f64;
        let gt_idx = m.index_select(0, &fg_idx);

        // one-hot targets on the foreground anchors, zero elsewhere
        let mut cls_target = logits.zeros_like();
        if fg_idx.numel() > 0 {
            let fg_labels = t.labels.to_device(device).index_select(0, &gt_idx);
            let _ = cls_target.index_put_(
                &[Some(&fg_idx), Some(&fg_labels)],
                &Tensor::ones([], (Kind::Float, device)),
                false,
            );
        }
        let valid = m.ne(BETWEEN_THRESHOLDS);
        let focal = sigmoid_focal_loss(
            &logits.index(&[Some(&valid)]),
            &cls_target.index(&[Some(&valid)]),
            0.25,
            2.0,
        )
        .sum(Kind::Float);
        loss_cls += focal / num_fg;

        if fg_idx.numel() > 0 {
            let gt_boxes = t.boxes.to_device(device).index_select(0, &gt_idx);
            let reg_target = coder.encode(&gt_boxes, &anchors.index_select(0, &fg_idx));
            loss_reg += l1_sum(&reg.index_select(0, &fg_idx), &reg_target) / num_fg;
        }
    }
    let n = targets.len().max(1) as f64;
    vec![
        ("classification".into(), loss_cls / n),
        ("bbox_regression".into(), loss_reg / n),
    ]
}

impl Detector for RetinaNet {
    fn transform(&self) -> &DetectionTransform {
        &self.transform
    }

    fn body(&self) -> Option<&dyn Body> {
        Some(self.body.as_ref())
    }

    fn set_score_threshold(&mut self, threshold: f64) {
        self.inference.score_thresh = threshold;
    }

    fn detect_batch(&self, batch: &ImageBatch) -> Vec<Detections> {
        let features = self.features(&batch.tensor, false);
        let out = self.head.forward(&features);
        let anchors = self.anchors(batch, &features);
        detect_each(batch, |i, size| self.postprocess(&out, &anchors, i, size))
    }

    fn losses(&self, batch: &ImageBatch, targets: &[Targets], train: bool) -> Losses {
        let features = self.features(&batch.tensor, train);
        let out = self.head.forward(&features);
        let anchors = self.anchors(batch, &features);
        let matched: Vec<Tensor> = tch::no_grad(|| {
            targets
                .iter()
                .map(|t| self.match_anchors(&anchors, &t.boxes.to_device(anchors.device())))
                .collect()
        });
        retinanet_losses(&out, &anchors, &matched, targets, &self.box_coder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn anchor_sizes_follow_torchvision() {
        let sizes = default_anchor_sizes();
        assert_eq!(sizes[0], [32.0, 40.0, 50.0]);
        assert_eq!(sizes[4], [512.0, 645.0, 812.0]);
    }

    #[test]
    fn nine_anchors_per_location_and_head_shapes() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut model = RetinaNet::new(&vs.root(), BodyKind::Resnet18, NormKind::FrozenBn, 3);
        (model.transform.min_size, model.transform.max_size) = (64.0, 96.0);
        assert_eq!(model.head.num_anchors, 9);
        let vars = vs.variables();
        for name in [
            "head.classification_head.conv.3.0.weight",
            "head.classification_head.cls_logits.bias",
            "head.regression_head.conv.0.0.bias",
            "head.regression_head.bbox_reg.weight",
            "backbone.fpn.extra_blocks.p7.weight",
        ] {
            assert!(vars.contains_key(name), "{name} missing");
        }
        assert_eq!(
            vars["head.classification_head.cls_logits.weight"].size(),
            vec![27, 256, 3, 3]
        );

        let images = [Tensor::rand([3, 64, 96], (Kind::Float, Device::Cpu))];
        let batch = model.transform.batch(&images);
        let (out, anchors) = tch::no_grad(|| {
            let f = model.features(&batch.tensor, false);
            (model.head.forward(&f), model.anchors(&batch, &f))
        });
        // P3–P7 of the padded batch, 9 anchors at every location
        let (h, w) = (batch.tensor.size()[2], batch.tensor.size()[3]);
        let locations: i64 = [8, 16, 32, 64, 128]
            .iter()
            .map(|s| ((h + s - 1) / s) * ((w + s - 1) / s))
            .sum();
        assert_eq!(out.level_sizes.iter().sum::<i64>(), locations * 9);
        assert_eq!(out.cls_logits.size(), vec![1, locations * 9, 3]);
        assert_eq!(out.bbox_regression.size(), vec![1, locations * 9, 4]);
        assert_eq!(anchors.size(), vec![locations * 9, 4]);
        // the first location's anchors: 3 ratios × 3 sizes, ratio-major
        let first: Vec<f32> = Vec::try_from(anchors.get(4)).unwrap_or_default(); // ratio 1, size 40
        assert_eq!(first, vec![-20.0, -20.0, 20.0, 20.0]);
    }

    #[test]
    fn losses_are_finite_with_and_without_boxes() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut model = RetinaNet::new(&vs.root(), BodyKind::Resnet18, NormKind::FrozenBn, 3);
        (model.transform.min_size, model.transform.max_size) = (64.0, 64.0);
        let images = [
            Tensor::rand([3, 64, 64], (Kind::Float, Device::Cpu)),
            Tensor::rand([3, 64, 64], (Kind::Float, Device::Cpu)),
        ];
        let targets = [
            Targets::one_box([4.0, 6.0, 40.0, 50.0], 2),
            Targets::background_only(),
        ];
        let (batch, targets) = model.transform.batch_with_targets(&images, &targets);
        let losses = model.losses(&batch, &targets, true);
        let names: Vec<&str> = losses.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["classification", "bbox_regression"]);
        for (name, l) in &losses {
            let v = l.double_value(&[]);
            assert!(v.is_finite() && v > 0.0, "{name} = {v}");
        }
    }
}
