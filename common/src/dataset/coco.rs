//! COCO JSON loading with complete validation.
//!
//! The file is parsed into a generic JSON tree first (so syntax errors carry line/column),
//! then every image, annotation and category is read field by field, so one bad item never
//! hides the problems of the others.

use super::checks::{
    MAX_ANNOTATION_FILE_BYTES, check_boxes, check_image_files, read_capped, require_dir,
    unsafe_file_name_reason,
};
use super::{
    CocoAnnotation, CocoCategory, CocoDataset, CocoImage, DatasetError, ProblemKind,
    ValidationReport,
};
use crate::images::ImageLimits;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Loads and validates a COCO annotation file whose image `file_name`s are relative to
/// `image_root`.
///
/// Returns [`DatasetError::Path`] if the file or folder does not exist or the file is
/// larger than [`MAX_ANNOTATION_FILE_BYTES`] (1 GiB), and [`DatasetError::Invalid`] with
/// every problem found otherwise (see [`ProblemKind`]). Every image file is decoded whole
/// (in parallel) under [`ImageLimits::default`] to check it exists, is complete, is not a
/// decompression bomb and has the declared size; see [`load_coco_with_limits`].
/// A missing `area` becomes `w * h`; a negative one is refused; so is a file without images.
pub fn load_coco(annotations: &Path, image_root: &Path) -> Result<CocoDataset, DatasetError> {
    load_coco_with_limits(annotations, image_root, ImageLimits::default())
}

/// [`load_coco`] with the decoded-size limits images must keep (the server passes its own).
pub fn load_coco_with_limits(
    annotations: &Path,
    image_root: &Path,
    limits: ImageLimits,
) -> Result<CocoDataset, DatasetError> {
    require_dir(image_root)?;
    let bytes = read_capped(annotations, MAX_ANNOTATION_FILE_BYTES)?;
    let mut report = ValidationReport::new();
    let root: Value = match serde_json::from_slice(&bytes) {
        Ok(root) => root,
        Err(e) => {
            report.push(
                ProblemKind::MalformedFile,
                format!(
                    "{}: line {}, column {}: {e}",
                    file_label(annotations),
                    e.line(),
                    e.column()
                ),
            );
            return Err(DatasetError::Invalid(report));
        }
    };
    drop(bytes);
    let (mut dataset, indices) = parse_coco_tree(&root, &mut report);
    check_references(&dataset, &indices.annotations, &mut report);
    let annotation_label = |position: usize, id: i64| {
        format!(
            "annotation id {id} (index {})",
            indices.annotations[position]
        )
    };
    let image_label =
        |position: usize, id: i64| format!("image id {id} (index {})", indices.images[position]);
    check_boxes(&dataset, &annotation_label, &mut report);
    check_image_files(&mut dataset, &image_label, image_root, limits, &mut report);
    if report.is_empty() {
        Ok(dataset)
    } else {
        Err(DatasetError::Invalid(report))
    }
}

