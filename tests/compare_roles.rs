//! The comparison page answers "did AlignDet help, by how much, with what spread?", in
//! Chromium against the real server and Postgres: arms named by role (AlignDet, baseline,
//! label-free; an experiment's own roles win), AP ×100 with n per arm, the mean paired delta
//! with its 95% t interval ("—" with one seed), convergence only for runs with 3 evaluations,
//! and a refusal to compare runs of different kinds.

use aligndet_common::artifacts::ArtifactRef;
use aligndet_common::jobs::JobConfig;
use aligndet_common::train_config::{InitConfig, TrainConfig};
use aligndet_studio::*;
use fantoccini::Locator;
use serde_json::{Value, json};

/// Final AP per seed: baseline 0.30 / 0.32 / 0.34, AlignDet 0.40 / 0.41 / 0.45 (paired
/// differences 0.10, 0.09, 0.11: mean 10.0, sd 1.0, t(0.975; 2) = 4.303 → ±2.5 AP).
const AP_BASE: [f64; 3] = [0.30, 0.32, 0.34];
const AP_ALIGNDET: [f64; 3] = [0.40, 0.41, 0.45];

/// Server first so it stops before the database and folders go.
struct Fixture {
    server: Server,
    db: TestDb,
    _data: TempDir,
    aligndet: Vec<i64>,
    baseline: Vec<i64>,
    /// One seed from a label-free backbone, evaluated twice only.
    label_free: i64,
    proposals: i64,
}

fn config(dataset: i64, seed: u64, init: Option<&str>) -> Value {
    let mut c = TrainConfig {
        dataset_id: dataset,
        train_split: format!("5pct_seed{seed}"),
        ..TrainConfig::default()
    };
    (c.optim.batch_size, c.optim.steps, c.optim.seed) = (2, 30, seed);
    if let Some(name) = init {
        c.init = InitConfig::Checkpoint {
            artifact: ArtifactRef {
                run_id: 100 + seed as i64,
                name: name.into(),
            },
        };
        c.optim.lr = 0.015;
    }
    serde_json::to_value(JobConfig::Finetune(c)).unwrap()
}

/// A succeeded fine-tune whose eval/AP reaches `ap` at its last of `evals` evaluations.
fn insert_evaluated_run(db: &TestDb, name: &str, cfg: &Value, ap: f64, evals: usize) -> i64 {
    let id = insert_run(db, "finetune", name, cfg, "succeeded");
    let points: Vec<(&str, i64, f64)> = (1..=evals)
        .map(|k| ("eval/AP", 10 * k as i64, ap * k as f64 / evals as f64))
        .collect();
    insert_metrics(db, id, &points);
    id
}

fn fixture(tag: &str) -> Fixture {
    let db = TestDb::create();
    let data = TempDir::new(&format!("{tag}-data"));
    let server = Server::start(&ServerOptions::new(&db, data.path()));
    let dataset = insert_small_dataset(&db);
    let aligndet = (1..=3u64)
        .map(|s| {
            let cfg = config(dataset, s, Some("pretrained.safetensors"));
            insert_evaluated_run(
                &db,
                &format!("aligndet s{s}"),
                &cfg,
                AP_ALIGNDET[s as usize - 1],
                3,
            )
        })
        .collect();
    let baseline = (1..=3u64)
        .map(|s| {
            let cfg = config(dataset, s, None);
            insert_evaluated_run(
                &db,
                &format!("imagenet s{s}"),
                &cfg,
                AP_BASE[s as usize - 1],
                3,
            )
        })
        .collect();
    let cfg = config(dataset, 1, Some("backbone.safetensors"));
    let label_free = insert_evaluated_run(&db, "label-free s1", &cfg, 0.36, 2);
    db.query(
        "INSERT INTO runs (kind, name, config, status) VALUES ('proposals', 'boxes', \
         '{\"kind\": \"proposals\"}'::jsonb, 'succeeded')",
    );
    let proposals: i64 = db.query("SELECT max(id) FROM runs").parse().unwrap();
    Fixture {
        server,
        db,
        _data: data,
        aligndet,
        baseline,
        label_free,
        proposals,
    }
}

