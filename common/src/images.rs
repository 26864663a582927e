//! Opening image files safely: every pixel decoded (a truncated file is an error, not a grey
//! tail) under limits on decoded size, so a small file that expands to gigabytes (a
//! decompression bomb) is refused before the memory is taken. The server applies these limits at
//! import and the trainer whenever it opens an image, so both refuse the same files.

use image::{DynamicImage, ImageReader, Limits};
use std::path::Path;

/// Decoded-size limits for one image. The server's are sent to workers in every job spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ImageLimits {
    /// Largest width × height.
    pub max_pixels: u64,
    /// Largest decoded buffer, in bytes (width × height × channels × bytes per channel).
    pub max_decoded_bytes: u64,
}

impl Default for ImageLimits {
    /// 100 megapixels and 1 GiB decoded: far above any detection dataset's images (COCO's
    /// largest is 0.4 MP), far below what takes a worker down.
    fn default() -> Self {
        ImageLimits {
            max_pixels: 100_000_000,
            max_decoded_bytes: 1 << 30,
        }
    }
}

/// Why an image was refused. The message never names the file: callers prefix it.
#[derive(Debug, thiserror::Error)]
pub enum ImageRefused {
    #[error("cannot be opened: {0}")]
    Open(String),
    #[error("is not a recognised image format")]
    UnknownFormat,
    #[error("is {width}×{height} = {pixels} pixels, over the limit of {limit} pixels")]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("does not decode (truncated or corrupt?): {0}")]
    Decode(String),
}

fn reader(path: &Path) -> Result<ImageReader<std::io::BufReader<std::fs::File>>, ImageRefused> {
    let reader = ImageReader::open(path)
        .map_err(|e| ImageRefused::Open(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| ImageRefused::Open(e.to_string()))?;
    if reader.format().is_none() {
        return Err(ImageRefused::UnknownFormat);
    }
    Ok(reader)
}

/// Decode the whole image under `limits`.
pub fn open_checked(path: &Path, limits: ImageLimits) -> Result<DynamicImage, ImageRefused> {
    // The header first: refuse by pixel count before the decoder allocates anything.
    let (width, height) = reader(path)?
        .into_dimensions()
        .map_err(|e| ImageRefused::Decode(e.to_string()))?;
    check_pixels(width, height, limits)?;
    let reader = reader(path)?;
    // The JPEG decoder fills a cut file's missing rows silently: require its end marker.
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        crate::dataset::check_jpeg_complete(path).map_err(ImageRefused::Decode)?;
    }
    decode_limited(reader, limits)
}

/// [`open_checked`] on the bytes of the file at `path`, already read (so the file is opened
/// once). As for a file, the content names the format, or else the file name's extension.
pub fn decode_checked(
    bytes: &[u8],
    path: &Path,
    limits: ImageLimits,
) -> Result<DynamicImage, ImageRefused> {
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes));
    if let Ok(format) = image::ImageFormat::from_path(path) {
        reader.set_format(format);
    }
    let reader = reader
        .with_guessed_format()
        .map_err(|e| ImageRefused::Open(e.to_string()))?;
    let Some(format) = reader.format() else {
        return Err(ImageRefused::UnknownFormat);
    };
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| ImageRefused::Decode(e.to_string()))?;
    check_pixels(width, height, limits)?;
    if format == image::ImageFormat::Jpeg {
        crate::dataset::check_jpeg_bytes(bytes).map_err(ImageRefused::Decode)?;
    }
    let reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    decode_limited(reader, limits)
}

fn check_pixels(width: u32, height: u32, limits: ImageLimits) -> Result<(), ImageRefused> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(ImageRefused::TooManyPixels {
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    Ok(())
}

fn decode_limited<R: std::io::BufRead + std::io::Seek>(
    mut reader: ImageReader<R>,
    limits: ImageLimits,
) -> Result<DynamicImage, ImageRefused> {
    let mut decoder_limits = Limits::default();
    decoder_limits.max_alloc = Some(limits.max_decoded_bytes);
    reader.limits(decoder_limits);
    reader
        .decode()
        .map_err(|e| ImageRefused::Decode(e.to_string()))
}

/// Decode the whole image under `limits` and return its size; the pixels are dropped.
pub fn verify(path: &Path, limits: ImageLimits) -> Result<(u32, u32), ImageRefused> {
    let image = open_checked(path, limits)?;
    Ok((image.width(), image.height()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(format: image::ImageFormat) -> Vec<u8> {
        let img =
            image::RgbImage::from_fn(37, 23, |x, y| image::Rgb([x as u8 * 6, y as u8 * 9, 77]));
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, format).expect("encode");
        bytes.into_inner()
    }

    /// From a file or from its bytes, the same pixels and the same refusals.
    #[test]
    fn bytes_decode_as_the_file_does() {
        let dir = std::env::temp_dir().join(format!("images-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let png = encoded(image::ImageFormat::Png);
        let jpeg = encoded(image::ImageFormat::Jpeg);
        let cut_jpeg = jpeg[..jpeg.len() - 40].to_vec();
        let small = ImageLimits {
            max_pixels: 100,
            ..ImageLimits::default()
        };
        for (name, bytes, limits) in [
            ("a.png", &png, ImageLimits::default()),
            ("a.jpg", &jpeg, ImageLimits::default()),
            ("cut.jpg", &cut_jpeg, ImageLimits::default()),
            ("big.png", &png, small),
            (
                "text.png",
                &b"not an image".to_vec(),
                ImageLimits::default(),
            ),
            (
                "text.what",
                &b"not an image".to_vec(),
                ImageLimits::default(),
            ),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, bytes).expect("write");
            let from_file = open_checked(&path, limits);
            let from_bytes = decode_checked(bytes, &path, limits);
            match (from_file, from_bytes) {
                (Ok(a), Ok(b)) => assert_eq!(a.to_rgb8(), b.to_rgb8(), "{name}"),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{name}"),
                (a, b) => panic!("{name}: file {:?} bytes {:?}", a.is_ok(), b.is_ok()),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