fn file_label(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Where each kept item was in the file, so later messages name the file's index.
#[derive(Default)]
struct SourceIndices {
    images: Vec<usize>,
    annotations: Vec<usize>,
}

/// Reads the three top-level arrays; items with missing or invalid required fields are
/// reported and left out, duplicates are reported and the later one left out.
fn parse_coco_tree(root: &Value, report: &mut ValidationReport) -> (CocoDataset, SourceIndices) {
    let mut dataset = CocoDataset::default();
    let mut indices = SourceIndices::default();
    let Some(top) = root.as_object() else {
        report.push(
            ProblemKind::MalformedFile,
            "the top level is not a JSON object with images/annotations/categories",
        );
        return (dataset, indices);
    };

    let images = top_array(top, "images", report);
    if images.is_empty() && matches!(top.get("images"), Some(Value::Array(_))) {
        // Nothing to train or evaluate on; refused here rather than failing every job later.
        report.push(
            ProblemKind::InvalidField,
            "top level: \"images\" is empty; a dataset needs at least one image",
        );
    }
    let mut image_ids = SeenIds::new("image", ProblemKind::DuplicateImageId);
    for (index, item) in images.iter().enumerate() {
        let (mut fields, id) = ItemFields::with_id(item, "image", index, report);
        let file_name = fields.string("file_name");
        let width = fields.dimension("width");
        let height = fields.dimension("height");
        if let Some(name) = &file_name
            && let Some(reason) = unsafe_file_name_reason(name)
        {
            let message = format!("{}: file_name {name:?} {reason}", fields.label);
            fields.report.push(ProblemKind::HostileFileName, message);
            continue;
        }
        let (Some(id), Some(file_name), Some(width), Some(height)) = (id, file_name, width, height)
        else {
            continue;
        };
        if !image_ids.first_use(id, index, report) {
            continue;
        }
        indices.images.push(index);
        dataset.images.push(CocoImage {
            id,
            file_name,
            width,
            height,
        });
    }

    let mut category_ids = SeenIds::new("category", ProblemKind::DuplicateCategoryId);
    for (index, item) in top_array(top, "categories", report).iter().enumerate() {
        let (mut fields, id) = ItemFields::with_id(item, "category", index, report);
        let name = fields.string("name");
        let supercategory = fields.optional_string("supercategory");
        let (Some(id), Some(name)) = (id, name) else {
            continue;
        };
        if !category_ids.first_use(id, index, report) {
            continue;
        }
        dataset.categories.push(CocoCategory {
            id,
            name,
            supercategory,
        });
    }

    let mut annotation_ids = SeenIds::new("annotation", ProblemKind::DuplicateAnnotationId);
    for (index, item) in top_array(top, "annotations", report).iter().enumerate() {
        let (mut fields, id) = ItemFields::with_id(item, "annotation", index, report);
        let image_id = fields.integer("image_id");
        let category_id = fields.integer("category_id");
        let bbox = fields.bbox("bbox");
        let area = fields.optional_number("area");
        let iscrowd = fields.optional_flag("iscrowd");
        let segmentation = fields.object.and_then(|o| o.get("segmentation")).cloned();
        let (Some(id), Some(image_id), Some(category_id), Some(bbox)) =
            (id, image_id, category_id, bbox)
        else {
            continue;
        };
        if !annotation_ids.first_use(id, index, report) {
            continue;
        }
        indices.annotations.push(index);
        dataset.annotations.push(CocoAnnotation {
            id,
            image_id,
            category_id,
            bbox,
            area: area.unwrap_or(bbox[2] * bbox[3]),
            iscrowd: iscrowd.unwrap_or(0),
            segmentation: segmentation.filter(|s| !s.is_null()),
        });
    }
    (dataset, indices)
}

/// Reports annotations whose image or category does not exist.
fn check_references(
    dataset: &CocoDataset,
    annotation_indices: &[usize],
    report: &mut ValidationReport,
) {
    let image_ids: HashSet<i64> = dataset.images.iter().map(|i| i.id).collect();
    let category_ids: HashMap<i64, &str> = dataset
        .categories
        .iter()
        .map(|c| (c.id, c.name.as_str()))
        .collect();
    for (annotation, &index) in dataset.annotations.iter().zip(annotation_indices) {
        if !image_ids.contains(&annotation.image_id) {
            report.push(
                ProblemKind::UnknownImageId,
                format!(
                    "annotation id {} (index {index}): image_id {} is not an image id",
                    annotation.id, annotation.image_id
                ),
            );
        }
        if !category_ids.contains_key(&annotation.category_id) {
            report.push(
                ProblemKind::UnknownCategory,
                format!(
                    "annotation id {} (index {index}): category_id {} is not a category id",
                    annotation.id, annotation.category_id
                ),
            );
        }
    }
}

/// The array under `key`, reporting it if absent or not an array.
fn top_array<'a>(
    top: &'a Map<String, Value>,
    key: &str,
    report: &mut ValidationReport,
) -> &'a [Value] {
    match top.get(key) {
        Some(Value::Array(items)) => items,
        Some(_) => {
            report.push(
                ProblemKind::InvalidField,
                format!("top level: \"{key}\" is not an array"),
            );
            &[]
        }
        None => {
            report.push(
                ProblemKind::MissingField,
                format!("top level: no \"{key}\" array"),
            );
            &[]
        }
    }
}

/// Field access for one item that reports missing/invalid fields against its label.
/// The ids of one kind of item seen so far; a repeated one is reported.
struct SeenIds {
    what: &'static str,
    kind: ProblemKind,
    ids: HashSet<i64>,
}

