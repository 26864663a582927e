//! Pieces the dense heads (FCOS, RetinaNet, RPN) share.

use tch::Tensor;
use tch::nn;

/// 3×3 conv with weights N(0, 0.01) and a constant bias: how torchvision initialises the FCOS and
/// RetinaNet heads.
pub fn head_conv3x3(vs: nn::Path, cin: i64, cout: i64, bias: f64) -> nn::Conv2D {
    nn::conv2d(
        vs,
        cin,
        cout,
        3,
        nn::ConvConfig {
            padding: 1,
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            },
            bs_init: nn::Init::Const(bias),
            ..Default::default()
        },
    )
}

/// `[N, A·K, H, W]` → `[N, H·W·A, K]` (torchvision's `permute_and_flatten`): rows in
/// (y, x, anchor) order, the order of the anchors.
pub fn flatten_level(t: &Tensor, k: i64) -> Tensor {
    let s = t.size();
    t.view([s[0], -1, k, s[2], s[3]])
        .permute([0, 3, 4, 1, 2])
        .reshape([s[0], -1, k])
}
