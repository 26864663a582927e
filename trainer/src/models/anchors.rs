//! Anchor grids as torchvision's `AnchorGenerator` makes them: one square anchor per location
//! and level, centred on (x·stride, y·stride) — not on the cell centre — with half-widths rounded.

use tch::{Device, Kind, Tensor};

/// Anchors of one pyramid level, `[H·W·A, 4]` xyxy, rows in (y, x, anchor) order.
pub fn level_anchors(
    grid: (i64, i64),
    stride: (i64, i64),
    sizes: &[f64],
    aspect_ratios: &[f64],
    device: Device,
) -> Tensor {
    let mut base = Vec::new();
    for &ratio in aspect_ratios {
        let h_ratio = ratio.sqrt();
        let w_ratio = 1.0 / h_ratio;
        for &size in sizes {
            // torchvision computes these in float32 and rounds half to even.
            let ws = (w_ratio as f32) * (size as f32);
            let hs = (h_ratio as f32) * (size as f32);
            base.push([
                round_half_even(-ws / 2.0),
                round_half_even(-hs / 2.0),
                round_half_even(ws / 2.0),
                round_half_even(hs / 2.0),
            ]);
        }
    }
    let base = Tensor::from_slice(&base.concat())
        .view([-1, 4])
        .to_device(device);
    let (gh, gw) = grid;
    let shifts_x = Tensor::arange(gw, (Kind::Int64, device)) * stride.1;
    let shifts_y = Tensor::arange(gh, (Kind::Int64, device)) * stride.0;
    let mesh = Tensor::meshgrid_indexing(&[shifts_y, shifts_x], "ij");
    let (sy, sx) = (mesh[0].reshape([-1]), mesh[1].reshape([-1]));
    let shifts = Tensor::stack(&[&sx, &sy, &sx, &sy], 1).to_kind(Kind::Float);
    (shifts.view([-1, 1, 4]) + base.view([1, -1, 4])).reshape([-1, 4])
}

/// Anchors of every pyramid level for a padded batch `[N, C, H, W]`, one tensor a level: level
/// `l` takes `sizes[l]` combined with every ratio, and its stride is the padded size divided by
/// its grid size (integer division, as torchvision).
pub fn pyramid_anchors<'a>(
    padded: &Tensor,
    features: &[Tensor],
    sizes: impl IntoIterator<Item = &'a [f64]>,
    aspect_ratios: &[f64],
) -> Vec<Tensor> {
    let (ih, iw) = (padded.size()[2], padded.size()[3]);
    features
        .iter()
        .zip(sizes)
        .map(|(f, sizes)| {
            let (fh, fw) = (f.size()[2], f.size()[3]);
            level_anchors(
                (fh, fw),
                (ih / fh, iw / fw),
                sizes,
                aspect_ratios,
                f.device(),
            )
        })
        .collect()
}

fn round_half_even(x: f32) -> f32 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_centred_on_stride_multiples() {
        let a = level_anchors((2, 3), (8, 8), &[8.0], &[1.0], Device::Cpu);
        assert_eq!(a.size(), vec![6, 4]);
        let row: Vec<f32> = Vec::try_from(a.get(4)).unwrap(); // y = 1, x = 1
        assert_eq!(row, vec![4.0, 4.0, 12.0, 12.0]);
    }

    #[test]
    fn rounding_is_half_to_even_like_torch() {
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(-2.5), -2.0);
        assert_eq!(round_half_even(3.5), 4.0);
    }
}