impl SeenIds {
    fn new(what: &'static str, kind: ProblemKind) -> SeenIds {
        SeenIds {
            what,
            kind,
            ids: HashSet::new(),
        }
    }

    /// Whether `id` (of the item at `index`) is new; a repeat is reported.
    fn first_use(&mut self, id: i64, index: usize, report: &mut ValidationReport) -> bool {
        let new = self.ids.insert(id);
        if !new {
            let what = self.what;
            let message =
                format!("{what} id {id} (index {index}): id already used by an earlier {what}");
            report.push(self.kind, message);
        }
        new
    }
}

struct ItemFields<'a, 'r> {
    object: Option<&'a Map<String, Value>>,
    label: String,
    report: &'r mut ValidationReport,
}

impl<'a, 'r> ItemFields<'a, 'r> {
    fn new(item: &'a Value, label: String, report: &'r mut ValidationReport) -> Self {
        let object = item.as_object();
        if object.is_none() {
            report.push(
                ProblemKind::InvalidField,
                format!("{label}: not a JSON object"),
            );
        }
        Self {
            object,
            label,
            report,
        }
    }

    /// The value under `key`; reports it missing (once per item and key) if absent or null.
    /// The fields of the `what` (image, category, annotation) at `index`, and its id; once the
    /// id is read, problems name the item by it.
    fn with_id(
        item: &'a Value,
        what: &str,
        index: usize,
        report: &'r mut ValidationReport,
    ) -> (Self, Option<i64>) {
        let mut fields = ItemFields::new(item, format!("{what} at index {index}"), report);
        let id = fields.integer("id");
        if let Some(id) = id {
            fields.label = format!("{what} id {id} (index {index})");
        }
        (fields, id)
    }

    /// The value of an optional field: `None`, and no problem, when it is absent or null.
    fn present(&self, key: &str) -> Option<&'a Value> {
        self.object?.get(key).filter(|v| !v.is_null())
    }

    fn required(&mut self, key: &str) -> Option<&'a Value> {
        let object = self.object?;
        match object.get(key) {
            Some(value) if !value.is_null() => Some(value),
            _ => {
                let message = format!("{}: no \"{key}\"", self.label);
                self.report.push(ProblemKind::MissingField, message);
                None
            }
        }
    }

    fn invalid(&mut self, key: &str, value: &Value, expected: &str) {
        let mut shown = value.to_string();
        if shown.len() > 60 {
            let cut = (0..=60)
                .rev()
                .find(|&i| shown.is_char_boundary(i))
                .unwrap_or(0);
            shown.truncate(cut);
            shown.push('…');
        }
        let message = format!("{}: \"{key}\" is {shown}, expected {expected}", self.label);
        self.report.push(ProblemKind::InvalidField, message);
    }

    fn integer(&mut self, key: &str) -> Option<i64> {
        let value = self.required(key)?;
        let integer = as_integer(value);
        if integer.is_none() {
            self.invalid(key, value, "an integer");
        }
        integer
    }

    /// A positive image dimension.
    fn dimension(&mut self, key: &str) -> Option<u32> {
        let value = self.required(key)?;
        let dimension = as_integer(value)
            .filter(|&v| v > 0)
            .and_then(|v| u32::try_from(v).ok());
        if dimension.is_none() {
            self.invalid(key, value, "a positive integer");
        }
        dimension
    }

    fn string(&mut self, key: &str) -> Option<String> {
        let value = self.required(key)?;
        let string = value.as_str().map(str::to_owned);
        if string.is_none() {
            self.invalid(key, value, "a string");
        }
        string
    }

    fn optional_string(&mut self, key: &str) -> Option<String> {
        self.present(key)?;
        self.string(key)
    }

    fn optional_number(&mut self, key: &str) -> Option<f64> {
        let value = self.present(key)?;
        let number = value.as_f64();
        if number.is_none() {
            self.invalid(key, value, "a number");
        }
        number
    }

    fn optional_flag(&mut self, key: &str) -> Option<u8> {
        let value = self.present(key)?;
        let flag = match value {
            Value::Bool(b) => Some(u8::from(*b)),
            other => as_integer(other)
                .filter(|v| *v == 0 || *v == 1)
                .map(|v| v as u8),
        };
        if flag.is_none() {
            self.invalid(key, value, "0 or 1");
        }
        flag
    }

    /// `[x, y, w, h]`: four numbers. Size and position are checked later, against the image.
    fn bbox(&mut self, key: &str) -> Option<[f64; 4]> {
        let value = self.required(key)?;
        let numbers: Option<Vec<f64>> = value
            .as_array()
            .filter(|a| a.len() == 4)
            .and_then(|a| a.iter().map(Value::as_f64).collect());
        match numbers {
            Some(n) => Some([n[0], n[1], n[2], n[3]]),
            None => {
                self.invalid(key, value, "an array of 4 numbers [x, y, w, h]");
                None
            }
        }
    }
}

