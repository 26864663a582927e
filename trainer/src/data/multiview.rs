//! AlignDet's two-view pipeline (method notes, section 3): one image and its pseudo boxes give
//! two views, each through its own independently drawn keep-ratio resize, horizontal flip and
//! colour operation. Both views keep the full box list in the same order, because box index is
//! the instance identity that the contrastive loss pairs across views.
//!
//! Flipping happens on the unpadded view (padding is the batcher's business), so flipped boxes
//! are exact; mmdet flips after padding and is off by up to 31 px (method notes, A5).

use super::color_ops::{self, ColorOp};
use anyhow::ensure;
use rand::Rng;
use tch::{Kind, Tensor};

/// What the views may draw from: the reference's `(1333, s)` resize choices, scaled to the sizes
/// a run trains at.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiViewConfig {
    /// Candidate shorter sides, one drawn uniformly per view.
    pub min_sizes: Vec<u32>,
    /// Cap on the longer side.
    pub max_size: u32,
    /// Flip each view with probability 0.5.
    pub hflip: bool,
    /// Apply one of the nine colour operations per view (Identity otherwise).
    pub color_ops: bool,
}

impl MultiViewConfig {
    /// The reference "mstrain-soft-teacher" pipeline at COCO sizes.
    pub fn soft_teacher() -> MultiViewConfig {
        MultiViewConfig {
            min_sizes: (640..=800).step_by(32).collect(),
            max_size: 1333,
            hflip: true,
            color_ops: true,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            !self.min_sizes.is_empty() && self.min_sizes.iter().all(|&s| s > 0),
            "multi-view sizes must be a non-empty list of positive sizes"
        );
        ensure!(self.max_size > 0, "multi-view max size must be positive");
        Ok(())
    }
}

/// The random choices for one view; with the original size they fully determine the view, so
/// boxes can be mapped back (`to_original`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewParams {
    /// Keep-ratio resize factor applied to the original image.
    pub scale: f64,
    pub hflip: bool,
    /// Colour operation and its magnitude (0..=10 scale).
    pub color: (ColorOp, u8),
}

impl ViewParams {
    /// Draw one view's parameters for an image of `size` = (width, height).
    pub fn sample(
        rng: &mut impl Rng,
        size: (i64, i64),
        cfg: &MultiViewConfig,
    ) -> anyhow::Result<ViewParams> {
        cfg.validate()?;
        ensure!(size.0 > 0 && size.1 > 0, "empty image {size:?}");
        let short_side = cfg.min_sizes[rng.random_range(0..cfg.min_sizes.len())];
        let hflip = cfg.hflip && rng.random_bool(0.5);
        let color = if cfg.color_ops {
            color_ops::sample(rng)
        } else {
            (ColorOp::Identity, 0)
        };
        Ok(ViewParams {
            scale: scale_factor(size, short_side, cfg.max_size),
            hflip,
            color,
        })
    }
}

/// mmdet's keep-ratio factor: the short side reaches `short_side` unless that would push the
/// long side past `max_size`.
pub fn scale_factor(size: (i64, i64), short_side: u32, max_size: u32) -> f64 {
    let (w, h) = (size.0 as f64, size.1 as f64);
    (f64::from(max_size) / w.max(h)).min(f64::from(short_side) / w.min(h))
}

/// (width, height) of a view of an image of `size` resized by `scale`: round(w·f), round(h·f).
pub fn view_size(size: (i64, i64), scale: f64) -> (i64, i64) {
    let side = |s: i64| ((s as f64 * scale).round() as i64).max(1);
    (side(size.0), side(size.1))
}

/// Build one view of `image` (`[3, H, W]`, 0..1) and its `[n, 4]` xyxy `boxes`: resize (boxes
/// scaled per axis as the rounded size implies, then clipped), flip, colour. Every box is kept,
/// in order.
pub fn make_view(image: &Tensor, boxes: &Tensor, params: &ViewParams) -> (Tensor, Tensor) {
    let size = image_size(image);
    let (nw, nh) = view_size(size, params.scale);
    let mut view = if (nw, nh) == size {
        image.shallow_clone()
    } else {
        image
            .to_kind(Kind::Float)
            .unsqueeze(0)
            .upsample_bilinear2d([nh, nw], false, None, None)
            .squeeze_dim(0)
    };
    let (sx, sy) = axis_scales(size, params.scale);
    let scales =
        Tensor::from_slice(&[sx as f32, sy as f32, sx as f32, sy as f32]).to_device(boxes.device());
    let b = boxes.to_kind(Kind::Float).reshape([-1, 4]) * scales;
    let x = b.slice(1, 0, 4, 2).clamp(0.0, nw as f64);
    let y = b.slice(1, 1, 4, 2).clamp(0.0, nh as f64);
    let mut b = Tensor::stack(
        &[
            x.select(1, 0),
            y.select(1, 0),
            x.select(1, 1),
            y.select(1, 1),
        ],
        1,
    );
    if params.hflip {
        view = view.flip([2]);
        b = mirror(&b, nw);
    }
    let (op, m) = params.color;
    (color_ops::apply(op, m, &view), b)
}

