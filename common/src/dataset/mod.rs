//! Dataset formats: COCO JSON and Pascal VOC, loaded into one in-memory COCO form and validated.
//!
//! Boxes are COCO `[x, y, w, h]` in pixels here, at the format edge; the trainer converts to xyxy.
//! Loading never stops at the first problem: it collects every problem into a
//! [`ValidationReport`] (first few of each kind, with counts) so a user can fix a file in one go.

mod checks;
mod coco;
mod jpeg;
mod report;
mod splits;
#[cfg(test)]
mod test_support;
mod voc;

pub use checks::{BOX_TOLERANCE_PX, MAX_ANNOTATION_FILE_BYTES, unsafe_file_name_reason};
pub use coco::{load_coco, load_coco_with_limits};
pub use jpeg::{check_jpeg_bytes, check_jpeg_complete};
pub use report::{EXAMPLES_PER_KIND, ProblemGroup, ProblemKind, ValidationReport};
pub use splits::{DatasetSplits, MAX_SPLITS_FILE_BYTES, labeled_subset};
pub use voc::{
    MAX_VOC_XML_BYTES, VocAnnotation, VocLayout, VocObject, list_xml_files, load_voc,
    load_voc_with_limits, parse_voc_xml, voc_box_to_coco, voc_layout,
};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoImage {
    pub id: i64,
    /// Relative to the dataset's image root; never absolute, never containing `..`.
    pub file_name: String,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoAnnotation {
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    /// `[x, y, w, h]` in pixels.
    pub bbox: [f64; 4],
    #[serde(default)]
    pub area: f64,
    #[serde(default)]
    pub iscrowd: u8,
    /// Polygons (`[[x1, y1, x2, y2, ...], ...]`) or RLE, kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segmentation: Option<serde_json::Value>,
}

/// The smallest width and height (pixels) of a box a detector trains on.
pub const MIN_TRAIN_BOX_PX: f64 = 1.0;

impl CocoAnnotation {
    /// Whether a detector trains on this object: not a crowd region, and at least
    /// [`MIN_TRAIN_BOX_PX`] wide and high. The trainer's loader keeps objects by this rule;
    /// the server's check that a mask detector's objects all have masks
    /// (`db::datasets::first_unmasked_annotation`) says it again in SQL.
    pub fn is_trained_on(&self) -> bool {
        let [_, _, w, h] = self.bbox;
        self.iscrowd == 0 && w >= MIN_TRAIN_BOX_PX && h >= MIN_TRAIN_BOX_PX
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoCategory {
    pub id: i64,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supercategory: Option<String>,
}

/// A whole dataset in COCO form, validated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CocoDataset {
    pub images: Vec<CocoImage>,
    pub annotations: Vec<CocoAnnotation>,
    pub categories: Vec<CocoCategory>,
}

/// Why a dataset could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The files were read but their content has problems; nothing should be stored.
    #[error("the dataset has problems:\n{0}")]
    Invalid(ValidationReport),
    /// A path the user gave does not exist or cannot be read.
    #[error("{path}: {message}")]
    Path { path: String, message: String },
}

#[cfg(test)]
mod tests {
    use super::CocoAnnotation;

    #[test]
    fn detectors_train_on_objects_of_a_pixel_or_more_that_are_not_crowds() {
        let object = |w: f64, h: f64, iscrowd: u8| CocoAnnotation {
            id: 1,
            image_id: 1,
            category_id: 1,
            bbox: [0.0, 0.0, w, h],
            area: w * h,
            iscrowd,
            segmentation: None,
        };
        assert!(object(1.0, 1.0, 0).is_trained_on());
        assert!(!object(1.0, 1.0, 1).is_trained_on(), "crowd");
        assert!(!object(0.5, 10.0, 0).is_trained_on(), "narrow");
        assert!(!object(10.0, 0.9, 0).is_trained_on(), "flat");
    }
}