/// An integer, also accepting integral floats like `3.0` (some exporters write those).
fn as_integer(value: &Value) -> Option<i64> {
    if let Some(integer) = value.as_i64() {
        return Some(integer);
    }
    let float = value.as_f64()?;
    (float.fract() == 0.0 && float.abs() < 9.0e15).then_some(float as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::test_support::TempDir;

    /// A valid two-image dataset; `edit` may break it before it is written.
    fn write_dataset(dir: &TempDir, edit: impl FnOnce(&mut Value)) -> std::path::PathBuf {
        dir.write_png("a.png", 64, 48);
        dir.write_png("sub/b.png", 32, 32);
        let mut json = serde_json::json!({
            "images": [
                {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                {"id": 2, "file_name": "sub/b.png", "width": 32, "height": 32}
            ],
            "annotations": [
                {"id": 10, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 12]},
                {"id": 11, "image_id": 2, "category_id": 2, "bbox": [5.5, 6, 26, 26.5],
                 "area": 100.0, "iscrowd": 0, "segmentation": [[5, 6, 30, 6, 30, 30]]}
            ],
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog", "supercategory": "animal"}]
        });
        edit(&mut json);
        dir.write("ann.json", serde_json::to_vec_pretty(&json).unwrap())
    }

    fn problems(dir: &TempDir, edit: impl FnOnce(&mut Value)) -> ValidationReport {
        let annotations = write_dataset(dir, edit);
        match load_coco(&annotations, dir.path()) {
            Err(DatasetError::Invalid(report)) => report,
            other => panic!("expected a report, got {other:?}"),
        }
    }

    #[test]
    fn loads_a_valid_file() {
        let dir = TempDir::new("coco_valid");
        let annotations = write_dataset(&dir, |_| {});
        let dataset = load_coco(&annotations, dir.path()).unwrap();
        assert_eq!(dataset.images.len(), 2);
        assert_eq!(dataset.annotations[0].area, 120.0, "area computed from w*h");
        assert_eq!(dataset.annotations[1].area, 100.0, "given area kept");
        assert!(dataset.annotations[1].segmentation.is_some());
        assert_eq!(
            dataset.categories[1].supercategory.as_deref(),
            Some("animal")
        );
    }

    #[test]
    fn reports_malformed_json_with_position() {
        let dir = TempDir::new("coco_malformed");
        let annotations = dir.write("ann.json", b"{\n  \"images\": [,]\n}");
        let Err(DatasetError::Invalid(report)) = load_coco(&annotations, dir.path()) else {
            panic!("malformed JSON accepted");
        };
        let message = &report.group(ProblemKind::MalformedFile).unwrap().examples[0];
        assert!(message.contains("line 2, column"), "{message}");
    }

    #[test]
    fn reports_missing_paths() {
        let dir = TempDir::new("coco_paths");
        let missing = dir.path().join("nope.json");
        assert!(matches!(
            load_coco(&missing, dir.path()),
            Err(DatasetError::Path { .. })
        ));
        let annotations = write_dataset(&dir, |_| {});
        assert!(matches!(
            load_coco(&annotations, &dir.path().join("no-such-dir")),
            Err(DatasetError::Path { .. })
        ));
    }

    #[test]
    fn reports_every_problem_kind_at_once() {
        let dir = TempDir::new("coco_problems");
        dir.write("broken.png", b"not a png at all");
        let report = problems(&dir, |json| {
            let images = json["images"].as_array_mut().unwrap();
            images.extend([
                serde_json::json!({"id": 3, "file_name": "gone.png", "width": 8, "height": 8}),
                serde_json::json!({"id": 4, "file_name": "broken.png", "width": 8, "height": 8}),
                serde_json::json!({"id": 5, "file_name": "a.png", "width": 65, "height": 48}),
                serde_json::json!({"id": 1, "file_name": "a.png", "width": 64, "height": 48}),
                serde_json::json!({"id": 6, "file_name": "../a.png", "width": 64, "height": 48}),
                serde_json::json!({"id": 7, "file_name": "/etc/passwd", "width": 64, "height": 48}),
                serde_json::json!({"id": 8, "width": 64, "height": "tall"}),
            ]);
            let annotations = json["annotations"].as_array_mut().unwrap();
            annotations.push(serde_json::json!({"id": 10, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}));
            annotations.push(serde_json::json!({"id": 12, "image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1]}));
            annotations.push(serde_json::json!({"id": 13, "image_id": 1, "category_id": 42, "bbox": [0, 0, 1, 1]}));
            annotations.push(serde_json::json!({"id": 14, "image_id": 1, "category_id": 1, "bbox": [60, 0, 10, 10]}));
            annotations.push(serde_json::json!({"id": 15, "image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 10]}));
            annotations.push(serde_json::json!({"id": 16, "image_id": 1, "category_id": 1, "bbox": [0, 0, -3, 10]}));
            annotations.push(serde_json::json!({"id": 17, "image_id": 1, "category_id": 1}));
            annotations.push(serde_json::json!({"id": 18, "image_id": 1, "category_id": 1, "bbox": [63, 47, 2, 2]}));
            json["categories"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"id": 2, "name": "again"}));
        });
        let expected = [
            (ProblemKind::MissingField, 2), // image 8 file_name, annotation 17 bbox
            (ProblemKind::InvalidField, 1), // image 8 height
            (ProblemKind::DuplicateImageId, 1),
            (ProblemKind::DuplicateAnnotationId, 1),
            (ProblemKind::DuplicateCategoryId, 1),
            (ProblemKind::UnknownImageId, 1),
            (ProblemKind::UnknownCategory, 1),
            (ProblemKind::MissingImageFile, 1),
            (ProblemKind::UnreadableImageFile, 1),
            (ProblemKind::ImageSizeMismatch, 1),
            (ProblemKind::BoxOutsideImage, 1), // id 18 is within the 1 px tolerance
            (ProblemKind::InvalidBox, 2),
            (ProblemKind::HostileFileName, 2),
        ];
        for (kind, count) in expected {
            assert_eq!(report.count(kind), count, "{kind:?} in\n{report}");
        }
        assert_eq!(report.count(ProblemKind::MalformedFile), 0);
        let outside = &report.group(ProblemKind::BoxOutsideImage).unwrap().examples[0];
        assert_eq!(
            outside,
            "annotation id 14 (index 5): bbox [60, 0, 10, 10] extends past image 1 (64×48)"
        );
        // The readable form names kinds and items.
        let text = report.to_string();
        assert!(
            text.contains("duplicate image id (1)") && text.contains("image id 3"),
            "{text}"
        );
    }

    #[test]
    fn reports_missing_arrays_and_non_numeric_boxes() {
        let dir = TempDir::new("coco_missing_array");
        let report = problems(&dir, |json| {
            json.as_object_mut().unwrap().remove("categories");
            json["annotations"][0]["bbox"] = serde_json::json!([0, 0, "x", 1]);
        });
        assert_eq!(report.count(ProblemKind::MissingField), 1, "{report}");
        assert_eq!(report.count(ProblemKind::InvalidField), 1, "{report}");
        // Without categories, every annotation's category is unknown.
        assert_eq!(report.count(ProblemKind::UnknownCategory), 1, "{report}");
    }

    #[cfg(unix)]
    #[test]
    fn refuses_symlinks_leading_outside_the_root() {
        let outside = TempDir::new("coco_outside");
        outside.write_png("secret.png", 64, 48);
        let dir = TempDir::new("coco_symlink");
        std::os::unix::fs::symlink(
            outside.path().join("secret.png"),
            dir.path().join("link.png"),
        )
        .unwrap();
        let report = problems(&dir, |json| {
            json["images"][0]["file_name"] = "link.png".into();
        });
        assert_eq!(report.count(ProblemKind::HostileFileName), 1, "{report}");
    }
}
