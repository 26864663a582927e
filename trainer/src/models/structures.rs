//! The per-image records detectors, the transform and evaluation pass around: ground truth
//! ([`Targets`]) and results ([`Detections`]).

use tch::Tensor;

/// Ground truth of one image, in the coordinates of the (resized) batch. Labels follow
/// torchvision: the label is the index of the class logit, datasets map category k (1..K) to
/// label k, so detectors are built with K + 1 classes and index 0 is never a target (it is the
/// background class of Faster R-CNN):
/// `boxes` `[n, 4]` xyxy float, `labels` `[n]` int64 (1-based category indices; 0 is background
/// for the detectors that reserve it).
#[derive(Debug)]
pub struct Targets {
    pub boxes: Tensor,
    pub labels: Tensor,
    /// Instance masks `[n, H, W]` (uint8 0/1, the image's pixels) for detectors with a mask
    /// branch; `None` for box-only data.
    pub masks: Option<Tensor>,
}

impl Targets {
    pub fn shallow_clone(&self) -> Targets {
        Targets {
            boxes: self.boxes.shallow_clone(),
            labels: self.labels.shallow_clone(),
            masks: self.masks.as_ref().map(|m| m.shallow_clone()),
        }
    }
}

/// Targets of the detectors' unit tests.
#[cfg(test)]
impl Targets {
    /// One object: the box `[x1, y1, x2, y2]` of class `label`, no mask.
    pub(crate) fn one_box(xyxy: [f32; 4], label: i64) -> Targets {
        Targets {
            boxes: Tensor::from_slice(&xyxy).view([1, 4]),
            labels: Tensor::from_slice(&[label]),
            masks: None,
        }
    }

    /// No object: a background-only image, no mask.
    pub(crate) fn background_only() -> Targets {
        let cpu = tch::Device::Cpu;
        Targets {
            boxes: Tensor::zeros([0, 4], (tch::Kind::Float, cpu)),
            labels: Tensor::zeros([0], (tch::Kind::Int64, cpu)),
            masks: None,
        }
    }
}

/// One image's detections: xyxy boxes in original pixels, scores, labels.
#[derive(Debug)]
pub struct Detections {
    pub boxes: Tensor,
    pub scores: Tensor,
    pub labels: Tensor,
    /// Binary instance masks `[n, H, W]` (bool, original pixels) from detectors with a mask
    /// branch.
    pub masks: Option<Tensor>,
}
