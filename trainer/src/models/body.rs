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
