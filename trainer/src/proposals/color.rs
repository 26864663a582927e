//! Colour spaces that diversify selective search. Every space is converted to 8-bit planes so
//! that the colour histograms of all spaces share the same 0..256 range.

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// A colour space an image is converted to before segmentation and histogramming.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorSpace {
    Rgb,
    /// Hue rescaled to the full 0..256 range (OpenCV's 8-bit HSV uses only 0..180 for hue).
    Hsv,
    /// OpenCV's 8-bit HSV (`COLOR_BGR2HSV`): hue in degrees / 2 (0..180). Hue steps count
    /// less in the segmentation distance than with `Hsv`, as in OpenCV's selective search.
    Hsv180,
    /// CIE L*a*b* (D65) with OpenCV's 8-bit encoding: L·255/100, a+128, b+128.
    Lab,
    /// Intensity only (0.299 R + 0.587 G + 0.114 B).
    Gray,
    /// The hue channel of `Hsv` only.
    Hue,
    /// Red, green and intensity, as in Uijlings et al.'s "rgI".
    RgI,
}

/// An image stored as one `u8` plane per channel (row-major), the layout that histograms,
/// smoothing and texture filters all want.
#[derive(Clone, Debug, PartialEq)]
pub struct Planar {
    pub width: usize,
    pub height: usize,
    pub planes: Vec<Vec<u8>>,
}

impl Planar {
    pub fn len(&self) -> usize {
        self.width * self.height
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Converts an RGB image into the planes of `space`.
pub fn convert(image: &RgbImage, space: ColorSpace) -> Planar {
    let width = image.width() as usize;
    let height = image.height() as usize;
    let n = width * height;
    let pixels = image.as_raw().chunks_exact(3);
    let planes = match space {
        ColorSpace::Rgb => split_with(pixels, n, |p| p),
        ColorSpace::Hsv => split_with(pixels, n, rgb_to_hsv),
        ColorSpace::Hsv180 => split_with(pixels, n, rgb_to_hsv180),
        ColorSpace::Lab => {
            let lut = srgb_to_linear_lut();
            split_with(pixels, n, |p| rgb_to_lab(p, &lut))
        }
        ColorSpace::Gray => vec![pixels.map(|p| gray(p[0], p[1], p[2])).collect()],
        ColorSpace::Hue => vec![pixels.map(|p| rgb_to_hsv([p[0], p[1], p[2]])[0]).collect()],
        ColorSpace::RgI => split_with(pixels, n, |p| [p[0], p[1], gray(p[0], p[1], p[2])]),
    };
    Planar {
        width,
        height,
        planes,
    }
}

fn split_with<'a>(
    pixels: impl Iterator<Item = &'a [u8]>,
    n: usize,
    f: impl Fn([u8; 3]) -> [u8; 3],
) -> Vec<Vec<u8>> {
    let mut planes = vec![
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    ];
    for p in pixels {
        let c = f([p[0], p[1], p[2]]);
        for (plane, v) in planes.iter_mut().zip(c) {
            plane.push(v);
        }
    }
    planes
}

fn gray(r: u8, g: u8, b: u8) -> u8 {
    (0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b)).round() as u8
}

fn rgb_to_hsv(rgb: [u8; 3]) -> [u8; 3] {
    let (degrees, s, v) = hue_saturation_value(rgb);
    let h = (degrees / 360.0 * 256.0).floor().min(255.0) as u8;
    [h, s, v]
}

fn rgb_to_hsv180(rgb: [u8; 3]) -> [u8; 3] {
    let (degrees, s, v) = hue_saturation_value(rgb);
    // 360° wraps to 0 like OpenCV.
    let h = (degrees / 2.0).round() as u32 % 180;
    [h as u8, s, v]
}

