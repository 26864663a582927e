//! torchvision's `GeneralizedRCNNTransform` for inference: normalise, keep-ratio resize
//! (shorter side to `min_size`, longer side at most `max_size`), pad the batch to a multiple of 32.

use super::body::Body;
use super::structures::{Detections, Targets};
use tch::{Kind, Tensor};

#[derive(Debug, Clone)]
pub struct DetectionTransform {
    pub min_size: f64,
    pub max_size: f64,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    pub size_divisible: i64,
}

impl Default for DetectionTransform {
    fn default() -> Self {
        DetectionTransform {
            min_size: 800.0,
            max_size: 1333.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            size_divisible: 32,
        }
    }
}

/// A padded batch plus each image's size after resizing (what boxes are clipped to) and before.
pub struct ImageBatch {
    pub tensor: Tensor,
    pub image_sizes: Vec<(i64, i64)>,
    pub original_sizes: Vec<(i64, i64)>,
}

impl ImageBatch {
    /// Image `i`'s detections, from resized-batch pixels to its original pixels.
    pub fn to_original(&self, i: usize, d: Detections) -> Detections {
        Detections {
            boxes: DetectionTransform::postprocess_boxes(
                &d.boxes,
                self.image_sizes[i],
                self.original_sizes[i],
            ),
            ..d
        }
    }
}

impl DetectionTransform {
    /// torchvision's defaults with the pixel normalisation `body`'s weights were trained with.
    pub fn for_body(body: &dyn Body) -> DetectionTransform {
        let (mean, std) = body.pixel_norm();
        DetectionTransform {
            mean,
            std,
            ..DetectionTransform::default()
        }
    }

    /// `images`: `[3, H, W]` float in 0..1, any sizes.
    pub fn batch(&self, images: &[Tensor]) -> ImageBatch {
        let mut resized = Vec::with_capacity(images.len());
        let mut original_sizes = Vec::new();
        for img in images {
            let (h, w) = (img.size()[1], img.size()[2]);
            original_sizes.push((h, w));
            let normed = self.normalize(img);
            // Scale as torchvision computes it (float32), output size floor(side · scale); like
            // `recompute_scale_factor=True`, the interpolation then uses the size ratio.
            let (min_side, max_side) = (h.min(w) as f32, h.max(w) as f32);
            let scale = (self.min_size as f32 / min_side).min(self.max_size as f32 / max_side);
            let (nh, nw) = (
                (h as f32 * scale).floor() as i64,
                (w as f32 * scale).floor() as i64,
            );
            let out = normed
                .unsqueeze(0)
                .upsample_bilinear2d([nh, nw], false, None, None)
                .squeeze_dim(0);
            resized.push(out);
        }
        let mut batch = self.pad(&resized);
        batch.original_sizes = original_sizes;
        batch
    }

    /// Normalise and pad images that already have their training size (e.g. the two views of
    /// pre-training, resized by the multi-view pipeline); sizes are kept as they are.
    pub fn pad_batch(&self, images: &[Tensor]) -> ImageBatch {
        let normed: Vec<Tensor> = images.iter().map(|img| self.normalize(img)).collect();
        self.pad(&normed)
    }

    /// `(image − mean) / std` per channel, on the image's device.
    fn normalize(&self, image: &Tensor) -> Tensor {
        let per_channel = |v: &[f64; 3]| {
            Tensor::from_slice(v)
                .to_kind(Kind::Float)
                .view([3, 1, 1])
                .to_device(image.device())
        };
        (image - per_channel(&self.mean)) / per_channel(&self.std)
    }

    /// Zero-pad to the largest height and width, rounded up to `size_divisible`.
    fn pad(&self, images: &[Tensor]) -> ImageBatch {
        let image_sizes: Vec<(i64, i64)> =
            images.iter().map(|t| (t.size()[1], t.size()[2])).collect();
        let d = self.size_divisible;
        let max_h = image_sizes.iter().map(|s| s.0).max().unwrap_or(0);
        let max_w = image_sizes.iter().map(|s| s.1).max().unwrap_or(0);
        let (ph, pw) = ((max_h + d - 1) / d * d, (max_w + d - 1) / d * d);
        let device = images
            .first()
            .map(|t| t.device())
            .unwrap_or(tch::Device::Cpu);
        let batch = Tensor::zeros([images.len() as i64, 3, ph, pw], (Kind::Float, device));
        for (i, t) in images.iter().enumerate() {
            let (h, w) = image_sizes[i];
            batch.get(i as i64).narrow(1, 0, h).narrow(2, 0, w).copy_(t);
        }
        ImageBatch {
            tensor: batch,
            original_sizes: image_sizes.clone(),
            image_sizes,
        }
    }

    /// Like [`Self::batch`], and scales each image's target boxes (`[n, 4]` xyxy, original
    /// pixels) to the resized image as torchvision's `resize_boxes` does.
    pub fn batch_with_targets(
        &self,
        images: &[Tensor],
        targets: &[Targets],
    ) -> (ImageBatch, Vec<Targets>) {
        let batch = self.batch(images);
        let scaled = targets
            .iter()
            .zip(batch.image_sizes.iter().zip(&batch.original_sizes))
            .map(|(t, (&(nh, nw), &(oh, ow)))| {
                // float32 ratios, as torchvision computes them
                let (rh, rw) = (nh as f32 / oh as f32, nw as f32 / ow as f32);
                let scale = Tensor::from_slice(&[rw, rh, rw, rh]).to_device(t.boxes.device());
                Targets {
                    boxes: &t.boxes * scale.view([1, 4]),
                    labels: t.labels.shallow_clone(),
                    masks: t.masks.as_ref().map(|m| resize_masks(m, (nh, nw))),
                }
            })
            .collect();
        (batch, scaled)
    }

    /// Map boxes from the resized image back to the original one.
    pub fn postprocess_boxes(boxes: &Tensor, resized: (i64, i64), original: (i64, i64)) -> Tensor {
        let rh = original.0 as f64 / resized.0 as f64;
        let rw = original.1 as f64 / resized.1 as f64;
        let scale = Tensor::from_slice(&[rw as f32, rh as f32, rw as f32, rh as f32])
            .to_device(boxes.device());
        boxes * scale.view([1, 4])
    }
}

/// torchvision's target-mask resize: nearest-neighbour `F.interpolate` of `[n, H, W]` masks to the
/// resized image size (scales from the size ratio), back to uint8.
fn resize_masks(masks: &Tensor, size: (i64, i64)) -> Tensor {
    if masks.size()[0] == 0 {
        return Tensor::zeros([0, size.0, size.1], (Kind::Uint8, masks.device()));
    }
    masks
        .to_kind(Kind::Float)
        .unsqueeze(1)
        .upsample_nearest2d([size.0, size.1], None, None)
        .squeeze_dim(1)
        .to_kind(Kind::Uint8)
}
