//! Charts that never mislead, checked in a real Chromium against a real server and Postgres: a
//! single evaluation is a marker inside the plot area; the diagnostics charts carry at most four
//! series in distinct colours with the legend off the data; a flat series reads no "-0"; the
//! chart view (log axes, smoothing, x axis) lives in the URL and survives a click; a proposals
//! run's page stays light.

use aligndet_studio::*;
use fantoccini::Locator;
use serde_json::{Value, json};

fn p(key: &str, step: i64, v: f64) -> (String, i64, f64) {
    (key.to_string(), step, v)
}

struct Fixture {
    f: SmallDataset,
    finetune: i64,
    pretrain: i64,
}

fn fixture(tag: &str) -> Fixture {
    let splits = json!({"train": [1, 2, 3, 4], "val": [5, 6]});
    let f = SmallDataset::start(tag, 6, &splits);
    // A 20-step fine-tune with one evaluation, at its last step; a gradient norm flat at 0.
    let finetune = insert_run(
        &f.db,
        "finetune",
        "one evaluation",
        &json!({"kind": "finetune", "dataset_id": f.dataset, "train_split": "train",
               "val_split": "val", "optim": {"batch_size": 2}}),
        "succeeded",
    );
    let mut pts = Vec::new();
    for step in 1..=20i64 {
        let s = step as f64;
        // Noisy and falling, with one non-positive value for the log axis to leave out.
        let noise = if step % 2 == 0 { 0.3 } else { -0.3 };
        pts.push(p(
            "loss/total",
            step,
            3.0 / s + noise - if step == 20 { 1.0 } else { 0.0 },
        ));
        pts.push(p("loss/classification", step, 1.5 / s));
        pts.push(p("train/lr", step, 0.01 * s / 20.0));
        pts.push(p("train/grad_norm", step, 0.0));
    }
    pts.push(p("eval/AP", 20, 0.3));
    insert_metrics(&f.db, finetune, &pts);

    // A box-domain pre-training with the trainer's diagnostics.
    let pretrain = insert_run(
        &f.db,
        "pretrain_box",
        "diagnostics",
        &json!({"kind": "pretrain_box", "dataset_id": f.dataset}),
        "succeeded",
    );
    let mut pts = Vec::new();
    for step in 1..=40i64 {
        let s = step as f64;
        pts.push(p("loss/contrastive", step, 5.0 / s.sqrt()));
        pts.push(p("loss/regression", step, 1.0 / s));
        pts.push(p("pretrain/positives", step, 100.0 + s));
        pts.push(p("pretrain/negatives", step, 400.0 + 2.0 * s));
        pts.push(p("pretrain/instances", step, 20.0));
        pts.push(p("pretrain/top1_retrieval", step, 0.1 + s / 100.0));
        pts.push(p("pretrain/top1_chance", step, 0.05));
        pts.push(p("pretrain/contrastive_chance", step, 6.2));
        pts.push(p("pretrain/regression_zero", step, 0.0));
        pts.push(p("pretrain/embedding_spread", step, 0.0));
        pts.push(p("pretrain/weight_change", step, s / 400.0));
        pts.push(p("pretrain/box_head_active", step, 0.0));
        pts.push(p("pretrain/box_head_norm", step, 0.0));
    }
    insert_metrics(&f.db, pretrain, &pts);
    Fixture {
        f,
        finetune,
        pretrain,
    }
}

/// Every chart of the page as Chromium lays it out: per `.chart`, its key, the plot area, the
/// markers and hover targets of each series (centre, colour), the legend's box and colours, the
/// tick and text labels.
const MEASURE: &str = r#"
const out = [];
for (const chart of document.querySelectorAll('.chart')) {
  const svg = chart.querySelector('svg');
  const area = svg && svg.querySelector('rect.plot-area');
  if (!area) continue;
  const a = area.getBBox();
  const series = [...svg.querySelectorAll('g.series')].map(g => ({
    name: g.dataset.series,
    points: [...g.querySelectorAll('circle')].map(c => [c.cx.baseVal.value, c.cy.baseVal.value]),
    markers: g.querySelectorAll('circle.marker').length,
  }));
  const legend = svg.querySelector('g.legend');
  const lb = legend ? legend.getBBox() : null;
  out.push({
    key: chart.dataset.key,
    area: [a.x, a.y, a.width, a.height],
    series,
    legend: lb ? [lb.x, lb.y, lb.width, lb.height] : null,
    legend_colours: legend ? [...legend.querySelectorAll('line')].map(l => l.getAttribute('stroke')) : [],
    texts: [...svg.querySelectorAll('text')].map(t => t.textContent.trim()),
    faint: svg.querySelectorAll('polyline[opacity="0.25"]').length,
  });
}
return out;
"#;