/// Map boxes given in a view's pixels back to the original image of `original_size` =
/// (width, height): unflip, then unscale per axis. Inverse of `make_view` up to its clipping.
pub fn to_original(
    boxes_in_view: &Tensor,
    params: &ViewParams,
    original_size: (i64, i64),
) -> Tensor {
    let (nw, _) = view_size(original_size, params.scale);
    let b = boxes_in_view.to_kind(Kind::Float).reshape([-1, 4]);
    let b = if params.hflip { mirror(&b, nw) } else { b };
    let (sx, sy) = axis_scales(original_size, params.scale);
    let inv = Tensor::from_slice(&[
        1.0 / sx as f32,
        1.0 / sy as f32,
        1.0 / sx as f32,
        1.0 / sy as f32,
    ])
    .to_device(b.device());
    b * inv
}

/// One view: its image, its boxes and the parameters that made it.
pub type View = (Tensor, Tensor, ViewParams);

/// The two independently augmented views of one image (view 1 feeds the online detector, view 2
/// the momentum one). Both views' parameters are drawn from `rng` before any work, view 1 first.
pub fn two_views(
    image: &Tensor,
    boxes: &Tensor,
    rng: &mut impl Rng,
    cfg: &MultiViewConfig,
) -> anyhow::Result<(View, View)> {
    ensure!(
        image.dim() == 3 && image.size()[0] == 3,
        "expected a [3, H, W] image, got {:?}",
        image.size()
    );
    ensure!(
        boxes.dim() == 2 && boxes.size()[1] == 4,
        "expected [n, 4] boxes, got {:?}",
        boxes.size()
    );
    let size = image_size(image);
    let p1 = ViewParams::sample(rng, size, cfg)?;
    let p2 = ViewParams::sample(rng, size, cfg)?;
    let (i1, b1) = make_view(image, boxes, &p1);
    let (i2, b2) = make_view(image, boxes, &p2);
    Ok(((i1, b1, p1), (i2, b2, p2)))
}

/// (width, height) of a `[3, H, W]` image.
fn image_size(image: &Tensor) -> (i64, i64) {
    let s = image.size();
    (s[2], s[1])
}

/// The per-axis factors actually applied: the rounded view size over the original size.
fn axis_scales(size: (i64, i64), scale: f64) -> (f64, f64) {
    let (nw, nh) = view_size(size, scale);
    (nw as f64 / size.0 as f64, nh as f64 / size.1 as f64)
}

