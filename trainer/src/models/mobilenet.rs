//! MobileNetV2 body returning C2–C5, exactly as torchvision defines `mobilenet_v2` (width 1.0),
//! for its ImageNet weights (scripts/convert_mobilenet.py).
//!
//! Variable names are torchvision's, relative to the body: `features.0.{0,1}` (stem conv + BN),
//! then InvertedResidual blocks `features.{i}.conv.{j}` — `conv.0.{0,1}` the 1×1 expansion (absent
//! in block 1, whose expansion is 1), the 3×3 depthwise `conv.{0|1}.{0,1}`, the 1×1 projection conv
//! and its BN. Batch norm is torchvision's (eps 1e-5, momentum 0.1), activations ReLU6, padding 1
//! on every 3×3 conv.
//!
//! Taps, as torchvision's detection code picks them (`_mobilenet_extractor` in
//! `detection/backbone_utils.py`): its stage indices are `[0] + [strided blocks] + [last]`
//! = `[0, 2, 4, 7, 14, 18]`, and `returned_layers = [1, 2, 3, 4]` gives the outputs of
//! `features.2`, `.4`, `.7`, `.14` (strides 4, 8, 16, 32; 24, 32, 64, 160 channels) as C2–C5.
//! Like torchvision's `IntermediateLayerGetter`, the body stops at the last tap, so
//! `features.15`–`18` and the classifier are not part of it.
//!
//! Stages for `trainable_backbone_stages` are torchvision's: stage k runs from stage index k to
//! the next one (0: features 0–1, 1: 2–3, 2: 4–6, 3: 7–13, 4: 14), so our `trainable = t` is
//! torchvision's `trainable_layers = t + 1` (t ≥ 1): the blocks from `features.[2, 4, 7, 14][4 − t]`
//! on train; 0 freezes the body, 5 nothing.

use super::body::{Body, IMAGENET_NORM};
use super::norm::{Norm2d, NormKind, norm2d};
use tch::Tensor;
use tch::nn::{self, Module, ModuleT};

/// Feature indices whose outputs are C2..C5.
pub const TAPS: [usize; 4] = [2, 4, 7, 14];
/// torchvision's stage indices within the body (the strided blocks, after the stem).
const STAGE_STARTS: [usize; 5] = [0, 2, 4, 7, 14];

/// torchvision's `inverted_residual_setting`: (expansion t, channels c, repeats n, stride s).
const SETTING: [(i64, i64, usize, i64); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];
const STEM_CHANNELS: i64 = 32;

/// torchvision's `Conv2dNormActivation` with ReLU6: bias-free conv `.0`, batch norm `.1`.
#[derive(Debug)]
struct ConvBnRelu {
    conv: nn::Conv2D,
    bn: Norm2d,
}

fn conv(vs: nn::Path, cin: i64, cout: i64, kernel: i64, stride: i64, groups: i64) -> nn::Conv2D {
    nn::conv2d(
        vs,
        cin,
        cout,
        kernel,
        nn::ConvConfig {
            stride,
            padding: (kernel - 1) / 2,
            groups,
            bias: false,
            ..Default::default()
        },
    )
}

