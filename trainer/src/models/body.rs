//! What every backbone body offers the detectors: C2–C5 features, its channels, its pixel
//! normalisation and which stage a variable belongs to. (Built by [`super::backbone`].)

use tch::Tensor;

/// ImageNet statistics (torchvision's detection transforms), the pixel normalisation of the
/// bodies trained on ImageNet with them.
pub const IMAGENET_NORM: ([f64; 3], [f64; 3]) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);

/// A backbone body: `[N, 3, H, W]` normalised images → [C2, C3, C4, C5].
pub trait Body: std::fmt::Debug + Send {
    fn forward_t(&self, images: &Tensor, train: bool) -> Vec<Tensor>;
    /// Channels of C2..C5.
    fn out_channels(&self) -> [i64; 4];
    /// Per-channel (mean, std) applied to 0..1 RGB before the body.
    fn pixel_norm(&self) -> ([f64; 3], [f64; 3]);
    /// The stage a variable (name relative to the body) belongs to: 0 the stem, 1..=4 the stages
    /// ending in C2..C5; `None` when it belongs to none (it then always trains).
    fn stage_of(&self, _name: &str) -> Option<usize> {
        None
    }
}

/// Checks every body must pass.
#[cfg(test)]
pub(crate) mod contract {
    use super::Body;
    use tch::{Device, Kind, Tensor};

    /// C2–C5 of a 101 × 77 image: each of the five stride-2 layers rounds its size up, and each
    /// level has the channels the body announces.
    pub fn assert_levels_on_odd_input(body: &dyn Body) {
        let x = Tensor::randn([1, 3, 101, 77], (Kind::Float, Device::Cpu));
        let outs = tch::no_grad(|| body.forward_t(&x, false));
        let expect = [[26, 20], [13, 10], [7, 5], [4, 3]];
        assert_eq!(outs.len(), 4);
        for (o, (hw, c)) in outs.iter().zip(expect.iter().zip(body.out_channels())) {
            assert_eq!(o.size(), vec![1, c, hw[0], hw[1]]);
        }
    }
}