fn ids(runs: &[i64]) -> String {
    runs.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

async fn text_of(c: &fantoccini::Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

#[test]
fn arms_are_named_by_role_with_ap_x100_and_a_paired_interval_in_a_browser() {
    let f = fixture("roles");
    let mut all = f.aligndet.clone();
    all.extend(&f.baseline);
    all.push(f.label_free);
    let url = format!("{}/compare?runs={}", f.server.url, ids(&all));
    let one_seed = format!(
        "{}/compare?runs={},{}",
        f.server.url, f.aligndet[0], f.baseline[0]
    );
    let mixed = format!(
        "{}/compare?runs={},{},{}",
        f.server.url, f.aligndet[0], f.baseline[0], f.proposals
    );
    let driver = ChromeDriver::with_window(1280, 2400);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let c = driver.client_for(&f.server).await;
        c.goto(&url).await.unwrap();
        // Named by role, the settings as the subtitle; the baseline is the reference.
        assert_eq!(text_of(&c, "#arm-0 .arm-label").await, "AlignDet");
        assert_eq!(text_of(&c, "#arm-1 .arm-label").await, "baseline");
        assert_eq!(text_of(&c, "#arm-2 .arm-label").await, "label-free");
        assert_eq!(
            text_of(&c, "#arm-0 .arm-subtitle").await,
            "init=checkpoint pretrained.safetensors, lr=0.015"
        );
        assert!(text_of(&c, "#arm-1").await.contains("(reference)"));
        // The answer first: AP ×100, n per arm, the paired delta and its 95% CI.
        let verdict = text_of(&c, "#verdict").await;
        assert!(verdict.contains("Against the baseline arm"), "{verdict}");
        assert!(
            verdict.contains(
                "AlignDet: +10.0 (95% CI +7.5 to +12.5, paired, n=3) AP \
                 (42.0 ± 2.6 AP (n=3) vs baseline 32.0 ± 2.0 AP (n=3))"
            ),
            "{verdict}"
        );
        assert!(
            verdict.contains("label-free: +4.0 (unpaired: seeds differ, no CI)"),
            "{verdict}"
        );
        let ap_row = text_of(&c, "#stats-table tr[data-stat='AP']").await;
        for want in ["42.0 ± 2.6", "32.0 ± 2.0", "36.0 ± —", "n=3", "n=1"] {
            assert!(ap_row.contains(want), "{want}: {ap_row}");
        }
        assert!(!ap_row.contains("0.420"), "AP ×100 only: {ap_row}");
        let header = text_of(&c, "#stats-table tr").await;
        assert!(header.contains("AlignDet") && header.contains("baseline (reference)"));
        // Convergence: the label-free run was evaluated twice, so it has no row.
        let conv = text_of(&c, "#convergence-runs").await;
        assert!(
            conv.contains("aligndet s1") && conv.contains("imagenet s3"),
            "{conv}"
        );
        assert!(!conv.contains("label-free s1"), "{conv}");

        // One seed a side: a mean difference, no spread, no interval.
        c.goto(&one_seed).await.unwrap();
        let verdict = text_of(&c, "#verdict").await;
        assert!(
            verdict.contains("AlignDet: +10.0 (95% CI —: one seed: no spread) AP"),
            "{verdict}"
        );
        let ap_row = text_of(&c, "#stats-table tr[data-stat='AP']").await;
        assert!(
            ap_row.contains("40.0 ± —") && ap_row.contains("30.0 ± —"),
            "{ap_row}"
        );

        // Runs of different kinds: refused, on a page that says why.
        c.goto(&mixed).await.unwrap();
        assert_eq!(text_of(&c, "h1").await, "422 Unprocessable Entity");
        let body = text_of(&c, "main").await;
        assert!(
            body.contains("runs of different kinds cannot be compared")
                && body.contains(&format!("proposals: #{}", f.proposals)),
            "{body}"
        );
        c.find(Locator::Css("nav.top")).await.unwrap();
        c.close().await.unwrap();
    });
    let r = f
        .server
        .get(&format!("/compare?runs={},{}", f.baseline[0], f.proposals));
    assert_eq!(r.status(), 422);
}

#[test]
fn an_experiments_roles_name_its_arms() {
    let f = fixture("roles-exp");
    // An experiment's baseline on a label-free backbone is its baseline, by its stored role.
    f.db.query(&format!(
        "UPDATE runs SET experiment_role = 'baseline', \
         config = jsonb_set(config, '{{init}}', '{{\"from\": \"checkpoint\", \"artifact\": \
         {{\"run_id\": 7, \"name\": \"backbone.safetensors\"}}}}'::jsonb) \
         WHERE id IN ({})",
        ids(&f.baseline)
    ));
    f.db.query(&format!(
        "UPDATE runs SET experiment_role = 'aligndet' WHERE id IN ({})",
        ids(&f.aligndet)
    ));
    let mut all = f.aligndet.clone();
    all.extend(&f.baseline);
    let r = f
        .server
        .http
        .get(format!(
            "{}/api/v1/compare?runs={}",
            f.server.url,
            ids(&all)
        ))
        .bearer_auth(&f.server.user_token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let c: Value = r.json().unwrap();
    assert_eq!(c["arms"][0]["label"], "AlignDet");
    assert_eq!(c["arms"][1]["label"], "baseline");
    assert_eq!(
        c["baseline"], 1,
        "the experiment's baseline is the reference"
    );
    let d = &c["stats"][0]["arms"][0]["delta"];
    let half = d["ci95"].as_f64().unwrap();
    assert!((half - 4.302653 * 0.01 / 3f64.sqrt()).abs() < 1e-6, "{d}");
}

#[test]
fn the_comparison_fits_a_400_px_screen() {
    let f = fixture("roles-narrow");
    let mut all = f.aligndet.clone();
    all.extend(&f.baseline);
    all.push(f.label_free);
    let driver = ChromeDriver::with_viewport(400, 900);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let c = driver.client_for(&f.server).await;
        c.goto(&format!("{}/compare?runs={}", f.server.url, ids(&all)))
            .await
            .unwrap();
        let widths = c
            .execute(
                "return [document.documentElement.scrollWidth, window.innerWidth];",
                vec![],
            )
            .await
            .unwrap();
        // The wide tables (config differences) scroll inside their own box.
        assert_eq!(widths, json!([400, 400]), "the page scrolls sideways");
        c.close().await.unwrap();
    });
}