fn inside(p: &Value, r: &[f64]) -> bool {
    let (x, y) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
    x >= r[0] && x <= r[0] + r[2] && y >= r[1] && y <= r[1] + r[3]
}

fn rect(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_f64().unwrap())
        .collect()
}

async fn measure(c: &fantoccini::Client) -> Vec<Value> {
    match c.execute(MEASURE, vec![]).await.unwrap() {
        Value::Array(a) => a,
        other => panic!("measure: {other}"),
    }
}

fn chart<'a>(charts: &'a [Value], key: &str) -> &'a Value {
    charts.iter().find(|c| c["key"] == key).unwrap_or_else(|| {
        panic!(
            "no chart {key} among {:?}",
            charts.iter().map(|c| &c["key"]).collect::<Vec<_>>()
        )
    })
}

#[test]
fn charts_show_single_points_units_and_views_in_chromium() {
    let fx = fixture("charts");
    let driver = ChromeDriver::start();
    let url = fx.f.server.url.clone();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let c = driver.client_for(&fx.f.server).await;

        // The single evaluation: a marker well inside the plot area, its value on hover.
        c.goto(&format!("{url}/runs/{}", fx.finetune)).await.unwrap();
        let charts = measure(&c).await;
        let ap = chart(&charts, "eval-ap");
        let area = rect(&ap["area"]);
        let pts = ap["series"][0]["points"].as_array().unwrap();
        assert_eq!(pts.len(), 1, "{ap}");
        assert_eq!(ap["series"][0]["markers"], 1, "drawn as a visible marker");
        let (x, y) = (pts[0][0].as_f64().unwrap(), pts[0][1].as_f64().unwrap());
        assert!(
            x > area[0] + 0.1 * area[2] && x < area[0] + 0.9 * area[2],
            "marker x {x} inside {area:?}"
        );
        assert!(
            y > area[1] + 0.1 * area[3] && y < area[1] + 0.9 * area[3],
            "marker y {y} inside {area:?}"
        );
        let title = c
            .find(Locator::Css(".chart[data-key='eval-ap'] circle.marker title"))
            .await
            .unwrap()
            .html(true)
            .await
            .unwrap();
        assert_eq!(title, "AP · optimizer step 20: 0.3");
        // Correct axis titles: the x axis is the optimizer step, the y axis says AP.
        assert!(ap["texts"].as_array().unwrap().iter().any(|t| t == "optimizer step"));
        assert!(ap["texts"].as_array().unwrap().iter().any(|t| t == "AP (fraction)"));

        // A series flat at 0: clean ticks, never "-0".
        let flat = chart(&charts, "train/grad_norm");
        for t in flat["texts"].as_array().unwrap() {
            let t = t.as_str().unwrap();
            let digits = t.trim_start_matches(['-', '−']);
            assert!(
                !(t != digits && digits.chars().all(|ch| ch == '0' || ch == '.')),
                "tick {t:?} of a flat series"
            );
        }
        assert!(flat["texts"].as_array().unwrap().iter().any(|t| t == "0.0"));

        // Diagnostics: grouped by unit, ≤ 4 series each, distinct colours, legend off the data.
        c.goto(&format!("{url}/runs/{}", fx.pretrain)).await.unwrap();
        let charts = measure(&c).await;
        let diag: Vec<&Value> = charts
            .iter()
            .filter(|c| c["key"].as_str().unwrap().starts_with("pretrain"))
            .collect();
        assert!(diag.len() >= 4, "diagnostics in several charts: {}", diag.len());
        let mut drawn = 0;
        for d in &diag {
            let series = d["series"].as_array().unwrap();
            drawn += series.len();
            assert!(series.len() <= 4, "{}: {} series", d["key"], series.len());
            let colours = d["legend_colours"].as_array().unwrap();
            let distinct: std::collections::BTreeSet<&str> =
                colours.iter().map(|c| c.as_str().unwrap()).collect();
            assert_eq!(distinct.len(), colours.len(), "{}: {colours:?}", d["key"]);
            let area = rect(&d["area"]);
            for s in series {
                for pt in s["points"].as_array().unwrap() {
                    assert!(inside(pt, &area), "{}: point {pt} outside the plot", d["key"]);
                }
            }
            if series.len() > 1 {
                assert_eq!(colours.len(), series.len(), "{}: a legend entry per series", d["key"]);
                let legend = rect(&d["legend"]);
                assert!(legend[1] >= area[1] + area[3], "{}: legend below the plot", d["key"]);
                for s in series {
                    for pt in s["points"].as_array().unwrap() {
                        assert!(!inside(pt, &legend), "{}: legend covers {pt}", d["key"]);
                    }
                }
            }
        }
        assert_eq!(drawn, 11, "every pretrain/* key drawn once");

        // The view in the URL: log y and smoothing render, with the raw curve faint behind…
        c.goto(&format!("{url}/runs/{}?logy=1&smooth=0.6", fx.finetune))
            .await
            .unwrap();
        let charts = measure(&c).await;
        let loss = chart(&charts, "loss");
        assert_eq!(loss["faint"], 2, "each loss term's raw curve faint behind its smoothed one");
        let texts: Vec<&str> = loss["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert!(
            texts.iter().any(|t| t.contains("at or below zero not drawn on the log y axis")),
            "{texts:?}"
        );
        let hover = c
            .find(Locator::Css(".chart[data-key='loss'] g.series circle title"))
            .await
            .unwrap()
            .html(true)
            .await
            .unwrap();
        assert!(hover.contains("(smoothed; raw "), "{hover}");
        // …the form shows it, and choosing the time axis keeps it.
        let logy = c.find(Locator::Id("chart-logy")).await.unwrap();
        assert!(logy.prop("checked").await.unwrap().as_deref() == Some("true"));
        c.execute(
            "document.getElementById('chart-x').value = 'time';",
            vec![],
        )
        .await
        .unwrap();
        click(&c, Locator::Id("chart-apply")).await;
        let u = wait_for_query(&c, "x=time").await;
        // The view chosen before the click is still in the URL.
        let q = u.query().unwrap();
        assert!(q.contains("logy=1") && q.contains("smooth=0.6"), "{q}");
        assert!(!q.contains("logx=1"), "{q}");
        let charts = measure(&c).await;
        let texts = chart(&charts, "loss")["texts"].clone();
        assert!(
            texts.as_array().unwrap().iter().any(|t| t == "seconds since the run's first metric"),
            "{texts}"
        );
        // The live fragment the page re-fetches carries the same view.
        let live: String = c
            .execute_async(
                "const done = arguments[arguments.length - 1]; \
                 fetch(`/runs/${document.getElementById('live').dataset.run}/live${location.search}`) \
                 .then(r => r.text()).then(done);",
                vec![],
            )
            .await
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        assert!(live.contains("seconds since the run&#39;s first metric") || live.contains("seconds since the run's first metric"));
        c.close().await.unwrap();
    });

    // A smoothing weight that is not one: said, not a failure.
    let r =
        fx.f.server
            .get(&format!("/runs/{}?smooth=abc&logy=2", fx.finetune));
    assert!(r.status().is_success());
    let body = r.text().unwrap();
    assert!(body.contains("smooth=abc ignored"), "the page says why");
    assert!(body.contains("logy=2 ignored"));
}

