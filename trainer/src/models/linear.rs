//! Fully connected layers initialised as PyTorch's `nn.Linear` is.
//!
//! tch's default linear init is Kaiming-uniform with the ReLU gain, U(±√(6/fan_in)): √6 times
//! the spread of PyTorch's default, U(±1/√fan_in) (kaiming_uniform with a = √5). torchvision's
//! `TwoMLPHead`, `FastRCNNPredictor` and MoCo v2's projector rely on the PyTorch default; with
//! tch's, two stacked layers give RoI features about 6 times larger, and the L1 box regression
//! of Faster R-CNN pre-training diverged on them (docs/pretraining.md).

use tch::nn;

/// `nn.Linear(in_dim, out_dim)` with PyTorch's default initialisation of weight and bias.
pub fn torch_linear<'a>(
    vs: impl std::borrow::Borrow<nn::Path<'a>>,
    in_dim: i64,
    out_dim: i64,
) -> nn::Linear {
    nn::linear(
        vs,
        in_dim,
        out_dim,
        nn::LinearConfig {
            // kaiming_uniform(a = √5): gain √(2 / (1 + 5)), bound = gain·√(3 / fan_in) = 1/√fan_in
            ws_init: nn::Init::Kaiming {
                dist: nn::init::NormalOrUniform::Uniform,
                fan: nn::init::FanInOut::FanIn,
                non_linearity: nn::init::NonLinearity::ExplicitGain((1.0f64 / 3.0).sqrt()),
            },
            // tch's default bias is PyTorch's: U(±1/√fan_in)
            bs_init: None,
            bias: true,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn weights_and_bias_spread_as_pytorch_default() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let fan_in = 2048i64;
        let layer = torch_linear(vs.root() / "fc", fan_in, 512);
        let bound = 1.0 / (fan_in as f64).sqrt();
        for t in [&layer.ws, layer.bs.as_ref().expect("bias")] {
            let max = t.abs().max().double_value(&[]);
            assert!(max <= bound * (1.0 + 1e-6), "{max} > {bound}");
            assert!(max > 0.99 * bound, "{max} fills U(±{bound})");
        }
        // U(±b) has standard deviation b/√3
        let std = layer.ws.std(true).double_value(&[]);
        let expected = bound / 3f64.sqrt();
        assert!((std / expected - 1.0).abs() < 0.01, "{std} vs {expected}");
        assert_eq!(layer.ws.kind(), Kind::Float);
    }
}
