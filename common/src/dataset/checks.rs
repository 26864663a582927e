//! Checks shared by the COCO and VOC loaders: capped reads, file-name safety,
//! image files on disk, and box geometry.

use super::jpeg::check_jpeg_complete;
use super::{CocoDataset, DatasetError, ProblemKind, ValidationReport};
use crate::images::{ImageLimits, ImageRefused};
use rayon::prelude::*;
use std::collections::HashMap;
use std::io::Read;
#[cfg(test)]
use std::path::PathBuf;
use std::path::{Component, Path};

/// Largest annotation file read (1 GiB): bigger than any real COCO file (COCO train2017 is
/// ~450 MiB) while keeping a hostile upload from exhausting memory.
pub const MAX_ANNOTATION_FILE_BYTES: u64 = 1 << 30;

/// How far (pixels) a box may extend past its image before it counts as outside;
/// absorbs the 0/1-based off-by-one of many annotation tools.
pub const BOX_TOLERANCE_PX: f64 = 1.0;

/// Reads a whole file, refusing ones larger than `max_bytes`.
pub(crate) fn read_capped(path: &Path, max_bytes: u64) -> Result<Vec<u8>, DatasetError> {
    let path_error = |message: String| DatasetError::Path {
        path: path.display().to_string(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| path_error(e.to_string()))?;
    let metadata = file.metadata().map_err(|e| path_error(e.to_string()))?;
    if !metadata.is_file() {
        return Err(path_error("not a regular file".into()));
    }
    if metadata.len() > max_bytes {
        return Err(path_error(format!(
            "file is {} bytes, more than the {max_bytes}-byte limit",
            metadata.len()
        )));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    // `take` also guards a file that grows while being read.
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| path_error(e.to_string()))?;
    if bytes.len() as u64 > max_bytes {
        return Err(path_error(format!(
            "file exceeds the {max_bytes}-byte limit"
        )));
    }
    Ok(bytes)
}

/// Fails with [`DatasetError::Path`] unless `path` is an existing directory.
pub(crate) fn require_dir(path: &Path) -> Result<(), DatasetError> {
    if path.is_dir() {
        Ok(())
    } else {
        Err(DatasetError::Path {
            path: path.display().to_string(),
            message: if path.exists() {
                "not a directory".into()
            } else {
                "no such directory".into()
            },
        })
    }
}

/// Why a file name from an annotation file is unsafe to join onto the image root, if it is.
///
/// Refused: empty names, NUL, absolute paths (`/x`, `\x`, `C:x`), any `..` component
/// (split on both `/` and `\` so Windows-style names are caught on every platform).
pub fn unsafe_file_name_reason(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty file name");
    }
    if name.contains('\0') {
        return Some("contains a NUL character");
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Some("is an absolute path");
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return Some("starts with a drive letter");
    }
    if name.split(['/', '\\']).any(|part| part == "..") {
        return Some("contains a `..` component");
    }
    if Path::new(name)
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Some("is not a plain relative path");
    }
    None
}

/// Checks every image's file under `image_root` (in parallel): it exists, stays inside the
/// root after resolving symlinks, every pixel decodes under `limits` (a truncated file or a
/// decompression bomb is refused here, not later in a worker), and its size matches the
/// declared one.
/// Images declared with width or height 0 take the file's size instead (VOC without `<size>`).
/// Images whose names are unsafe are assumed already reported and are skipped.
///
/// `image_label(position, id)` names the image at `position` in messages.
pub(crate) fn check_image_files(
    dataset: &mut CocoDataset,
    image_label: &(dyn Fn(usize, i64) -> String + Sync),
    image_root: &Path,
    limits: ImageLimits,
    report: &mut ValidationReport,
) {
    let canonical_root = image_root.canonicalize().ok();
    let outcomes: Vec<Result<(u32, u32), (ProblemKind, String)>> = dataset
        .images
        .par_iter()
        .enumerate()
        .map(|(position, image)| {
            let label = image_label(position, image.id);
            if unsafe_file_name_reason(&image.file_name).is_some() {
                return Err((ProblemKind::HostileFileName, String::new()));
            }
            let path = image_root.join(&image.file_name);
            let resolved = match path.canonicalize() {
                Ok(resolved) => resolved,
                Err(_) => {
                    return Err((
                        ProblemKind::MissingImageFile,
                        format!("{label}: file {:?} not found", image.file_name),
                    ));
                }
            };
            if let Some(root) = &canonical_root
                && !resolved.starts_with(root)
            {
                return Err((
                    ProblemKind::HostileFileName,
                    format!(
                        "{label}: file {:?} leads outside the image folder",
                        image.file_name
                    ),
                ));
            }
            let named = |message: String| format!("{label}: file {:?} {message}", image.file_name);
            check_jpeg_complete(&resolved)
                .map_err(|message| (ProblemKind::UnreadableImageFile, named(message)))?;
            crate::images::verify(&resolved, limits).map_err(|refused| {
                let kind = match refused {
                    ImageRefused::TooManyPixels { .. } => ProblemKind::ImageTooLarge,
                    _ => ProblemKind::UnreadableImageFile,
                };
                (
                    kind,
                    format!("{label}: file {:?} {refused}", image.file_name),
                )
            })
        })
        .collect();

    for (position, (image, outcome)) in dataset.images.iter_mut().zip(outcomes).enumerate() {
        match outcome {
            Ok((width, height)) if image.width == 0 || image.height == 0 => {
                image.width = width;
                image.height = height;
            }
            Ok((width, height)) if (width, height) != (image.width, image.height) => report.push(
                ProblemKind::ImageSizeMismatch,
                format!(
                    "{}: declared {}×{} but file {:?} is {width}×{height}",
                    image_label(position, image.id),
                    image.width,
                    image.height,
                    image.file_name
                ),
            ),
            Ok(_) => {}
            // Unsafe names were reported when the names were read.
            Err((_, message)) if message.is_empty() => {}
            Err((kind, message)) => report.push(kind, message),
        }
    }
}

