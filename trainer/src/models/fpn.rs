//! Feature pyramid network with torchvision's parameter names and arithmetic.

use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn::{self, Module};

/// What comes above the top pyramid level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtraLevels {
    /// P6 = max-pool(P5, kernel 1, stride 2) — Faster R-CNN's P2–P6.
    MaxPool,
    /// P6 = conv3×3/2(P5), P7 = conv3×3/2(relu(P6)) — RetinaNet's and FCOS's P3–P7.
    P6P7,
}

#[derive(Debug)]
pub struct Fpn {
    inner: Vec<nn::Conv2D>,
    layer: Vec<nn::Conv2D>,
    extra: ExtraLevels,
    p6p7: Option<(nn::Conv2D, nn::Conv2D)>,
}

/// torchvision initialises every FPN conv with kaiming_uniform(a=1) and zero bias.
fn fpn_conv(vs: nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> nn::Conv2D {
    nn::conv2d(
        vs,
        cin,
        cout,
        k,
        nn::ConvConfig {
            stride,
            padding: k / 2,
            ws_init: nn::Init::Kaiming {
                dist: nn::init::NormalOrUniform::Uniform,
                fan: nn::init::FanInOut::FanIn,
                non_linearity: nn::init::NonLinearity::ExplicitGain(1.0),
            },
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        },
    )
}

impl Fpn {
    /// `vs` is the `fpn` path (`inner_blocks.i.0`, `layer_blocks.i.0`, `extra_blocks.p6`, …).
    pub fn new(vs: &nn::Path, in_channels: &[i64], out: i64, extra: ExtraLevels) -> Fpn {
        let inner = in_channels
            .iter()
            .enumerate()
            .map(|(i, &c)| fpn_conv(vs / "inner_blocks" / i / 0, c, out, 1, 1))
            .collect();
        let layer = (0..in_channels.len())
            .map(|i| fpn_conv(vs / "layer_blocks" / i / 0, out, out, 3, 1))
            .collect();
        let p6p7 = (extra == ExtraLevels::P6P7).then(|| {
            let e = vs / "extra_blocks";
            (
                fpn_conv(&e / "p6", out, out, 3, 2),
                fpn_conv(&e / "p7", out, out, 3, 2),
            )
        });
        Fpn {
            inner,
            layer,
            extra,
            p6p7,
        }
    }

    /// Features from fine to coarse in, pyramid levels from fine to coarse out.
    pub fn forward(&self, feats: &[Tensor]) -> Vec<Tensor> {
        let n = feats.len();
        let mut last_inner = self.inner[n - 1].forward(&feats[n - 1]);
        let mut results = vec![self.layer[n - 1].forward(&last_inner)];
        for i in (0..n - 1).rev() {
            let lateral = self.inner[i].forward(&feats[i]);
            let size = lateral.size();
            let top_down = last_inner.upsample_nearest2d([size[2], size[3]], None, None);
            last_inner = lateral + top_down;
            results.insert(0, self.layer[i].forward(&last_inner));
        }
        match (self.extra, &self.p6p7) {
            (ExtraLevels::MaxPool, _) => {
                let p6 = results[n - 1].max_pool2d([1, 1], [2, 2], [0, 0], [1, 1], false);
                results.push(p6);
            }
            (ExtraLevels::P6P7, Some((p6c, p7c))) => {
                let p6 = p6c.forward(&results[n - 1]);
                let p7 = p7c.forward(&p6.relu());
                results.push(p6);
                results.push(p7);
            }
            (ExtraLevels::P6P7, None) => {}
        }
        results
    }
}
