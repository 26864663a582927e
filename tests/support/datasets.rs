//! Datasets for a test: small COCO and rectangle datasets written to disk, imported through
//! the UI, and the servers that start with one imported.

use crate::*;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Write a small valid COCO dataset (PNG images with coloured rectangles) into `dir`;
/// returns (annotations.json path, images dir).
pub fn write_small_coco(dir: &Path, n_images: u32) -> (PathBuf, PathBuf) {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).expect("mkdir images");
    let mut imgs = vec![];
    let mut anns = vec![];
    for i in 0..n_images {
        let (w, h) = (64u32, 48u32);
        let mut img = image::RgbImage::from_pixel(w, h, image::Rgb([30, 30, 30]));
        for y in 10..30 {
            for x in (5 + i)..(25 + i) {
                img.put_pixel(x, y, image::Rgb([200, 40, 40]));
            }
        }
        let file = format!("img_{i}.png");
        img.save(images.join(&file)).expect("save png");
        imgs.push(serde_json::json!({"id": i + 1, "file_name": file, "width": w, "height": h}));
        anns.push(
            serde_json::json!({"id": i + 1, "image_id": i + 1, "category_id": 1 + (i % 2),
            "bbox": [5 + i, 10, 20, 20], "area": 400, "iscrowd": 0}),
        );
    }
    let coco = serde_json::json!({
        "images": imgs,
        "annotations": anns,
        "categories": [{"id": 1, "name": "red box"}, {"id": 2, "name": "<b>bold</b> & co"}],
    });
    let ann = dir.join("annotations.json");
    std::fs::write(&ann, serde_json::to_vec_pretty(&coco).expect("json")).expect("write json");
    (ann, images)
}

/// Zip a folder (entries relative to it).
pub fn zip_dir(dir: &Path) -> Vec<u8> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read dir").flatten() {
                let p = e.path();
                let rel = p
                    .strip_prefix(dir)
                    .expect("rel")
                    .to_string_lossy()
                    .into_owned();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    z.start_file(rel, opts).expect("zip entry");
                    z.write_all(&std::fs::read(&p).expect("read"))
                        .expect("zip write");
                }
            }
        }
        z.finish().expect("zip finish");
    }
    buf.into_inner()
}

/// Names of the entries in a folder (to check nothing half-written is left).
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `n` images of `size`² with two flat rectangles of two classes, and a splits.json (last 4 are
/// val) beside the annotations, as the synthetic generator writes it.
pub fn write_rect_dataset(dir: &Path, n: u32, size: u32) -> (PathBuf, PathBuf) {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let (mut imgs, mut anns) = (vec![], vec![]);
    for i in 0..n {
        let mut img = image::RgbImage::from_pixel(size, size, image::Rgb([40, 40, 40]));
        let rects = [
            (4 + i % 9, 8, 30, 26, [220, 30, 30], 1),
            (48, 40 + i % 7, 22, 30, [30, 200, 40], 2),
        ];
        for (k, (x, y, w, h, c, cat)) in rects.iter().enumerate() {
            for yy in *y..(*y + *h).min(size) {
                for xx in *x..(*x + *w).min(size) {
                    img.put_pixel(xx, yy, image::Rgb(*c));
                }
            }
            anns.push(
                json!({"id": i * 10 + k as u32 + 1, "image_id": i + 1, "category_id": cat,
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
                // the rectangle as a polygon, so that mask detectors can train on it too
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}),
            );
        }
        let name = format!("r{i}.png");
        img.save(images.join(&name)).unwrap();
        imgs.push(json!({"id": i + 1, "file_name": name, "width": size, "height": size}));
    }
    let ann = dir.join("annotations.json");
    let coco = json!({"images": imgs, "annotations": anns,
        "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]});
    std::fs::write(&ann, coco.to_string()).unwrap();
    let train: Vec<u32> = (1..=n - 4).collect();
    let val: Vec<u32> = (n - 3..=n).collect();
    let splits = json!({"train": train, "val": val, "labeled": {"50pct_seed0": (1..=(n - 4) / 2).collect::<Vec<_>>()}});
    std::fs::write(dir.join("splits.json"), splits.to_string()).unwrap();
    (ann, images)
}

/// Import a COCO dataset from the server's import roots through the UI form; its id.
pub fn import_dataset(server: &Server, name: &str, ann: &Path, images: &Path) -> i64 {
    let ui = server.browser_session();
    let r = ui.post_form(
        "/datasets/import",
        &[
            ("name", name),
            ("format", "coco"),
            ("annotations", ann.to_str().unwrap()),
            ("images", images.to_str().unwrap()),
        ],
    );
    let url = r.url().clone();
    let body = r.text().unwrap();
    url.path()
        .strip_prefix("/datasets/")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("import failed: {body}"))
}

/// A server with the rectangles dataset (`write_rect_dataset`: `images` of `size` px) imported:
/// what the job tests start from. `options` adjusts the server (lease, heartbeat) before it
/// starts. The server is declared first so it stops before the database and folders go.
pub struct RectDataset {
    pub server: Server,
    pub db: TestDb,
    pub dataset: i64,
    pub data: TempDir,
    /// The COCO file and the image folder as imported.
    pub ann: PathBuf,
    pub images: PathBuf,
    pub imports: TempDir,
}

impl RectDataset {
    pub fn start(
        tag: &str,
        images: u32,
        size: u32,
        options: impl FnOnce(&mut ServerOptions),
    ) -> RectDataset {
        let db = TestDb::create();
        let data = TempDir::new(tag);
        let imports = TempDir::new(&format!("{tag}-imports"));
        let (ann, image_dir) = write_rect_dataset(imports.path(), images, size);
        let mut opts = ServerOptions::new(&db, data.path());
        opts.import_roots = vec![imports.path().to_path_buf()];
        options(&mut opts);
        let server = Server::start(&opts);
        let dataset = import_dataset(&server, "rects", &ann, &image_dir);
        RectDataset {
            server,
            db,
            dataset,
            data,
            ann,
            images: image_dir,
            imports,
        }
    }
}

/// A server with one small COCO dataset (`write_small_coco`) imported through the datasets page
/// with `splits` as its splits.json: what the page tests start from. The server is declared
/// first so it stops before the database and folders go.
pub struct SmallDataset {
    pub server: Server,
    pub db: TestDb,
    pub dataset: i64,
    pub data: TempDir,
    /// Holds `annotations.json`, `images/` and `splits.json` as imported.
    pub imports: TempDir,
}

impl SmallDataset {
    pub fn start(tag: &str, images: u32, splits: &serde_json::Value) -> SmallDataset {
        let db = TestDb::create();
        let data = TempDir::new(&format!("{tag}-data"));
        let imports = TempDir::new(&format!("{tag}-imports"));
        let (ann, image_dir) = write_small_coco(imports.path(), images);
        std::fs::write(imports.path().join("splits.json"), splits.to_string())
            .expect("write splits.json");
        let mut opts = ServerOptions::new(&db, data.path());
        opts.import_roots = vec![imports.path().to_path_buf()];
        let server = Server::start(&opts);
        let dataset = import_dataset(&server, "small", &ann, &image_dir);
        SmallDataset {
            server,
            db,
            dataset,
            data,
            imports,
        }
    }
}
