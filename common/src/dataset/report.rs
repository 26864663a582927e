//! A validation report: every problem found in a dataset, grouped by kind.
//!
//! Each group keeps the total count and the first [`EXAMPLES_PER_KIND`] messages, so a
//! dataset with 100,000 bad boxes still yields a short, readable report.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How many messages each problem kind keeps; the rest are only counted.
pub const EXAMPLES_PER_KIND: usize = 5;

/// What is wrong, one variant per class of problem a user fixes in one way.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The annotation file is not well-formed JSON/XML (message has line and column).
    MalformedFile,
    /// A required field is absent.
    MissingField,
    /// A field is present but has the wrong type or an impossible value.
    InvalidField,
    DuplicateImageId,
    DuplicateAnnotationId,
    DuplicateCategoryId,
    /// An annotation's `image_id` names no image.
    UnknownImageId,
    /// An annotation's `category_id` names no category.
    UnknownCategory,
    /// An image file does not exist under the image root.
    MissingImageFile,
    /// An image file exists but does not decode completely (corrupt, truncated, unknown format).
    UnreadableImageFile,
    /// An image is over the decoded-size limits (e.g. a small file that expands to gigabytes).
    ImageTooLarge,
    /// The declared width/height disagree with the image file.
    ImageSizeMismatch,
    /// A box extends past its image by more than the tolerance.
    BoxOutsideImage,
    /// A box has non-positive or non-finite width/height, or non-finite corner.
    InvalidBox,
    /// A file name is absolute, contains `..`/NUL, or leads outside the image root.
    HostileFileName,
}

impl ProblemKind {
    /// Every kind, in report order.
    pub const ALL: [ProblemKind; 15] = [
        ProblemKind::MalformedFile,
        ProblemKind::MissingField,
        ProblemKind::InvalidField,
        ProblemKind::DuplicateImageId,
        ProblemKind::DuplicateAnnotationId,
        ProblemKind::DuplicateCategoryId,
        ProblemKind::UnknownImageId,
        ProblemKind::UnknownCategory,
        ProblemKind::MissingImageFile,
        ProblemKind::UnreadableImageFile,
        ProblemKind::ImageTooLarge,
        ProblemKind::ImageSizeMismatch,
        ProblemKind::BoxOutsideImage,
        ProblemKind::InvalidBox,
        ProblemKind::HostileFileName,
    ];

    /// A short human title, e.g. for a report heading.
    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::MalformedFile => "malformed file",
            ProblemKind::MissingField => "missing required field",
            ProblemKind::InvalidField => "invalid field value",
            ProblemKind::DuplicateImageId => "duplicate image id",
            ProblemKind::DuplicateAnnotationId => "duplicate annotation id",
            ProblemKind::DuplicateCategoryId => "duplicate category id",
            ProblemKind::UnknownImageId => "annotation refers to an unknown image",
            ProblemKind::UnknownCategory => "annotation refers to an unknown category",
            ProblemKind::MissingImageFile => "missing image file",
            ProblemKind::UnreadableImageFile => "unreadable image file",
            ProblemKind::ImageTooLarge => "image over the size limit",
            ProblemKind::ImageSizeMismatch => "image size differs from the file",
            ProblemKind::BoxOutsideImage => "box outside its image",
            ProblemKind::InvalidBox => "box of invalid size",
            ProblemKind::HostileFileName => "unsafe file name",
        }
    }
}

/// All problems of one kind: the total and the first few messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemGroup {
    pub kind: ProblemKind,
    /// [`ProblemKind::title`], repeated here so a UI needs no lookup table.
    pub title: String,
    /// How many problems of this kind were found in total.
    pub count: usize,
    /// The first [`EXAMPLES_PER_KIND`] messages, in the order found.
    pub examples: Vec<String>,
}

/// Every problem found while loading a dataset, grouped by kind (in [`ProblemKind::ALL`] order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationReport {
    pub groups: Vec<ProblemGroup>,
}

impl ValidationReport {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one problem; messages past the first few of their kind are only counted.
    pub fn push(&mut self, kind: ProblemKind, message: impl Into<String>) {
        let group = match self.groups.binary_search_by(|g| g.kind.cmp(&kind)) {
            Ok(index) => &mut self.groups[index],
            Err(index) => {
                self.groups.insert(
                    index,
                    ProblemGroup {
                        kind,
                        title: kind.title().to_string(),
                        count: 0,
                        examples: Vec::new(),
                    },
                );
                &mut self.groups[index]
            }
        };
        group.count += 1;
        if group.examples.len() < EXAMPLES_PER_KIND {
            group.examples.push(message.into());
        }
    }

    /// Adds all of `other`'s problems (counts add up; examples fill up to the cap).
    pub fn merge(&mut self, other: ValidationReport) {
        for group in other.groups {
            let count_without_examples = group.count.saturating_sub(group.examples.len());
            for message in group.examples {
                self.push(group.kind, message);
            }
            if count_without_examples > 0
                && let Ok(index) = self.groups.binary_search_by(|g| g.kind.cmp(&group.kind))
            {
                self.groups[index].count += count_without_examples;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Total number of problems of every kind.
    pub fn total(&self) -> usize {
        self.groups.iter().map(|g| g.count).sum()
    }

    /// Number of problems of `kind`.
    pub fn count(&self, kind: ProblemKind) -> usize {
        self.group(kind).map_or(0, |g| g.count)
    }

    pub fn group(&self, kind: ProblemKind) -> Option<&ProblemGroup> {
        self.groups.iter().find(|g| g.kind == kind)
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no problems found");
        }
        let total = self.total();
        writeln!(
            f,
            "{total} problem{} of {} kind{}:",
            if total == 1 { "" } else { "s" },
            self.groups.len(),
            if self.groups.len() == 1 { "" } else { "s" },
        )?;
        for group in &self.groups {
            writeln!(f, "- {} ({}):", group.title, group.count)?;
            for message in &group.examples {
                writeln!(f, "    {message}")?;
            }
            let unshown = group.count - group.examples.len();
            if unshown > 0 {
                writeln!(f, "    … and {unshown} more")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_counts_and_first_examples() {
        let mut report = ValidationReport::new();
        for i in 0..8 {
            report.push(ProblemKind::InvalidBox, format!("box {i}"));
        }
        report.push(ProblemKind::MalformedFile, "bad");
        assert_eq!(report.total(), 9);
        assert_eq!(report.count(ProblemKind::InvalidBox), 8);
        assert_eq!(report.groups[0].kind, ProblemKind::MalformedFile);
        let boxes = report.group(ProblemKind::InvalidBox).unwrap();
        assert_eq!(boxes.examples.len(), EXAMPLES_PER_KIND);
        let text = report.to_string();
        assert!(text.contains("box 4") && !text.contains("box 5"), "{text}");
        assert!(text.contains("… and 3 more"), "{text}");

        let mut merged = ValidationReport::new();
        merged.push(ProblemKind::InvalidBox, "first");
        merged.merge(report.clone());
        assert_eq!(merged.count(ProblemKind::InvalidBox), 9);
        assert_eq!(merged.total(), 10);

        let json = serde_json::to_string(&report).unwrap();
        let back: ValidationReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        assert!(json.contains("\"invalid_box\""), "{json}");
    }
}
