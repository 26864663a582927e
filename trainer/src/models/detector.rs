//! What every detector offers the training engine, evaluation and pre-training: losses on a
//! batch with targets, and detections in original-image pixels.

pub use super::structures::{Detections, Targets};
use super::transform::ImageBatch;
use tch::Tensor;

/// Named scalar loss terms in the order the detector defines them (torchvision's dict keys, e.g.
/// `classification`, `bbox_regression`, `bbox_ctrness`). The training loss is their sum.
pub type Losses = Vec<(String, Tensor)>;

pub trait Detector: std::fmt::Debug + Send {
    /// Training losses for a transformed batch (see `DetectionTransform::batch_with_targets`).
    /// `train` selects batch-norm behaviour in the body where norms are trainable.
    fn losses(&self, batch: &ImageBatch, targets: &[Targets], train: bool) -> Losses;

    /// Eval-mode detections for a transformed batch, mapped back to original pixels.
    fn detect_batch(&self, batch: &ImageBatch) -> Vec<Detections>;

    /// The transform (resize, normalisation, padding) this detector expects.
    fn transform(&self) -> &super::transform::DetectionTransform;

    /// The backbone body (to freeze its first stages); `None` if the detector has none of ours.
    fn body(&self) -> Option<&dyn super::backbone::Body> {
        None
    }

    /// Lowest score kept at inference (evaluation wants low thresholds, demos higher ones).
    fn set_score_threshold(&mut self, _threshold: f64) {}

    /// Detect objects in `[3, H, W]` images with values in 0..1.
    fn detect(&self, images: &[Tensor]) -> Vec<Detections> {
        tch::no_grad(|| {
            let batch = self.transform().batch(images);
            self.detect_batch(&batch)
        })
    }
}

/// Sum of the loss terms (the scalar to back-propagate).
pub fn total_loss(losses: &Losses) -> Tensor {
    let mut it = losses.iter();
    let first = it
        .next()
        .map(|(_, t)| t.shallow_clone())
        .expect("a detector returns at least one loss term");
    it.fold(first, |acc, (_, t)| acc + t)
}
