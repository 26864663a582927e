//! Pieces the dense heads (FCOS, RetinaNet, RPN) share.

use tch::Tensor;
use tch::nn;

/// A conv of a detection head as torchvision initialises them: weights N(0, 0.01), a constant
/// `bias`, padding that keeps the size (`kernel / 2`).
pub fn head_conv(vs: nn::Path, cin: i64, cout: i64, kernel: i64, bias: f64) -> nn::Conv2D {
    nn::conv2d(
        vs,
        cin,
        cout,
        kernel,
        nn::ConvConfig {
            padding: kernel / 2,
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            },
            bs_init: nn::Init::Const(bias),
            ..Default::default()
        },
    )
}

/// A 3×3 [`head_conv`] (the towers and predictors of FCOS and RetinaNet).
pub fn head_conv3x3(vs: nn::Path, cin: i64, cout: i64, bias: f64) -> nn::Conv2D {
    head_conv(vs, cin, cout, 3, bias)
}

/// `[N, A·K, H, W]` → `[N, H·W·A, K]` (torchvision's `permute_and_flatten`): rows in
/// (y, x, anchor) order, the order of the anchors.
pub fn flatten_level(t: &Tensor, k: i64) -> Tensor {
    let s = t.size();
    t.view([s[0], -1, k, s[2], s[3]])
        .permute([0, 3, 4, 1, 2])
        .reshape([s[0], -1, k])
}
