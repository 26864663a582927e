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

/// torchvision's `BoxCoder` (RetinaNet, RPN, R-CNN box head): centre offsets scaled by the
/// reference size and log size ratios, each multiplied by a weight; decoded size changes are
/// clamped at log(1000/16) so that a bad prediction cannot overflow `exp`.
#[derive(Debug, Clone, Copy)]
pub struct BoxCoder {
    pub weights: [f64; 4],
    pub bbox_xform_clip: f64,
}

impl BoxCoder {
    pub fn new(weights: [f64; 4]) -> BoxCoder {
        BoxCoder {
            weights,
            bbox_xform_clip: (1000.0f64 / 16.0).ln(),
        }
    }

    fn centre_size(boxes: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
        let w = boxes.select(1, 2) - boxes.select(1, 0);
        let h = boxes.select(1, 3) - boxes.select(1, 1);
        let cx = boxes.select(1, 0) + &w * 0.5;
        let cy = boxes.select(1, 1) + &h * 0.5;
        (cx, cy, w, h)
    }

    /// Targets `[N, 4]` (dx, dy, dw, dh) of `gt` boxes relative to `proposals` (both `[N, 4]`).
    pub fn encode(&self, gt: &Tensor, proposals: &Tensor) -> Tensor {
        let [wx, wy, ww, wh] = self.weights;
        let (pcx, pcy, pw, ph) = Self::centre_size(proposals);
        let (gcx, gcy, gw, gh) = Self::centre_size(gt);
        let dx = (gcx - &pcx) / &pw * wx;
        let dy = (gcy - &pcy) / &ph * wy;
        let dw = (gw / &pw).log() * ww;
        let dh = (gh / &ph).log() * wh;
        Tensor::stack(&[dx, dy, dw, dh], 1)
    }

    /// Apply `rel_codes` `[N, 4·K]` to `boxes` `[N, 4]` → `[N, 4·K]` xyxy (K classes' boxes).
    pub fn decode(&self, rel_codes: &Tensor, boxes: &Tensor) -> Tensor {
        let [wx, wy, ww, wh] = self.weights;
        let (cx, cy, w, h) = Self::centre_size(&boxes.to_kind(rel_codes.kind()));
        let dx = rel_codes.slice(1, 0, None, 4) / wx;
        let dy = rel_codes.slice(1, 1, None, 4) / wy;
        let dw = (rel_codes.slice(1, 2, None, 4) / ww).clamp_max(self.bbox_xform_clip);
        let dh = (rel_codes.slice(1, 3, None, 4) / wh).clamp_max(self.bbox_xform_clip);
        let (w, h) = (w.unsqueeze(1), h.unsqueeze(1));
        let pcx = dx * &w + cx.unsqueeze(1);
        let pcy = dy * &h + cy.unsqueeze(1);
        let half_w = dw.exp() * &w * 0.5;
        let half_h = dh.exp() * &h * 0.5;
        Tensor::stack(
            &[
                &pcx - &half_w,
                &pcy - &half_h,
                &pcx + &half_w,
                &pcy + &half_h,
            ],
            2,
        )
        .flatten(1, 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_coder_round_trips() {
        let coder = BoxCoder::new([10.0, 10.0, 5.0, 5.0]);
        let props =
            Tensor::from_slice(&[0.0f32, 0.0, 8.0, 8.0, 16.0, 8.0, 48.0, 40.0]).view([2, 4]);
        let gt = Tensor::from_slice(&[1.0f32, 2.0, 30.0, 20.0, 10.0, 0.0, 60.0, 50.0]).view([2, 4]);
        let back = coder.decode(&coder.encode(&gt, &props), &props);
        assert!((back - gt).abs().max().double_value(&[]) < 1e-4);
    }

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
