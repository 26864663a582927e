//! MoCo v2's augmentation (Chen et al. 2020, torchvision semantics on tensors) and a parallel,
//! ordered, deterministic two-view batch loader for image-domain pre-training.
//!
//! Per view, in MoCo v2's order: `RandomResizedCrop(crop, scale 0.2–1, ratio 3/4–4/3)`,
//! `ColorJitter(0.4, 0.4, 0.4, 0.1)` with p 0.8 (the four operations in a random order, as
//! torchvision), `RandomGrayscale` p 0.2, Gaussian blur with σ ∈ [0.1, 2] p 0.5 (kernel radius
//! ⌈3σ⌉, reflect padding), horizontal flip p 0.5, then the body's pixel normalisation.
//!
//! Batch `s` is a pure function of (seed, s): the images come from the same epoch-wise seeded
//! permutation as the detection loader ([`super::loader::batch_indices`]) and every random
//! choice of image `j` of the batch is drawn from an RNG seeded by (seed, s, j), so a resumed run
//! sees exactly the views it would have seen, whichever thread builds them.

use super::augment::decode_image;
use super::detection::DetectionSplit;
use super::loader::{BuildFn, Loader, batch_indices, rank_share, rng_for};
use rand::Rng;
use rand::seq::SliceRandom;
use std::sync::Arc;
use tch::{Kind, Tensor};

/// MoCo v2's augmentation parameters.
#[derive(Debug, Clone)]
pub struct MocoAugConfig {
    pub crop_size: u32,
    /// Fraction of the image area a crop covers.
    pub scale: (f64, f64),
    /// Aspect ratio (w / h) of a crop.
    pub ratio: (f64, f64),
    /// Brightness, contrast, saturation, hue.
    pub jitter: [f64; 4],
    pub jitter_p: f64,
    pub grayscale_p: f64,
    pub blur_sigma: (f64, f64),
    pub blur_p: f64,
    pub flip_p: f64,
}

impl MocoAugConfig {
    pub fn moco_v2(crop_size: u32) -> MocoAugConfig {
        MocoAugConfig {
            crop_size,
            scale: (0.2, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            jitter: [0.4, 0.4, 0.4, 0.1],
            jitter_p: 0.8,
            grayscale_p: 0.2,
            blur_sigma: (0.1, 2.0),
            blur_p: 0.5,
            flip_p: 0.5,
        }
    }
}

/// Colour jitter factors and the order the four operations run in (0 brightness, 1 contrast,
/// 2 saturation, 3 hue).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterDraw {
    pub order: [usize; 4],
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
    pub hue: f64,
}

/// Every random choice for one view, drawn up front.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewDraw {
    /// Crop box: top, left, height, width in source pixels.
    pub crop: [i64; 4],
    pub jitter: Option<JitterDraw>,
    pub grayscale: bool,
    pub blur_sigma: Option<f64>,
    pub flip: bool,
}

/// torchvision's `RandomResizedCrop.get_params`: 10 tries, then a centre crop at the clamped
/// ratio.
pub fn sample_crop(
    rng: &mut impl Rng,
    height: i64,
    width: i64,
    scale: (f64, f64),
    ratio: (f64, f64),
) -> [i64; 4] {
    let area = (height * width) as f64;
    let (lo, hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..=scale.1);
        let aspect = rng.random_range(lo..=hi).exp();
        let w = (target * aspect).sqrt().round() as i64;
        let h = (target / aspect).sqrt().round() as i64;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return [top, left, h, w];
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0 {
        (
            width,
            ((width as f64 / ratio.0).round() as i64).clamp(1, height),
        )
    } else if in_ratio > ratio.1 {
        (
            ((height as f64 * ratio.1).round() as i64).clamp(1, width),
            height,
        )
    } else {
        (width, height)
    };
    [(height - h) / 2, (width - w) / 2, h, w]
}

