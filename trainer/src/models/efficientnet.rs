//! EfficientNet-Lite0 body returning C2–C5, for the ImageNet weights that
//! scripts/convert_efficientnet.py converts (TF-trained, ported to PyTorch).
//!
//! Lite means no squeeze-excitation and ReLU6. The TF origin shows in two places that matter for
//! matching its weights: TF "same" padding (asymmetric, more at the end, on stride-2 layers) and
//! batch-norm eps 1e-3 (momentum 0.01 in PyTorch's convention). Variable names, relative to the
//! body: `stem.{conv,bn}`, `blocks.{i}.{expand,depthwise,project}.{conv,bn}`.

use super::body::Body;
use super::norm::NormKind;
use tch::Tensor;
use tch::nn::{self, ModuleT};

/// Batch-norm epsilon of the TF-trained weights.
const BN_EPS: f64 = 1e-3;
/// PyTorch-convention momentum matching TF's decay 0.99.
const BN_MOMENTUM: f64 = 0.01;

/// Blocks whose outputs are C2..C5 (strides 4, 8, 16, 32).
const TAPS: [usize; 4] = [2, 4, 10, 15];

/// One stage of MBConv blocks: (repeats, kernel, stride of the first block, expansion, out channels).
struct Stage {
    repeats: usize,
    kernel: i64,
    stride: i64,
    expand: i64,
    out: i64,
}

/// EfficientNet-Lite0 (width and depth multipliers 1.0): 16 blocks after a 32-channel stem.
#[rustfmt::skip]
const LITE0: [Stage; 7] = [
    Stage { repeats: 1, kernel: 3, stride: 1, expand: 1, out: 16 },
    Stage { repeats: 2, kernel: 3, stride: 2, expand: 6, out: 24 },
    Stage { repeats: 2, kernel: 5, stride: 2, expand: 6, out: 40 },
    Stage { repeats: 3, kernel: 3, stride: 2, expand: 6, out: 80 },
    Stage { repeats: 3, kernel: 5, stride: 1, expand: 6, out: 112 },
    Stage { repeats: 4, kernel: 5, stride: 2, expand: 6, out: 192 },
    Stage { repeats: 1, kernel: 3, stride: 1, expand: 6, out: 320 },
];
const STEM_CHANNELS: i64 = 32;

/// TF "same" padding along one axis: (before, after) giving `ceil(size / stride)` outputs.
fn same_pad(size: i64, kernel: i64, stride: i64) -> (i64, i64) {
    let out = (size + stride - 1) / stride;
    let total = ((out - 1) * stride + kernel - size).max(0);
    (total / 2, total - total / 2)
}

/// Batch norm with this model's eps (norm.rs fixes eps at torchvision's 1e-5).
#[derive(Debug)]
enum Bn {
    Frozen {
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
    },
    Trainable(nn::BatchNorm),
}

impl Bn {
    fn new(vs: nn::Path, channels: i64, kind: NormKind) -> Bn {
        match kind {
            NormKind::FrozenBn => Bn::Frozen {
                weight: vs.ones_no_train("weight", &[channels]),
                bias: vs.zeros_no_train("bias", &[channels]),
                running_mean: vs.zeros_no_train("running_mean", &[channels]),
                running_var: vs.ones_no_train("running_var", &[channels]),
            },
            NormKind::Bn => Bn::Trainable(nn::batch_norm2d(
                vs,
                channels,
                nn::BatchNormConfig {
                    eps: BN_EPS,
                    momentum: BN_MOMENTUM,
                    ..Default::default()
                },
            )),
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Bn::Frozen {
                weight,
                bias,
                running_mean,
                running_var,
            } => {
                let scale = weight * (running_var + BN_EPS).rsqrt();
                let shift = bias - running_mean * &scale;
                xs * scale.reshape([1, -1, 1, 1]) + shift.reshape([1, -1, 1, 1])
            }
            Bn::Trainable(bn) => bn.forward_t(xs, train),
        }
    }
}

/// Bias-free convolution with TF "same" padding, followed by batch norm.
#[derive(Debug)]
struct ConvBn {
    weight: Tensor,
    bn: Bn,
    kernel: i64,
    stride: i64,
    groups: i64,
}

impl ConvBn {
    fn new(
        vs: &nn::Path,
        cin: i64,
        cout: i64,
        kernel: i64,
        stride: i64,
        groups: i64,
        norm: NormKind,
    ) -> ConvBn {
        let conv = nn::conv2d(
            vs / "conv",
            cin,
            cout,
            kernel,
            nn::ConvConfig {
                stride,
                groups,
                bias: false,
                ..Default::default()
            },
        );
        ConvBn {
            weight: conv.ws,
            bn: Bn::new(vs / "bn", cout, norm),
            kernel,
            stride,
            groups,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let size = xs.size();
        let [.., h, w] = size[..] else {
            panic!("EfficientNet-Lite: expected [N, C, H, W] input, got {size:?}");
        };
        let (top, bottom) = same_pad(h, self.kernel, self.stride);
        let (left, right) = same_pad(w, self.kernel, self.stride);
        // Symmetric padding goes into the convolution; TF's asymmetric case needs an explicit pad.
        let ys = if top == bottom && left == right {
            xs.conv2d(
                &self.weight,
                None::<Tensor>,
                [self.stride; 2],
                [top, left],
                [1, 1],
                self.groups,
            )
        } else {
            xs.constant_pad_nd([left, right, top, bottom]).conv2d(
                &self.weight,
                None::<Tensor>,
                [self.stride; 2],
                [0, 0],
                [1, 1],
                self.groups,
            )
        };
        self.bn.forward_t(&ys, train)
    }
}

/// Mobile inverted bottleneck without squeeze-excitation: expand 1×1 (absent when the
/// expansion is 1) → depthwise k×k → project 1×1, with a residual when the shape is kept.
#[derive(Debug)]
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl MbConv {
    fn new(
        vs: &nn::Path,
        cin: i64,
        cout: i64,
        stage: &Stage,
        stride: i64,
        norm: NormKind,
    ) -> MbConv {
        let mid = cin * stage.expand;
        MbConv {
            expand: (stage.expand != 1)
                .then(|| ConvBn::new(&(vs / "expand"), cin, mid, 1, 1, 1, norm)),
            depthwise: ConvBn::new(
                &(vs / "depthwise"),
                mid,
                mid,
                stage.kernel,
                stride,
                mid,
                norm,
            ),
            project: ConvBn::new(&(vs / "project"), mid, cout, 1, 1, 1, norm),
            residual: stride == 1 && cin == cout,
        }
    }

    /// No drop-connect: the detector trains without stochastic depth.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = match &self.expand {
            Some(e) => e.forward_t(xs, train).relu6(),
            None => xs.shallow_clone(),
        };
        ys = self.depthwise.forward_t(&ys, train).relu6();
        ys = self.project.forward_t(&ys, train);
        if self.residual { ys + xs } else { ys }
    }
}