/// Checks every annotation's box against its image: finite, positive size, and inside the
/// image up to [`BOX_TOLERANCE_PX`]; and its area: finite and not negative (evaluation bins
/// boxes by area). Annotations of unknown images are only checked for size and area.
/// `annotation_label(position, id)` names the annotation at `position` in messages.
pub(crate) fn check_boxes(
    dataset: &CocoDataset,
    annotation_label: &dyn Fn(usize, i64) -> String,
    report: &mut ValidationReport,
) {
    let image_sizes: HashMap<i64, (u32, u32)> = dataset
        .images
        .iter()
        .map(|image| (image.id, (image.width, image.height)))
        .collect();
    for (position, annotation) in dataset.annotations.iter().enumerate() {
        let [x, y, w, h] = annotation.bbox;
        let label = annotation_label(position, annotation.id);
        let bbox = format_bbox(&annotation.bbox);
        if !annotation.bbox.iter().all(|v| v.is_finite()) || w <= 0.0 || h <= 0.0 {
            report.push(
                ProblemKind::InvalidBox,
                format!("{label}: bbox {bbox} has non-positive or non-finite size"),
            );
            continue;
        }
        if !annotation.area.is_finite() || annotation.area < 0.0 {
            report.push(
                ProblemKind::InvalidField,
                format!(
                    "{label}: area {} is negative or not finite",
                    annotation.area
                ),
            );
        }
        let Some(&(width, height)) = image_sizes.get(&annotation.image_id) else {
            continue;
        };
        if width == 0 || height == 0 {
            continue; // Size unknown (file unreadable): already reported.
        }
        let (width_f, height_f) = (f64::from(width), f64::from(height));
        let outside = x < -BOX_TOLERANCE_PX
            || y < -BOX_TOLERANCE_PX
            || x + w > width_f + BOX_TOLERANCE_PX
            || y + h > height_f + BOX_TOLERANCE_PX;
        if outside {
            report.push(
                ProblemKind::BoxOutsideImage,
                format!(
                    "{label}: bbox {bbox} extends past image {} ({width}×{height})",
                    annotation.image_id
                ),
            );
        }
    }
}