impl ViewDraw {
    pub fn sample(rng: &mut impl Rng, cfg: &MocoAugConfig, height: i64, width: i64) -> ViewDraw {
        let crop = sample_crop(rng, height, width, cfg.scale, cfg.ratio);
        let jitter = if rng.random_bool(cfg.jitter_p) {
            let [b, c, s, h] = cfg.jitter;
            fn factor<R: Rng + ?Sized>(rng: &mut R, j: f64) -> f64 {
                if j > 0.0 {
                    rng.random_range((1.0 - j).max(0.0)..=(1.0 + j))
                } else {
                    1.0
                }
            }
            let mut order = [0, 1, 2, 3];
            order.shuffle(rng);
            let brightness = factor(rng, b);
            let contrast = factor(rng, c);
            let saturation = factor(rng, s);
            let hue = if h > 0.0 {
                rng.random_range(-h..=h)
            } else {
                0.0
            };
            Some(JitterDraw {
                order,
                brightness,
                contrast,
                saturation,
                hue,
            })
        } else {
            None
        };
        let grayscale = rng.random_bool(cfg.grayscale_p);
        let blur_sigma = rng
            .random_bool(cfg.blur_p)
            .then(|| rng.random_range(cfg.blur_sigma.0..=cfg.blur_sigma.1));
        let flip = rng.random_bool(cfg.flip_p);
        ViewDraw {
            crop,
            jitter,
            grayscale,
            blur_sigma,
            flip,
        }
    }
}

/// ITU-R 601 luma of a `[3, H, W]` image, `[1, H, W]` (torchvision's `rgb_to_grayscale`).
fn grey(image: &Tensor) -> Tensor {
    (image.get(0) * 0.299 + image.get(1) * 0.587 + image.get(2) * 0.114).unsqueeze(0)
}

/// torchvision's `_blend`: `f·a + (1 − f)·b`, clamped to 0..1.
fn blend(a: &Tensor, b: &Tensor, f: f64) -> Tensor {
    (a * f + b * (1.0 - f)).clamp(0.0, 1.0)
}

/// `[3, H, W]` RGB → (h, s, v) each `[H, W]`, h in 0..1 (torchvision's `_rgb2hsv`).
fn rgb_to_hsv(image: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (r, g, b) = (image.get(0), image.get(1), image.get(2));
    let maxc = image.amax([0i64].as_slice(), false);
    let minc = image.amin([0i64].as_slice(), false);
    let eqc = maxc.eq_tensor(&minc);
    let cr = &maxc - &minc;
    let ones = maxc.ones_like();
    let s = &cr / ones.where_self(&eqc, &maxc);
    let cr_div = ones.where_self(&eqc, &cr);
    let rc = (&maxc - &r) / &cr_div;
    let gc = (&maxc - &g) / &cr_div;
    let bc = (&maxc - &b) / &cr_div;
    let is_r = maxc.eq_tensor(&r);
    let not_r = is_r.logical_not();
    let is_g = maxc.eq_tensor(&g);
    let hr = is_r.to_kind(Kind::Float) * (&bc - &gc);
    let hg = is_g.logical_and(&not_r).to_kind(Kind::Float) * ((&rc - &bc) + 2.0);
    let hb = is_g.logical_not().logical_and(&not_r).to_kind(Kind::Float) * ((&gc - &rc) + 4.0);
    let h = ((hr + hg + hb) / 6.0 + 1.0).fmod(1.0);
    (h, s, maxc)
}

/// Inverse of [`rgb_to_hsv`] (torchvision's `_hsv2rgb`), `[3, H, W]`.
fn hsv_to_rgb(h: &Tensor, s: &Tensor, v: &Tensor) -> Tensor {
    let h6 = h * 6.0;
    let i = h6.floor();
    let f = &h6 - &i;
    let i = i.to_kind(Kind::Int64).remainder(6).unsqueeze(0);
    let p = (v * (s.neg() + 1.0)).clamp(0.0, 1.0);
    let q = (v * ((s * &f).neg() + 1.0)).clamp(0.0, 1.0);
    let t = (v * ((s * (f.neg() + 1.0)).neg() + 1.0)).clamp(0.0, 1.0);
    let pick = |c: [&Tensor; 6]| Tensor::stack(&c, 0).gather(0, &i, false).squeeze_dim(0);
    Tensor::stack(
        &[
            pick([v, &q, &p, &p, &t, v]),
            pick([&t, v, v, &q, &p, &p]),
            pick([&p, &p, &t, v, v, &q]),
        ],
        0,
    )
}

/// torchvision's `adjust_hue`: rotate the hue by `shift` (−0.5..0.5 of a turn).
pub fn adjust_hue(image: &Tensor, shift: f64) -> Tensor {
    if shift == 0.0 {
        return image.shallow_clone();
    }
    let (h, s, v) = rgb_to_hsv(image);
    let h = (h + shift).remainder(1.0);
    hsv_to_rgb(&h, &s, &v)
}