impl ConvBnRelu {
    fn new(
        vs: &nn::Path,
        cin: i64,
        cout: i64,
        kernel: i64,
        stride: i64,
        groups: i64,
        norm: NormKind,
    ) -> ConvBnRelu {
        ConvBnRelu {
            conv: conv(vs / 0, cin, cout, kernel, stride, groups),
            bn: norm2d(vs / 1, cout, norm),
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.bn.forward_t(&self.conv.forward(xs), train).relu6()
    }
}

/// torchvision's `InvertedResidual`: [expand 1×1] → depthwise 3×3 → linear project 1×1, with a
/// residual when the stride is 1 and the channels are kept.
#[derive(Debug)]
struct InvertedResidual {
    expand: Option<ConvBnRelu>,
    depthwise: ConvBnRelu,
    project: nn::Conv2D,
    project_bn: Norm2d,
    residual: bool,
}

impl InvertedResidual {
    fn new(
        vs: &nn::Path,
        cin: i64,
        cout: i64,
        stride: i64,
        expand: i64,
        norm: NormKind,
    ) -> InvertedResidual {
        let vs = vs / "conv";
        let hidden = cin * expand;
        let mut j = 0;
        let expand = (expand != 1).then(|| {
            j += 1;
            ConvBnRelu::new(&(&vs / 0), cin, hidden, 1, 1, 1, norm)
        });
        let depthwise = ConvBnRelu::new(&(&vs / j), hidden, hidden, 3, stride, hidden, norm);
        InvertedResidual {
            expand,
            depthwise,
            project: conv(&vs / (j + 1), hidden, cout, 1, 1, 1),
            project_bn: norm2d(&vs / (j + 2), cout, norm),
            residual: stride == 1 && cin == cout,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let ys = match &self.expand {
            Some(e) => e.forward_t(xs, train),
            None => xs.shallow_clone(),
        };
        let ys = self.depthwise.forward_t(&ys, train);
        let ys = self.project_bn.forward_t(&self.project.forward(&ys), train);
        if self.residual { ys + xs } else { ys }
    }
}

/// MobileNetV2 `features.0..=14`; `forward_t` returns [C2, C3, C4, C5].
#[derive(Debug)]
pub struct MobileNetV2 {
    stem: ConvBnRelu,
    /// `features.1` ..= `features.14`.
    blocks: Vec<InvertedResidual>,
}

impl MobileNetV2 {
    /// The body under `vs` with torchvision's names (`features.…`).
    pub fn new(vs: &nn::Path, norm: NormKind) -> MobileNetV2 {
        let features = vs / "features";
        let stem = ConvBnRelu::new(&(&features / 0), 3, STEM_CHANNELS, 3, 2, 1, norm);
        let mut blocks = Vec::new();
        let mut cin = STEM_CHANNELS;
        'setting: for &(t, c, n, s) in &SETTING {
            for r in 0..n {
                let index = blocks.len() + 1;
                if index > TAPS[3] {
                    break 'setting;
                }
                let stride = if r == 0 { s } else { 1 };
                blocks.push(InvertedResidual::new(
                    &(&features / index),
                    cin,
                    c,
                    stride,
                    t,
                    norm,
                ));
                cin = c;
            }
        }
        MobileNetV2 { stem, blocks }
    }
}

impl Body for MobileNetV2 {
    fn forward_t(&self, images: &Tensor, train: bool) -> Vec<Tensor> {
        let mut x = self.stem.forward_t(images, train);
        let mut outs = Vec::with_capacity(TAPS.len());
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward_t(&x, train);
            if TAPS.contains(&(i + 1)) {
                outs.push(x.shallow_clone());
            }
        }
        outs
    }

    fn out_channels(&self) -> [i64; 4] {
        [24, 32, 64, 160]
    }

    fn pixel_norm(&self) -> ([f64; 3], [f64; 3]) {
        IMAGENET_NORM
    }

    /// torchvision's stages: features 0–1 → 0, 2–3 → 1, 4–6 → 2, 7–13 → 3, 14 → 4.
    fn stage_of(&self, name: &str) -> Option<usize> {
        let index: usize = name
            .strip_prefix("features.")?
            .split('.')
            .next()?
            .parse()
            .ok()?;
        STAGE_STARTS.iter().rposition(|&s| index >= s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn shapes_on_odd_input() {
        let vs = nn::VarStore::new(Device::Cpu);
        let body = MobileNetV2::new(&(vs.root() / "body"), NormKind::FrozenBn);
        crate::models::body::contract::assert_levels_on_odd_input(&body);
    }

    #[test]
    fn torchvision_variable_names() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _body = MobileNetV2::new(&vs.root(), NormKind::Bn);
        let vars = vs.variables();
        // conv (1) + BN (4) per conv layer: stem, block 1 with two convs, blocks 2..=14 with three.
        assert_eq!(vars.len(), 5 * (1 + 2 + 13 * 3));
        for name in [
            "features.0.0.weight",
            "features.0.1.running_var",
            "features.1.conv.0.0.weight",
            "features.1.conv.1.weight",
            "features.1.conv.2.bias",
            "features.14.conv.0.0.weight",
            "features.14.conv.1.0.weight",
            "features.14.conv.2.weight",
            "features.14.conv.3.running_mean",
        ] {
            assert!(vars.contains_key(name), "{name}");
        }
        assert!(!vars.keys().any(|k| k.starts_with("features.15.")));
        assert_eq!(
            vars["features.14.conv.1.0.weight"].size(),
            vec![576, 1, 3, 3]
        );
        assert_eq!(
            vars["features.14.conv.2.weight"].size(),
            vec![160, 576, 1, 1]
        );
    }

    #[test]
    fn stages_follow_torchvision() {
        let vs = nn::VarStore::new(Device::Cpu);
        let body = MobileNetV2::new(&vs.root(), NormKind::FrozenBn);
        let stage = |i: usize| body.stage_of(&format!("features.{i}.0.weight"));
        let stages: Vec<_> = (0..=14).map(|i| stage(i).unwrap()).collect();
        assert_eq!(stages, [0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 4]);
        assert_eq!(body.stage_of("fpn.inner.0.weight"), None);
    }

    #[test]
    fn trains_with_batch_norm() {
        let vs = nn::VarStore::new(Device::Cpu);
        let body = MobileNetV2::new(&vs.root(), NormKind::Bn);
        let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        let loss = body
            .forward_t(&x, true)
            .iter()
            .map(|o| o.square().mean(Kind::Float))
            .fold(Tensor::from(0.0f32), |a, b| a + b);
        loss.backward();
        let stem = &vs.variables()["features.0.0.weight"];
        assert!(stem.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
}
