//! torchvision's Mask R-CNN mask branch: RoIAlign 14×14 (sampling ratio 2) over P2–P5,
//! `MaskRCNNHeads` (four 3×3 convs of 256 with ReLU), `MaskRCNNPredictor` (2×2 stride-2
//! transposed conv + ReLU, 1×1 conv to per-class logits at 28×28), the training loss and the
//! per-detection mask probabilities of inference.

use super::mask_targets::{Positives, maskrcnn_loss, select_class};
use super::roi_align::MultiScaleRoIAlign;
use tch::Tensor;
use tch::nn::{self, Module};

/// torchvision's init for the mask convs: kaiming normal, fan-out, ReLU gain.
fn kaiming_fan_out() -> nn::Init {
    nn::Init::Kaiming {
        dist: nn::init::NormalOrUniform::Normal,
        fan: nn::init::FanInOut::FanOut,
        non_linearity: nn::init::NonLinearity::ReLU,
    }
}

/// `MaskRCNNHeads`: `[K, 256, 14, 14]` → `[K, 256, 14, 14]`; names `0.0` … `3.0` (the conv of
/// each `Conv2dNormActivation` block, no norm, with bias).
#[derive(Debug)]
pub struct MaskRcnnHeads {
    convs: Vec<nn::Conv2D>,
}

impl MaskRcnnHeads {
    /// `vs` is the `roi_heads.mask_head` path.
    pub fn new(vs: &nn::Path, in_channels: i64, layers: &[i64]) -> MaskRcnnHeads {
        let mut cin = in_channels;
        let convs = layers
            .iter()
            .enumerate()
            .map(|(i, &cout)| {
                let conv = nn::conv2d(
                    vs / i / 0,
                    cin,
                    cout,
                    3,
                    nn::ConvConfig {
                        padding: 1,
                        ws_init: kaiming_fan_out(),
                        bs_init: nn::Init::Const(0.0),
                        ..Default::default()
                    },
                );
                cin = cout;
                conv
            })
            .collect();
        MaskRcnnHeads { convs }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.convs
            .iter()
            .fold(x.shallow_clone(), |x, c| c.forward(&x).relu())
    }
}

/// `MaskRCNNPredictor`: `conv5_mask` (transposed 2×2, stride 2) → ReLU → `mask_fcn_logits`
/// (1×1 to `num_classes`), so 14×14 features give 28×28 logits per class.
#[derive(Debug)]
pub struct MaskRcnnPredictor {
    conv5_mask: nn::ConvTranspose2D,
    mask_fcn_logits: nn::Conv2D,
}

impl MaskRcnnPredictor {
    /// `vs` is the `roi_heads.mask_predictor` path. torchvision re-initialises only the weights
    /// (kaiming); the biases keep PyTorch's default, as tch's default bias init does.
    pub fn new(
        vs: &nn::Path,
        in_channels: i64,
        dim_reduced: i64,
        num_classes: i64,
    ) -> MaskRcnnPredictor {
        MaskRcnnPredictor {
            conv5_mask: nn::conv_transpose2d(
                vs / "conv5_mask",
                in_channels,
                dim_reduced,
                2,
                nn::ConvTransposeConfig {
                    stride: 2,
                    ws_init: kaiming_fan_out(),
                    ..Default::default()
                },
            ),
            mask_fcn_logits: nn::conv2d(
                vs / "mask_fcn_logits",
                dim_reduced,
                num_classes,
                1,
                nn::ConvConfig {
                    ws_init: kaiming_fan_out(),
                    ..Default::default()
                },
            ),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.mask_fcn_logits
            .forward(&self.conv5_mask.forward(x).relu())
    }
}

/// The whole mask branch under `roi_heads` (`mask_head`, `mask_predictor`).
#[derive(Debug)]
pub struct MaskBranch {
    pub mask_roi_pool: MultiScaleRoIAlign,
    pub mask_head: MaskRcnnHeads,
    pub mask_predictor: MaskRcnnPredictor,
}

impl MaskBranch {
    /// `vs` is the `roi_heads` path; `num_classes` includes the background.
    pub fn new(vs: &nn::Path, channels: i64, num_classes: i64) -> MaskBranch {
        MaskBranch {
            mask_roi_pool: MultiScaleRoIAlign {
                output_size: (14, 14),
                ..MultiScaleRoIAlign::default()
            },
            mask_head: MaskRcnnHeads::new(&(vs / "mask_head"), channels, &[256; 4]),
            mask_predictor: MaskRcnnPredictor::new(&(vs / "mask_predictor"), 256, 256, num_classes),
        }
    }

    /// Per-class mask logits `[ΣKi, C, 28, 28]` for boxes per image (batch coordinates).
    pub fn logits(&self, features: &[Tensor], boxes: &[Tensor], sizes: &[(i64, i64)]) -> Tensor {
        let pooled = self.mask_roi_pool.forward(features, boxes, sizes);
        self.mask_predictor
            .forward(&self.mask_head.forward(&pooled))
    }

    /// `loss_mask`: binary cross-entropy of the positives' logits of their ground-truth class
    /// against the ground-truth masks projected onto the proposals (`gt_masks[i]` `[n, H, W]`
    /// in batch pixels of image i).
    pub fn loss(
        &self,
        features: &[Tensor],
        positives: &[Positives],
        sizes: &[(i64, i64)],
        gt_masks: &[Tensor],
    ) -> Tensor {
        let boxes: Vec<Tensor> = positives.iter().map(|p| p.boxes.shallow_clone()).collect();
        let logits = self.logits(features, &boxes, sizes);
        maskrcnn_loss(&logits, positives, gt_masks)
    }

    /// torchvision's `maskrcnn_inference`: sigmoid of each detection's logits of its predicted
    /// class, `[ΣKi, 28, 28]`.
    pub fn probabilities(
        &self,
        features: &[Tensor],
        boxes: &[Tensor],
        labels: &Tensor,
        sizes: &[(i64, i64)],
    ) -> Tensor {
        let logits = self.logits(features, boxes, sizes);
        select_class(&logits, labels).sigmoid()
    }
}
