//! Dataset import: from server-side paths or an uploaded zip, validated, then stored in one
//! transaction. On any failure nothing is stored and no files are left behind.

use crate::db;
use crate::security;
use crate::state::AppState;
use aligndet_common::dataset::{self, CocoDataset, DatasetError, ValidationReport};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Coco,
    Voc,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "coco" => Some(Format::Coco),
            "voc" => Some(Format::Voc),
            _ => None,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Format::Coco => "coco",
            Format::Voc => "voc",
        }
    }
}

/// Why an import failed. `report` holds the per-kind problem list when the content was invalid.
#[derive(Debug)]
pub struct ImportError {
    pub message: String,
    pub report: Option<ValidationReport>,
}

impl ImportError {
    fn msg(message: impl Into<String>) -> ImportError {
        ImportError {
            message: message.into(),
            report: None,
        }
    }
}

impl From<DatasetError> for ImportError {
    fn from(e: DatasetError) -> Self {
        match e {
            DatasetError::Invalid(report) => ImportError {
                message: "the dataset has problems; nothing was imported".to_string(),
                report: Some(report),
            },
            other => ImportError::msg(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for ImportError {
    fn from(e: sqlx::Error) -> Self {
        ImportError::msg(format!("database error: {e}"))
    }
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(r) = &self.report {
            write!(f, "\n{r}")?;
        }
        Ok(())
    }
}

/// Names are shown everywhere and used in URLs' query strings: keep them plain and short.
pub fn check_name(name: &str) -> Result<String, ImportError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ImportError::msg(
            "the dataset name must be 1 to 100 characters",
        ));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(ImportError::msg(
            "the dataset name must not contain control characters",
        ));
    }
    Ok(name.to_string())
}

/// What the user asked to import from the server's disk.
pub struct ServerPathImport {
    pub name: String,
    pub format: Format,
    /// COCO: the annotation JSON; VOC: the dataset root (Annotations/, JPEGImages/).
    pub annotations: String,
    /// COCO: the image folder. Ignored for VOC.
    pub images: String,
}

pub async fn import_server_paths(
    state: &AppState,
    req: ServerPathImport,
) -> Result<i64, ImportError> {
    let name = check_name(&req.name)?;
    let annotations =
        security::allowed_server_path(state, &req.annotations).map_err(ImportError::msg)?;
    let images = match req.format {
        Format::Coco => {
            Some(security::allowed_server_path(state, &req.images).map_err(ImportError::msg)?)
        }
        Format::Voc => None,
    };
    let format = req.format;
    let (data, image_root) =
        tokio::task::spawn_blocking(move || load(format, &annotations, images.as_deref()))
            .await
            .map_err(|e| ImportError::msg(format!("import task failed: {e}")))??;
    let splits = read_splits_beside(&req.annotations).or_else(|| default_splits(&data));
    store(
        state,
        &name,
        format,
        &req.annotations,
        &image_root,
        &data,
        splits,
    )
    .await
}

fn load(
    format: Format,
    annotations: &Path,
    images: Option<&Path>,
) -> Result<(CocoDataset, PathBuf), ImportError> {
    match format {
        Format::Coco => {
            let images = images.ok_or_else(|| ImportError::msg("no image folder given"))?;
            Ok((
                dataset::load_coco(annotations, images)?,
                images.to_path_buf(),
            ))
        }
        Format::Voc => Ok(dataset::load_voc(annotations)?),
    }
}

/// A `splits.json` next to a COCO file (the synthetic generator writes one) is kept with the dataset.
fn read_splits_beside(annotations: &str) -> Option<serde_json::Value> {
    let path = Path::new(annotations).parent()?.join("splits.json");
    let text = std::fs::read_to_string(path).ok()?;
    let splits: dataset::DatasetSplits = serde_json::from_str(&text).ok()?;
    serde_json::to_value(splits).ok()
}

/// Without a splits.json, 20% of the images (seeded) are held out for validation, so every
/// imported dataset can be trained and evaluated on.
fn default_splits(data: &CocoDataset) -> Option<serde_json::Value> {
    let ids: Vec<i64> = data.images.iter().map(|i| i.id).collect();
    serde_json::to_value(dataset::DatasetSplits::default_for(&ids, 20)).ok()
}

/// Write the normalised COCO JSON and insert every row in one transaction.
async fn store(
    state: &AppState,
    name: &str,
    format: Format,
    source: &str,
    image_root: &Path,
    data: &CocoDataset,
    splits: Option<serde_json::Value>,
) -> Result<i64, ImportError> {
    if db::datasets::name_taken(&state.pool, name).await? {
        return Err(ImportError::msg(format!(
            "a dataset named {name:?} already exists"
        )));
    }
    let folder = state
        .datasets_dir()
        .join(format!("ann-{}", security::random_token()));
    std::fs::create_dir_all(&folder)
        .map_err(|e| ImportError::msg(format!("creating {}: {e}", folder.display())))?;
    let result = async {
        let ann_path = folder.join("annotations.json");
        let json = serde_json::to_vec(data).map_err(|e| ImportError::msg(e.to_string()))?;
        std::fs::write(&ann_path, json)
            .map_err(|e| ImportError::msg(format!("writing annotations: {e}")))?;
        let mut tx = state.pool.begin().await?;
        let id = db::datasets::insert(
            &mut tx,
            &db::datasets::NewDataset {
                name,
                format: format.as_str(),
                source,
                image_root: &image_root.to_string_lossy(),
                annotations_path: &ann_path.to_string_lossy(),
                splits,
            },
            data,
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&folder);
    }
    result
}

