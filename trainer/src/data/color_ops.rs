//! The nine colour operations of the SoftTeacher RandAug set that AlignDet applies to each view
//! (method notes, section 3). They follow PIL's 8-bit semantics (`ImageOps`, `ImageEnhance`)
//! because that is what the reference pipeline runs; images enter and leave as `[3, H, W]`
//! floats in 0..1, quantised to 0..255 inside the operation.

use rand::Rng;
use tch::{Kind, Tensor};

/// One of the nine operations; the magnitude (1..=9 when sampled) is passed separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorOp {
    Identity,
    AutoContrast,
    Equalize,
    Solarize,
    Color,
    Contrast,
    Brightness,
    Sharpness,
    Posterize,
}

impl ColorOp {
    /// Every operation, in a fixed order so that a seeded draw is reproducible.
    pub const ALL: [ColorOp; 9] = [
        ColorOp::Identity,
        ColorOp::AutoContrast,
        ColorOp::Equalize,
        ColorOp::Solarize,
        ColorOp::Color,
        ColorOp::Contrast,
        ColorOp::Brightness,
        ColorOp::Sharpness,
        ColorOp::Posterize,
    ];
}

/// The reference's `OneOf`: an operation drawn uniformly and a magnitude m ~ U{1..9}.
pub fn sample(rng: &mut impl Rng) -> (ColorOp, u8) {
    let op = ColorOp::ALL[rng.random_range(0..ColorOp::ALL.len())];
    (op, rng.random_range(1..=9))
}

/// Apply `op` at `magnitude` (0..=10, the reference's scale) to a `[3, H, W]` 0..1 image.
pub fn apply(op: ColorOp, magnitude: u8, image: &Tensor) -> Tensor {
    let m = f64::from(magnitude.min(10));
    if op == ColorOp::Identity {
        return image.shallow_clone();
    }
    let q = quantize(image);
    // the ImageEnhance factor: 0.28 .. 1.72 for m in 1..=9
    let factor = 0.1 + 1.8 * m / 10.0;
    let out = match op {
        ColorOp::Identity => q.shallow_clone(),
        ColorOp::AutoContrast => map_luts(&q, &histograms(&q).map(|h| autocontrast_lut(&h))),
        ColorOp::Equalize => map_luts(&q, &histograms(&q).map(|h| equalize_lut(&h))),
        ColorOp::Solarize => {
            let t = ((m * 256.0 / 10.0) as u32).min(255);
            let lut = std::array::from_fn(|i| (if i as u32 >= t { 255 - i } else { i }) as u8);
            map_luts(&q, &[lut; 3])
        }
        ColorOp::Posterize => {
            let bits = 4 - (4.0 * m / 10.0) as u32;
            let mask = !((1u32 << (8 - bits)) - 1);
            let lut = std::array::from_fn(|i| (i as u32 & mask) as u8);
            map_luts(&q, &[lut; 3])
        }
        ColorOp::Color => blend(&luma(&q).expand_as(&q), &q, factor),
        ColorOp::Contrast => {
            // PIL: the rounded mean of the 8-bit luma image
            let mean = (luma(&q).mean(Kind::Double).double_value(&[]) + 0.5).floor();
            blend(&q.zeros_like().fill_(mean), &q, factor)
        }
        ColorOp::Brightness => blend(&q.zeros_like(), &q, factor),
        ColorOp::Sharpness => blend(&smooth(&q), &q, factor),
    };
    out / 255.0
}

/// 0..1 floats to integer-valued floats in 0..255 (what `uint8` would hold).
fn quantize(image: &Tensor) -> Tensor {
    (image.to_kind(Kind::Float) * 255.0)
        .round()
        .clamp(0.0, 255.0)
}

/// PIL `Image.blend(base, image, factor)` for 8-bit bands: computed in single precision, then
/// clipped and truncated.
fn blend(base: &Tensor, image: &Tensor, factor: f64) -> Tensor {
    (base + (image - base) * factor).clamp(0.0, 255.0).floor()
}

/// PIL's `convert("L")`: fixed-point ITU-R 601 luma with rounding, `[1, H, W]`.
fn luma(q: &Tensor) -> Tensor {
    let q = q.to_kind(Kind::Int64);
    let l = q.get(0) * 19595 + q.get(1) * 38470 + q.get(2) * 7471 + 0x8000;
    l.floor_divide_scalar(65536)
        .to_kind(Kind::Float)
        .unsqueeze(0)
}

