//! Checks shared by the COCO and VOC loaders: capped reads, file-name safety,
//! image files on disk, and box geometry.

use super::{CocoDataset, DatasetError, ProblemKind, ValidationReport};
use rayon::prelude::*;
use std::collections::HashMap;
use std::io::Read;
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
/// root after resolving symlinks, its header decodes, and its size matches the declared one.
/// Images declared with width or height 0 take the file's size instead (VOC without `<size>`).
/// Images whose names are unsafe are assumed already reported and are skipped.
///
/// `image_label(position, id)` names the image at `position` in messages.
pub(crate) fn check_image_files(
    dataset: &mut CocoDataset,
    image_label: &(dyn Fn(usize, i64) -> String + Sync),
    image_root: &Path,
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
            read_dimensions(&resolved).map_err(|message| {
                (
                    ProblemKind::UnreadableImageFile,
                    format!("{label}: file {:?} {message}", image.file_name),
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

/// Width and height from an image file's header, or why it cannot be read.
fn read_dimensions(path: &Path) -> Result<(u32, u32), String> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| format!("cannot be opened: {e}"))?
        .with_guessed_format()
        .map_err(|e| format!("cannot be read: {e}"))?;
    if reader.format().is_none() {
        return Err("is not a recognised image format".into());
    }
    reader
        .into_dimensions()
        .map_err(|e| format!("does not decode: {e}"))
}

/// Checks every annotation's box against its image: finite, positive size, and inside the
/// image up to [`BOX_TOLERANCE_PX`]. Annotations of unknown images are only checked for size.
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