/// Apply a jitter draw to a `[3, H, W]` 0..1 image.
pub fn color_jitter(image: &Tensor, d: &JitterDraw) -> Tensor {
    let mut img = image.shallow_clone();
    for op in d.order {
        img = match op {
            0 => (&img * d.brightness).clamp(0.0, 1.0),
            1 => {
                let mean = grey(&img).mean(Kind::Float);
                blend(&img, &mean, d.contrast)
            }
            2 => {
                let g = grey(&img);
                blend(&img, &g, d.saturation)
            }
            _ => adjust_hue(&img, d.hue),
        };
    }
    img
}

/// Separable Gaussian blur of a `[3, H, W]` image, radius ⌈3σ⌉ (at most H/2 − 1), reflect padding.
pub fn gaussian_blur(image: &Tensor, sigma: f64) -> Tensor {
    let (h, w) = (image.size()[1], image.size()[2]);
    let radius = ((3.0 * sigma).ceil() as i64).clamp(1, (h.min(w) / 2 - 1).max(1));
    let taps: Vec<f32> = (-radius..=radius)
        .map(|x| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let sum: f32 = taps.iter().sum();
    let k = Tensor::from_slice(&taps.iter().map(|t| t / sum).collect::<Vec<_>>())
        .to_device(image.device());
    let n = 2 * radius + 1;
    let x = image
        .unsqueeze(0)
        .reflection_pad2d([radius, radius, radius, radius]);
    let kx = k.view([1, 1, 1, n]).repeat([3, 1, 1, 1]);
    let ky = k.view([1, 1, n, 1]).repeat([3, 1, 1, 1]);
    let x = x.conv2d(&kx, None::<Tensor>, [1, 1], [0, 0], [1, 1], 3);
    let x = x.conv2d(&ky, None::<Tensor>, [1, 1], [0, 0], [1, 1], 3);
    x.squeeze_dim(0)
}

/// One augmented `[3, size, size]` 0..1 view of a `[3, H, W]` 0..1 image.
pub fn make_view(image: &Tensor, draw: &ViewDraw, size: i64) -> Tensor {
    let [top, left, h, w] = draw.crop;
    let crop = image.narrow(1, top, h).narrow(2, left, w).unsqueeze(0);
    let mut view = crop
        .internal_upsample_bilinear2d_aa([size, size], false, None, None)
        .squeeze_dim(0)
        .clamp(0.0, 1.0);
    if let Some(j) = &draw.jitter {
        view = color_jitter(&view, j);
    }
    if draw.grayscale {
        view = grey(&view).repeat([3, 1, 1]);
    }
    if let Some(sigma) = draw.blur_sigma {
        view = gaussian_blur(&view, sigma);
    }
    if draw.flip {
        view = view.flip([2]);
    }
    view
}

/// The two independent views of an image.
pub fn two_views(image: &Tensor, rng: &mut impl Rng, cfg: &MocoAugConfig) -> (Tensor, Tensor) {
    let (h, w) = (image.size()[1], image.size()[2]);
    let size = cfg.crop_size as i64;
    let a = ViewDraw::sample(rng, cfg, h, w);
    let b = ViewDraw::sample(rng, cfg, h, w);
    (make_view(image, &a, size), make_view(image, &b, size))
}

/// Tag that keeps MoCo's random streams apart from the detection loader's at the same seed.
const MOCO_STREAM: u64 = 0x6D6F_636F_7632; // "mocov2"

#[derive(Debug, Clone)]
pub struct MocoLoaderConfig {
    pub batch_size: usize,
    pub seed: u64,
    pub aug: MocoAugConfig,
    /// The body's per-channel (mean, std) on 0..1 RGB.
    pub pixel_norm: ([f64; 3], [f64; 3]),
    pub threads: usize,
    /// Batches built ahead of the one the trainer waits for.
    pub prefetch: usize,
}

pub struct MocoBatch {
    pub step: u64,
    pub image_ids: Vec<i64>,
    /// `[B, 3, S, S]`, normalised: the query views and the key views.
    pub view_q: Tensor,
    pub view_k: Tensor,
}

fn normalise(views: &[Tensor], norm: &([f64; 3], [f64; 3])) -> Tensor {
    let mean = Tensor::from_slice(&norm.0.map(|v| v as f32)).view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&norm.1.map(|v| v as f32)).view([1, 3, 1, 1]);
    (Tensor::stack(views, 0) - mean) / std
}

