//! Masks on the pages, against a real server and Postgres: in a real Chromium, the predictions
//! browser of a run whose predictions.json carries RLE masks and the dataset page of a dataset
//! with polygon masks draw each mask as a translucent shape in its class colour under its box,
//! and the masks toggle, the ground-truth toggle and the class toggles hide them. Over HTTP, a
//! Mask R-CNN run's page and the comparison page show mask AP beside box AP.

use aligndet_studio::boxes::{Fixture, H, W, fixture_with_masks, predictions, with_masks};
use aligndet_studio::*;
use fantoccini::Locator;
use serde_json::{Value, json};

/// Every mask of the page: class, kind, drawn or not, fill, translucency, its bounding box in
/// image pixels, whether a box outline follows it, and the boxes (`rect.box`) of the dataset
/// page in page order.
const MASKS: &str = r#"
// Drawn: no element up to the root is display: none (Chromium's checkVisibility() says true
// for an SVG shape inside a hidden group).
const drawn = (e) => { for (let n = e; n; n = n.parentElement) if (getComputedStyle(n).display === 'none') return false; return true; };
const masks = [...document.querySelectorAll('path.mask')].map(m => {
  const b = m.getBBox();
  const owner = m.closest('g[data-cat]');
  const box = owner && owner.querySelector('rect.pred-box, rect.gt-box');
  const r = (e) => [e.x.baseVal.value, e.y.baseVal.value, e.width.baseVal.value, e.height.baseVal.value];
  return {
    cat: m.dataset.cat || owner.dataset.cat,
    pred: m.classList.contains('pred-mask'),
    gt: m.classList.contains('gt-mask'),
    shown: drawn(m),
    fill: m.getAttribute('fill'),
    opacity: Number(getComputedStyle(m).fillOpacity),
    bbox: [b.x, b.y, b.width, b.height],
    box: box ? r(box) : null,
    under_box: !!m.nextElementSibling && m.nextElementSibling.tagName === 'rect',
  };
});
const boxes = [...document.querySelectorAll('rect.box')].map(e =>
  ({shown: drawn(e), box: [e.x.baseVal.value, e.y.baseVal.value, e.width.baseVal.value, e.height.baseVal.value]}));
const predBoxes = [...document.querySelectorAll('rect.pred-box')].filter(drawn).length;
return {masks, boxes, predBoxes};
"#;

async fn masks(c: &fantoccini::Client) -> Value {
    c.execute(MASKS, vec![]).await.unwrap()
}

fn list(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap()
}

fn nums(v: &Value) -> Vec<f64> {
    list(v).iter().map(|x| x.as_f64().unwrap()).collect()
}

fn shown(page: &Value, keep: impl Fn(&Value) -> bool) -> usize {
    list(&page["masks"])
        .iter()
        .filter(|m| keep(m) && m["shown"] == true)
        .count()
}

#[test]
fn masks_are_drawn_under_the_boxes_and_the_toggles_hide_them_in_chromium() {
    let f = fixture_with_masks("browsers-masks");
    let (run, _) = f.run_with_predictions(with_masks(&predictions(&f.anns)));
    let (box_run, _) = f.run_with_predictions(predictions(&f.anns));
    // The page size with masks (six 200×150 images, ten predictions each at most).
    let page = |r: i64| {
        f.server
            .get(&format!("/runs/{r}/predictions"))
            .text()
            .unwrap()
    };
    let (masked, boxed) = (page(run), page(box_run));
    eprintln!(
        "predictions page: {} bytes with RLE and polygon masks, {} with polygon masks only",
        masked.len(),
        boxed.len()
    );
    assert!(masked.len() < 200_000, "{} bytes", masked.len());

    ChromeDriver::start().signed_in(&f.server, async |c| {
        c.goto(&format!("{}/runs/{run}/predictions", f.server.url))
            .await
            .unwrap();
        let p = masks(c).await;
        let all = list(&p["masks"]);
        let preds = all.iter().filter(|m| m["pred"] == true).count();
        let gts = all.iter().filter(|m| m["gt"] == true).count();
        assert!(
            preds >= 6 && gts >= 6,
            "{preds} predicted, {gts} true masks"
        );
        assert_eq!(shown(&p, |_| true), all.len(), "all drawn at first");
        for m in all {
            assert!(
                m["under_box"] == true,
                "the outline is drawn over the mask: {m}"
            );
            assert!(m["fill"].as_str().unwrap().starts_with("hsl("), "{m}");
            let opacity = m["opacity"].as_f64().unwrap();
            assert!(opacity > 0.0 && opacity < 1.0, "translucent: {m}");
            // The RLE of a box rounded to pixels covers that box inside the image; the
            // diamond spans its box.
            let (bbox, mut bx) = (nums(&m["bbox"]), nums(&m["box"]));
            let (x1, y1) = ((bx[0] + bx[2]).min(W as f64), (bx[1] + bx[3]).min(H as f64));
            (bx[0], bx[1]) = (bx[0].max(0.0), bx[1].max(0.0));
            (bx[2], bx[3]) = (x1 - bx[0], y1 - bx[1]);
            for k in 0..4 {
                assert!(
                    (bbox[k] - bx[k]).abs() <= 1.0,
                    "mask {bbox:?} vs box {bx:?}"
                );
            }
        }
        let fill_of = |cat: &str| {
            all.iter()
                .find(|m| m["cat"] == cat)
                .map(|m| m["fill"].clone())
        };
        assert_ne!(fill_of("1"), fill_of("2"), "class colours differ");

        // The masks toggle hides every mask and leaves the boxes.
        click(c, Locator::Css("#show-masks")).await;
        let p = masks(c).await;
        assert_eq!(shown(&p, |_| true), 0);
        assert!(p["predBoxes"].as_u64().unwrap() > 0, "boxes stay");
        click(c, Locator::Css("#show-masks")).await;
        // A class toggle hides that class's masks, predicted and true.
        click(c, Locator::Css(".class-toggle[data-cat='1']")).await;
        let p = masks(c).await;
        assert_eq!(shown(&p, |m| m["cat"] == "1"), 0);
        assert!(shown(&p, |m| m["cat"] == "2") > 0);
        click(c, Locator::Css(".class-toggle[data-cat='1']")).await;
        // The ground-truth toggle hides the true masks only.
        click(c, Locator::Css("#show-gt")).await;
        let p = masks(c).await;
        assert_eq!(shown(&p, |m| m["gt"] == true), 0);
        assert_eq!(shown(&p, |m| m["pred"] == true), preds);

        // The dataset page: one polygon mask per annotation, over its box's extent.
        c.goto(&format!("{}/datasets/{}", f.server.url, f.dataset))
            .await
            .unwrap();
        let p = masks(c).await;
        let (all, boxes) = (list(&p["masks"]), list(&p["boxes"]));
        assert_eq!(all.len(), f.anns.len());
        assert_eq!(boxes.len(), f.anns.len());
        for (m, b) in all.iter().zip(boxes) {
            let (bbox, bx) = (nums(&m["bbox"]), nums(&b["box"]));
            for k in 0..4 {
                assert!(
                    (bbox[k] - bx[k]).abs() < 0.01,
                    "mask {bbox:?} vs box {bx:?}"
                );
            }
        }
        assert_eq!(shown(&p, |_| true), all.len());
        click(c, Locator::Css("#show-masks")).await;
        let p = masks(c).await;
        assert_eq!(shown(&p, |_| true), 0);
        assert!(list(&p["boxes"]).iter().all(|b| b["shown"] == true));
        click(c, Locator::Css("#show-masks")).await;
        click(c, Locator::Css(".class-toggle[data-cat='2']")).await;
        let p = masks(c).await;
        assert_eq!(shown(&p, |m| m["cat"] == "2"), 0);
        assert!(shown(&p, |m| m["cat"] == "1") > 0);
    });
}