/// `[x, y, w, h]` with at most two decimals, for messages.
pub(crate) fn format_bbox(bbox: &[f64; 4]) -> String {
    let parts: Vec<String> = bbox
        .iter()
        .map(|v| {
            let rounded = (v * 100.0).round() / 100.0;
            format!("{rounded}")
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::test_support::TempDir;
    use crate::dataset::{load_coco, load_coco_with_limits, load_voc_with_limits};

    /// A one-image COCO file naming `file` (declared `width`×`height`) with one annotation.
    fn one_image_coco(dir: &TempDir, file: &str, width: u32, height: u32, area: f64) -> PathBuf {
        let json = serde_json::json!({
            "images": [{"id": 1, "file_name": file, "width": width, "height": height}],
            "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4],
                             "area": area}],
            "categories": [{"id": 1, "name": "thing"}]
        });
        dir.write("ann.json", serde_json::to_vec(&json).unwrap())
    }

    fn report_of(result: Result<CocoDataset, DatasetError>) -> ValidationReport {
        match result {
            Err(DatasetError::Invalid(report)) => report,
            other => panic!("expected a report, got {other:?}"),
        }
    }

    /// CRC-32 (IEEE) of a PNG chunk's type and data, to craft headers without an encoder.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
        chunk.extend_from_slice(&body);
        chunk.extend_from_slice(&crc32(&body).to_be_bytes());
        chunk
    }

    /// The report on a dataset of one 64×48 image saved as `name` and cut to 2/5 of its bytes.
    fn report_on_a_cut_image(dir: &TempDir, name: &str) -> ValidationReport {
        let noisy = image::RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 13 % 256) as u8,
                ((x * y) % 256) as u8,
            ])
        });
        let path = dir.path().join(name);
        noisy.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() * 2 / 5]).unwrap();
        let annotations = one_image_coco(dir, name, 64, 48, 16.0);
        report_of(load_coco(&annotations, dir.path()))
    }

    #[test]
    fn truncated_images_are_refused_by_name() {
        let dir = TempDir::new("checks_truncated");
        let report = report_on_a_cut_image(&dir, "cut.jpg");
        assert_eq!(
            report.count(ProblemKind::UnreadableImageFile),
            1,
            "{report}"
        );
        let message = &report
            .group(ProblemKind::UnreadableImageFile)
            .unwrap()
            .examples[0];
        assert!(message.contains("\"cut.jpg\""), "{message}");
        // A PNG cut short fails in the decoder itself.
        let report = report_on_a_cut_image(&dir, "cut.png");
        assert_eq!(
            report.count(ProblemKind::UnreadableImageFile),
            1,
            "{report}"
        );
    }

    #[test]
    fn images_over_the_limits_are_refused_before_decoding() {
        let dir = TempDir::new("checks_bomb");
        // A 20000×20000 RGB PNG header: refused by pixel count, no pixel data needed.
        let mut header = [0u8; 13];
        header[..4].copy_from_slice(&20_000u32.to_be_bytes());
        header[4..8].copy_from_slice(&20_000u32.to_be_bytes());
        header[8] = 8; // bit depth
        header[9] = 2; // RGB
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(png_chunk(b"IHDR", &header));
        // The decoder wants to see image data start; the start of a zlib stream is enough.
        png.extend(png_chunk(b"IDAT", &[0x78, 0x9C, 0x03, 0x00]));
        png.extend(png_chunk(b"IEND", &[]));
        dir.write("bomb.png", png);
        let annotations = one_image_coco(&dir, "bomb.png", 20_000, 20_000, 16.0);
        let report = report_of(load_coco(&annotations, dir.path()));
        assert_eq!(report.count(ProblemKind::ImageTooLarge), 1, "{report}");
        let message = &report.group(ProblemKind::ImageTooLarge).unwrap().examples[0];
        assert!(
            message.contains("\"bomb.png\"") && message.contains("400000000 pixels"),
            "{message}"
        );

        // The limits are the caller's: a small image over a small limit, COCO and VOC alike.
        dir.write_png("small.png", 64, 48);
        let annotations = one_image_coco(&dir, "small.png", 64, 48, 16.0);
        let tight = ImageLimits {
            max_pixels: 1000,
            ..ImageLimits::default()
        };
        let report = report_of(load_coco_with_limits(&annotations, dir.path(), tight));
        assert_eq!(report.count(ProblemKind::ImageTooLarge), 1, "{report}");
        assert!(load_coco(&annotations, dir.path()).is_ok());
        dir.write(
            "small.xml",
            "<annotation><filename>small.png</filename><object><name>t</name>\
             <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>\
             </object></annotation>",
        );
        let report = match load_voc_with_limits(dir.path(), tight) {
            Err(DatasetError::Invalid(report)) => report,
            other => panic!("expected a report, got {other:?}"),
        };
        assert_eq!(report.count(ProblemKind::ImageTooLarge), 1, "{report}");
    }

    #[test]
    fn negative_areas_and_empty_datasets_are_refused() {
        let dir = TempDir::new("checks_area");
        dir.write_png("a.png", 16, 16);
        let annotations = one_image_coco(&dir, "a.png", 16, 16, -5.0);
        let report = report_of(load_coco(&annotations, dir.path()));
        assert_eq!(report.total(), 1, "{report}");
        let message = &report.group(ProblemKind::InvalidField).unwrap().examples[0];
        assert_eq!(
            message,
            "annotation id 10 (index 0): area -5 is negative or not finite"
        );

        let empty = serde_json::json!({"images": [], "annotations": [], "categories": []});
        let annotations = dir.write("empty.json", serde_json::to_vec(&empty).unwrap());
        let report = report_of(load_coco(&annotations, dir.path()));
        let message = &report.group(ProblemKind::InvalidField).unwrap().examples[0];
        assert!(message.contains("at least one image"), "{message}");
    }

    #[test]
    fn refuses_hostile_file_names() {
        for name in [
            "",
            "/etc/passwd",
            "\\\\server\\share",
            "C:\\x.jpg",
            "../x.jpg",
            "a/../../x.jpg",
            "a\\..\\x.jpg",
            "a\0b.jpg",
        ] {
            assert!(unsafe_file_name_reason(name).is_some(), "{name:?} accepted");
        }
        for name in ["a.jpg", "sub/dir/a.jpg", "./a.jpg", "a..b.jpg", "..a.jpg"] {
            assert_eq!(unsafe_file_name_reason(name), None, "{name:?} refused");
        }
    }
}