/// PIL's `ImageFilter.SMOOTH` (3×3, weights 1 with 5 at the centre, divided by 13, rounded);
/// the one-pixel border keeps the input, as PIL does.
fn smooth(q: &Tensor) -> Tensor {
    let (h, w) = (q.size()[1], q.size()[2]);
    let out = q.copy();
    if h < 3 || w < 3 {
        return out;
    }
    let kernel = Tensor::from_slice(&[1f32, 1., 1., 1., 5., 1., 1., 1., 1.])
        .view([1, 1, 3, 3])
        .repeat([3, 1, 1, 1])
        .to_device(q.device());
    let inner = q
        .to_kind(Kind::Float)
        .unsqueeze(0)
        .conv2d(&kernel, None::<Tensor>, [1, 1], [0, 0], [1, 1], 3)
        .squeeze_dim(0);
    let inner = (inner / 13.0 + 0.5).floor().clamp(0.0, 255.0);
    out.narrow(1, 1, h - 2).narrow(2, 1, w - 2).copy_(&inner);
    out
}

/// Per-channel 256-bin histograms of a quantised image.
fn histograms(q: &Tensor) -> [[i64; 256]; 3] {
    let counts = |c: i64| -> [i64; 256] {
        let bins = q
            .get(c)
            .reshape([-1])
            .to_kind(Kind::Int64)
            .bincount(None::<Tensor>, 256)
            .to_device(tch::Device::Cpu);
        let v: Vec<i64> = Vec::try_from(bins).unwrap_or_default();
        std::array::from_fn(|i| v.get(i).copied().unwrap_or(0))
    };
    [counts(0), counts(1), counts(2)]
}

/// `ImageOps.autocontrast(cutoff=0)` for one band: stretch [lo, hi] to [0, 255], truncating.
fn autocontrast_lut(h: &[i64; 256]) -> [u8; 256] {
    let lo = h.iter().position(|&c| c > 0);
    let hi = h.iter().rposition(|&c| c > 0);
    match (lo, hi) {
        (Some(lo), Some(hi)) if hi > lo => {
            let scale = 255.0 / (hi - lo) as f64;
            let offset = -(lo as f64) * scale;
            std::array::from_fn(|i| (i as f64 * scale + offset).trunc().clamp(0.0, 255.0) as u8)
        }
        // a constant band is left as it is
        _ => identity_lut(),
    }
}

/// `ImageOps.equalize` for one band (PIL's step and half-step rounding).
fn equalize_lut(h: &[i64; 256]) -> [u8; 256] {
    let used: Vec<i64> = h.iter().copied().filter(|&c| c > 0).collect();
    let Some(&last) = used.last() else {
        return identity_lut();
    };
    let step = (used.iter().sum::<i64>() - last) / 255;
    if used.len() <= 1 || step == 0 {
        return identity_lut();
    }
    let mut n = step / 2;
    std::array::from_fn(|i| {
        let v = (n / step).min(255) as u8;
        n += h[i];
        v
    })
}

fn identity_lut() -> [u8; 256] {
    std::array::from_fn(|i| i as u8)
}