/// An `eval.json` with box AP `ap` and mask AP `mask_ap`.
fn eval_json(ap: f64, mask_ap: f64) -> Vec<u8> {
    let stats = |a: f64| {
        let mut s = vec![a, a + 0.2, a - 0.05, -1.0, a, a + 0.1];
        s.extend([0.3, 0.4, 0.5, -1.0, 0.5, 0.6]);
        s
    };
    let class = |a: f64| {
        json!([{"category_id": 1, "name": "car", "ap": a, "ap50": a + 0.2,
        "ap75": a - 0.05, "ar100": 0.5, "num_gt": 7}])
    };
    let size = |a: f64| json!([{"area": "medium", "ap": a, "ar": 0.5}]);
    serde_json::to_vec(&json!({
        "stats": stats(ap), "per_class": class(ap), "per_size": size(ap), "pr_curves": [],
        "num_images": 8, "num_detections": 40, "seconds": 0.5,
        "segm": {"stats": stats(mask_ap), "per_class": class(mask_ap), "per_size": size(mask_ap)},
    }))
    .unwrap()
}

/// A fine-tune at `lr` as Mask R-CNN's are recorded, with its evaluations (box and mask AP at steps 10 and 20)
/// and `eval.json`; its id.
fn mask_run(f: &Fixture, lr: f64, ap: f64, mask_ap: f64) -> i64 {
    let run = f.insert_run("finetune", "masked", &f.finetune_config(lr));
    let mut rows = Vec::new();
    for (step, scale) in [(10, 0.5), (20, 1.0)] {
        for (key, v) in [("eval/AP", ap), ("eval/segm_AP", mask_ap)] {
            rows.push((key, step, v * scale));
        }
    }
    insert_metrics(&f.db, run, &rows);
    f.put_artifact(run, "eval.json", &eval_json(ap, mask_ap));
    run
}

#[test]
fn the_run_page_and_the_comparison_show_mask_ap_beside_box_ap() {
    let f = fixture_with_masks("masks-ap");
    let a = mask_run(&f, 0.01, 0.40, 0.31);
    let b = mask_run(&f, 0.02, 0.45, 0.37);

    let page = f.server.get(&format!("/runs/{a}")).text().unwrap();
    for id in [
        "mask-stats",
        "mask-per-class",
        "mask-per-size",
        "history-mask",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id}");
    }
    assert!(page.contains("data-key=\"eval-ap\"") && page.contains("data-key=\"eval-mask-ap\""));
    assert!(page.contains("COCO mask AP on val at each evaluation"));
    let mask_row = page.split("id=\"mask-stats\"").nth(1).unwrap();
    assert!(
        mask_row.starts_with("><th>mask</th><td>0.310</td>"),
        "{mask_row:.80}"
    );
    let history = page.split("id=\"eval-history\"").nth(1).unwrap();
    assert!(history.contains("<th>mask AP</th>"));
    assert!(history.contains("<td>0.155</td>"), "mask AP at step 10");

    let cmp = f
        .server
        .get(&format!("/compare?runs={a},{b}"))
        .text()
        .unwrap();
    let row = cmp
        .split("data-stat=\"mask AP\"")
        .nth(1)
        .expect("a mask AP row");
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("31.0") && row.contains("37.0"), "{row}");
    assert!(row.contains("+6.0"), "the delta: {row}");
    let box_row = cmp.split("data-stat=\"AP\"").nth(1).unwrap();
    assert!(box_row[..box_row.find("</tr>").unwrap()].contains("40.0"));
}
