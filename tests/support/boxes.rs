//! The boxes dataset the browser tests share: `IMAGES` small images with 2–6 boxes of three
//! classes, imported into a server ([`fixture`]; [`fixture_with_masks`] gives every box a
//! polygon mask), with runs inserted directly (fine-tune runs with predictions made from the
//! ground truth, with masks for Mask R-CNN's; proposals runs with thousands of boxes).

use crate::*;
use aligndet_common::jobs::JobConfig;
use aligndet_common::train_config::TrainConfig;
use serde_json::{Value, json};
use std::path::Path;

/// Images in the dataset (all in val).
pub const IMAGES: u32 = 8;
/// Image width and height.
pub const W: u32 = 200;
pub const H: u32 = 150;

/// A tiny deterministic generator (no test depends on a random crate's stream).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }
}

/// `IMAGES` images of 200×150 with 2–6 boxes each of classes 1–3 (class 3 only on images 2
/// and 5, one crowd region on image 4), all of them in the val split; with `masks`, each
/// annotation's segmentation is the diamond inscribed in its box. The COCO file's annotations.
fn write_dataset(dir: &Path, masks: bool) -> (std::path::PathBuf, std::path::PathBuf, Vec<Value>) {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut rng = Lcg(18);
    let (mut imgs, mut anns) = (vec![], vec![]);
    for i in 1..=IMAGES {
        let mut img = image::RgbImage::from_pixel(W, H, image::Rgb([50, 50, 60]));
        let n = 2 + (i as usize * 3) % 5;
        for k in 0..n {
            let (w, h) = (rng.range(20.0, 60.0).round(), rng.range(20.0, 50.0).round());
            let (x, y) = (
                rng.range(0.0, W as f64 - w).round(),
                rng.range(0.0, H as f64 - h).round(),
            );
            let cat = if (i == 2 || i == 5) && k == 0 {
                3
            } else {
                1 + (k as i64 % 2)
            };
            let crowd = i == 4 && k == 1;
            for yy in y as u32..(y + h) as u32 {
                for xx in x as u32..(x + w) as u32 {
                    img.put_pixel(xx, yy, image::Rgb([60 * cat as u8, 180, 90]));
                }
            }
            let mut ann = json!({"id": anns.len() + 1, "image_id": i, "category_id": cat,
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": crowd as u8});
            if masks {
                let (cx, cy) = (x + w / 2.0, y + h / 2.0);
                ann["segmentation"] = json!([[cx, y, x + w, cy, cx, y + h, x, cy]]);
            }
            anns.push(ann);
        }
        let name = format!("b{i}.png");
        img.save(images.join(&name)).unwrap();
        imgs.push(json!({"id": i, "file_name": name, "width": W, "height": H}));
    }
    let coco = json!({"images": imgs, "annotations": anns, "categories": [
        {"id": 1, "name": "car"}, {"id": 2, "name": "tree"}, {"id": 3, "name": "boat"}]});
    let ann = dir.join("annotations.json");
    std::fs::write(&ann, coco.to_string()).unwrap();
    // Every image in val (the predictions browser's split).
    let splits = json!({"train": [], "val": (1..=IMAGES).collect::<Vec<_>>()});
    std::fs::write(dir.join("splits.json"), splits.to_string()).unwrap();
    (ann, images, anns)
}

/// Predictions made from the ground truth: per box a close one (0.9–0.97), every second box a
/// looser duplicate (0.6) and every third box none (a miss); strays on every image (0.35–0.5);
/// low scores below the opening threshold; 14 on image 3 (beyond the opening top 10).
pub fn predictions(anns: &[Value]) -> Vec<Value> {
    let mut rng = Lcg(7);
    let mut out = Vec::new();
    for (k, a) in anns.iter().enumerate() {
        let b: Vec<f64> = a["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let (image, cat) = (&a["image_id"], &a["category_id"]);
        if k % 3 == 2 {
            continue;
        }
        let j = |rng: &mut Lcg, s: f64| {
            [
                b[0] + rng.range(-s, s),
                b[1] + rng.range(-s, s),
                b[2] + rng.range(-s, s),
                b[3] + rng.range(-s, s),
            ]
        };
        out.push(
            json!({"image_id": image, "category_id": cat, "bbox": j(&mut rng, 2.0),
            "score": 0.9 + 0.01 * (k % 8) as f64}),
        );
        if k % 2 == 0 {
            out.push(
                json!({"image_id": image, "category_id": cat, "bbox": j(&mut rng, 8.0),
                "score": 0.6}),
            );
        }
    }
    for i in 1..=IMAGES {
        let strays = if i == 3 { 12 } else { 2 };
        for s in 0..strays {
            let (w, h) = (rng.range(15.0, 40.0), rng.range(15.0, 40.0));
            out.push(json!({"image_id": i, "category_id": 1 + s % 2,
                "bbox": [rng.range(0.0, W as f64 - w), rng.range(0.0, H as f64 - h), w, h],
                "score": 0.35 + 0.01 * s as f64}));
        }
        out.push(json!({"image_id": i, "category_id": 1, "bbox": [5, 5, 30, 30], "score": 0.05}));
    }
    out
}

/// `preds` with a mask each, as Mask R-CNN's predictions.json carries them: compressed RLE
/// of the prediction's box rounded to whole pixels inside the image.
pub fn with_masks(preds: &[Value]) -> Vec<Value> {
    use aligndet_common::mask::rle::Rle;
    preds
        .iter()
        .map(|p| {
            let b: Vec<f64> = p["bbox"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let clamp = |v: f64, hi: u32| v.round().clamp(0.0, hi as f64) as u32;
            let (x0, x1) = (clamp(b[0], W), clamp(b[0] + b[2], W));
            let (y0, y1) = (clamp(b[1], H), clamp(b[1] + b[3], H));
            // Column-major, as RLE counts run.
            let pixels: Vec<bool> = (0..W * H)
                .map(|i| {
                    let (x, y) = (i / H, i % H);
                    (x0..x1).contains(&x) && (y0..y1).contains(&y)
                })
                .collect();
            let mut p = p.clone();
            p["segmentation"] =
                json!({"size": [H, W], "counts": Rle::encode(&pixels, H, W).to_compressed()});
            p
        })
        .collect()
}

/// A server with the boxes dataset imported; the server first so it stops before the
/// database and folders go.
pub struct Fixture {
    pub server: Server,
    pub db: TestDb,
    pub dataset: i64,
    pub data: TempDir,
    _imports: TempDir,
    /// The COCO file's annotations.
    pub anns: Vec<Value>,
}

pub fn fixture(tag: &str) -> Fixture {
    start(tag, false)
}

/// [`fixture`] with a polygon mask on every annotation (the diamond inscribed in its box).
pub fn fixture_with_masks(tag: &str) -> Fixture {
    start(tag, true)
}

fn start(tag: &str, masks: bool) -> Fixture {
    let db = TestDb::create();
    let data = TempDir::new(&format!("{tag}-data"));
    let imports = TempDir::new(&format!("{tag}-imports"));
    let (ann, images, anns) = write_dataset(imports.path(), masks);
    let mut opts = ServerOptions::new(&db, data.path());
    opts.import_roots = vec![imports.path().to_path_buf()];
    let server = Server::start(&opts);
    let dataset = import_dataset(&server, "boxes", &ann, &images);
    Fixture {
        server,
        db,
        dataset,
        data,
        _imports: imports,
        anns,
    }
}

impl Fixture {
    /// A succeeded run of `kind` with `config`, inserted directly; its id.
    /// A succeeded run of `kind` (`config` names this fixture's dataset).
    pub fn insert_run(&self, kind: &str, name: &str, config: &Value) -> i64 {
        crate::rows::insert_run(&self.db, kind, name, config, "succeeded")
    }

    pub fn finetune_config(&self, lr: f64) -> Value {
        let mut c = TrainConfig {
            dataset_id: self.dataset,
            train_split: "train".into(),
            val_split: "val".into(),
            ..TrainConfig::default()
        };
        c.optim.lr = lr;
        serde_json::to_value(JobConfig::Finetune(c)).unwrap()
    }

    pub fn put_artifact(&self, run: i64, name: &str, bytes: &[u8]) {
        crate::rows::insert_artifact(self.data.path(), &self.db, run, name, bytes);
    }

    /// A succeeded fine-tune run with [`predictions`] of the annotations as its
    /// `predictions.json`; its id and the predictions.
    pub fn predicted_run(&self) -> (i64, Vec<Value>) {
        self.run_with_predictions(predictions(&self.anns))
    }

    /// A succeeded fine-tune run with `preds` as its `predictions.json`; its id and `preds`.
    pub fn run_with_predictions(&self, preds: Vec<Value>) -> (i64, Vec<Value>) {
        let run = self.insert_run("finetune", "predicted", &self.finetune_config(0.01));
        self.put_artifact(
            run,
            "predictions.json",
            &serde_json::to_vec(&preds).unwrap(),
        );
        (run, preds)
    }

    /// A proposals run with one image of `big` boxes (every tenth removed by the filter) and one of
    /// 40; returns the run id.
    pub fn proposals_run(&self, big: usize) -> i64 {
        let run = self.insert_run(
            "proposals",
            "pseudo",
            &json!({"kind": "proposals", "dataset_id": self.dataset}),
        );
        for (image, n) in [(1, big), (2, 40)] {
            self.db.query(&format!(
                "INSERT INTO proposal_images (run_id, image_id, boxes, removed_by, seconds, attempt) \
                 SELECT {run}, {image}, \
                   array_agg(v ORDER BY i, k)::real[], \
                   (SELECT array_agg(CASE WHEN j % 10 = 9 THEN 4 ELSE 0 END ORDER BY j)::smallint[] \
                    FROM generate_series(0, {n} - 1) j), 0.5, 1 \
                 FROM generate_series(0, {n} - 1) i, LATERAL (VALUES \
                   (0, ((i * 37) % 150)::real), (1, ((i * 53) % 110)::real), \
                   (2, (10 + i % 40)::real), (3, (10 + (i * 7) % 30)::real)) AS b(k, v)"
            ));
        }
        run
    }
}
