//! The `finetune` job's pages against the real server and Postgres: the new-run form (a valid
//! config stored, invalid ones refused with the field named), the run page of a run fed through
//! the real worker API (curves, final evaluation, load report, downloads) and the predictions
//! browser (boxes per image, threshold, escaping).

use aligndet_studio::*;
use serde_json::{Value, json};

/// Six 64×48 images (classes "red box" and the hostile "<b>bold</b> & co", alternating) with
/// splits train 1–4, val 5–6 and a labeled subset `50pct_seed1` = {1, 3}.
fn fixture(tag: &str) -> SmallDataset {
    let splits = json!({"train": [1, 2, 3, 4], "val": [5, 6], "labeled": {"50pct_seed1": [1, 3]}});
    let f = SmallDataset::start(tag, 6, &splits);
    assert!(
        f.db.query(&format!(
            "SELECT splits IS NOT NULL FROM datasets WHERE id = {}",
            f.dataset
        )) == "t",
        "splits.json was kept with the dataset"
    );
    f
}

/// A complete, valid fine-tune form (what a person would post after changing a few defaults).
fn valid_form(dataset: i64) -> Vec<(&'static str, String)> {
    [
        ("kind", "finetune"),
        ("name", "ft small"),
        ("train_split", "50pct_seed1"),
        ("val_split", "val"),
        ("detector", "retinanet"),
        ("backbone", "resnet18"),
        ("init", "scratch"),
        ("init_run", ""),
        ("init_artifact", "model.safetensors"),
        ("trainable_backbone_stages", "5"),
        ("min_sizes", "320, 384"),
        ("max_size", "640"),
        ("hflip", "on"),
        ("color_jitter", "0.2"),
        ("batch_size", "2"),
        ("steps", "200"),
        ("optimizer", "adamw"),
        ("lr", "0.0002"),
        ("momentum", "0.9"),
        ("weight_decay", "0.05"),
        ("warmup_steps", "10"),
        ("schedule", "cosine"),
        ("milestones", "100, 150"),
        ("gamma", "0.1"),
        ("min_factor", "0.01"),
        ("grad_clip_norm", ""),
        ("eval_every", "50"),
        ("checkpoint_every", "25"),
        ("eval_max_images", "0"),
        ("seed", "7"),
        ("loader_threads", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .chain([("dataset_id", dataset.to_string())])
    .collect()
}

/// The form with some fields replaced (and `no_decay_norm_and_bias` left unticked).
fn post_finetune(
    server: &Server,
    dataset: i64,
    changes: &[(&'static str, &str)],
) -> reqwest::blocking::Response {
    let mut fields = valid_form(dataset);
    for (k, v) in changes {
        match fields.iter_mut().find(|(n, _)| n == k) {
            Some(f) => f.1 = v.to_string(),
            None => fields.push((k, v.to_string())),
        }
    }
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    server.browser_session().post_form("/runs", &pairs)
}

#[test]
fn the_form_queues_a_valid_config_and_names_the_bad_field() {
    let f = fixture("ft-form");
    let page = f.server.get("/runs/new").text().unwrap();
    assert!(page.contains("id=\"finetune-form\""), "fine-tune form");
    // Defaults come from the fine-tuning config's defaults.
    assert!(page.contains("name=\"steps\" type=\"number\" min=\"1\" value=\"1000\""));
    assert!(page.contains("name=\"min_sizes\" value=\"512\""));
    // Milestones follow the steps: blank, with what they will be as the placeholder.
    assert!(page.contains("name=\"milestones\" value=\"\" placeholder=\"700, 900\""));
    assert!(page.contains("<option value=\"efficientnet_lite0\" selected>"));
    assert!(page.contains("<option value=\"imagenet_backbone\" selected>"));
    // The dataset's split names are offered.
    assert!(
        page.contains("<option value=\"50pct_seed1\">"),
        "split names"
    );

    let run = run_id_of(post_finetune(&f.server, f.dataset, &[]));
    let stored: Value = serde_json::from_str(
        &f.db
            .query(&format!("SELECT config::text FROM runs WHERE id = {run}")),
    )
    .unwrap();
    assert_eq!(stored["kind"], "finetune");
    assert_eq!(stored["dataset_id"], f.dataset);
    assert_eq!(stored["train_split"], "50pct_seed1");
    assert_eq!(stored["detector"], "retinanet");
    assert_eq!(stored["backbone"], "resnet18");
    assert_eq!(stored["init"], json!({"from": "scratch"}));
    assert_eq!(
        stored["augment"],
        json!({"min_sizes": [320, 384], "max_size": 640, "hflip": true, "color_jitter": 0.2})
    );
    assert_eq!(stored["optim"]["optimizer"], "adamw");
    assert_eq!(stored["optim"]["lr"], 0.0002);
    assert_eq!(stored["no_decay_norm_and_bias"], false, "unticked box");
    assert_eq!(
        stored["optim"]["schedule"],
        json!({"kind": "cosine", "min_factor": 0.01})
    );
    assert_eq!(
        stored["optim"]["grad_clip_norm"],
        Value::Null,
        "blank clip = none"
    );
    assert_eq!(stored["optim"]["seed"], 7);
    assert_eq!(
        f.db.query(&format!(
            "SELECT kind || ' ' || status FROM runs WHERE id = {run}"
        )),
        "finetune queued"
    );

    // A checkpoint start links the run to its parent.
    let child = run_id_of(post_finetune(
        &f.server,
        f.dataset,
        &[
            ("init", "checkpoint"),
            ("init_run", &run.to_string()),
            ("schedule", "step"),
            ("grad_clip_norm", "5"),
        ],
    ));
    let stored: Value = serde_json::from_str(
        &f.db
            .query(&format!("SELECT config::text FROM runs WHERE id = {child}")),
    )
    .unwrap();
    assert_eq!(
        stored["init"],
        json!({"from": "checkpoint", "artifact": {"run_id": run, "name": "model.safetensors"}})
    );
    assert_eq!(
        stored["optim"]["schedule"],
        json!({"kind": "step", "milestones": [100, 150], "gamma": 0.1})
    );
    assert_eq!(stored["optim"]["grad_clip_norm"], 5.0);
    let page = f.server.get(&format!("/runs/{child}")).text().unwrap();
    assert!(
        page.contains(&format!("href=\"/runs/{run}\"")),
        "parent link"
    );

    let runs_before = f.db.query("SELECT count(*) FROM runs");
    let bad: [(&[(&'static str, &str)], &str); 10] = [
        (&[("batch_size", "0")], "batch_size"),
        (&[("train_split", "../x")], "train_split"),
        (&[("detector", "yolo")], "detector"),
        (
            &[("train_split", "7pct_seed9")],
            "train_split: \"7pct_seed9\" is not a split",
        ),
        (&[("lr", "abc")], "lr: \"abc\" is not a finite number"),
        (&[("grad_clip_norm", "-1")], "grad_clip_norm"),
        (&[("min_sizes", "512, big")], "augment.min_sizes"),
        (
            &[("backbone", "resnet50"), ("init", "imagenet_backbone")],
            "init:",
        ),
        (
            &[("init", "checkpoint"), ("init_run", "99999")],
            "init.artifact.run_id: run 99999 not found",
        ),
        (
            &[
                ("init", "checkpoint"),
                ("init_run", "1"),
                ("init_artifact", "../model"),
            ],
            "init.artifact.name",
        ),
    ];
    for (changes, expected) in bad {
        let r = post_finetune(&f.server, f.dataset, changes);
        refused(r, "finetune-form", expected, &format!("{changes:?}"));
    }
    assert_eq!(
        f.db.query("SELECT count(*) FROM runs"),
        runs_before,
        "nothing stored"
    );
    // What was typed comes back (escaped), so nothing is lost.
    let r = post_finetune(
        &f.server,
        f.dataset,
        &[("batch_size", "0"), ("train_split", "<script>x</script>")],
    );
    let body = r.text().unwrap();
    assert!(body.contains("name=\"batch_size\" type=\"number\" min=\"1\" max=\"256\" value=\"0\""));
    assert!(body.contains("&#60;script&#62;x&#60;/script&#62;"));
    assert!(!body.contains("<script>x</script>"));
}

/// Acting as a worker: register, claim, report, upload, finish.
struct FakeWorker<'a> {
    api: ApiWorker<'a>,
    run: i64,
    attempt: i64,
}

impl FakeWorker<'_> {
    fn claim(server: &Server, run: i64) -> FakeWorker<'_> {
        let api = ApiWorker::register(server, "fake trainer");
        let spec = api.claim().expect("a job to claim");
        assert_eq!(spec["run_id"], run);
        assert_eq!(spec["config"]["kind"], "finetune");
        assert!(
            spec["dataset_content"]["splits"]["val"].is_array(),
            "{spec}"
        );
        FakeWorker {
            api,
            run,
            attempt: spec["attempt"].as_i64().unwrap(),
        }
    }

    fn metrics(&self, points: Vec<(String, i64, f64)>) {
        let points: Vec<Value> = points
            .into_iter()
            .map(|(key, step, value)| json!({"key": key, "step": step, "value": value, "wall_time": 1.0e9}))
            .collect();
        let r = self.api.post(
            &format!("runs/{}/metrics", self.run),
            &json!({"attempt": self.attempt, "points": points}),
        );
        assert!(r.status().is_success(), "metrics: {}", r.status());
    }

    fn upload(&self, name: &str, bytes: Vec<u8>) {
        let r = self.api.put_artifact(self.run, self.attempt, name, bytes);
        assert!(r.status().is_success(), "upload {name}: {}", r.status());
    }

    /// What a fine-tune job leaves: 20 steps of losses, lr and throughput, two evaluations,
    /// the final artifacts (made from the dataset's ground truth), then success.
    fn finish_like_a_finetune_job(&self, f: &SmallDataset) {
        let mut points = Vec::new();
        for step in 1..=20i64 {
            let s = step as f64;
            points.push(("loss/total".to_string(), step, 3.0 / s));
            points.push(("loss/classification".to_string(), step, 1.5 / s));
            points.push(("loss/bbox_regression".to_string(), step, 1.0 / s));
            points.push(("loss/bbox_ctrness".to_string(), step, 0.5 / s));
            points.push(("train/lr".to_string(), step, 0.01 * s / 20.0));
            points.push(("train/images_per_s".to_string(), step, 40.0 + s));
        }
        for (step, base) in [(10i64, 0.2), (20, 0.4)] {
            for (i, name) in COCO_STATS.iter().enumerate() {
                points.push((format!("eval/{name}"), step, base + i as f64 * 0.01));
            }
        }
        self.metrics(points);

        // Artifacts made from the dataset's ground truth.
        self.upload(
            "predictions.json",
            serde_json::to_vec(&predictions_from_gt(f)).unwrap(),
        );
        let eval = json!({
            "stats": [0.4, 0.8, 0.35, -1.0, 0.4, -1.0, 0.5, 0.6, 0.6, -1.0, 0.6, -1.0],
            "per_class": [
                {"category_id": 1, "name": "red box", "ap": 0.5, "ap50": 0.9, "ap75": 0.4, "ar100": 0.7, "num_gt": 1},
                {"category_id": 2, "name": "<b>bold</b> & co", "ap": 0.3, "ap50": 0.7, "ap75": 0.3, "ar100": 0.5, "num_gt": 1}
            ],
            "per_size": [
                {"area": "small", "ap": -1.0, "ar": -1.0},
                {"area": "medium", "ap": 0.4, "ar": 0.6},
                {"area": "large", "ap": -1.0, "ar": -1.0}
            ],
            "pr_curves": [{"name": "red box", "iou": 0.5, "precision": vec![0.9; 101]}],
            "num_images": 2, "num_detections": 5, "seconds": 0.01
        });
        self.upload("eval.json", serde_json::to_vec(&eval).unwrap());
        let load = json!({
            "source": "checkpoint run 1 artifact model.safetensors",
            "loaded": ["backbone.body.conv1.weight", "backbone.body.bn1.weight"],
            "missing": ["head.classification_head.cls_logits.weight"],
            "unexpected": ["momentum.<encoder>.weight"],
            "shape_mismatch": [["head.classification_head.cls_logits.bias", [2], [80]]]
        });
        self.upload("load_report.json", serde_json::to_vec(&load).unwrap());
        self.upload("model.safetensors", b"weights".to_vec());
        self.succeed();
    }

    fn succeed(&self) {
        let r = self.api.post(
            &format!("runs/{}/status", self.run),
            &json!({"attempt": self.attempt, "status": "succeeded"}),
        );
        assert!(r.status().is_success(), "status: {}", r.status());
    }
}

/// Predictions made from the dataset's ground truth: on each val image (5, 6) its GT box at
/// 0.9 and a stray box at 0.1, on image 5 also a 0.5 box of the hostile class, and one box on
/// image 1, outside the val split.
fn predictions_from_gt(f: &SmallDataset) -> Vec<Value> {
    let gt: Value =
        serde_json::from_slice(&std::fs::read(f.imports.path().join("annotations.json")).unwrap())
            .unwrap();
    let mut predictions = Vec::new();
    for a in gt["annotations"].as_array().unwrap() {
        let image = a["image_id"].as_i64().unwrap();
        if image == 1 {
            predictions
                .push(json!({"image_id": 1, "category_id": 1, "bbox": a["bbox"], "score": 0.9}));
        }
        if image < 5 {
            continue;
        }
        predictions.push(json!({"image_id": image, "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}));
        predictions.push(
            json!({"image_id": image, "category_id": 1, "bbox": [40, 30, 10, 10], "score": 0.1}),
        );
        if image == 5 {
            predictions.push(
                json!({"image_id": 5, "category_id": 2, "bbox": [2, 2, 12, 8], "score": 0.5}),
            );
        }
    }
    predictions
}

const COCO_STATS: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

/// The slice of the page from an element with this id to the end of its figure.
fn figure<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no {id}"));
    let rest = &page[start..];
    &rest[..rest.find("</figure>").expect("figure end")]
}

#[test]
fn a_finished_run_shows_curves_evaluation_load_report_and_predictions() {
    let f = fixture("ft-run");
    let run = run_id_of(post_finetune(&f.server, f.dataset, &[]));
    // Before any artifact: the browser says so instead of failing.
    let r = f.server.get(&format!("/runs/{run}/predictions"));
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("id=\"no-predictions\""));

    FakeWorker::claim(&f.server, run).finish_like_a_finetune_job(&f);

    let page = f.server.get(&format!("/runs/{run}")).text().unwrap();
    for key in ["loss", "eval-ap", "lr", "train/images_per_s"] {
        assert!(page.contains(&format!("data-key=\"{key}\"")), "chart {key}");
    }
    assert!(
        !page.contains("data-key=\"eval/APs\"") && !page.contains("data-key=\"loss/total\""),
        "grouped series are not drawn again one by one"
    );
    for term in ["loss/total", "loss/classification", "loss/bbox_ctrness"] {
        assert!(page.contains(term), "loss legend {term}");
    }
    let history = page
        .split("id=\"eval-history\"")
        .nth(1)
        .expect("evaluation history");
    assert!(history.contains("<td>10</td>") && history.contains("<td>20</td>"));
    assert!(history.contains("<td>0.400</td>"), "AP at step 20");
    assert!(
        page.contains("id=\"coco-stats\"") && page.contains("0.800"),
        "final stats"
    );
    assert!(page.contains("id=\"per-class\"") && page.contains("id=\"per-size\""));
    assert!(
        page.contains("&#60;b&#62;bold&#60;/b&#62; &#38; co"),
        "escaped class name"
    );
    assert!(!page.contains("<b>bold</b>"), "hostile class name not raw");
    assert!(page.contains("id=\"load-report\""));
    assert!(page.contains("checkpoint run 1 artifact model.safetensors"));
    assert!(
        page.contains("<td>2</td><td>1</td><td>1</td><td>1</td>"),
        "loaded / missing / unexpected / mismatched counts"
    );
    assert!(page.contains("head.classification_head.cls_logits.weight"));
    assert!(page.contains("momentum.&#60;encoder&#62;.weight"));
    assert!(page.contains("<td>[2]</td><td>[80]</td>"), "shapes");
    assert!(page.contains(&format!("href=\"/runs/{run}/artifacts/model.safetensors\"")));
    assert!(page.contains(&format!("href=\"/runs/{run}/artifacts/predictions.json\"")));
    assert!(page.contains(&format!("href=\"/runs/{run}/predictions\"")));
    // The live fragment (what server-sent events refresh) carries the grouped charts too.
    let live = f.server.get(&format!("/runs/{run}/live")).text().unwrap();
    assert!(live.contains("data-key=\"loss\"") && live.contains("id=\"eval-history\""));

    let r = f.server.get(&format!("/runs/{run}/predictions"));
    assert_eq!(r.status(), 200);
    let page = r.text().unwrap();
    assert!(
        !page.contains("id=\"pred-image-1\""),
        "only val images are shown"
    );
    assert!(page.contains("1 more on images outside the split"));
    let five = figure(&page, "pred-image-5");
    // The 0.9 box on the ground truth is a true positive, the 0.5 box of the other class a
    // false positive; the 0.1 box is below the opening threshold 0.3 and not drawn.
    assert_eq!(five.matches("<g class=\"pred").count(), 2, "{five}");
    assert_eq!(
        five.matches("<g class=\"pred pred-tp\"").count(),
        1,
        "{five}"
    );
    assert_eq!(
        five.matches("<g class=\"pred pred-fp\"").count(),
        1,
        "{five}"
    );
    assert_eq!(five.matches("class=\"gt-box\"").count(), 1);
    assert!(five.contains("<g class=\"gt gt-matched\""), "{five}");
    assert!(five.contains(
        "TP 1</span> <span class=\"outcome-fp\">FP 1</span> <span class=\"outcome-fn\">FN 0"
    ));
    assert!(
        five.contains("&#60;b&#62;bold&#60;/b&#62; &#38; co 0.500: false positive"),
        "hover text"
    );
    let six = figure(&page, "pred-image-6");
    assert_eq!(six.matches("<g class=\"pred").count(), 1);
    assert!(page.contains("&#60;b&#62;bold&#60;/b&#62; &#38; co"));
    assert!(!page.contains("<b>bold</b>"), "hostile class name not raw");
    assert!(page.contains(&format!("src=\"/datasets/{}/images/5\"", f.dataset)));
    assert!(page.contains(
        "TP 2</span> · <span class=\"outcome-fp\">FP 1</span> · <span class=\"outcome-fn\">FN 0"
    ));
    // A lower threshold in the URL shows the low-score boxes too, as false positives.
    let page = f
        .server
        .get(&format!("/runs/{run}/predictions?threshold=0.05"))
        .text()
        .unwrap();
    let five = figure(&page, "pred-image-5");
    assert_eq!(five.matches("<g class=\"pred").count(), 3);
    assert_eq!(five.matches("<g class=\"pred pred-fp\"").count(), 2);

    // Other kinds have no predictions browser.
    let bench = f.server.create_run("bench", json!({"kind": "benchmark"}));
    assert_eq!(
        f.server.get(&format!("/runs/{bench}/predictions")).status(),
        404
    );
}

#[test]
fn the_threshold_field_and_class_toggles_filter_boxes_in_a_browser() {
    let f = fixture("ft-browser");
    let run = run_id_of(post_finetune(&f.server, f.dataset, &[]));
    FakeWorker::claim(&f.server, run).finish_like_a_finetune_job(&f);
    let driver = ChromeDriver::start();
    let url = format!("{}/runs/{run}/predictions", f.server.url);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        use fantoccini::Locator;
        let c = driver.client_for(&f.server).await;
        c.goto(&url).await.unwrap();
        let count = async |css: &str| c.find_all(Locator::Css(css)).await.unwrap().len();
        assert_eq!(count("#pred-image-5 g.pred").await, 2, "0.1 < 0.30");
        // A threshold of 0.6 through the form: the 0.5 box goes too, and the URL keeps it.
        c.execute(
            "document.getElementById('score-threshold').value = '0.6';",
            vec![],
        )
        .await
        .unwrap();
        click(&c, Locator::Id("apply-view")).await;
        wait_for_query(&c, "threshold=0.6").await;
        assert_eq!(
            count("#pred-image-5 g.pred").await,
            1,
            "0.1 and 0.5 left out"
        );
        let field = c.find(Locator::Id("score-threshold")).await.unwrap();
        assert_eq!(field.prop("value").await.unwrap().as_deref(), Some("0.6"));
        // The hostile class, shown as text, and its toggle hides its boxes, GT included.
        let toggles = c.find(Locator::Id("class-counts")).await.unwrap();
        assert!(toggles.text().await.unwrap().contains("<b>bold</b> & co"));
        click(&c, Locator::Css(".class-toggle[data-cat='2']")).await;
        assert_eq!(
            count("#pred-image-6 g.gt.hide-box").await,
            1,
            "class 2 GT hidden"
        );
        assert_eq!(count("#pred-image-6 g.pred.hide-box").await, 1);
        c.close().await.unwrap();
    });
}
