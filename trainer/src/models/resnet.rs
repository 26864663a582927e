//! ResNet bodies (torchvision layout and parameter names) returning C2–C5.

use super::norm::{Norm2d, NormKind, norm2d};
use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn::{self, ModuleT};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResNetDepth {
    Resnet18,
    Resnet50,
}

impl ResNetDepth {
    /// Blocks per stage and whether stages use bottlenecks.
    fn layout(self) -> ([i64; 4], bool) {
        match self {
            ResNetDepth::Resnet18 => ([2, 2, 2, 2], false),
            ResNetDepth::Resnet50 => ([3, 4, 6, 3], true),
        }
    }

    /// Channels of C2..C5.
    pub fn out_channels(self) -> [i64; 4] {
        match self {
            ResNetDepth::Resnet18 => [64, 128, 256, 512],
            ResNetDepth::Resnet50 => [256, 512, 1024, 2048],
        }
    }
}

fn conv(vs: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    nn::conv2d(
        vs,
        cin,
        cout,
        k,
        nn::ConvConfig {
            stride,
            padding,
            bias: false,
            ..Default::default()
        },
    )
}

#[derive(Debug)]
struct Block {
    convs: Vec<(nn::Conv2D, Norm2d)>,
    downsample: Option<(nn::Conv2D, Norm2d)>,
}

impl Block {
    /// torchvision `BasicBlock` (two 3×3) or `Bottleneck` (1×1, 3×3 with the stride, 1×1 ×4).
    fn new(
        vs: &nn::Path,
        cin: i64,
        planes: i64,
        stride: i64,
        bottleneck: bool,
        norm: NormKind,
    ) -> Block {
        let expansion = if bottleneck { 4 } else { 1 };
        let cout = planes * expansion;
        let convs = if bottleneck {
            vec![
                (
                    conv(vs / "conv1", cin, planes, 1, 1, 0),
                    norm2d(vs / "bn1", planes, norm),
                ),
                (
                    conv(vs / "conv2", planes, planes, 3, stride, 1),
                    norm2d(vs / "bn2", planes, norm),
                ),
                (
                    conv(vs / "conv3", planes, cout, 1, 1, 0),
                    norm2d(vs / "bn3", cout, norm),
                ),
            ]
        } else {
            vec![
                (
                    conv(vs / "conv1", cin, planes, 3, stride, 1),
                    norm2d(vs / "bn1", planes, norm),
                ),
                (
                    conv(vs / "conv2", planes, planes, 3, 1, 1),
                    norm2d(vs / "bn2", planes, norm),
                ),
            ]
        };
        let downsample = (stride != 1 || cin != cout).then(|| {
            let d = vs / "downsample";
            (
                conv(&d / "0", cin, cout, 1, stride, 0),
                norm2d(&d / "1", cout, norm),
            )
        });
        Block { convs, downsample }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut out = xs.shallow_clone();
        let last = self.convs.len() - 1;
        // In-place ReLU and residual add, as torchvision does: on CPU the step is bound by memory
        // traffic, and fresh tensors for each would cost about a tenth of the step.
        for (i, (c, n)) in self.convs.iter().enumerate() {
            out = n.forward_t(&c.forward_t(&out, train), train);
            if i != last {
                let _ = out.relu_();
            }
        }
        let identity = match &self.downsample {
            Some((c, n)) => n.forward_t(&c.forward_t(xs, train), train),
            None => xs.shallow_clone(),
        };
        let _ = out.g_add_(&identity).relu_();
        out
    }
}

/// A ResNet without its classifier; `forward` returns [C2, C3, C4, C5].
#[derive(Debug)]
pub struct ResNet {
    pub depth: ResNetDepth,
    conv1: nn::Conv2D,
    bn1: Norm2d,
    layers: Vec<Vec<Block>>,
}

impl ResNet {
    /// Variables live under `vs` with torchvision names (`conv1`, `bn1`, `layer1.0.conv1`, …).
    pub fn new(vs: &nn::Path, depth: ResNetDepth, norm: NormKind) -> ResNet {
        let (blocks, bottleneck) = depth.layout();
        let expansion = if bottleneck { 4 } else { 1 };
        let mut cin = 64;
        let mut layers = Vec::new();
        for (stage, &n) in blocks.iter().enumerate() {
            let planes = 64 << stage;
            let stride = if stage == 0 { 1 } else { 2 };
            let lp = vs / format!("layer{}", stage + 1);
            let mut stage_blocks = Vec::new();
            for b in 0..n {
                let s = if b == 0 { stride } else { 1 };
                stage_blocks.push(Block::new(&(&lp / b), cin, planes, s, bottleneck, norm));
                cin = planes * expansion;
            }
            layers.push(stage_blocks);
        }
        ResNet {
            depth,
            conv1: conv(vs / "conv1", 3, 64, 7, 2, 3),
            bn1: norm2d(vs / "bn1", 64, norm),
            layers,
        }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        let mut x = self
            .bn1
            .forward_t(&self.conv1.forward_t(xs, train), train)
            .relu()
            .max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        let mut outs = Vec::with_capacity(4);
        for stage in &self.layers {
            for block in stage {
                x = block.forward_t(&x, train);
            }
            outs.push(x.shallow_clone());
        }
        outs
    }
}

/// Freeze the stem and the first stages as torchvision's `trainable_layers` does: with
/// `trainable` = 3, only layer2..layer4 train (0 freezes everything, 5 nothing).
pub fn freeze_stages(vs: &nn::VarStore, prefix: &str, trainable: usize) {
    let trainable_names: Vec<&str> = ["layer4", "layer3", "layer2", "layer1", "conv1"]
        .into_iter()
        .take(trainable.min(5))
        .collect();
    for (name, t) in vs.variables() {
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let rest = rest.trim_start_matches('.');
        let keep = trainable_names.iter().any(|p| rest.starts_with(p))
            || (trainable == 5 && rest.starts_with("bn1"));
        if !keep {
            let _ = t.set_requires_grad(false);
        }
    }
}