/// A proposals run's page: recall grouped by object size, against boxes per image (not
/// "step"), in a handful of charts; its weight is printed for the record.
#[test]
fn proposals_run_page_groups_recall_and_stays_light() {
    let splits = json!({"train": [1, 2], "val": [3]});
    let f = SmallDataset::start("charts-proposals", 3, &splits);
    let run = insert_run(
        &f.db,
        "proposals",
        "quality",
        &json!({"kind": "proposals", "dataset_id": f.dataset}),
        "succeeded",
    );
    let mut pts = Vec::new();
    for prefix in ["recall", "recall_all"] {
        for size in ["", "/small", "/medium", "/large"] {
            for (m, scale) in [("iou50", 1.0), ("iou70", 0.7), ("ar", 0.5)] {
                for n in [10i64, 20, 50, 100, 200, 300, 500, 1000, 1874] {
                    let r = scale * (1.0 - 1.0 / (1.0 + n as f64 / 50.0));
                    pts.push(p(&format!("{prefix}/{m}{size}"), n, r));
                }
            }
        }
    }
    for i in 1..=300i64 {
        pts.push(p("progress/images_done", i, i as f64 / 300.0));
    }
    pts.push(p("seconds_per_image", 0, 0.8));
    insert_metrics(&f.db, run, &pts);
    let page = f.server.get(&format!("/runs/{run}")).text().unwrap();
    let charts = page.matches("<div class=\"chart\"").count();
    eprintln!("proposals run page: {} bytes, {charts} charts", page.len());
    assert!(charts <= 9, "{charts} charts");
    assert!(page.contains("data-key=\"recall-small\""));
    // plotters writes a text element's content on a line of its own.
    assert!(page.contains(">\npseudo-boxes per image\n<"));
    assert!(
        !page.contains(">\nstep\n<"),
        "boxes per image are not steps"
    );
    assert!(page.len() < 250_000, "{} bytes", page.len());
}
