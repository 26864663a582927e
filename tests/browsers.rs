//! Browsers that scale, checked in a real Chromium against a real server and Postgres: the
//! predictions browser marks true and false positives and misses as the matching module
//! (`aligndet-server match-detections`) says, with labels that never overlap, sorted by errors
//! and at an IoU chosen in the URL; the pseudo-box browser of an image with 12,000 boxes stays
//! under 500 KB with the rest on a canvas, and its COCO export streams; the dataset gallery
//! filters by class and enlarges an image on click; the comparison page keeps its log-scale,
//! smoothing and x-axis controls in the URL.

use aligndet_common::jobs::JobConfig;
use aligndet_common::train_config::TrainConfig;
use aligndet_studio::*;
use fantoccini::Locator;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

const IMAGES: u32 = 8;
const W: u32 = 200;
const H: u32 = 150;

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
/// and 5, one crowd region on image 4), all of them in the val split; the COCO file's
/// annotations.
fn write_dataset(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<Value>) {
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
            anns.push(
                json!({"id": anns.len() + 1, "image_id": i, "category_id": cat,
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": crowd as u8}),
            );
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
fn predictions(anns: &[Value]) -> Vec<Value> {
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

/// What the page shows of `preds`: score ≥ threshold, the best `top` per image.
fn shown(preds: &[Value], threshold: f64, top: usize) -> Vec<Value> {
    let mut by_image: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for p in preds
        .iter()
        .filter(|p| p["score"].as_f64().unwrap() >= threshold)
    {
        by_image
            .entry(p["image_id"].as_i64().unwrap())
            .or_default()
            .push(p.clone());
    }
    let mut out = Vec::new();
    for (_, mut v) in by_image {
        v.sort_by(|a, b| {
            b["score"]
                .as_f64()
                .unwrap()
                .total_cmp(&a["score"].as_f64().unwrap())
        });
        v.truncate(top);
        out.extend(v);
    }
    out
}

/// Per image (tp, fp, fn) as the matching module gives them, through the hidden CLI.
fn expected(anns: &[Value], preds: &[Value], iou: f64) -> BTreeMap<i64, [u64; 3]> {
    use std::io::Write;
    let mut child = std::process::Command::new(bin("aligndet-server"))
        .arg("match-detections")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("aligndet-server match-detections");
    let input = json!({"iou": iou, "annotations": anns, "detections": preds});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let n = |k: &str| i[k].as_u64().unwrap();
            (i["image_id"].as_i64().unwrap(), [n("tp"), n("fp"), n("fn")])
        })
        .collect()
}

/// Server first so it stops before the database and folders go.
struct Fixture {
    server: Server,
    db: TestDb,
    dataset: i64,
    data: TempDir,
    _imports: TempDir,
    anns: Vec<Value>,
}

fn fixture(tag: &str) -> Fixture {
    let db = TestDb::create();
    let data = TempDir::new(&format!("{tag}-data"));
    let imports = TempDir::new(&format!("{tag}-imports"));
    let (ann, images, anns) = write_dataset(imports.path());
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
    fn insert_run(&self, kind: &str, name: &str, config: &Value) -> i64 {
        self.db
            .query(&format!(
                "INSERT INTO runs (kind, name, config, status, dataset_id) \
             VALUES ('{kind}', '{name}', $j${config}$j$::jsonb, 'succeeded', {}) RETURNING id",
                self.dataset
            ))
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn finetune_config(&self, lr: f64) -> Value {
        let mut c = TrainConfig {
            dataset_id: self.dataset,
            train_split: "train".into(),
            val_split: "val".into(),
            ..TrainConfig::default()
        };
        c.optim.lr = lr;
        serde_json::to_value(JobConfig::Finetune(c)).unwrap()
    }

    fn put_artifact(&self, run: i64, name: &str, bytes: &[u8]) {
        let dir = self.data.path().join("artifacts").join(run.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
        self.db.query(&format!(
            "INSERT INTO artifacts (run_id, name, bytes, attempt) VALUES ({run}, '{name}', {}, 1)",
            bytes.len()
        ));
    }
}

/// Per figure of the predictions page: image id, drawn TP / FP / FN marks, the figure's own
/// counts, and every label's rectangle on screen.
const PREDICTION_MARKS: &str = r#"
return [...document.querySelectorAll('#pred-grid figure[data-image]')].map(f => ({
  image: Number(f.dataset.image),
  tp: f.querySelectorAll('g.pred.pred-tp').length,
  fp: f.querySelectorAll('g.pred.pred-fp').length,
  fn: f.querySelectorAll('g.gt.gt-missed').length,
  counted: [Number(f.dataset.tp), Number(f.dataset.fp), Number(f.dataset.fn)],
  labels: [...f.querySelectorAll('text.box-label')].map(t => {
    const r = t.getBoundingClientRect();
    return [r.left, r.top, r.width, r.height, t.textContent];
  }),
  frame: (() => { const r = f.querySelector('.frame').getBoundingClientRect();
                  return [r.left, r.top, r.width, r.height]; })(),
}));
"#;

async fn marks(c: &fantoccini::Client) -> Vec<Value> {
    match c.execute(PREDICTION_MARKS, vec![]).await.unwrap() {
        Value::Array(a) => a,
        other => panic!("marks: {other}"),
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

#[test]
fn the_predictions_browser_marks_outcomes_with_labels_apart_in_chromium() {
    let f = fixture("browsers-pred");
    let run = f.insert_run("finetune", "predicted", &f.finetune_config(0.01));
    let preds = predictions(&f.anns);
    f.put_artifact(
        run,
        "predictions.json",
        &serde_json::to_vec(&preds).unwrap(),
    );
    let at_05 = expected(&f.anns, &shown(&preds, 0.3, 10), 0.5);
    let at_09 = expected(&f.anns, &shown(&preds, 0.3, 10), 0.9);
    let total = |m: &BTreeMap<i64, [u64; 3]>| {
        m.values()
            .fold([0u64; 3], |a, c| [a[0] + c[0], a[1] + c[1], a[2] + c[2]])
    };
    let t05 = total(&at_05);
    assert!(
        t05.iter().all(|n| *n > 0),
        "the fixture has every outcome: {t05:?}"
    );
    assert_ne!(t05, total(&at_09), "a stricter IoU changes the outcome");

    // Bad view parameters are refused by name.
    let r = f.server.get(&format!("/runs/{run}/predictions?iou=2"));
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("iou=2 does not fit"));
    let r = f.server.get(&format!("/runs/{run}/predictions?sort=size"));
    assert_eq!(r.status(), 400);

    let driver = ChromeDriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let c = driver.client_for(&f.server).await;
        let url = format!("{}/runs/{run}/predictions", f.server.url);
        for (query, want) in [("", &at_05), ("?iou=0.9&page=1", &at_09)] {
            c.goto(&format!("{url}{query}")).await.unwrap();
            let figs = marks(&c).await;
            assert_eq!(figs.len(), if query.is_empty() { 6 } else { 2 }, "{query}");
            for fig in &figs {
                let image = fig["image"].as_i64().unwrap();
                let w = want[&image];
                let drawn = [&fig["tp"], &fig["fp"], &fig["fn"]].map(|v| v.as_u64().unwrap());
                assert_eq!(drawn, w, "image {image} at {query:?}: drawn TP/FP/FN");
                assert_eq!(fig["counted"], json!(w), "image {image}: caption counts");
            }
            let t = total(want);
            let summary = c
                .find(Locator::Id("match-counts"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let expect = format!("TP {} · FP {} · FN {}", t[0], t[1], t[2]);
            assert!(summary.contains(&expect), "{summary} / {expect}");
        }
        // The opening view: top 10 per image, honest names for the counts.
        c.goto(&url).await.unwrap();
        let counts = c
            .find(Locator::Id("split-counts"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(counts.contains(&format!("{} predictions in predictions.json", preds.len())));
        assert!(counts.contains("at most 10 per image") && counts.contains("ground-truth boxes"));
        let three = c.find(Locator::Css("#pred-image-3")).await.unwrap();
        assert_eq!(
            three.find_all(Locator::Css("g.pred")).await.unwrap().len(),
            10,
            "image 3 has 14 predictions above 0.3: the best 10 are shown"
        );

        // Labels: many are drawn, none overlaps another, all inside their image.
        let figs = marks(&c).await;
        let mut drawn = 0;
        for fig in &figs {
            let labels = fig["labels"].as_array().unwrap();
            drawn += labels.len();
            let frame: Vec<f64> = fig["frame"].as_array().unwrap().iter().map(num).collect();
            for (i, a) in labels.iter().enumerate() {
                let (ax, ay, aw, ah) = (num(&a[0]), num(&a[1]), num(&a[2]), num(&a[3]));
                assert!(aw > 0.0 && ah > 0.0, "{a}");
                assert!(
                    ax >= frame[0] - 0.5 && ax + aw <= frame[0] + frame[2] + 0.5,
                    "label {a} outside {frame:?}"
                );
                for b in &labels[i + 1..] {
                    let (bx, by, bw, bh) = (num(&b[0]), num(&b[1]), num(&b[2]), num(&b[3]));
                    let apart = ax + aw <= bx + 0.5
                        || bx + bw <= ax + 0.5
                        || ay + ah <= by + 0.5
                        || by + bh <= ay + 0.5;
                    assert!(apart, "image {}: label {a} overlaps {b}", fig["image"]);
                }
            }
        }
        assert!(
            drawn >= 3 * figs.len(),
            "{drawn} labels on {} images",
            figs.len()
        );

        // Sorted by errors through the form: FP + FN never rise down the pages.
        c.find(Locator::Css("#sort-images option[value='errors']"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        c.find(Locator::Id("apply-view"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let mut seen = Vec::new();
        for _ in 0..100 {
            let u = c.current_url().await.unwrap();
            if u.query().is_some_and(|q| q.contains("sort=errors")) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let q = c.current_url().await.unwrap();
        assert!(q.query().unwrap().contains("iou=0.5"), "{q}");
        for page in 0..2 {
            c.goto(&format!("{url}?sort=errors&page={page}"))
                .await
                .unwrap();
            for fig in marks(&c).await {
                seen.push(at_05[&fig["image"].as_i64().unwrap()]);
            }
        }
        assert_eq!(seen.len(), IMAGES as usize);
        let errors: Vec<u64> = seen.iter().map(|c| c[1] + c[2]).collect();
        assert!(errors.windows(2).all(|w| w[0] >= w[1]), "{errors:?}");
        assert!(errors[0] > errors[errors.len() - 1], "{errors:?}");
        c.close().await.unwrap();
    });
}

/// A proposals run with one image of `big` boxes (every tenth removed by the filter) and one of
/// 40; returns the run id.
fn proposals_run(f: &Fixture, big: usize) -> i64 {
    let run = f.insert_run(
        "proposals",
        "pseudo",
        &json!({"kind": "proposals", "dataset_id": f.dataset}),
    );
    for (image, n) in [(1, big), (2, 40)] {
        f.db.query(&format!(
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

#[test]
fn the_pseudo_box_browser_draws_thousands_on_a_canvas_and_streams_its_export() {
    let f = fixture("browsers-prop");
    let big = 12_000;
    let run = proposals_run(&f, big);
    let kept = big - big / 10;

    let r = f.server.get(&format!("/runs/{run}/proposals?image=1"));
    assert_eq!(r.status(), 200);
    let page = r.text().unwrap();
    eprintln!(
        "pseudo-box page of an image with {big} boxes: {} bytes",
        page.len()
    );
    assert!(page.len() < 500_000, "{} bytes", page.len());
    assert_eq!(page.matches("<rect class=\"pbox\"").count(), 200);
    // The canvas data: count, boxes, rules.
    let data = f
        .server
        .get(&format!("/runs/{run}/proposals/1/boxes.bin"))
        .bytes()
        .unwrap();
    assert_eq!(data.len(), 4 + 17 * big);
    assert_eq!(
        u32::from_le_bytes(data[..4].try_into().unwrap()) as usize,
        big
    );
    assert_eq!(
        f.server
            .get(&format!("/runs/{run}/proposals/7/boxes.bin"))
            .status(),
        404
    );
    // Signed out, neither the box data nor the export is served.
    let anonymous = accounts::no_redirect_client();
    for path in ["proposals/1/boxes.bin", "proposals.json"] {
        let r = anonymous
            .get(format!("{}/runs/{run}/{path}", f.server.url))
            .send()
            .unwrap();
        assert!(
            !r.status().is_success(),
            "{path} signed out: {}",
            r.status()
        );
    }

    // The export streams (no length known up front) and is a whole COCO file.
    let started = std::time::Instant::now();
    let r = f.server.get(&format!("/runs/{run}/proposals.json"));
    let first = started.elapsed();
    assert_eq!(r.status(), 200);
    assert!(r.content_length().is_none(), "streamed, not built whole");
    let coco: Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap();
    eprintln!(
        "proposals.json: headers after {first:?}, whole in {:?}",
        started.elapsed()
    );
    let anns = coco["annotations"].as_array().unwrap();
    assert_eq!(anns.len(), kept + 36);
    assert_eq!(anns[0]["id"], 1);
    assert_eq!(anns[anns.len() - 1]["id"], anns.len());
    assert_eq!(coco["images"].as_array().unwrap().len(), 2);
    assert_eq!(coco["categories"][0]["name"], "selective_search");
    let all: Value = f
        .server
        .get(&format!("/runs/{run}/proposals.json?all=1"))
        .json()
        .unwrap();
    assert_eq!(all["annotations"].as_array().unwrap().len(), big + 40);

    let driver = ChromeDriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let c = driver.client_for(&f.server).await;
        c.goto(&format!("{}/runs/{run}/proposals?image=1", f.server.url))
            .await
            .unwrap();
        let state = async || {
            c.execute(
                "const cv = document.getElementById('proposal-canvas'); \
                 const px = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data; \
                 let ink = 0; for (let i = 3; i < px.length; i += 4) if (px[i] > 0) ink++; \
                 return [Number(cv.dataset.loaded || -1), Number(cv.dataset.drawn || 0), ink, \
                   document.querySelectorAll('#proposal-overlay rect.pbox:not(.hide-box)').length];",
                vec![],
            )
            .await
            .unwrap()
        };
        let mut s = state().await;
        for _ in 0..100 {
            if s[0] != -1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            s = state().await;
        }
        assert_eq!(s[0], big, "the canvas loaded the image's boxes");
        assert_eq!((s[1].as_u64(), s[3].as_u64()), (Some(0), Some(50)), "opening: 50 as SVG");
        c.execute(
            &format!(
                "const s = document.getElementById('box-count'); s.value = '{kept}'; \
                 s.dispatchEvent(new Event('input'));"
            ),
            vec![],
        )
        .await
        .unwrap();
        let s = state().await;
        assert_eq!(s[1].as_u64(), Some(kept as u64 - 200), "the rest on the canvas");
        assert!(s[2].as_u64().unwrap() > 1000, "the canvas has ink: {s}");
        assert_eq!(s[3], 200);
        c.find(Locator::Id("show-removed"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert_eq!(state().await[1].as_u64(), Some(big as u64 - 200));
        c.close().await.unwrap();
    });
}

#[test]
fn the_dataset_gallery_filters_by_class_and_enlarges_on_click() {
    let f = fixture("browsers-data");
    let with_boat: Vec<i64> = {
        let mut v: Vec<i64> = f
            .anns
            .iter()
            .filter(|a| a["category_id"] == 3)
            .map(|a| a["image_id"].as_i64().unwrap())
            .collect();
        v.dedup();
        v
    };
    assert_eq!(with_boat, [2, 5]);
    let r = f.server.get(&format!("/datasets/{}?class=99", f.dataset));
    assert_eq!(r.status(), 404);
    assert!(r.text().unwrap().contains("has no class with id 99"));

    let driver = ChromeDriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let c = driver.client_for(&f.server).await;
        let url = format!("{}/datasets/{}", f.server.url, f.dataset);
        c.goto(&url).await.unwrap();
        let figures = async || {
            c.execute(
                "return [...document.querySelectorAll('#image-grid figure')].map(f => \
                 [Number(f.dataset.image), [...f.querySelectorAll('rect.box')].map(r => Number(r.dataset.cat))]);",
                vec![],
            )
            .await
            .unwrap()
        };
        assert_eq!(figures().await.as_array().unwrap().len(), IMAGES as usize);
        // Filter through the form: only the images holding a boat.
        c.find(Locator::Css("#class-filter-select option[value='3']"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        c.find(Locator::Id("apply-class-filter"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        for _ in 0..100 {
            let u = c.current_url().await.unwrap();
            if u.query().is_some_and(|q| q.contains("class=3")) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let shown = figures().await;
        let ids: Vec<i64> = shown
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f[0].as_i64().unwrap())
            .collect();
        assert_eq!(ids, with_boat);
        for fig in shown.as_array().unwrap() {
            assert!(fig[1].as_array().unwrap().contains(&json!(3)), "{fig}");
        }
        let note = c.find(Locator::Id("filter-note")).await.unwrap();
        assert!(note.text().await.unwrap().contains("2 images with at least one boat box"));

        // A click enlarges the image with its boxes; Escape closes it.
        let thumb_width = c
            .execute(
                "return document.querySelector('#image-grid figure img').getBoundingClientRect().width;",
                vec![],
            )
            .await
            .unwrap();
        c.find(Locator::Css("#image-grid figure[data-image='5'] .frame"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let big = c
            .execute(
                "const d = document.getElementById('lightbox'); \
                 const img = document.getElementById('lightbox-image'); \
                 return [d.open, d.dataset.image, img.getBoundingClientRect().width, \
                   d.querySelectorAll('rect.box').length, \
                   document.querySelectorAll(\"#image-grid figure[data-image='5'] rect.box\").length];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(big[0], true, "{big}");
        assert_eq!(big[1], "5");
        assert!(num(&big[2]) > 1.5 * num(&thumb_width), "{big} vs {thumb_width}");
        assert_eq!(big[3], big[4], "the boxes come along");
        c.find(Locator::Id("lightbox-close"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let open = c
            .execute("return document.getElementById('lightbox').open;", vec![])
            .await
            .unwrap();
        assert_eq!(open, false);
        c.close().await.unwrap();
    });
}

#[test]
fn the_comparison_keeps_log_scale_smoothing_and_x_axis_in_the_url() {
    let f = fixture("browsers-cmp");
    let mut runs = Vec::new();
    for (k, lr) in [0.01, 0.02].into_iter().enumerate() {
        let run = f.insert_run("finetune", &format!("lr{lr}"), &f.finetune_config(lr));
        let mut values = Vec::new();
        for step in 1..=30i64 {
            let noise = if step % 2 == 0 { 0.2 } else { -0.2 };
            let loss = 3.0 / step as f64 + noise + k as f64 * 0.1;
            values.push(format!(
                "({run}, 'loss/total', {step}, {loss}, {}, 1)",
                1000.0 + 2.0 * step as f64
            ));
        }
        for step in [10i64, 20, 30] {
            values.push(format!(
                "({run}, 'eval/AP', {step}, {}, {}, 1)",
                0.01 * step as f64,
                1000.0 + 2.0 * step as f64
            ));
        }
        f.db.query(&format!(
            "INSERT INTO metrics (run_id, key, step, value, wall_time, attempt) VALUES {}",
            values.join(", ")
        ));
        runs.push(run.to_string());
    }
    let runs = runs.join(",");
    let driver = ChromeDriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let c = driver.client_for(&f.server).await;
        c.goto(&format!("{}/compare?runs={runs}", f.server.url))
            .await
            .unwrap();
        let faint = async || {
            c.execute(
                "return document.querySelectorAll('#chart-loss polyline[opacity=\"0.25\"]').length;",
                vec![],
            )
            .await
            .unwrap()
        };
        assert_eq!(faint().await, 0, "no smoothing at first");
        c.find(Locator::Id("compare-logy"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        c.execute(
            "document.getElementById('compare-smooth').value = '0.6'; \
             document.querySelector(\"#compare-x option[value='wall']\").selected = true;",
            vec![],
        )
        .await
        .unwrap();
        c.find(Locator::Css("#compare-controls button[type='submit']"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let mut query = String::new();
        for _ in 0..100 {
            let u = c.current_url().await.unwrap();
            query = u.query().unwrap_or("").to_string();
            if query.contains("smooth=") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        for part in ["logy=1", "smooth=0.6", "x=wall", "runs="] {
            assert!(query.contains(part), "{part} in {query}");
        }
        assert!(!query.contains("logx"), "{query}");
        // After the reload the controls show the view and the charts draw it.
        let logy = c.find(Locator::Id("compare-logy")).await.unwrap();
        assert_eq!(logy.prop("checked").await.unwrap().as_deref(), Some("true"));
        let smooth = c.find(Locator::Id("compare-smooth")).await.unwrap();
        assert_eq!(smooth.prop("value").await.unwrap().as_deref(), Some("0.6"));
        assert_eq!(faint().await, 2, "each run's raw loss faint behind its smoothed curve");
        let texts = c
            .execute(
                "return [...document.querySelectorAll('#chart-loss text')].map(t => t.textContent);",
                vec![],
            )
            .await
            .unwrap();
        let texts: Vec<&str> = texts
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().trim())
            .collect();
        assert!(
            texts.contains(&"seconds since the run's first metric"),
            "{texts:?}"
        );
        assert!(
            texts.iter().any(|t| t.contains("at or below zero not drawn on the log y axis")),
            "the loss dips below zero: {texts:?}"
        );
        let hover = c
            .find(Locator::Css("#chart-loss g.series circle title"))
            .await
            .unwrap()
            .html(true)
            .await
            .unwrap();
        assert!(hover.contains("(smoothed; raw "), "{hover}");
        c.close().await.unwrap();
    });
    // A smoothing weight that is not one: said on the page, not a failure.
    let r = f.server.get(&format!("/compare?runs={runs}&smooth=abc"));
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("smooth=abc ignored"));
}

#[test]
fn the_browsers_fit_a_400_px_screen() {
    let f = fixture("browsers-narrow");
    let pred = f.insert_run("finetune", "predicted", &f.finetune_config(0.01));
    let preds = predictions(&f.anns);
    f.put_artifact(
        pred,
        "predictions.json",
        &serde_json::to_vec(&preds).unwrap(),
    );
    let prop = proposals_run(&f, 500);
    // Chromium's headless window is at least 500 px wide: the 400 px viewport is emulated.
    let driver = ChromeDriver::with_viewport(400, 900);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let c = driver.client_for(&f.server).await;
        for path in [
            format!("/runs/{pred}/predictions"),
            format!("/runs/{prop}/proposals"),
            format!("/datasets/{}", f.dataset),
            format!("/datasets/{}?class=3", f.dataset),
        ] {
            c.goto(&format!("{}{path}", f.server.url)).await.unwrap();
            let sizes = c
                .execute(
                    "const wide = [...document.querySelectorAll('body *')] \
                       .filter(e => e.getBoundingClientRect().right > 401) \
                       .slice(0, 6).map(e => `${e.tagName}#${e.id}.${e.className}`); \
                     return [document.documentElement.scrollWidth, window.innerWidth, wide];",
                    vec![],
                )
                .await
                .unwrap();
            // An emulated phone widens its layout viewport to fit a page that overflows.
            assert!(
                sizes[0].as_u64().unwrap() <= 400 && sizes[1].as_u64().unwrap() <= 400,
                "{path} scrolls sideways at 400 px: {sizes}"
            );
        }
        c.close().await.unwrap();
    });
}
