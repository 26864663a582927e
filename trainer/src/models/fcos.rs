//! FCOS (torchvision design and parameter names): ResNet-FPN P3–P7, a classification head and a
//! regression head (4 × conv-GN-ReLU towers), box-linear coding, score = √(cls·centerness).

use super::anchors::pyramid_anchors;
use super::backbone::{Body, BodyKind, build_body};
use super::box_coder::BoxLinearCoder;
use super::dense::{DenseInference, detect_each};
use super::detector::{Detections, Detector, Losses, Targets};
pub use super::fcos_loss::FcosOutputs;
use super::fpn::{ExtraLevels, Fpn};
use super::head::{flatten_level, head_conv3x3};
use super::norm::NormKind;
use super::transform::{DetectionTransform, ImageBatch};
use tch::Tensor;
use tch::nn::{self, Module};

/// A 4-layer conv-GroupNorm-ReLU tower; torchvision indexes its Sequential as 0,1,2 / 3,4,5 / …
#[derive(Debug)]
pub(crate) struct Tower {
    layers: Vec<(nn::Conv2D, nn::GroupNorm)>,
}

impl Tower {
    pub(crate) fn new(vs: &nn::Path, channels: i64, num_convs: i64) -> Tower {
        let layers = (0..num_convs)
            .map(|i| {
                (
                    head_conv3x3(vs / (3 * i), channels, channels, 0.0),
                    nn::group_norm(vs / (3 * i + 1), 32, channels, Default::default()),
                )
            })
            .collect();
        Tower { layers }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        self.layers.iter().fold(x.shallow_clone(), |x, (c, g)| {
            let mut y = g.forward(&c.forward(&x));
            let _ = y.relu_();
            y
        })
    }
}

#[derive(Debug)]
pub struct FcosHead {
    cls_tower: Tower,
    cls_logits: nn::Conv2D,
    reg_tower: Tower,
    bbox_reg: nn::Conv2D,
    bbox_ctrness: nn::Conv2D,
    pub num_classes: i64,
}

impl FcosHead {
    /// `vs` is the `head` path.
    pub fn new(vs: &nn::Path, channels: i64, num_classes: i64) -> FcosHead {
        let prior = 0.01f64;
        let cls = vs / "classification_head";
        let reg = vs / "regression_head";
        FcosHead {
            cls_tower: Tower::new(&(&cls / "conv"), channels, 4),
            cls_logits: head_conv3x3(
                &cls / "cls_logits",
                channels,
                num_classes,
                -((1.0 - prior) / prior).ln(),
            ),
            reg_tower: Tower::new(&(&reg / "conv"), channels, 4),
            bbox_reg: head_conv3x3(&reg / "bbox_reg", channels, 4, 0.0),
            bbox_ctrness: head_conv3x3(&reg / "bbox_ctrness", channels, 1, 0.0),
            num_classes,
        }
    }

    pub fn forward(&self, features: &[Tensor]) -> FcosOutputs {
        let (mut cls, mut reg, mut ctr, mut sizes) = (vec![], vec![], vec![], vec![]);
        for f in features {
            let s = f.size();
            sizes.push(s[2] * s[3]);
            cls.push(flatten_level(
                &self.cls_logits.forward(&self.cls_tower.forward(f)),
                self.num_classes,
            ));
            let r = self.reg_tower.forward(f);
            reg.push(flatten_level(&self.bbox_reg.forward(&r).relu(), 4));
            ctr.push(flatten_level(&self.bbox_ctrness.forward(&r), 1));
        }
        FcosOutputs {
            cls_logits: Tensor::cat(&cls, 1),
            bbox_regression: Tensor::cat(&reg, 1),
            bbox_ctrness: Tensor::cat(&ctr, 1),
            level_sizes: sizes,
        }
    }
}

/// torchvision's anchor size per level (P3–P7): the level's stride, one square anchor a location.
pub const LEVEL_SIZES: [f64; 5] = [8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Debug)]
pub struct Fcos {
    pub body: Box<dyn Body>,
    pub fpn: Fpn,
    pub head: FcosHead,
    pub transform: DetectionTransform,
    pub inference: DenseInference,
    /// Anchor size per level ([`LEVEL_SIZES`] by default).
    pub anchor_sizes: Vec<f64>,
}

impl Fcos {
    /// FCOS on a body with an FPN (P3–P7), under `vs` with torchvision's names
    /// (`backbone.body`, `backbone.fpn`, `head`). `num_classes` excludes background.
    pub fn new(vs: &nn::Path, body: BodyKind, norm: NormKind, num_classes: i64) -> Fcos {
        let bb = vs / "backbone";
        let body = build_body(&(&bb / "body"), body, norm);
        let chans = body.out_channels();
        let transform = DetectionTransform::for_body(body.as_ref());
        Fcos {
            fpn: Fpn::new(&(&bb / "fpn"), &chans[1..], 256, ExtraLevels::P6P7),
            head: FcosHead::new(&(vs / "head"), 256, num_classes),
            body,
            transform,
            inference: DenseInference::fcos(),
            anchor_sizes: LEVEL_SIZES.to_vec(),
        }
    }

    pub fn features(&self, batch: &Tensor, train: bool) -> Vec<Tensor> {
        let c = self.body.forward_t(batch, train);
        self.fpn.forward(&c[1..])
    }

    /// Anchors of every level for a padded batch, concatenated `[ΣHW, 4]`.
    pub fn anchors(&self, batch: &ImageBatch, features: &[Tensor]) -> Tensor {
        let sizes = self.anchor_sizes.iter().map(std::slice::from_ref);
        Tensor::cat(&pyramid_anchors(&batch.tensor, features, sizes, &[1.0]), 0)
    }

    /// One image's detections in resized-image pixels; a location's score is
    /// √(class probability × centerness).
    fn postprocess(
        &self,
        out: &FcosOutputs,
        anchors: &Tensor,
        image: i64,
        size: (i64, i64),
    ) -> Detections {
        let coder = BoxLinearCoder {
            normalize_by_size: true,
        };
        let (logits, ctr) = (out.cls_logits.get(image), out.bbox_ctrness.get(image));
        let reg = out.bbox_regression.get(image);
        self.inference.select(
            &out.level_sizes,
            size,
            |start, n| {
                let cls = logits.narrow(0, start, n).sigmoid();
                (cls * ctr.narrow(0, start, n).sigmoid()).sqrt()
            },
            |start, n, idx| {
                coder.decode(
                    &reg.narrow(0, start, n).index_select(0, idx),
                    &anchors.narrow(0, start, n).index_select(0, idx),
                )
            },
        )
    }
}

impl Detector for Fcos {
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
        super::fcos_loss::fcos_losses(&out, &anchors, targets)
    }
}
