//! The comparison page (`/compare?runs=…`) and its JSON twin (`/api/v1/compare`) against the
//! real server and Postgres: two arms × three seeds of fine-tune runs with known numbers,
//! inserted directly (configs, metrics, `eval.json`), then arms, means ± std, paired deltas,
//! per-class deltas, convergence steps, config differences, escaping and bad input.

use aligndet_common::artifacts::ArtifactRef;
use aligndet_common::jobs::JobConfig;
use aligndet_common::train_config::{InitConfig, TrainConfig};
use aligndet_studio::*;
use serde_json::{Value, json};

const HOSTILE: &str = "<script>alert(1)</script> & \"x\"";
const HOSTILE_CLASS: &str = "<b>bold</b> & co";

/// Server first so it stops before the database and folders go.
struct Fixture {
    server: Server,
    db: TestDb,
    data: TempDir,
    /// Arm B (checkpoint, lr 0.015) seeds 1–3, then arm A (ImageNet backbone) seeds 1–3.
    b: Vec<i64>,
    a: Vec<i64>,
}

/// Final AP of each seed: arm A (baseline) 0.30 / 0.32 / 0.34, arm B 0.40 / 0.41 / 0.45.
const AP_A: [f64; 3] = [0.30, 0.32, 0.34];
const AP_B: [f64; 3] = [0.40, 0.41, 0.45];
/// eval/AP at steps 10, 20, 30 as fractions of the run's final AP.
const CURVE_A: [f64; 3] = [0.4, 0.8, 1.0];
const CURVE_B: [f64; 3] = [0.8, 0.95, 1.0];

fn config(dataset: i64, seed: u64, pretrained: bool) -> Value {
    let mut c = TrainConfig {
        dataset_id: dataset,
        train_split: format!("5pct_seed{seed}"),
        ..TrainConfig::default()
    };
    (c.optim.batch_size, c.optim.steps, c.optim.seed) = (2, 30, seed);
    if pretrained {
        c.init = InitConfig::Checkpoint {
            artifact: ArtifactRef {
                run_id: 100 + seed as i64,
                name: "pretrained.safetensors".into(),
            },
        };
        c.optim.lr = 0.015;
        c.optim.weight_decay = 5e-5;
    }
    serde_json::to_value(JobConfig::Finetune(c)).unwrap()
}

/// The six statistics the page compares, from AP (APs undefined, as pycocotools prints −1).
fn stats_from(ap: f64) -> [f64; 6] {
    [ap, ap + 0.3, ap - 0.05, -1.0, ap, ap + 0.1]
}

fn insert_evaluated_run(
    f_db: &TestDb,
    data: &TempDir,
    name: &str,
    cfg: &Value,
    ap: f64,
    curve: &[f64; 3],
    eval_json: bool,
) -> i64 {
    let id = insert_run(f_db, "finetune", name, cfg, "succeeded");
    let mut values = Vec::new();
    for step in 1..=30i64 {
        values.push(("loss/total".to_string(), step, 3.0 / step as f64));
    }
    for (i, step) in [10i64, 20, 30].into_iter().enumerate() {
        let v = ap * curve[i];
        for (name, s) in ["AP", "AP50", "AP75", "APs", "APm", "APl"]
            .iter()
            .zip(stats_from(v))
        {
            values.push((format!("eval/{name}"), step, s));
        }
    }
    insert_metrics(f_db, id, &values);
    if eval_json {
        let s = stats_from(ap);
        let eval = json!({
            "stats": [s[0], s[1], s[2], s[3], s[4], s[5], 0.5, 0.6, 0.6, -1.0, 0.6, -1.0],
            "per_class": [
                {"category_id": 1, "name": "red box", "ap": ap + 0.05, "ap50": 0.9, "ap75": 0.4, "ar100": 0.7, "num_gt": 3},
                {"category_id": 2, "name": HOSTILE_CLASS, "ap": ap - 0.05, "ap50": 0.7, "ap75": 0.3, "ar100": 0.5, "num_gt": 2}
            ],
            "per_size": [],
            "pr_curves": [],
            "num_images": 2, "num_detections": 5, "seconds": 0.01
        });
        let bytes = serde_json::to_vec(&eval).unwrap();
        insert_artifact(data.path(), f_db, id, "eval.json", &bytes);
    }
    id
}