/// Limits on what an uploaded zip may expand to (zip bombs).
const MAX_ZIP_ENTRIES: usize = 200_000;

/// Import an uploaded zip (saved at `zip_path`) of a COCO or VOC dataset. The zip is extracted
/// into a fresh folder that is deleted again if anything fails.
pub async fn import_upload(
    state: &AppState,
    name: &str,
    original_file_name: &str,
    zip_path: PathBuf,
) -> Result<i64, ImportError> {
    let name = check_name(name)?;
    let dest = state
        .datasets_dir()
        .join(format!("upload-{}", security::random_token()));
    let max_unpacked = state.cfg.upload_limit_mib * 4 * 1024 * 1024;
    let dest2 = dest.clone();
    let extracted = tokio::task::spawn_blocking(move || {
        let r = extract_zip(&zip_path, &dest2, max_unpacked).and_then(|_| {
            let (format, ann, images) = detect_layout(&dest2)?;
            let (data, root) = load(format, &ann, images.as_deref())?;
            Ok((format, data, root, ann))
        });
        let _ = std::fs::remove_file(&zip_path);
        r
    })
    .await
    .map_err(|e| ImportError::msg(format!("upload task failed: {e}")));
    let result = match extracted {
        Ok(Ok((format, data, root, ann))) => {
            let splits =
                read_splits_beside(&ann.to_string_lossy()).or_else(|| default_splits(&data));
            store(
                state,
                &name,
                format,
                &format!("upload: {original_file_name}"),
                &root,
                &data,
                splits,
            )
            .await
        }
        Ok(Err(e)) | Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&dest);
    }
    result
}

fn extract_zip(zip_path: &Path, dest: &Path, max_unpacked: u64) -> Result<(), ImportError> {
    let file = std::fs::File::open(zip_path)
        .map_err(|e| ImportError::msg(format!("reading the upload: {e}")))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| ImportError::msg(format!("the upload is not a valid zip file: {e}")))?;
    if archive.len() > MAX_ZIP_ENTRIES {
        return Err(ImportError::msg(format!(
            "the zip has {} entries; at most {MAX_ZIP_ENTRIES} are accepted",
            archive.len()
        )));
    }
    std::fs::create_dir_all(dest).map_err(|e| ImportError::msg(e.to_string()))?;
    let dest = dest
        .canonicalize()
        .map_err(|e| ImportError::msg(e.to_string()))?;
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| ImportError::msg(format!("zip entry {i} is unreadable: {e}")))?;
        // enclosed_name refuses absolute paths and `..`: no entry can land outside `dest`.
        let Some(rel) = entry.enclosed_name() else {
            return Err(ImportError::msg(format!(
                "zip entry {:?} has an unsafe path (absolute or with '..'); nothing was imported",
                entry.name()
            )));
        };
        if entry.is_symlink() {
            return Err(ImportError::msg(format!(
                "zip entry {:?} is a symbolic link; not accepted",
                entry.name()
            )));
        }
        let out = dest.join(&rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&out).map_err(|e| ImportError::msg(e.to_string()))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| ImportError::msg(e.to_string()))?;
        }
        let mut f = std::fs::File::create(&out).map_err(|e| ImportError::msg(e.to_string()))?;
        // Count real bytes, not the header's claim, to stop zip bombs.
        let budget = max_unpacked.saturating_sub(total) + 1;
        let written = std::io::copy(&mut (&mut entry).take(budget), &mut f)
            .map_err(|e| ImportError::msg(format!("extracting {:?}: {e}", rel)))?;
        total += written;
        if total > max_unpacked {
            return Err(ImportError::msg(format!(
                "the zip expands to more than {} MiB; refused",
                max_unpacked / (1024 * 1024)
            )));
        }
    }
    Ok(())
}

/// Find the dataset inside an extracted upload: a VOC root (a folder with Annotations/), or a
/// COCO JSON (annotations.json / instances*.json / the only .json) with its images.
fn detect_layout(root: &Path) -> Result<(Format, PathBuf, Option<PathBuf>), ImportError> {
    let mut candidates = vec![root.to_path_buf()];
    // Zips often wrap everything in one top folder.
    if let Ok(rd) = std::fs::read_dir(root) {
        let dirs: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        if dirs.len() == 1 {
            candidates.push(dirs[0].clone());
        }
    }
    for dir in &candidates {
        if dir.join("Annotations").is_dir() {
            return Ok((Format::Voc, dir.clone(), None));
        }
        let jsons: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && p.file_name().is_some_and(|n| n != "splits.json")
            })
            .collect();
        let pick = jsons
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n == "annotations.json"))
            .or_else(|| {
                jsons.iter().find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("instances"))
                })
            })
            .or(if jsons.len() == 1 {
                jsons.first()
            } else {
                None
            });
        if let Some(ann) = pick {
            let images = if dir.join("images").is_dir() {
                dir.join("images")
            } else {
                dir.clone()
            };
            return Ok((Format::Coco, ann.clone(), Some(images)));
        }
    }
    Err(ImportError::msg(
        "the zip holds neither a COCO dataset (annotations.json + images/) nor a Pascal VOC one (Annotations/ + JPEGImages/)",
    ))
}
