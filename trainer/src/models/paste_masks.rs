//! torchvision's `paste_masks_in_image`: each detection's M×M mask probabilities are padded by
//! one pixel (so the bilinear resize has a zero border to fade into), its box is expanded by the
//! same ratio and truncated to integers, the padded mask is resized to the box and copied into
//! an image-sized canvas, clipped to the image.

use tch::{Kind, Tensor};

/// Padding of the masks before pasting (torchvision's default).
const PADDING: i64 = 1;

/// torchvision's `expand_boxes` in float32, then truncated to int64 as `.to(torch.int64)` does.
fn expand_boxes(boxes: &Tensor, scale: f64) -> Vec<[i64; 4]> {
    let b = boxes.to_kind(Kind::Float);
    let (x0, y0, x1, y1) = (
        b.select(1, 0),
        b.select(1, 1),
        b.select(1, 2),
        b.select(1, 3),
    );
    let w_half = (&x1 - &x0) * 0.5 * scale;
    let h_half = (&y1 - &y0) * 0.5 * scale;
    let x_c = (&x1 + &x0) * 0.5;
    let y_c = (&y1 + &y0) * 0.5;
    let e = Tensor::stack(
        &[
            &x_c - &w_half,
            &y_c - &h_half,
            &x_c + &w_half,
            &y_c + &h_half,
        ],
        1,
    )
    .to_kind(Kind::Int64);
    let v: Vec<i64> = Vec::try_from(e.reshape([-1])).unwrap_or_default();
    v.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect()
}

/// One padded mask `[M+2, M+2]` resized into its integer box and clipped to the image.
fn paste_one(mask: &Tensor, b: [i64; 4], (im_h, im_w): (i64, i64)) -> Tensor {
    let w = (b[2] - b[0] + 1).max(1);
    let h = (b[3] - b[1] + 1).max(1);
    let resized = mask
        .view([1, 1, mask.size()[0], mask.size()[1]])
        .upsample_bilinear2d([h, w], false, None, None)
        .view([h, w]);
    let canvas = Tensor::zeros([im_h, im_w], (resized.kind(), resized.device()));
    let (x_0, x_1) = (b[0].max(0), (b[2] + 1).min(im_w));
    let (y_0, y_1) = (b[1].max(0), (b[3] + 1).min(im_h));
    if x_1 > x_0 && y_1 > y_0 {
        let src = resized
            .narrow(0, y_0 - b[1], y_1 - y_0)
            .narrow(1, x_0 - b[0], x_1 - x_0);
        canvas
            .narrow(0, y_0, y_1 - y_0)
            .narrow(1, x_0, x_1 - x_0)
            .copy_(&src);
    }
    canvas
}

/// `masks` `[K, M, M]` probabilities, `boxes` `[K, 4]` in the pixels of an image of
/// `(height, width)` → binary masks `[K, H, W]` (bool): pasted probability `> threshold`.
/// Thresholding mask by mask keeps only one float canvas alive at a time.
pub fn paste_masks_in_image(
    masks: &Tensor,
    boxes: &Tensor,
    size: (i64, i64),
    threshold: f64,
) -> Tensor {
    let k = masks.size()[0];
    if k == 0 {
        return Tensor::zeros([0, size.0, size.1], (Kind::Bool, masks.device()));
    }
    let m = masks.size()[2];
    let scale = (m + 2 * PADDING) as f64 / m as f64;
    let padded = masks.constant_pad_nd([PADDING; 4]);
    let pasted: Vec<Tensor> = expand_boxes(boxes, scale)
        .into_iter()
        .enumerate()
        .map(|(i, b)| paste_one(&padded.get(i as i64), b, size).gt(threshold))
        .collect();
    Tensor::stack(&pasted, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn a_confident_mask_fills_its_box_and_nothing_else() {
        let masks = Tensor::ones([1, 28, 28], (Kind::Float, Device::Cpu));
        let boxes = Tensor::from_slice(&[10.0f32, 20.0, 50.0, 40.0]).view([1, 4]);
        let out = paste_masks_in_image(&masks, &boxes, (60, 80), 0.5);
        assert_eq!(out.size(), vec![1, 60, 80]);
        let area = out.sum(Kind::Int64).int64_value(&[]);
        // the box is 40×20; the faded border of the padded mask is cut by the threshold
        assert!((area - 41 * 21).abs() <= 2 * (41 + 21), "area {area}");
        assert_eq!(out.get(0).get(5).sum(Kind::Int64).int64_value(&[]), 0);
        assert_eq!(out.get(0).get(30).get(30).int64_value(&[]), 1);
    }

    #[test]
    fn boxes_past_the_border_are_clipped() {
        let masks = Tensor::ones([2, 28, 28], (Kind::Float, Device::Cpu));
        let boxes = Tensor::from_slice(&[-20.0f32, -10.0, 30.0, 20.0, 70.0, 50.0, 120.0, 90.0])
            .view([2, 4]);
        let out = paste_masks_in_image(&masks, &boxes, (60, 80), 0.5);
        assert_eq!(out.get(0).get(0).get(0).int64_value(&[]), 1);
        assert_eq!(out.get(1).get(59).get(79).int64_value(&[]), 1);
    }
}