fn fixture(tag: &str) -> Fixture {
    let db = TestDb::create();
    let data = TempDir::new(&format!("{tag}-data"));
    let server = Server::start(&ServerOptions::new(&db, data.path()));
    let dataset = insert_small_dataset(&db);
    let mut b = Vec::new();
    for seed in 1..=3u64 {
        let name = if seed == 1 {
            HOSTILE.to_string()
        } else {
            format!("aligndet seed {seed}")
        };
        b.push(insert_evaluated_run(
            &db,
            &data,
            &name,
            &config(dataset, seed, true),
            AP_B[seed as usize - 1],
            &CURVE_B,
            true,
        ));
    }
    let mut a = Vec::new();
    for seed in 1..=3u64 {
        // Seed 3 of the baseline has no eval.json: its last evaluation points count.
        a.push(insert_evaluated_run(
            &db,
            &data,
            &format!("imagenet seed {seed}"),
            &config(dataset, seed, false),
            AP_A[seed as usize - 1],
            &CURVE_A,
            seed != 3,
        ));
    }
    Fixture {
        server,
        db,
        data,
        b,
        a,
    }
}

fn ids(runs: &[i64]) -> String {
    runs.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn close(v: &Value, want: f64, what: &str) {
    let got = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {v}"));
    assert!((got - want).abs() < 1e-9, "{what}: {got} != {want}");
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn std(v: &[f64]) -> f64 {
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// Where a run's eval/AP (final × curve at steps 10, 20, 30) first reaches `target`.
fn crossing(final_ap: f64, curve: &[f64; 3], target: f64) -> Option<f64> {
    let v: Vec<f64> = curve.iter().map(|c| final_ap * c).collect();
    let steps = [10.0, 20.0, 30.0];
    for i in 0..3 {
        if v[i] >= target {
            if i == 0 {
                return Some(steps[0]);
            }
            return Some(steps[i - 1] + (target - v[i - 1]) / (v[i] - v[i - 1]) * 10.0);
        }
    }
    None
}

fn api_compare(f: &Fixture, query: &str) -> reqwest::blocking::Response {
    f.server
        .http
        .get(format!("{}/api/v1/compare?{query}", f.server.url))
        .bearer_auth(&f.server.user_token)
        .send()
        .unwrap()
}

#[test]
fn two_arms_of_three_seeds_compare_with_deltas_convergence_and_config_diff() {
    let f = fixture("compare");
    let mut all = f.b.clone();
    all.extend(&f.a);
    let query = format!("runs={}&fractions=0.5,0.9,1.2", ids(&all));

    // --- JSON: the numbers.
    let r = api_compare(&f, &query);
    assert_eq!(r.status(), 200);
    let c: Value = r.json().unwrap();
    let arms = c["arms"].as_array().unwrap();
    assert_eq!(
        arms.len(),
        2,
        "seeds, split draws and checkpoint run ids fold: {c}"
    );
    assert_eq!(arms[0]["runs"], json!(f.b));
    assert_eq!(arms[1]["runs"], json!(f.a));
    assert_eq!(c["baseline"], 1, "the arm not started from a checkpoint");
    // Arms are named by role; the settings that tell them apart are the subtitle.
    assert_eq!(arms[1]["label"], "baseline");
    assert_eq!(arms[1]["subtitle"], "init=imagenet_backbone");
    assert_eq!(arms[0]["label"], "AlignDet");
    assert_eq!(
        arms[0]["subtitle"],
        "init=checkpoint pretrained.safetensors, lr=0.015, weight_decay=5e-05"
    );
    let stat = |name: &str| -> Value {
        c["stats"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stat"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no stat {name}"))
    };
    let ap = stat("AP");
    let (b_arm, a_arm) = (&ap["arms"][0], &ap["arms"][1]);
    close(&b_arm["summary"]["mean"], mean(&AP_B), "B mean AP");
    close(&b_arm["summary"]["std"], std(&AP_B), "B std AP");
    assert_eq!(b_arm["summary"]["n"], 3);
    close(
        &a_arm["summary"]["mean"],
        mean(&AP_A),
        "A mean AP (eval.json + last point)",
    );
    close(&a_arm["summary"]["std"], std(&AP_A), "A std AP");
    assert_eq!(a_arm["delta"], Value::Null, "the baseline has no delta");
    let d = &b_arm["delta"];
    close(&d["mean"], mean(&AP_B) - mean(&AP_A), "delta AP");
    assert_eq!(d["paired"], true);
    assert_eq!(d["n"], 3);
    let diffs: Vec<f64> = AP_B.iter().zip(AP_A).map(|(b, a)| b - a).collect();
    close(&d["std"], std(&diffs), "std of per-seed differences");
    let ap50 = stat("AP50");
    close(&ap50["arms"][0]["delta"]["mean"], 0.10, "delta AP50");
    assert!(
        c["stats"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["stat"] != "APs"),
        "APs is undefined everywhere: no row"
    );
    let runs = c["runs"].as_array().unwrap();
    let a3 = runs.iter().find(|r| r["id"] == f.a[2]).unwrap();
    assert_eq!(a3["final_source"], "last_eval_point");
    close(&a3["finals"]["AP"], 0.34, "last eval/AP point");

    // Per class: arm A has eval.json for 2 seeds only → unpaired.
    let red = &c["per_class"][0];
    assert_eq!(red["name"], "red box");
    close(
        &red["arms"][0]["summary"]["mean"],
        mean(&AP_B) + 0.05,
        "B red box",
    );
    assert_eq!(red["arms"][1]["summary"]["n"], 2);
    close(&red["arms"][1]["summary"]["mean"], 0.31 + 0.05, "A red box");
    assert_eq!(red["arms"][0]["delta"]["paired"], false);
    close(
        &red["arms"][0]["delta"]["mean"],
        mean(&AP_B) + 0.05 - 0.36,
        "red box delta",
    );
    assert_eq!(c["per_class"][1]["name"], HOSTILE_CLASS);

    // Convergence: fractions of the baseline's mean final AP.
    let base_ap = mean(&AP_A);
    close(&c["baseline_final_ap"], base_ap, "baseline final AP");
    let conv = c["convergence"].as_array().unwrap();
    assert_eq!(conv.len(), 3);
    for (k, frac) in [0.5, 0.9, 1.2].into_iter().enumerate() {
        let row = &conv[k];
        let target = frac * base_ap;
        close(&row["target"], target, "target");
        let mut arm_steps = [Vec::new(), Vec::new()];
        for (arm, (runs, aps, curve)) in [(&f.b, AP_B, CURVE_B), (&f.a, AP_A, CURVE_A)]
            .into_iter()
            .enumerate()
        {
            for (i, id) in runs.iter().enumerate() {
                let got = row["runs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["run_id"] == *id)
                    .unwrap();
                match crossing(aps[i], &curve, target) {
                    Some(step) => {
                        close(&got["step"], step, &format!("run {id} step at {frac}"));
                        close(&got["epoch"], step / 2.0, "epoch = step × 2 / 4 images");
                        arm_steps[arm].push(step);
                    }
                    None => assert_eq!(got["step"], Value::Null, "run {id} at {frac}"),
                }
            }
        }
        let (b_row, a_row) = (&row["arms"][0], &row["arms"][1]);
        assert_eq!(
            b_row["reached"].as_u64().unwrap() as usize,
            arm_steps[0].len()
        );
        if frac < 1.0 {
            assert_eq!(a_row["reached"], 3);
            close(&a_row["mean_step"], mean(&arm_steps[1]), "A mean step");
            close(
                &b_row["speedup"],
                mean(&arm_steps[1]) / mean(&arm_steps[0]),
                "speed-up",
            );
        } else {
            assert_eq!(
                a_row["reached"], 0,
                "the baseline never reaches 1.2 × its final AP"
            );
            assert_eq!(b_row["speedup"], Value::Null);
            assert_eq!(b_row["reached"], 3);
        }
    }

    // Config differences only.
    let paths: Vec<&str> = c["config_diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    for p in [
        "init.artifact.run_id",
        "init.artifact.name",
        "init.from",
        "optim.lr",
        "optim.seed",
        "train_split",
        "optim.weight_decay",
    ] {
        assert!(paths.contains(&p), "diff row {p}: {paths:?}");
    }
    for p in [
        "optim.batch_size",
        "optim.steps",
        "augment.min_sizes",
        "dataset_id",
    ] {
        assert!(!paths.contains(&p), "{p} is the same everywhere");
    }

    // --- The page.
    let r = f.server.get(&format!("/compare?{query}"));
    assert_eq!(r.status(), 200);
    let page = r.text().unwrap();
    for id in [
        "arms",
        "curves",
        "chart-eval-ap",
        "chart-eval-ap50",
        "chart-loss",
        "stats-table",
        "per-class-table",
        "convergence-arms",
        "convergence-runs",
        "config-diff-table",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "section {id}");
    }
    assert!(page.contains("<polyline"), "curves drawn");
    assert!(page.contains("AlignDet mean of 3"), "arm means drawn");
    assert!(
        page.contains("init=checkpoint pretrained.safetensors, lr=0.015, weight_decay=5e-05"),
        "arm label"
    );
    let ap_row = page
        .split("data-stat=\"AP\"")
        .nth(1)
        .unwrap()
        .split("</tr>")
        .next()
        .unwrap();
    // AP ×100; the paired delta with its 95% t interval: 10.0 ± 4.303 × 1.0 / √3.
    assert!(ap_row.contains("42.0 ± 2.6"), "B mean ± std: {ap_row}");
    assert!(ap_row.contains("32.0 ± 2.0"), "A mean ± std: {ap_row}");
    assert!(
        ap_row.contains("+10.0 (95% CI +7.5 to +12.5, paired, n=3)"),
        "{ap_row}"
    );
    assert!(
        page.contains("+11.0 (unpaired: seeds differ, no CI)"),
        "per-class delta"
    );
    assert!(page.contains("not reached, 0/3 reached"), "baseline at 1.2");
    let a1 = crossing(AP_A[0], &CURVE_A, 0.5 * base_ap).unwrap();
    assert!(
        page.contains(&format!("step {:.1} (epoch {:.2})", a1, a1 / 2.0)),
        "run crossing shown"
    );
    assert!(page.contains("data-path=\"init.artifact.run_id\""));
    assert!(page.contains("<td>5pct_seed2</td>"));
    assert!(!page.contains("data-path=\"batch_size\""));
    // Escaping of run and class names.
    assert!(
        !page.contains("<script>alert(1)"),
        "hostile run name not raw"
    );
    assert!(page.contains("&#60;script&#62;alert(1)&#60;/script&#62; &#38; &#34;x&#34;"));
    assert!(!page.contains("<b>bold</b>"));
    assert!(page.contains("&#60;b&#62;bold&#60;/b&#62; &#38; co"));

    // Repeated runs params, another baseline and x axis.
    let rep: Vec<String> = all.iter().map(|i| format!("runs={i}")).collect();
    let r = f
        .server
        .get(&format!("/compare?{}&baseline=0&x=epoch", rep.join("&")));
    assert_eq!(r.status(), 200);
    let page = r.text().unwrap();
    assert!(page.contains("data-x=\"epoch\""));
    assert!(page.contains("epoch (images seen / train split size)"));
    let c: Value = api_compare(&f, &format!("{}&baseline=0", rep.join("&")))
        .json()
        .unwrap();
    assert_eq!(c["baseline"], 0);
    close(
        &c["stats"][0]["arms"][1]["delta"]["mean"],
        mean(&AP_A) - mean(&AP_B),
        "delta against arm 0",
    );
    for x in ["images", "wall"] {
        let r = f.server.get(&format!("/compare?runs={}&x={x}", ids(&all)));
        assert_eq!(r.status(), 200, "x={x}");
        assert!(r.text().unwrap().contains(&format!("data-x=\"{x}\"")));
    }

    // Runs without evaluation (a benchmark) come along, lacking those columns.
    let bench = insert_run(
        &f.db,
        "benchmark",
        "bench",
        &json!({"kind": "benchmark"}),
        "succeeded",
    );
    insert_metrics(&f.db, bench, &[("step_time_s", 1, 0.5)]);
    // … but not beside fine-tunes: runs of different kinds are refused, naming them.
    let r = f.server.get(&format!("/compare?runs={},{bench}", f.a[0]));
    assert_eq!(r.status(), 422);
    let page = r.text().unwrap();
    assert!(
        page.contains("different kinds") && page.contains(&format!("benchmark: #{bench}")),
        "{page}"
    );
    let r = f.server.get(&format!("/compare?runs={bench}"));
    assert_eq!(r.status(), 200, "a run without any eval metric");
    assert!(r.text().unwrap().contains("no evaluation"));

    // The runs list offers the checkboxes and the button.
    let list = f.server.get("/runs").text().unwrap();
    assert!(list.contains("id=\"compare-form\"") && list.contains("action=\"/compare\""));
    assert!(list.contains(&format!("name=\"runs\" value=\"{}\"", f.a[0])));
    assert!(list.contains("id=\"compare-selected\""));
    let _ = &f.data;
}

#[test]
fn bad_input_is_named_with_400_or_404() {
    let f = fixture("compare-bad");
    let cases: Vec<(String, u16, &str)> = vec![
        ("/compare".into(), 400, "no runs"),
        ("/compare?runs=".into(), 400, "no runs"),
        (format!("/compare?runs={},abc", f.a[0]), 400, "abc"),
        (
            format!(
                "/compare?runs={}",
                (1..=51)
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            400,
            "at most 50",
        ),
        (format!("/compare?runs={},99999", f.a[0]), 404, "99999"),
        (
            format!("/compare?runs={}&baseline=7", f.a[0]),
            400,
            "baseline 7",
        ),
        (
            format!("/compare?runs={}&x=furlongs", f.a[0]),
            400,
            "furlongs",
        ),
        (
            format!("/compare?runs={}&fractions=2,x", f.a[0]),
            400,
            "fraction",
        ),
        (
            "/compare?runs=%3Cscript%3Ealert(1)%3C/script%3E".into(),
            400,
            // Shown escaped (askama writes `<` as `&#60;`); the raw tag is refused below.
            "script&#62;alert(1)",
        ),
    ];
    for (path, status, text) in &cases {
        let r = f.server.get(path);
        assert_eq!(r.status().as_u16(), *status, "{path}");
        let body = r.text().unwrap();
        assert!(body.contains(text), "{path}: {body}");
        assert!(!body.contains("<script>alert"), "{path}: escaped");
    }
    // The API answers JSON errors, and only with the worker token.
    let r = api_compare(&f, "runs=abc");
    assert_eq!(r.status(), 400);
    let e: Value = r.json().unwrap();
    assert!(e["error"].as_str().unwrap().contains("abc"));
    assert_eq!(api_compare(&f, "runs=99999").status(), 404);
    let r = f.server.get(&format!("/api/v1/compare?runs={}", f.a[0]));
    assert_eq!(r.status(), 401, "no token");
}

#[test]
fn ticking_runs_and_pressing_compare_opens_the_comparison_in_a_browser() {
    let f = fixture("compare-browser");
    let driver = ChromeDriver::with_window(1280, 2400);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        use fantoccini::Locator;
        let c = driver.client_for(&f.server).await;
        c.goto(&format!("{}/runs", f.server.url)).await.unwrap();
        let button = c.find(Locator::Id("compare-selected")).await.unwrap();
        assert_eq!(
            button.attr("disabled").await.unwrap().as_deref(),
            Some("true"),
            "nothing ticked yet"
        );
        for id in [f.b[0], f.b[1], f.a[0], f.a[1]] {
            click(
                &c,
                Locator::Css(&format!("input.compare-pick[value='{id}']")),
            )
            .await;
        }
        let count = c.find(Locator::Id("compare-count")).await.unwrap();
        assert_eq!(count.text().await.unwrap(), "4 selected");
        click(&c, Locator::Id("compare-selected")).await;
        c.wait()
            .for_element(Locator::Id("stats-table"))
            .await
            .unwrap();
        let url = c.current_url().await.unwrap();
        assert_eq!(url.path(), "/compare");
        // Newest first in the runs table: the ids come in table order.
        let mut want = vec![f.b[0], f.b[1], f.a[0], f.a[1]];
        want.sort_unstable_by(|x, y| y.cmp(x));
        assert_eq!(url.query(), Some(format!("runs={}", ids(&want)).as_str()));
        let h1 = c.find(Locator::Css("h1")).await.unwrap();
        assert_eq!(h1.text().await.unwrap(), "Comparing 4 runs in 2 arms");
        // The hostile run name is text, not markup.
        let arms = c.find(Locator::Id("arms")).await.unwrap();
        assert!(arms.text().await.unwrap().contains(HOSTILE));
        // Switching the x axis keeps the runs.
        c.execute(
            "const s = document.getElementById('compare-x'); s.value = 'epoch'; s.form.submit();",
            vec![],
        )
        .await
        .unwrap();
        c.wait()
            .for_element(Locator::Css("#chart-eval-ap[data-x='epoch']"))
            .await
            .unwrap();
        if let Some(path) = std::env::var_os("ALIGNDET_COMPARE_SCREENSHOT") {
            std::fs::write(path, c.screenshot().await.unwrap()).unwrap();
        }
        c.close().await.unwrap();
    });
}