/// Hue in degrees (0..360), 8-bit saturation and value.
fn hue_saturation_value([r, g, b]: [u8; 3]) -> (f32, u8, u8) {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = f32::from(max - min);
    if max == 0 || delta == 0.0 {
        return (0.0, 0, max);
    }
    let s = (delta * 255.0 / f32::from(max)).round() as u8;
    let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
    let degrees = if max as f32 == r {
        60.0 * (g - b) / delta
    } else if max as f32 == g {
        120.0 + 60.0 * (b - r) / delta
    } else {
        240.0 + 60.0 * (r - g) / delta
    };
    let degrees = if degrees < 0.0 {
        degrees + 360.0
    } else {
        degrees
    };
    (degrees, s, max)
}

fn srgb_to_linear_lut() -> [f32; 256] {
    std::array::from_fn(|i| {
        let c = i as f32 / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    })
}

fn rgb_to_lab([r, g, b]: [u8; 3], lut: &[f32; 256]) -> [u8; 3] {
    let (r, g, b) = (lut[r as usize], lut[g as usize], lut[b as usize]);
    // sRGB -> XYZ, normalised by the D65 white point.
    let x = (0.412_453 * r + 0.357_580 * g + 0.180_423 * b) / 0.950_456;
    let y = 0.212_671 * r + 0.715_160 * g + 0.072_169 * b;
    let z = (0.019_334 * r + 0.119_193 * g + 0.950_227 * b) / 1.088_754;
    let f = |t: f32| {
        if t > 0.008_856 {
            t.cbrt()
        } else {
            7.787 * t + 16.0 / 116.0
        }
    };
    let l = if y > 0.008_856 {
        116.0 * y.cbrt() - 16.0
    } else {
        903.3 * y
    };
    let a = 500.0 * (f(x) - f(y));
    let bb = 200.0 * (f(y) - f(z));
    let to_u8 = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    [
        to_u8(l * 255.0 / 100.0),
        to_u8(a + 128.0),
        to_u8(bb + 128.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsv_of_primaries() {
        assert_eq!(rgb_to_hsv([255, 0, 0]), [0, 255, 255]);
        assert_eq!(rgb_to_hsv([0, 255, 0]), [85, 255, 255]);
        assert_eq!(rgb_to_hsv([0, 0, 255]), [170, 255, 255]);
        assert_eq!(rgb_to_hsv([128, 128, 128]), [0, 0, 128]);
    }

    #[test]
    fn hsv180_of_primaries_matches_opencv() {
        assert_eq!(rgb_to_hsv180([255, 0, 0]), [0, 255, 255]);
        assert_eq!(rgb_to_hsv180([0, 255, 0]), [60, 255, 255]);
        assert_eq!(rgb_to_hsv180([0, 0, 255]), [120, 255, 255]);
        assert_eq!(rgb_to_hsv180([128, 128, 128]), [0, 0, 128]);
        // Just below 360°: rounds up to 180, which wraps to 0.
        assert_eq!(rgb_to_hsv180([255, 0, 1])[0], 0);
    }

    #[test]
    fn lab_of_white_and_black() {
        let lut = srgb_to_linear_lut();
        assert_eq!(rgb_to_lab([255, 255, 255], &lut), [255, 128, 128]);
        assert_eq!(rgb_to_lab([0, 0, 0], &lut), [0, 128, 128]);
    }

    #[test]
    fn planes_per_space() {
        let img = RgbImage::from_pixel(3, 2, image::Rgb([10, 20, 30]));
        for (space, channels) in [
            (ColorSpace::Rgb, 3),
            (ColorSpace::Hsv, 3),
            (ColorSpace::Hsv180, 3),
            (ColorSpace::Lab, 3),
            (ColorSpace::Gray, 1),
            (ColorSpace::Hue, 1),
            (ColorSpace::RgI, 3),
        ] {
            let p = convert(&img, space);
            assert_eq!(p.planes.len(), channels, "{space:?}");
            assert!(p.planes.iter().all(|plane| plane.len() == 6));
        }
    }
}