/// EfficientNet-Lite without its classifier head; `forward_t` returns [C2, C3, C4, C5].
#[derive(Debug)]
pub struct EfficientNetLite {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    out_channels: [i64; 4],
}

impl EfficientNetLite {
    /// EfficientNet-Lite0 under `vs` (names as written by scripts/convert_efficientnet.py).
    pub fn lite0(vs: &nn::Path, norm: NormKind) -> EfficientNetLite {
        let stem = ConvBn::new(&(vs / "stem"), 3, STEM_CHANNELS, 3, 2, 1, norm);
        let mut blocks = Vec::new();
        let mut channels = Vec::new();
        let mut cin = STEM_CHANNELS;
        for stage in &LITE0 {
            for r in 0..stage.repeats {
                let stride = if r == 0 { stage.stride } else { 1 };
                let bp = vs / "blocks" / blocks.len();
                blocks.push(MbConv::new(&bp, cin, stage.out, stage, stride, norm));
                channels.push(stage.out);
                cin = stage.out;
            }
        }
        let out_channels = TAPS.map(|i| channels[i]);
        EfficientNetLite {
            stem,
            blocks,
            out_channels,
        }
    }
}

impl Body for EfficientNetLite {
    fn forward_t(&self, images: &Tensor, train: bool) -> Vec<Tensor> {
        let mut x = self.stem.forward_t(images, train).relu6();
        let mut outs = Vec::with_capacity(TAPS.len());
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward_t(&x, train);
            if TAPS.contains(&i) {
                outs.push(x.shallow_clone());
            }
        }
        outs
    }

    fn out_channels(&self) -> [i64; 4] {
        self.out_channels
    }

    /// TF-Lite preprocessing `(255·x − 127) / 128`, written as a mean and std on 0..1 input.
    fn pixel_norm(&self) -> ([f64; 3], [f64; 3]) {
        ([127.0 / 255.0; 3], [128.0 / 255.0; 3])
    }

    /// The stem and block 0 (stride 2) are stage 0; then each stage ends at a tap (C2..C5).
    fn stage_of(&self, name: &str) -> Option<usize> {
        if name.starts_with("stem.") {
            return Some(0);
        }
        let block: usize = name
            .strip_prefix("blocks.")?
            .split('.')
            .next()?
            .parse()
            .ok()?;
        if block == 0 {
            return Some(0);
        }
        TAPS.iter().position(|&t| block <= t).map(|p| p + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn same_padding_matches_tf() {
        // ceil(size / stride) outputs; the odd pixel of padding goes at the end.
        assert_eq!(same_pad(224, 3, 2), (0, 1));
        assert_eq!(same_pad(101, 3, 2), (1, 1));
        assert_eq!(same_pad(26, 5, 2), (1, 2));
        assert_eq!(same_pad(13, 5, 2), (2, 2));
        assert_eq!(same_pad(7, 5, 1), (2, 2));
        assert_eq!(same_pad(7, 1, 1), (0, 0));
    }

    #[test]
    fn lite0_shapes_on_odd_input() {
        let vs = nn::VarStore::new(Device::Cpu);
        let body = EfficientNetLite::lite0(&(vs.root() / "body"), NormKind::FrozenBn);
        assert_eq!(body.out_channels(), [24, 40, 112, 320]);
        crate::models::body::contract::assert_levels_on_odd_input(&body);
    }

    #[test]
    fn lite0_variable_names() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _body = EfficientNetLite::lite0(&vs.root(), NormKind::Bn);
        let vars = vs.variables();
        // Stem + 16 blocks; block 0 has no expansion: 5 tensors per conv+bn.
        assert_eq!(vars.len(), 5 * (1 + 2 + 15 * 3));
        assert!(vars.contains_key("blocks.15.project.bn.running_var"));
        assert!(!vars.contains_key("blocks.0.expand.conv.weight"));
    }

    #[test]
    fn lite0_trains_with_batch_norm() {
        let vs = nn::VarStore::new(Device::Cpu);
        let body = EfficientNetLite::lite0(&vs.root(), NormKind::Bn);
        let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        let loss = body
            .forward_t(&x, true)
            .iter()
            .map(|o| o.square().mean(Kind::Float))
            .fold(Tensor::from(0.0f32), |a, b| a + b);
        loss.backward();
        let stem = &vs.variables()["stem.conv.weight"];
        assert!(stem.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
}
