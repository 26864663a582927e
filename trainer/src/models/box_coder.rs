//! Box encodings between boxes and regression targets.

use tch::Tensor;

/// torchvision's `BoxLinearCoder` (FCOS): distances (l, t, r, b) from the anchor centre,
/// normalised by the anchor's size when `normalize_by_size`.
#[derive(Debug, Clone, Copy)]
pub struct BoxLinearCoder {
    pub normalize_by_size: bool,
}

impl BoxLinearCoder {
    /// `rel_codes` `[N, 4]` (l, t, r, b) and `anchors` `[N, 4]` xyxy → boxes `[N, 4]` xyxy.
    pub fn decode(&self, rel_codes: &Tensor, anchors: &Tensor) -> Tensor {
        let ctr_x = (anchors.select(1, 0) + anchors.select(1, 2)) * 0.5;
        let ctr_y = (anchors.select(1, 1) + anchors.select(1, 3)) * 0.5;
        let (mut l, mut t, mut r, mut b) = (
            rel_codes.select(1, 0),
            rel_codes.select(1, 1),
            rel_codes.select(1, 2),
            rel_codes.select(1, 3),
        );
        if self.normalize_by_size {
            let w = anchors.select(1, 2) - anchors.select(1, 0);
            let h = anchors.select(1, 3) - anchors.select(1, 1);
            l *= &w;
            r *= &w;
            t *= &h;
            b *= &h;
        }
        Tensor::stack(&[&ctr_x - l, &ctr_y - t, &ctr_x + r, &ctr_y + b], 1)
    }

    /// Boxes `[N, 4]` relative to `anchors` `[N, 4]` → (l, t, r, b) targets.
    pub fn encode(&self, anchors: &Tensor, boxes: &Tensor) -> Tensor {
        let ctr_x = (anchors.select(1, 0) + anchors.select(1, 2)) * 0.5;
        let ctr_y = (anchors.select(1, 1) + anchors.select(1, 3)) * 0.5;
        let mut l = &ctr_x - boxes.select(1, 0);
        let mut t = &ctr_y - boxes.select(1, 1);
        let mut r = boxes.select(1, 2) - &ctr_x;
        let mut b = boxes.select(1, 3) - &ctr_y;
        if self.normalize_by_size {
            let w = anchors.select(1, 2) - anchors.select(1, 0);
            let h = anchors.select(1, 3) - anchors.select(1, 1);
            l /= &w;
            r /= &w;
            t /= &h;
            b /= &h;
        }
        Tensor::stack(&[l, t, r, b], 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode_is_identity() {
        let coder = BoxLinearCoder {
            normalize_by_size: true,
        };
        let anchors =
            Tensor::from_slice(&[0.0f32, 0.0, 8.0, 8.0, 16.0, 8.0, 48.0, 40.0]).view([2, 4]);
        let boxes =
            Tensor::from_slice(&[1.0f32, 2.0, 30.0, 20.0, 10.0, 0.0, 60.0, 50.0]).view([2, 4]);
        let back = coder.decode(&coder.encode(&anchors, &boxes), &anchors);
        assert!((back - boxes).abs().max().double_value(&[]) < 1e-5);
    }
}
