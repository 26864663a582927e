//! Image decoding and training augmentation that keeps boxes consistent with the pixels.
//! Resizing and normalisation happen in the detector's transform (as in torchvision), so what
//! leaves here is a `[3, H, W]` 0..1 image at its original size and its boxes in those pixels.

use super::detection::Sample;
use crate::models::detector::Targets;
use aligndet_common::images::{ImageLimits, decode_checked};
use rand::Rng;
use std::sync::RwLock;
use tch::{Kind, Tensor};

/// Decoded-size limits of every image [`decode_image`] opens; `None` = the defaults. One
/// process-wide setting because the loaders that decode (training, evaluation, MoCo, box-domain
/// views) run on their own threads, and a worker runs one job at a time: it sets the job spec's
/// limits before each job.
static IMAGE_LIMITS: RwLock<Option<ImageLimits>> = RwLock::new(None);

/// Apply `limits` to every image [`decode_image`] opens from now on.
pub fn set_image_limits(limits: ImageLimits) {
    *IMAGE_LIMITS.write().unwrap_or_else(|p| p.into_inner()) = Some(limits);
}

/// The limits [`decode_image`] applies.
pub fn image_limits() -> ImageLimits {
    IMAGE_LIMITS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or_default()
}

/// Decode an image file (whole, under [`image_limits`]) to a `[3, H, W]` float tensor in 0..1 (RGB).
pub fn decode_image(path: &std::path::Path) -> anyhow::Result<Tensor> {
    let bytes = super::arrivals::read(path)?;
    let img = decode_checked(&bytes, path, image_limits())
        .map_err(|e| anyhow::anyhow!("image {} {e}", path.display()))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    let t = Tensor::from_slice(img.as_raw())
        .view([h as i64, w as i64, 3])
        .permute([2, 0, 1])
        .to_kind(Kind::Float)
        / 255.0;
    Ok(t)
}

/// The random choices for one image, drawn up front so that a batch is a pure function of
/// (seed, step) whichever thread builds it.
#[derive(Debug, Clone, Copy)]
pub struct AugmentDraw {
    pub hflip: bool,
    /// Multipliers for brightness, contrast and saturation (1 = unchanged).
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
}

impl AugmentDraw {
    pub fn identity() -> AugmentDraw {
        AugmentDraw {
            hflip: false,
            brightness: 1.0,
            contrast: 1.0,
            saturation: 1.0,
        }
    }

    pub fn sample(rng: &mut impl Rng, hflip: bool, jitter: f64) -> AugmentDraw {
        let factor = |rng: &mut dyn rand::RngCore| {
            if jitter > 0.0 {
                rng.random_range((1.0 - jitter)..=(1.0 + jitter))
            } else {
                1.0
            }
        };
        AugmentDraw {
            hflip: hflip && rng.random_bool(0.5),
            brightness: factor(rng),
            contrast: factor(rng),
            saturation: factor(rng),
        }
    }
}

/// Apply `draw` to a decoded image, its sample's boxes and (for mask detectors) its instance
/// masks `[n, H, W]`, which are flipped with the pixels.
pub fn augment(
    image: Tensor,
    sample: &Sample,
    masks: Option<Tensor>,
    draw: &AugmentDraw,
) -> (Tensor, Targets) {
    let w = image.size()[2] as f32;
    let mut boxes: Vec<f32> = sample.boxes.iter().flatten().copied().collect();
    let mut image = image;
    let mut masks = masks;
    if draw.hflip {
        image = image.flip([2]);
        masks = masks.map(|m| m.flip([2]));
        for b in boxes.chunks_mut(4) {
            let (x1, x2) = (b[0], b[2]);
            b[0] = w - x2;
            b[2] = w - x1;
        }
    }
    if draw.brightness != 1.0 {
        image *= draw.brightness;
    }
    if draw.contrast != 1.0 {
        let mean = grey(&image).mean(Kind::Float);
        image = (image - &mean) * draw.contrast + mean;
    }
    if draw.saturation != 1.0 {
        let g = grey(&image).unsqueeze(0);
        image = (image - &g) * draw.saturation + g;
    }
    let image = image.clamp(0.0, 1.0);
    let n = sample.labels.len() as i64;
    let targets = Targets {
        boxes: Tensor::from_slice(&boxes).view([n, 4]),
        labels: Tensor::from_slice(&sample.labels),
        masks,
    };
    (image, targets)
}

/// ITU-R 601 luma, `[H, W]`.
fn grey(image: &Tensor) -> Tensor {
    image.get(0) * 0.299 + image.get(1) * 0.587 + image.get(2) * 0.114
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_moves_boxes_with_the_pixels() {
        // a 10×6 image with a white block at x 1..4, y 2..5
        let img = Tensor::zeros([3, 6, 10], (Kind::Float, tch::Device::Cpu));
        let _ = img.narrow(1, 2, 3).narrow(2, 1, 3).fill_(1.0);
        let sample = Sample {
            image_id: 1,
            path: "x.png".into(),
            width: 10,
            height: 6,
            boxes: vec![[1.0, 2.0, 4.0, 5.0]],
            labels: vec![3],
            segmentations: vec![],
        };
        let draw = AugmentDraw {
            hflip: true,
            ..AugmentDraw::identity()
        };
        let mask = img.get(0).gt(0.5).to_kind(Kind::Uint8).unsqueeze(0);
        let (out, t) = augment(img, &sample, Some(mask), &draw);
        let b: Vec<f32> = Vec::try_from(t.boxes.view([-1])).unwrap();
        assert_eq!(b, vec![6.0, 2.0, 9.0, 5.0]);
        // the mask follows the pixels
        let m = t.masks.expect("masks").get(0).to_kind(Kind::Float);
        assert!(m.equal(&out.get(0)));
        // the block's pixels are inside the flipped box and nowhere else
        let inside = out
            .narrow(1, 2, 3)
            .narrow(2, 6, 3)
            .sum(Kind::Float)
            .double_value(&[]);
        assert_eq!(inside, 27.0);
        assert_eq!(out.sum(Kind::Float).double_value(&[]), 27.0);
    }

    #[test]
    fn jitter_keeps_values_in_range() {
        let img = Tensor::rand([3, 8, 8], (Kind::Float, tch::Device::Cpu));
        let sample = Sample {
            image_id: 1,
            path: "x.png".into(),
            width: 8,
            height: 8,
            boxes: vec![],
            labels: vec![],
            segmentations: vec![],
        };
        let draw = AugmentDraw {
            hflip: false,
            brightness: 1.4,
            contrast: 0.6,
            saturation: 1.3,
        };
        let (out, t) = augment(img, &sample, None, &draw);
        assert!(out.max().double_value(&[]) <= 1.0 && out.min().double_value(&[]) >= 0.0);
        assert_eq!(t.boxes.size(), vec![0, 4]);
    }
}
