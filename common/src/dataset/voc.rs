//! Pascal VOC loading: one XML file per image, converted to the in-memory COCO form.
//!
//! Box convention (as detectron2 and the VOC devkit): VOC `xmin..xmax` are 1-based
//! inclusive pixel indices, so COCO `x = xmin - 1`, `w = xmax - xmin + 1` (likewise y/h).
//! Files written 0-based (e.g. DeepForest's) then start at -1, within the 1 px tolerance.

use super::checks::{
    check_boxes, check_image_files, read_capped, require_dir, unsafe_file_name_reason,
};
use super::{
    CocoAnnotation, CocoCategory, CocoDataset, CocoImage, DatasetError, ProblemKind,
    ValidationReport,
};
use crate::images::ImageLimits;
use quick_xml::events::Event;
use rayon::prelude::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Largest single VOC XML file read (64 MiB); real ones are a few KiB.
pub const MAX_VOC_XML_BYTES: u64 = 64 << 20;

/// One VOC XML file's content, as needed for detection.
#[derive(Debug, Clone, PartialEq)]
pub struct VocAnnotation {
    /// `<filename>`: the image, relative to the image folder (checked safe).
    pub filename: String,
    /// `<size><width>/<height>`, if given (optional in some exporters).
    pub size: Option<(u32, u32)>,
    pub objects: Vec<VocObject>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VocObject {
    pub name: String,
    /// `[xmin, ymin, xmax, ymax]` as written (1-based inclusive); see [`voc_box_to_coco`].
    pub bndbox: [f64; 4],
    /// `<difficult>1</difficult>`: loaded as COCO `iscrowd = 1` so evaluation ignores it.
    pub difficult: bool,
}

/// VOC `[xmin, ymin, xmax, ymax]` (1-based inclusive) to COCO `[x, y, w, h]`.
pub fn voc_box_to_coco([xmin, ymin, xmax, ymax]: [f64; 4]) -> [f64; 4] {
    [xmin - 1.0, ymin - 1.0, xmax - xmin + 1.0, ymax - ymin + 1.0]
}

/// Raw fields as found; converted and checked by [`parse_voc_xml`].
#[derive(Default)]
struct RawObject {
    name: Option<String>,
    coordinates: [Option<String>; 4],
    difficult: Option<String>,
}

const COORDINATE_NAMES: [&str; 4] = ["xmin", "ymin", "xmax", "ymax"];

/// Parses one VOC XML document. `label` names it in messages (e.g. its file name).
///
/// Every problem goes into `report`: malformed XML (with line and column) returns `None`;
/// missing or non-numeric fields are reported and the affected object left out. Box
/// geometry is not checked here (the loader checks it against the image).
pub fn parse_voc_xml(
    text: &str,
    label: &str,
    report: &mut ValidationReport,
) -> Option<VocAnnotation> {
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().trim_text(true);
    // Element names from the root down; matched below the root so its name does not matter.
    let mut path: Vec<String> = Vec::new();
    let mut filename = None;
    let (mut width, mut height) = (None, None);
    let mut objects: Vec<RawObject> = Vec::new();
    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => {
                let (line, column) = line_column(text, reader.error_position() as usize);
                report.push(
                    ProblemKind::MalformedFile,
                    format!("{label}: line {line}, column {column}: {e}"),
                );
                return None;
            }
        };
        let content = match event {
            Event::Eof => break,
            Event::Start(element) => {
                path.push(String::from_utf8_lossy(element.name().as_ref()).into_owned());
                if path.len() == 2 && path[1] == "object" {
                    objects.push(RawObject::default());
                }
                continue;
            }
            Event::End(_) => {
                path.pop();
                continue;
            }
            Event::Text(content) => match content.unescape() {
                Ok(content) => content.into_owned(),
                Err(e) => {
                    let (line, column) = line_column(text, reader.buffer_position() as usize);
                    report.push(
                        ProblemKind::MalformedFile,
                        format!("{label}: line {line}, column {column}: {e}"),
                    );
                    return None;
                }
            },
            Event::CData(data) => String::from_utf8_lossy(&data).into_owned(),
            _ => continue,
        };
        let below_root: Vec<&str> = path.iter().skip(1).map(String::as_str).collect();
        match below_root.as_slice() {
            ["filename"] => filename = Some(content),
            ["size", "width"] => width = Some(content),
            ["size", "height"] => height = Some(content),
            ["object", field @ ..] => {
                let Some(object) = objects.last_mut() else {
                    continue;
                };
                match field {
                    ["name"] => object.name = Some(content),
                    ["difficult"] => object.difficult = Some(content),
                    ["bndbox", coordinate] => {
                        if let Some(i) = COORDINATE_NAMES.iter().position(|c| c == coordinate) {
                            object.coordinates[i] = Some(content);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if let Some(open) = path.last() {
        report.push(
            ProblemKind::MalformedFile,
            format!("{label}: file ends inside <{open}>"),
        );
        return None;
    }

    let filename = match filename {
        Some(name) => match unsafe_file_name_reason(&name) {
            None => Some(name),
            Some(reason) => {
                report.push(
                    ProblemKind::HostileFileName,
                    format!("{label}: <filename> {name:?} {reason}"),
                );
                None
            }
        },
        None => {
            report.push(ProblemKind::MissingField, format!("{label}: no <filename>"));
            None
        }
    };
    let parse_dimension = |value: Option<String>, field: &str, report: &mut ValidationReport| {
        let value = value?;
        let parsed = value.trim().parse::<u32>().ok().filter(|v| *v > 0);
        if parsed.is_none() {
            report.push(
                ProblemKind::InvalidField,
                format!("{label}: <size><{field}> is {value:?}, expected a positive integer"),
            );
        }
        parsed
    };
    let width = parse_dimension(width, "width", report);
    let height = parse_dimension(height, "height", report);

    let mut parsed_objects = Vec::with_capacity(objects.len());
    for (index, raw) in objects.into_iter().enumerate() {
        let object_label = format!("{label} object {index}");
        let name = raw.name.filter(|n| !n.trim().is_empty());
        if name.is_none() {
            report.push(
                ProblemKind::MissingField,
                format!("{object_label}: no <name>"),
            );
        }
        let mut bndbox = [0.0; 4];
        let mut box_complete = true;
        for (i, value) in raw.coordinates.into_iter().enumerate() {
            let field = COORDINATE_NAMES[i];
            match value.map(|v| (v.trim().parse::<f64>(), v)) {
                Some((Ok(number), _)) => bndbox[i] = number,
                Some((Err(_), value)) => {
                    report.push(
                        ProblemKind::InvalidField,
                        format!("{object_label}: <{field}> is {value:?}, expected a number"),
                    );
                    box_complete = false;
                }
                None => {
                    report.push(
                        ProblemKind::MissingField,
                        format!("{object_label}: no <bndbox><{field}>"),
                    );
                    box_complete = false;
                }
            }
        }
        let difficult = matches!(raw.difficult.as_deref().map(str::trim), Some("1" | "true"));
        match name {
            Some(name) if box_complete => parsed_objects.push(VocObject {
                name: name.trim().to_string(),
                bndbox,
                difficult,
            }),
            _ => {} // Already reported.
        }
    }
    Some(VocAnnotation {
        filename: filename?,
        size: width.zip(height),
        objects: parsed_objects,
    })
}

/// 1-based line and column of a byte offset (clamped to the text).
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, column)
}

/// Where a VOC dataset's XML files and images are.
#[derive(Debug, Clone, PartialEq)]
pub struct VocLayout {
    pub annotation_dir: PathBuf,
    pub image_root: PathBuf,
}

/// Finds the layout under `root`: the standard `Annotations/` + `JPEGImages/`, or a flat
/// folder with the XML files and images side by side.
pub fn voc_layout(root: &Path) -> Result<VocLayout, DatasetError> {
    require_dir(root)?;
    let annotation_dir = root.join("Annotations");
    if annotation_dir.is_dir() {
        let image_root = root.join("JPEGImages");
        require_dir(&image_root)?;
        Ok(VocLayout {
            annotation_dir,
            image_root,
        })
    } else {
        Ok(VocLayout {
            annotation_dir: root.to_path_buf(),
            image_root: root.to_path_buf(),
        })
    }
}

/// The `.xml` files directly in `dir`, sorted by name.
pub fn list_xml_files(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let entries = std::fs::read_dir(dir).map_err(|e| DatasetError::Path {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .is_some_and(|ext| ext.eq_ignore_ascii_case("xml"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DatasetError::Path {
            path: dir.display().to_string(),
            message: "no .xml annotation files".into(),
        });
    }
    Ok(files)
}

/// Loads and validates a Pascal VOC dataset; returns it in COCO form with its image root.
///
/// `root` is either the standard layout (`root/Annotations/*.xml`, images in
/// `root/JPEGImages/`) or a flat folder of XML files and images, each XML's `<filename>`
/// naming its image relative to the image root (which is returned).
///
/// Ids: images 1..N in sorted XML file-name order; categories 1..K in sorted class-name
/// order; annotations 1..M in file then object order. Boxes use the convention in the
/// module docs; `difficult` objects become `iscrowd = 1`. A missing `<size>` is taken from
/// the image file. Each XML is capped at [`MAX_VOC_XML_BYTES`].
///
/// Every image is decoded whole under [`ImageLimits::default`]; see [`load_voc_with_limits`].
///
/// Errors: [`DatasetError::Path`] if `root` (or `JPEGImages/` beside `Annotations/`) does
/// not exist or holds no XML; [`DatasetError::Invalid`] with every problem otherwise.
pub fn load_voc(root: &Path) -> Result<(CocoDataset, PathBuf), DatasetError> {
    load_voc_with_limits(root, ImageLimits::default())
}

/// [`load_voc`] with the decoded-size limits images must keep (the server passes its own).
pub fn load_voc_with_limits(
    root: &Path,
    limits: ImageLimits,
) -> Result<(CocoDataset, PathBuf), DatasetError> {
    let layout = voc_layout(root)?;
    let xml_files = list_xml_files(&layout.annotation_dir)?;
    let parsed: Vec<(String, Option<VocAnnotation>, ValidationReport)> = xml_files
        .par_iter()
        .map(|path| {
            let label = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            let mut report = ValidationReport::new();
            let annotation = match read_capped(path, MAX_VOC_XML_BYTES) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => parse_voc_xml(&text, &label, &mut report),
                    Err(_) => {
                        report.push(
                            ProblemKind::MalformedFile,
                            format!("{label}: not UTF-8 text"),
                        );
                        None
                    }
                },
                Err(e) => {
                    report.push(ProblemKind::MalformedFile, format!("{label}: {e}"));
                    None
                }
            };
            (label, annotation, report)
        })
        .collect();

    let mut report = ValidationReport::new();
    let category_names: BTreeSet<&str> = parsed
        .iter()
        .filter_map(|(_, annotation, _)| annotation.as_ref())
        .flat_map(|annotation| annotation.objects.iter().map(|o| o.name.as_str()))
        .collect();
    let categories: Vec<CocoCategory> = category_names
        .iter()
        .zip(1..)
        .map(|(name, id)| CocoCategory {
            id,
            name: name.to_string(),
            supercategory: None,
        })
        .collect();
    let category_id = |name: &str| -> i64 {
        // Every object name is in the set, so the search always succeeds.
        category_names
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| i as i64 + 1)
    };

    let mut dataset = CocoDataset {
        categories: categories.clone(),
        ..CocoDataset::default()
    };
    let mut image_labels = Vec::new();
    let mut annotation_labels = Vec::new();
    for (label, annotation, file_report) in &parsed {
        report.merge(file_report.clone());
        let Some(annotation) = annotation else {
            continue;
        };
        let image_id = dataset.images.len() as i64 + 1;
        let (width, height) = annotation.size.unwrap_or((0, 0));
        dataset.images.push(CocoImage {
            id: image_id,
            file_name: annotation.filename.clone(),
            width,
            height,
        });
        image_labels.push(label.clone());
        for (index, object) in annotation.objects.iter().enumerate() {
            let bbox = voc_box_to_coco(object.bndbox);
            dataset.annotations.push(CocoAnnotation {
                id: dataset.annotations.len() as i64 + 1,
                image_id,
                category_id: category_id(&object.name),
                bbox,
                area: bbox[2] * bbox[3],
                iscrowd: u8::from(object.difficult),
                segmentation: None,
            });
            annotation_labels.push(format!("{label} object {index}"));
        }
    }
    let image_label =
        |position: usize, id: i64| format!("image id {id} ({})", image_labels[position]);
    let annotation_label =
        |position: usize, id: i64| format!("annotation id {id} ({})", annotation_labels[position]);
    // Files first: they fill in sizes that boxes are checked against.
    check_image_files(
        &mut dataset,
        &image_label,
        &layout.image_root,
        limits,
        &mut report,
    );
    check_boxes(&dataset, &annotation_label, &mut report);
    if report.is_empty() {
        Ok((dataset, layout.image_root))
    } else {
        Err(DatasetError::Invalid(report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::test_support::TempDir;

    fn voc_xml(filename: &str, size: Option<(u32, u32)>, objects: &[(&str, [&str; 4])]) -> String {
        let mut xml =
            format!("<annotation>\n  <folder>x</folder>\n  <filename>{filename}</filename>\n");
        if let Some((w, h)) = size {
            xml +=
                &format!("  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>\n");
        }
        for (name, [xmin, ymin, xmax, ymax]) in objects {
            xml += &format!(
                "  <object><name>{name}</name><difficult>0</difficult>\n    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>\n    <part><name>hand</name><bndbox><xmin>1</xmin></bndbox></part>\n  </object>\n"
            );
        }
        xml + "</annotation>\n"
    }

    #[test]
    fn parses_and_converts_a_standard_layout() {
        let dir = TempDir::new("voc_standard");
        dir.write_png("JPEGImages/b.png", 40, 30);
        dir.write_png("JPEGImages/a.png", 20, 10);
        dir.write(
            "Annotations/b.xml",
            voc_xml(
                "b.png",
                Some((40, 30)),
                &[
                    ("zebra", ["1", "1", "40", "30"]),
                    ("ant", ["5", "6", "10", "12"]),
                ],
            ),
        );
        // No <size>: taken from the file.
        dir.write(
            "Annotations/a.xml",
            voc_xml("a.png", None, &[("ant", ["2", "2", "5", "5"])]),
        );
        let (dataset, image_root) = load_voc(dir.path()).unwrap();
        assert_eq!(image_root, dir.path().join("JPEGImages"));
        let names: Vec<&str> = dataset.categories.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["ant", "zebra"]);
        assert_eq!(dataset.images[0].file_name, "a.png", "sorted by XML name");
        assert_eq!(
            (dataset.images[0].width, dataset.images[0].height),
            (20, 10)
        );
        let zebra = &dataset.annotations[1];
        assert_eq!((zebra.image_id, zebra.category_id), (2, 2));
        assert_eq!(
            zebra.bbox,
            [0.0, 0.0, 40.0, 30.0],
            "1-based inclusive to COCO"
        );
        assert_eq!(dataset.annotations[2].bbox, [4.0, 5.0, 6.0, 7.0]);
        assert_eq!(dataset.annotations[2].area, 42.0);
    }

    #[test]
    fn flat_layout_and_problems() {
        let dir = TempDir::new("voc_flat");
        dir.write_png("ok.png", 20, 20);
        dir.write(
            "ok.xml",
            voc_xml(
                "ok.png",
                Some((20, 20)),
                &[("tree", ["1", "1", "20", "20"])],
            ),
        );
        dir.write(
            "bad.xml",
            voc_xml(
                "ok.png",
                Some((20, 21)),
                &[
                    ("tree", ["1", "1", "30", "20"]),
                    ("tree", ["nan", "1", "5", "5"]),
                    ("tree", ["1", "x", "5", "5"]),
                ],
            ),
        );
        dir.write("evil.xml", voc_xml("../../etc/passwd", Some((20, 20)), &[]));
        dir.write(
            "broken.xml",
            "<annotation>\n<filename>a</filename>\n</wrong>",
        );
        dir.write(
            "nobox.xml",
            "<annotation><filename>ok.png</filename><object><name>t</name></object></annotation>",
        );
        let Err(DatasetError::Invalid(report)) = load_voc(dir.path()) else {
            panic!("problems not found");
        };
        assert_eq!(report.count(ProblemKind::HostileFileName), 1, "{report}");
        assert_eq!(report.count(ProblemKind::MalformedFile), 1, "{report}");
        let malformed = &report.group(ProblemKind::MalformedFile).unwrap().examples[0];
        assert!(malformed.starts_with("broken.xml: line 3"), "{malformed}");
        assert_eq!(report.count(ProblemKind::MissingField), 4, "{report}");
        assert_eq!(report.count(ProblemKind::InvalidField), 1, "{report}");
        assert_eq!(report.count(ProblemKind::ImageSizeMismatch), 1, "{report}");
        assert_eq!(
            report.count(ProblemKind::InvalidBox),
            1,
            "NaN box\n{report}"
        );
        assert_eq!(report.count(ProblemKind::BoxOutsideImage), 1, "{report}");
        let outside = &report.group(ProblemKind::BoxOutsideImage).unwrap().examples[0];
        assert!(outside.contains("bad.xml object 0"), "{outside}");
    }

    #[test]
    fn missing_folders_are_path_errors() {
        let dir = TempDir::new("voc_missing");
        assert!(matches!(
            load_voc(&dir.path().join("nope")),
            Err(DatasetError::Path { .. })
        ));
        assert!(
            matches!(load_voc(dir.path()), Err(DatasetError::Path { .. })),
            "no XML"
        );
        std::fs::create_dir(dir.path().join("Annotations")).unwrap();
        assert!(
            matches!(load_voc(dir.path()), Err(DatasetError::Path { .. })),
            "no JPEGImages"
        );
    }
}
