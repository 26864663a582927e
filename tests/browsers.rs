//! The run browsers that scale, checked in a real Chromium against a real server and Postgres:
//! the predictions browser marks true and false positives and misses as the matching module
//! (`aligndet-server match-detections`) says, with labels that never overlap, sorted by errors
//! and at an IoU chosen in the URL; the pseudo-box browser of an image with 12,000 boxes stays
//! under 500 KB with the rest on a canvas, and its COCO export streams; every browser fits a
//! 400 px screen. The dataset gallery and the comparison page: `browsers_gallery_compare.rs`.

use aligndet_studio::boxes::{IMAGES, fixture};
use aligndet_studio::*;
use fantoccini::Locator;
use serde_json::{Value, json};
use std::collections::BTreeMap;

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
    let (run, preds) = f.predicted_run();
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
    // Boxes only, on a dataset without masks: no mask is drawn and no masks toggle offered.
    for path in [
        format!("/runs/{run}/predictions"),
        format!("/datasets/{}", f.dataset),
    ] {
        let html = f.server.get(&path).text().unwrap();
        assert!(
            !html.contains("show-masks") && !html.contains("class=\"mask"),
            "{path}"
        );
    }

    ChromeDriver::start().signed_in(&f.server, async |c| {
        let url = format!("{}/runs/{run}/predictions", f.server.url);
        for (query, want) in [("", &at_05), ("?iou=0.9&page=1", &at_09)] {
            c.goto(&format!("{url}{query}")).await.unwrap();
            let figs = marks(c).await;
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
        let figs = marks(c).await;
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
        click(c, Locator::Css("#sort-images option[value='errors']")).await;
        click(c, Locator::Id("apply-view")).await;
        let mut seen = Vec::new();
        wait_for_query(c, "sort=errors").await;
        let q = c.current_url().await.unwrap();
        assert!(q.query().unwrap().contains("iou=0.5"), "{q}");
        for page in 0..2 {
            c.goto(&format!("{url}?sort=errors&page={page}"))
                .await
                .unwrap();
            for fig in marks(c).await {
                seen.push(at_05[&fig["image"].as_i64().unwrap()]);
            }
        }
        assert_eq!(seen.len(), IMAGES as usize);
        let errors: Vec<u64> = seen.iter().map(|c| c[1] + c[2]).collect();
        assert!(errors.windows(2).all(|w| w[0] >= w[1]), "{errors:?}");
        assert!(errors[0] > errors[errors.len() - 1], "{errors:?}");
    });
}

#[test]
fn the_pseudo_box_browser_draws_thousands_on_a_canvas_and_streams_its_export() {
    let f = fixture("browsers-prop");
    let big = 12_000;
    let run = f.proposals_run(big);
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

    ChromeDriver::start().signed_in(&f.server, async |c| {
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
        click(c, Locator::Id("show-removed")).await;
        assert_eq!(state().await[1].as_u64(), Some(big as u64 - 200));
    });
}

#[test]
fn the_browsers_fit_a_400_px_screen() {
    let f = fixture("browsers-narrow");
    let (pred, _) = f.predicted_run();
    let prop = f.proposals_run(500);
    // Chromium's headless window is at least 500 px wide: the 400 px viewport is emulated.
    ChromeDriver::with_viewport(400, 900).signed_in(&f.server, async |c| {
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
    });
}
