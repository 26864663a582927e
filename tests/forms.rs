//! The training forms as a person uses them: the fields that follow the steps (warm-up,
//! milestones, evaluation and checkpoint intervals) are blank and derived from the steps
//! typed, and a refused value comes back beside its input with everything else as typed.

use aligndet_studio::*;
use fantoccini::Locator;
use serde_json::{Value, json};

/// Six small images with splits train 1–4 and val 5–6.
fn fixture(tag: &str) -> SmallDataset {
    SmallDataset::start(tag, 6, &json!({"train": [1, 2, 3, 4], "val": [5, 6]}))
}

fn stored(db: &TestDb, run: i64) -> Value {
    serde_json::from_str(&db.query(&format!("SELECT config::text FROM runs WHERE id = {run}")))
        .unwrap()
}

/// The fine-tune form as the page serves it (schedule fields blank), with `changes`.
fn finetune_form(dataset: i64, changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = [
        ("kind", "finetune"),
        ("name", "twenty steps"),
        ("train_split", "train"),
        ("val_split", "val"),
        ("detector", "fcos"),
        ("backbone", "efficientnet_lite0"),
        ("init", "imagenet_backbone"),
        ("init_run", ""),
        ("init_artifact", "model.safetensors"),
        ("trainable_backbone_stages", "3"),
        ("min_sizes", "512"),
        ("max_size", "853"),
        ("color_jitter", "0"),
        ("hflip", "on"),
        ("batch_size", "4"),
        ("steps", "1000"),
        ("optimizer", "sgd"),
        ("lr", "0.01"),
        ("momentum", "0.9"),
        ("weight_decay", "0.0001"),
        ("no_decay_norm_and_bias", "on"),
        ("aligned_rule", "on"),
        ("warmup_steps", ""),
        ("schedule", "step"),
        ("milestones", ""),
        ("gamma", "0.1"),
        ("min_factor", "0"),
        ("grad_clip_norm", "10"),
        ("eval_every", ""),
        ("eval_max_images", "0"),
        ("checkpoint_every", ""),
        ("seed", "0"),
        ("loader_threads", "2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([("dataset_id".to_string(), dataset.to_string())])
    .collect();
    for (k, v) in changes {
        match fields.iter_mut().find(|(n, _)| n == k) {
            Some(f) => f.1 = v.to_string(),
            None => fields.push((k.to_string(), v.to_string())),
        }
    }
    fields
}

fn post(f: &SmallDataset, fields: &[(String, String)]) -> reqwest::blocking::Response {
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    f.server.browser_session().post_form("/runs", &pairs)
}

#[test]
fn twenty_steps_derive_the_schedule_and_a_bad_lr_comes_back_beside_its_field() {
    let f = fixture("forms-http");
    let page = f.server.get("/runs/new").text().unwrap();
    assert!(page.contains(
        "name=\"warmup_steps\" type=\"number\" min=\"0\" value=\"\" placeholder=\"100\""
    ));
    assert!(
        page.contains(
            "name=\"eval_every\" type=\"number\" min=\"1\" value=\"\" placeholder=\"250\""
        )
    );
    assert!(page.contains("data-lr-factor=\"1.5\" data-wd-divisor=\"2\""));
    assert!(!page.contains("::"), "no Rust paths on the page");

    // Steps 20, the rest as served: the schedule follows the 20 steps.
    let run = run_id_of(post(&f, &finetune_form(f.dataset, &[("steps", "20")])));
    let c = stored(&f.db, run);
    assert_eq!(c["optim"]["steps"], 20);
    assert_eq!(c["optim"]["warmup_steps"], 2);
    assert_eq!(
        c["optim"]["schedule"],
        json!({"kind": "step", "milestones": [14, 18], "gamma": 0.1})
    );
    assert_eq!(c["eval_every"], 5);
    assert_eq!(c["optim"]["checkpoint_every"], 2);
    // What is typed is kept.
    let typed = run_id_of(post(
        &f,
        &finetune_form(
            f.dataset,
            &[
                ("steps", "20"),
                ("warmup_steps", "0"),
                ("milestones", "15"),
                ("eval_every", "10"),
                ("checkpoint_every", "20"),
            ],
        ),
    ));
    let c = stored(&f.db, typed);
    assert_eq!(c["optim"]["warmup_steps"], 0);
    assert_eq!(
        c["optim"]["schedule"],
        json!({"kind": "step", "milestones": [15], "gamma": 0.1})
    );
    assert_eq!(
        (
            c["eval_every"].clone(),
            c["optim"]["checkpoint_every"].clone()
        ),
        (json!(10), json!(20))
    );

    // lr -1: refused, the message beside the lr input, everything typed kept.
    let runs_before = f.db.query("SELECT count(*) FROM runs");
    let r = post(
        &f,
        &finetune_form(
            f.dataset,
            &[
                ("steps", "20"),
                ("lr", "-1"),
                ("name", "my <run>"),
                ("seed", "9"),
            ],
        ),
    );
    assert_eq!(r.status(), 422);
    let body = r.text().unwrap();
    let summary = form_error(&body).expect("the summary box");
    assert_eq!(summary, "optim.lr: must be in (0, 10)");
    assert!(body.contains("<a href=\"#field-error\">Go to the field</a>"));
    assert!(body.contains(
        "name=\"lr\" type=\"number\" step=\"any\" value=\"-1\" class=\"lr-field\" aria-invalid=\"true\" aria-describedby=\"field-error\" autofocus><small class=\"field-error\" id=\"field-error\">must be in (0, 10)</small>"
    ));
    assert_eq!(
        body.matches("aria-invalid=\"true\"").count(),
        1,
        "one field marked"
    );
    assert!(body.contains("name=\"steps\" type=\"number\" min=\"1\" value=\"20\""));
    assert!(body.contains("name=\"seed\" type=\"number\" min=\"0\" value=\"9\""));
    assert!(body.contains("value=\"my &#60;run&#62;\""));
    // The placeholders follow the steps typed.
    assert!(body.contains("name=\"milestones\" value=\"\" placeholder=\"14, 18\""));
    assert_eq!(f.db.query("SELECT count(*) FROM runs"), runs_before);

    // An error of no field on the form stays in the summary only.
    let r = post(&f, &finetune_form(f.dataset, &[("train_split", "nope")]));
    assert_eq!(r.status(), 422);
    let body = r.text().unwrap();
    assert!(
        body.contains(
            "<small class=\"field-error\" id=\"field-error\">&#34;nope&#34; is not a split"
        ) || body.contains(
            "<small class=\"field-error\" id=\"field-error\">&quot;nope&quot; is not a split"
        ),
        "beside train_split"
    );
}

/// In Chromium: typing Steps updates the placeholders, the queued run follows them, and a
/// refused lr is the focused field when the page comes back.
#[test]
fn in_a_browser_the_placeholders_follow_steps_and_the_bad_field_is_focused() {
    let f = fixture("forms-browser");
    let driver = ChromeDriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let url = f.server.url.clone();
    let run = runtime.block_on(async {
        let c = driver.client_for(&f.server).await;
        c.goto(&format!("{url}/runs/new")).await.unwrap();
        let field = |name: &'static str| {
            let c = c.clone();
            async move {
                c.find(Locator::Css(&format!("#finetune-form [name={name}]")))
                    .await
                    .unwrap()
            }
        };
        let steps = field("steps").await;
        steps.clear().await.unwrap();
        steps.send_keys("20").await.unwrap();
        for (name, expected) in [
            ("warmup_steps", "2"),
            ("milestones", "14, 18"),
            ("eval_every", "5"),
            ("checkpoint_every", "2"),
        ] {
            let placeholder = field(name).await.attr("placeholder").await.unwrap();
            assert_eq!(placeholder.as_deref(), Some(expected), "{name}");
        }
        click(&c, Locator::Id("start-finetune")).await;
        let run_id = |u: &reqwest::Url| {
            let id = u.path().strip_prefix("/runs/")?;
            id.parse::<i64>().ok()
        };
        let id = run_id(&wait_for_url(&c, |u| run_id(u).is_some()).await).unwrap();

        // A bad lr: the page comes back focused on it, with the steps still 20.
        c.goto(&format!("{url}/runs/new")).await.unwrap();
        let steps = field("steps").await;
        steps.clear().await.unwrap();
        steps.send_keys("20").await.unwrap();
        let lr = field("lr").await;
        lr.clear().await.unwrap();
        lr.send_keys("-1").await.unwrap();
        click(&c, Locator::Id("start-finetune")).await;
        let mut focused = Value::Null;
        for _ in 0..40 {
            focused = c
                .execute(
                    "const a = document.activeElement; const r = a.getBoundingClientRect(); return [a.name || '', a.form ? a.form.id : '', r.top >= 0 && r.bottom <= window.innerHeight, document.querySelector('#finetune-form [name=steps]').value];",
                    vec![],
                )
                .await
                .unwrap();
            if focused[0] == "lr" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        assert_eq!(focused, json!(["lr", "finetune-form", true, "20"]));
        let note = c
            .find(Locator::Css("#finetune-form #field-error"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(note, "must be in (0, 10)");
        c.close().await.unwrap();
        id
    });
    let c = stored(&f.db, run);
    assert_eq!(c["optim"]["warmup_steps"], 2);
    assert_eq!(c["optim"]["schedule"]["milestones"], json!([14, 18]));
    assert_eq!(
        (
            c["eval_every"].clone(),
            c["optim"]["checkpoint_every"].clone()
        ),
        (json!(5), json!(2))
    );
}

/// The new-experiment form: a refused number comes back beside its input, the rest as typed.
#[test]
fn the_experiment_form_shows_the_error_beside_its_field() {
    let f = fixture("forms-exp");
    let dataset = f.dataset.to_string();
    let fields = [
        ("name", "exp"),
        ("dataset_id", dataset.as_str()),
        ("detector", "fcos"),
        ("backbone", "efficientnet_lite0"),
        ("proposals", "new"),
        ("pretrain_steps", "40"),
        ("finetune_steps", "30"),
        ("finetune_batch_size", "2"),
        ("finetune_lr", "-1"),
        ("finetune_weight_decay", "0.0002"),
        ("seeds", "1, 2"),
        ("fractions", "5"),
    ];
    let r = f
        .server
        .browser_session()
        .post_form("/experiments", &fields);
    assert_eq!(r.status(), 422);
    let body = r.text().unwrap();
    assert!(body.contains("id=\"form-error\">finetune_lr: must be a positive number"));
    assert!(body.contains(
        "name=\"finetune_lr\" type=\"number\" step=\"any\" value=\"-1\" aria-invalid=\"true\" aria-describedby=\"field-error\" autofocus><small class=\"field-error\" id=\"field-error\">must be a positive number"
    ));
    assert!(body.contains("name=\"seeds\" value=\"1, 2\""));
    assert!(body.contains("name=\"finetune_steps\" type=\"number\" min=\"1\" value=\"30\""));
    // A planner error about the dataset's splits sits beside the fractions.
    let r = f.server.browser_session().post_form(
        "/experiments",
        &fields.map(|(k, v)| match k {
            "finetune_lr" => (k, "0.01"),
            "fractions" => (k, "7"),
            _ => (k, v),
        }),
    );
    assert_eq!(r.status(), 422);
    let body = r.text().unwrap();
    assert!(
        body.contains("name=\"fractions\" value=\"7\" required aria-invalid=\"true\""),
        "{body}"
    );
}

#[test]
fn the_worker_fields_become_the_run_s_requirements_and_a_bad_label_comes_back_beside_its_input() {
    let f = fixture("forms-placement");
    let page = f.server.get("/runs/new").text().unwrap();
    assert!(page.contains("name=\"min_gpu_memory_gb\"") && page.contains("name=\"world_size\""));
    // Blank: what the config needs (two ranks → two devices), priority 0.
    let run = run_id_of(post(
        &f,
        &finetune_form(f.dataset, &[("world_size", "2"), ("batch_size", "4")]),
    ));
    let r = f.server.run(run);
    assert_eq!(r["requirements"]["devices"], 2, "{r}");
    assert_eq!(r["requirements"]["device"], "any");
    assert_eq!(r["priority"], 0);
    // Typed: cuda, 40 GB, labels, priority.
    let run = run_id_of(post(
        &f,
        &finetune_form(
            f.dataset,
            &[
                ("device", "cuda"),
                ("min_gpu_memory_gb", "40"),
                ("labels", "a100 site=lab2"),
                ("priority", "9"),
            ],
        ),
    ));
    let r = f.server.run(run);
    assert_eq!(
        r["requirements"],
        json!({"device": "cuda", "min_gpu_memory_mb": 40960, "devices": 1, "labels": ["a100", "site=lab2"]})
    );
    assert_eq!(r["priority"], 9);
    assert!(
        r["waiting_for_worker"]
            .as_str()
            .unwrap()
            .starts_with("waits for a worker with cuda, ≥ 40 GB")
    );
    // A label that is not a name is refused beside its input, with what was typed kept.
    let resp = post(&f, &finetune_form(f.dataset, &[("labels", "a b;c")]));
    assert_eq!(resp.status(), 422);
    let page = resp.text().unwrap();
    assert!(
        page.contains("requirements.labels"),
        "the error names the field"
    );
    assert!(
        page.contains("name=\"labels\" value=\"a b;c\""),
        "what was typed is kept"
    );
}