/// Map each band of a quantised image through its own lookup table.
fn map_luts(q: &Tensor, luts: &[[u8; 256]; 3]) -> Tensor {
    let flat: Vec<f32> = luts.iter().flatten().map(|&v| f32::from(v)).collect();
    let table = Tensor::from_slice(&flat).to_device(q.device());
    let offsets = Tensor::from_slice(&[0i64, 256, 512])
        .view([3, 1, 1])
        .to_device(q.device());
    let index = q.to_kind(Kind::Int64) + offsets;
    table.take(&index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::path::PathBuf;
    use std::process::Command;

    fn python() -> PathBuf {
        let cache = std::env::var_os("ALIGNDET_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let home = std::env::var_os("HOME").expect("HOME is set");
                PathBuf::from(home).join(".cache/aligndet-studio")
            });
        cache.join("venv/bin/python")
    }

    /// PIL applies the reference ops to the raw `[H, W, 3]` bytes in `input`, every op at
    /// every magnitude 1..=9, and writes them one after the other (op-major) to `output`.
    const PIL_SCRIPT: &str = r#"
import sys
import numpy as np
from PIL import Image, ImageEnhance, ImageOps
h, w, src, dst = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
img = Image.fromarray(np.fromfile(src, dtype=np.uint8).reshape(h, w, 3), "RGB")
f = lambda m: 0.1 + 1.8 * m / 10
ops = [
    lambda im, m: im,
    lambda im, m: ImageOps.autocontrast(im),
    lambda im, m: ImageOps.equalize(im),
    lambda im, m: ImageOps.solarize(im, min(int(m * 256 / 10), 255)),
    lambda im, m: ImageEnhance.Color(im).enhance(f(m)),
    lambda im, m: ImageEnhance.Contrast(im).enhance(f(m)),
    lambda im, m: ImageEnhance.Brightness(im).enhance(f(m)),
    lambda im, m: ImageEnhance.Sharpness(im).enhance(f(m)),
    lambda im, m: ImageOps.posterize(im, 4 - int(4 * m / 10)),
]
with open(dst, "wb") as out:
    for op in ops:
        for m in range(1, 10):
            out.write(np.asarray(op(img, m), dtype=np.uint8).tobytes())
"#;

    /// A random 8-bit image whose channels use narrowed ranges, so that AutoContrast and
    /// Equalize have something to stretch.
    fn random_image(h: i64, w: i64) -> Vec<u8> {
        let mut rng = StdRng::seed_from_u64(7);
        (0..h * w * 3)
            .map(|i| match i % 3 {
                0 => rng.random_range(30..=200),
                1 => rng.random_range(0..=255),
                _ => rng.random_range(90..=120),
            })
            .collect()
    }

    #[test]
    fn every_op_matches_pil_within_one_level() {
        let (h, w) = (13i64, 17i64);
        let bytes = random_image(h, w);
        let dir = std::env::temp_dir().join(format!("aligndet-colorops-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (src, dst) = (dir.join("in.raw"), dir.join("out.raw"));
        std::fs::write(&src, &bytes).expect("write input");
        let status = Command::new(python())
            .arg("-c")
            .arg(PIL_SCRIPT)
            .args([h.to_string(), w.to_string()])
            .arg(&src)
            .arg(&dst)
            .status()
            .expect("run the venv's python (scripts/setup.sh installs it)");
        assert!(status.success(), "PIL reference failed");
        let reference = std::fs::read(&dst).expect("read PIL output");
        let _ = std::fs::remove_dir_all(&dir);
        let per = (h * w * 3) as usize;
        assert_eq!(reference.len(), per * 9 * 9);

        let image = Tensor::from_slice(&bytes)
            .view([h, w, 3])
            .permute([2, 0, 1])
            .to_kind(Kind::Float)
            / 255.0;
        for (k, &op) in ColorOp::ALL.iter().enumerate() {
            for m in 1..=9u8 {
                let start = per * (k * 9 + usize::from(m) - 1);
                let theirs = Tensor::from_slice(&reference[start..start + per])
                    .view([h, w, 3])
                    .permute([2, 0, 1])
                    .to_kind(Kind::Float);
                let ours = apply(op, m, &image) * 255.0;
                assert_eq!(ours.size(), vec![3, h, w]);
                let diff = (ours.round() - theirs).abs();
                let (max, mean) = (
                    diff.max().double_value(&[]),
                    diff.mean(Kind::Float).double_value(&[]),
                );
                // off-by-one only from rounding, never systematically
                assert!(
                    max <= 1.0 && mean < 0.05,
                    "{op:?} m={m}: |diff| max {max} mean {mean}"
                );
            }
        }
    }

    #[test]
    fn constant_channels_survive_autocontrast_and_equalize() {
        let image = Tensor::full([3, 4, 5], 0.4, (Kind::Float, tch::Device::Cpu));
        for op in [ColorOp::AutoContrast, ColorOp::Equalize] {
            let out = apply(op, 5, &image);
            let diff = (out - &image).abs().max().double_value(&[]);
            assert!(diff < 1.0 / 255.0, "{op:?}");
        }
    }

    #[test]
    fn sample_is_uniform_enough_and_in_range() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = [0usize; 9];
        for _ in 0..900 {
            let (op, m) = sample(&mut rng);
            assert!((1..=9).contains(&m));
            let k = ColorOp::ALL
                .iter()
                .position(|&o| o == op)
                .expect("known op");
            seen[k] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50), "{seen:?}");
    }
}