/// Batch `step`: a pure function of (seed, step).
pub fn build_batch(
    split: &DetectionSplit,
    cfg: &MocoLoaderConfig,
    step: u64,
) -> anyhow::Result<MocoBatch> {
    let idx = batch_indices(split.samples.len(), cfg.batch_size, cfg.seed, step);
    let (mut qs, mut ks, mut ids) = (vec![], vec![], vec![]);
    for (j, i) in rank_share(&idx) {
        let sample = &split.samples[i];
        let image = decode_image(&sample.path)?;
        let mut rng = rng_for(cfg.seed ^ MOCO_STREAM, step, j as u64);
        let (q, k) = two_views(&image, &mut rng, &cfg.aug);
        qs.push(q);
        ks.push(k);
        ids.push(sample.image_id);
    }
    Ok(MocoBatch {
        step,
        image_ids: ids,
        view_q: normalise(&qs, &cfg.pixel_norm),
        view_k: normalise(&ks, &cfg.pixel_norm),
    })
}

/// Threads building MoCo batches from `first_step` on, delivered in step order (the detection
/// loader's machinery, see [`Loader`]).
pub fn moco_loader(
    split: Arc<DetectionSplit>,
    cfg: MocoLoaderConfig,
    first_step: u64,
) -> anyhow::Result<Loader<MocoBatch>> {
    anyhow::ensure!(!split.samples.is_empty(), "the split has no images");
    let (threads, prefetch) = (cfg.threads, cfg.prefetch);
    let build: BuildFn<MocoBatch> = Arc::new(move |step| build_batch(&split, &cfg, step));
    Ok(Loader::with_builder(threads, prefetch, first_step, build))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn crops_stay_inside_and_follow_scale_and_ratio() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let [t, l, h, w] = sample_crop(&mut rng, 100, 150, (0.2, 1.0), (0.75, 4.0 / 3.0));
            assert!(t >= 0 && l >= 0 && t + h <= 100 && l + w <= 150);
            let frac = (h * w) as f64 / 15000.0;
            assert!((0.18..=1.0).contains(&frac), "{frac}");
        }
    }

    #[test]
    fn hsv_round_trip_and_hue_shift() {
        tch::manual_seed(0);
        let img = Tensor::rand([3, 7, 9], (Kind::Float, tch::Device::Cpu));
        let (h, s, v) = rgb_to_hsv(&img);
        let back = hsv_to_rgb(&h, &s, &v);
        assert!((back - &img).abs().max().double_value(&[]) < 1e-5);
        // pure red shifted by a third of a turn is pure green
        let red = Tensor::from_slice(&[1.0f32, 0.0, 0.0]).view([3, 1, 1]);
        let g: Vec<f32> = Vec::try_from(adjust_hue(&red, 1.0 / 3.0).view([-1])).unwrap();
        assert!(
            (g[0]).abs() < 1e-5 && (g[1] - 1.0).abs() < 1e-5 && g[2].abs() < 1e-5,
            "{g:?}"
        );
    }

    #[test]
    fn views_are_deterministic_sized_and_in_range() {
        tch::manual_seed(0);
        let img = Tensor::rand([3, 60, 80], (Kind::Float, tch::Device::Cpu));
        let cfg = MocoAugConfig::moco_v2(32);
        let (a1, b1) = two_views(&img, &mut rng_for(5, 3, 1), &cfg);
        let (a2, b2) = two_views(&img, &mut rng_for(5, 3, 1), &cfg);
        assert_eq!(a1.size(), vec![3, 32, 32]);
        assert_eq!((&a1 - &a2).abs().max().double_value(&[]), 0.0);
        assert_eq!((&b1 - &b2).abs().max().double_value(&[]), 0.0);
        assert!((&a1 - &b1).abs().max().double_value(&[]) > 0.0);
        for v in [&a1, &b1] {
            assert!(v.min().double_value(&[]) >= -1e-6 && v.max().double_value(&[]) <= 1.0 + 1e-6);
        }
        // a blurred constant image stays constant
        let flat = Tensor::full([3, 16, 16], 0.5, (Kind::Float, tch::Device::Cpu));
        let blurred = gaussian_blur(&flat, 2.0);
        assert_eq!(blurred.size(), vec![3, 16, 16]);
        assert!((blurred - 0.5).abs().max().double_value(&[]) < 1e-6);
    }
}