/// Horizontal mirror of xyxy boxes in an image `width` wide (its own inverse).
fn mirror(b: &Tensor, width: i64) -> Tensor {
    let w = width as f64;
    Tensor::stack(
        &[
            -b.select(1, 2) + w,
            b.select(1, 1),
            -b.select(1, 0) + w,
            b.select(1, 3),
        ],
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn small_cfg() -> MultiViewConfig {
        MultiViewConfig {
            min_sizes: vec![48, 64, 96, 128, 160],
            max_size: 220,
            hflip: true,
            color_ops: true,
        }
    }

    fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
        if a.numel() == 0 {
            return 0.0;
        }
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn resize_follows_the_reference_rule() {
        assert_eq!(
            view_size((400, 300), scale_factor((400, 300), 640, 1333)),
            (853, 640)
        );
        // the long side caps it
        assert_eq!(
            view_size((1000, 200), scale_factor((1000, 200), 640, 1333)),
            (1333, 267)
        );
        let mut rng = StdRng::seed_from_u64(3);
        let cfg = MultiViewConfig {
            min_sizes: vec![64],
            ..small_cfg()
        };
        let p = ViewParams::sample(&mut rng, (40, 30), &cfg).expect("valid config");
        let (img, _) = make_view(
            &Tensor::rand([3, 30, 40], (Kind::Float, tch::Device::Cpu)),
            &Tensor::zeros([0, 4], (Kind::Float, tch::Device::Cpu)),
            &p,
        );
        assert_eq!(img.size(), vec![3, 64, 85]);
    }

    #[test]
    fn bad_config_is_an_error_not_a_panic() {
        let mut rng = StdRng::seed_from_u64(0);
        let img = Tensor::zeros([3, 8, 8], (Kind::Float, tch::Device::Cpu));
        let boxes = Tensor::zeros([1, 4], (Kind::Float, tch::Device::Cpu));
        let empty = MultiViewConfig {
            min_sizes: vec![],
            ..small_cfg()
        };
        assert!(two_views(&img, &boxes, &mut rng, &empty).is_err());
        let bad_boxes = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
        assert!(two_views(&img, &bad_boxes, &mut rng, &small_cfg()).is_err());
    }

    /// The acceptance check of the multi-view pipeline: after two independent augmentations,
    /// box i of either view maps back to original box i (clipped to the image).
    #[test]
    fn boxes_correspond_across_independent_views() {
        let mut rng = StdRng::seed_from_u64(42);
        let cfg = small_cfg();
        let (mut flips_differ, mut scales_differ) = (0, 0);
        for _ in 0..60 {
            let (w, h) = (rng.random_range(20..300i64), rng.random_range(20..300i64));
            let n = rng.random_range(0..12i64);
            // boxes may stick out of the image: views clip them
            let raw: Vec<f32> = (0..n)
                .flat_map(|_| {
                    let x1 = rng.random_range(-10.0..w as f32);
                    let y1 = rng.random_range(-10.0..h as f32);
                    let x2 = x1 + rng.random_range(1.0..w as f32 * 0.6);
                    let y2 = y1 + rng.random_range(1.0..h as f32 * 0.6);
                    [x1, y1, x2, y2]
                })
                .collect();
            let boxes = Tensor::from_slice(&raw).view([n, 4]);
            let clipped = Tensor::stack(
                &[
                    boxes.select(1, 0).clamp(0.0, w as f64),
                    boxes.select(1, 1).clamp(0.0, h as f64),
                    boxes.select(1, 2).clamp(0.0, w as f64),
                    boxes.select(1, 3).clamp(0.0, h as f64),
                ],
                1,
            );
            let image = Tensor::rand([3, h, w], (Kind::Float, tch::Device::Cpu));
            let ((i1, b1, p1), (i2, b2, p2)) =
                two_views(&image, &boxes, &mut rng, &cfg).expect("valid input");
            flips_differ += usize::from(p1.hflip != p2.hflip);
            scales_differ += usize::from(p1.scale != p2.scale);
            for (img, b, p) in [(&i1, &b1, &p1), (&i2, &b2, &p2)] {
                let (vw, vh) = view_size((w, h), p.scale);
                assert_eq!(img.size(), vec![3, vh, vw]);
                assert_eq!(b.size(), vec![n, 4], "no box is dropped");
                let back = to_original(b, p, (w, h));
                let err = max_abs(&back, &clipped);
                assert!(err <= 0.5, "view {p:?} of {w}x{h}: error {err}");
            }
            let o1 = to_original(&b1, &p1, (w, h));
            let o2 = to_original(&b2, &p2, (w, h));
            assert!(
                max_abs(&o1, &o2) <= 0.5,
                "box i of both views is one instance"
            );
        }
        assert!(
            flips_differ > 10 && scales_differ > 20,
            "views are drawn independently"
        );
    }

    /// The boxes follow the pixels: a white rectangle on black lands on its box in each view.
    #[test]
    fn boxes_follow_the_pixels() {
        let mut rng = StdRng::seed_from_u64(9);
        let cfg = small_cfg();
        let mut flipped = 0;
        for _ in 0..40 {
            let (w, h) = (rng.random_range(60..200i64), rng.random_range(60..200i64));
            let (bw, bh) = (rng.random_range(12..w / 2), rng.random_range(12..h / 2));
            let (x1, y1) = (rng.random_range(0..w - bw), rng.random_range(0..h - bh));
            let image = Tensor::zeros([3, h, w], (Kind::Float, tch::Device::Cpu));
            let _ = image.narrow(1, y1, bh).narrow(2, x1, bw).fill_(1.0);
            let boxes =
                Tensor::from_slice(&[x1 as f32, y1 as f32, (x1 + bw) as f32, (y1 + bh) as f32])
                    .view([1, 4]);
            for _ in 0..2 {
                let mut p = ViewParams::sample(&mut rng, (w, h), &cfg).expect("valid config");
                // colour operations move no pixel (and Solarize would invert the test pattern)
                p.color = (ColorOp::Identity, 0);
                flipped += usize::from(p.hflip);
                let (view, b) = make_view(&image, &boxes, &p);
                let b: Vec<f32> = Vec::try_from(b.view([-1])).expect("4 floats");
                // the bright pixels' extent, in pixel-edge coordinates
                let mask = view.get(0).gt(0.5);
                let cols = mask.any_dim(0, false).nonzero().view([-1]);
                let rows = mask.any_dim(1, false).nonzero().view([-1]);
                assert!(
                    cols.numel() > 0 && rows.numel() > 0,
                    "the rectangle survives"
                );
                let first = |t: &Tensor| t.min().double_value(&[]) as f32;
                let last = |t: &Tensor| t.max().double_value(&[]) as f32 + 1.0;
                let seen = [first(&cols), first(&rows), last(&cols), last(&rows)];
                for k in 0..4 {
                    assert!(
                        (seen[k] - b[k]).abs() <= 1.0,
                        "{p:?}: pixels span {seen:?}, box {b:?}"
                    );
                }
            }
        }
        assert!(
            flipped > 10 && flipped < 70,
            "both flip states were exercised"
        );
    }
}
