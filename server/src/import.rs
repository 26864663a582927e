//! Dataset import: from server-side paths or an uploaded zip, validated, then stored in one
//! transaction. On any failure nothing is stored and no files are left behind.

use crate::db;
use crate::security;
use crate::state::AppState;
use aligndet_common::dataset::{self, CocoDataset, DatasetError, ValidationReport};
use aligndet_common::images::ImageLimits;
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
    /// The database's own text names tables and constraints: logged, never shown.
    fn from(e: sqlx::Error) -> Self {
        let incident = crate::error::incident(&format_args!("dataset import: database: {e}"));
        ImportError::msg(format!(
            "the dataset could not be stored because of a database failure (incident {incident}, in the server log); nothing was imported"
        ))
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

/// Names are shown everywhere and used in URLs' query strings: the one rule for display names.
pub fn check_name(name: &str) -> Result<String, ImportError> {
    aligndet_common::names::check_display_name(name, "the dataset name", 100)
        .map_err(ImportError::msg)
}

fn name_exists(name: &str) -> ImportError {
    ImportError::msg(format!("a dataset named {name:?} already exists"))
}

/// Refuses a taken name before any file is unpacked or decoded; the unique constraint still
/// decides between imports racing past this check (see [`store`]).
async fn ensure_name_free(state: &AppState, name: &str) -> Result<(), ImportError> {
    if db::datasets::name_taken(&state.pool, name).await? {
        return Err(name_exists(name));
    }
    Ok(())
}

/// What the user asked to import from the server's disk.
pub struct ServerPathImport {
    pub name: String,
    pub format: Format,
    /// COCO: the annotation JSON; VOC: the dataset root (Annotations/, JPEGImages/).
    pub annotations: String,
    /// COCO: the image folder. Ignored for VOC.
    pub images: String,
    /// The user importing it (`None`: the server itself, e.g. the demo datasets).
    pub created_by: Option<i64>,
}

/// A dataset's name and the user importing it, as stored.
struct Naming<'a> {
    name: &'a str,
    created_by: Option<i64>,
}

pub async fn import_server_paths(
    state: &AppState,
    req: ServerPathImport,
) -> Result<i64, ImportError> {
    let name = check_name(&req.name)?;
    ensure_name_free(state, &name).await?;
    let annotations =
        security::allowed_server_path(state, &req.annotations).map_err(ImportError::msg)?;
    let images = match req.format {
        Format::Coco => {
            Some(security::allowed_server_path(state, &req.images).map_err(ImportError::msg)?)
        }
        Format::Voc => None,
    };
    let format = req.format;
    let limits = state.cfg.image_limits();
    let (data, image_root) =
        tokio::task::spawn_blocking(move || load(format, &annotations, images.as_deref(), limits))
            .await
            .map_err(|e| ImportError::msg(format!("import task failed: {e}")))??;
    let splits = read_splits_beside(&req.annotations).or_else(|| default_splits(&data));
    store(
        state,
        &Naming {
            name: &name,
            created_by: req.created_by,
        },
        format,
        &req.annotations,
        &image_root,
        &data,
        splits,
    )
    .await
}

/// Loads and validates; every image is decoded whole under `limits` (in parallel).
fn load(
    format: Format,
    annotations: &Path,
    images: Option<&Path>,
    limits: ImageLimits,
) -> Result<(CocoDataset, PathBuf), ImportError> {
    match format {
        Format::Coco => {
            let images = images.ok_or_else(|| ImportError::msg("no image folder given"))?;
            Ok((
                dataset::load_coco_with_limits(annotations, images, limits)?,
                images.to_path_buf(),
            ))
        }
        Format::Voc => Ok(dataset::load_voc_with_limits(annotations, limits)?),
    }
}

/// A `splits.json` next to a COCO file (the synthetic generator writes one) is kept with the dataset.
fn read_splits_beside(annotations: &str) -> Option<serde_json::Value> {
    let path = Path::new(annotations).parent()?.join("splits.json");
    // `load` caps the read: the file is as untrusted as the dataset beside it.
    let splits = dataset::DatasetSplits::load(&path).ok()?;
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
    naming: &Naming<'_>,
    format: Format,
    source: &str,
    image_root: &Path,
    data: &CocoDataset,
    splits: Option<serde_json::Value>,
) -> Result<i64, ImportError> {
    let name = naming.name;
    ensure_name_free(state, name).await?;
    let folder = state
        .datasets_dir()
        .join(format!("ann-{}", crate::secrets::random_token()));
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
                created_by: naming.created_by,
            },
            data,
        )
        .await
        .map_err(|e| {
            // Another import of the same name committed first.
            if db::datasets::is_name_conflict(&e) {
                name_exists(name)
            } else {
                e.into()
            }
        })?;
        tx.commit().await?;
        Ok(id)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&folder);
    }
    result
}

/// Most entries an uploaded zip may hold (each costs a file and an inode).
const MAX_ZIP_ENTRIES: usize = 200_000;

/// Import an uploaded zip (saved at `zip_path`) of a COCO or VOC dataset. The zip is extracted
/// into a fresh folder that is deleted again if anything fails.
pub async fn import_upload(
    state: &AppState,
    name: &str,
    original_file_name: &str,
    zip_path: PathBuf,
    created_by: Option<i64>,
) -> Result<i64, ImportError> {
    let name = match check_name(name) {
        Ok(name) => name,
        Err(e) => {
            let _ = std::fs::remove_file(&zip_path);
            return Err(e);
        }
    };
    if let Err(e) = ensure_name_free(state, &name).await {
        let _ = std::fs::remove_file(&zip_path);
        return Err(e);
    }
    let dest = state
        .datasets_dir()
        .join(format!("upload-{}", crate::secrets::random_token()));
    // Unpacked, a zip may take no more disk than the largest upload would have.
    let max_unpacked = state.cfg.upload_limit_mib * 1024 * 1024;
    let limits = state.cfg.image_limits();
    let dest2 = dest.clone();
    let extracted = tokio::task::spawn_blocking(move || {
        let r = extract_zip(&zip_path, &dest2, max_unpacked).and_then(|_| {
            let (format, ann, images) = detect_layout(&dest2)?;
            let (data, root) = load(format, &ann, images.as_deref(), limits)?;
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
                &Naming {
                    name: &name,
                    created_by,
                },
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
    let too_big = || {
        ImportError::msg(format!(
            "the zip expands to more than {} MiB, the upload limit; nothing was imported",
            max_unpacked / (1024 * 1024)
        ))
    };
    // Declared sizes first, to refuse an honest oversized zip without writing anything; the
    // copy below counts real bytes, since a header can lie.
    let mut declared: u64 = 0;
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| ImportError::msg(format!("zip entry {i} is unreadable: {e}")))?;
        declared = declared.saturating_add(entry.size());
    }
    if declared > max_unpacked {
        return Err(too_big());
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
            return Err(too_big());
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
