//! The pre-training pages against the real server and Postgres: the `pretrain_box` and
//! `pretrain_image` forms (resolved configs stored, per-detector defaults, bad values and wrong
//! input runs refused with the field named), fine-tuning from a pre-trained detector (AlignDet's
//! lr ×1.5 / wd ÷2 by default, detector and backbone must match), and the run pages of both
//! kinds (grouped curves, pseudo-box source, artifacts, pre-filled next-step links, load report
//! per module). Input runs, metrics and artifacts are inserted directly: no worker is needed.

use aligndet_studio::*;
use serde_json::{Value, json};

/// A name that must never reach a page unescaped.
const HOSTILE: &str = "<script>alert('x')</script> & \"co\"";
const HOSTILE_ESCAPED: &str =
    "&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62; &#38; &#34;co&#34;";

/// Server first so it stops before the database and folders go.
struct Fixture {
    server: Server,
    db: TestDb,
    data: TempDir,
    dataset: i64,
    /// A second dataset (only its row), for runs of "another dataset".
    other_dataset: i64,
    /// A succeeded proposals run of `dataset` (hostile name), with kept boxes on 2 images.
    proposals: i64,
    /// A succeeded proposals run of `other_dataset`.
    other_proposals: i64,
    /// A succeeded fine-tune run (not a proposals run).
    finetune: i64,
    /// A succeeded pretrain_image run of efficientnet_lite0 with its backbone.safetensors.
    image_run: i64,
    /// A succeeded pretrain_image run of resnet18.
    image_run_r18: i64,
    /// A succeeded pretrain_box run (FCOS, efficientnet_lite0) with pretrained.safetensors.
    box_run: i64,
    _imports: TempDir,
}

/// Insert a run as if a worker had finished it; returns its id.
fn insert_run(db: &TestDb, kind: &str, name: &str, config: Value, status: &str) -> i64 {
    let dataset = config["dataset_id"]
        .as_i64()
        .map_or("NULL".to_string(), |d| d.to_string());
    let out = db.query(&format!(
        "INSERT INTO runs (kind, name, config, status, dataset_id) \
         VALUES ('{kind}', $q${name}$q$, $q${config}$q$::jsonb, '{status}', {dataset}) RETURNING id"
    ));
    out.lines().next().unwrap().trim().parse().unwrap()
}

/// A run's artifact: the file in the store and its row.
fn insert_artifact(f_data: &TempDir, db: &TestDb, run: i64, name: &str, bytes: &[u8]) {
    let dir = f_data.path().join("artifacts").join(run.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
    db.query(&format!(
        "INSERT INTO artifacts (run_id, name, bytes, attempt) VALUES ({run}, '{name}', {}, 1)",
        bytes.len()
    ));
}

/// Metric points `(key, step, value)` of a run.
fn insert_metrics(db: &TestDb, run: i64, points: &[(&str, i64, f64)]) {
    let values: Vec<String> = points
        .iter()
        .map(|(k, step, v)| format!("({run}, '{k}', {step}, {v}, 1e9, 1)"))
        .collect();
    db.query(&format!(
        "INSERT INTO metrics (run_id, key, step, value, wall_time, attempt) VALUES {}",
        values.join(", ")
    ));
}

fn fixture(tag: &str) -> Fixture {
    let splits = json!({"train": [1, 2, 3, 4], "val": [5, 6], "labeled": {"50pct_seed1": [1, 3]}});
    let SmallDataset {
        server,
        db,
        dataset,
        data,
        imports,
    } = SmallDataset::start(tag, 6, &splits);
    let other_dataset: i64 = db
        .query(
            "INSERT INTO datasets (name, format, source, image_root, annotations_path, num_images, num_annotations, splits) \
             VALUES ('other', 'coco', 'x', '/nonexistent', '/nonexistent/a.json', 0, 0, '{\"train\": [], \"val\": []}') RETURNING id",
        )
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let proposals = insert_run(
        &db,
        "proposals",
        HOSTILE,
        json!({"kind": "proposals", "dataset_id": dataset}),
        "succeeded",
    );
    // Image 1: 3 boxes, 2 kept; image 2: 2 boxes, 1 kept.
    db.query(&format!(
        "INSERT INTO proposal_images (run_id, image_id, boxes, removed_by, seconds, attempt) VALUES \
         ({proposals}, 1, '{{0,0,10,10, 5,5,20,20, 1,1,2,2}}', '{{0,0,1}}', 0.1, 1), \
         ({proposals}, 2, '{{0,0,30,30, 2,2,4,4}}', '{{0,2}}', 0.1, 1)"
    ));
    let other_proposals = insert_run(
        &db,
        "proposals",
        "other boxes",
        json!({"kind": "proposals", "dataset_id": other_dataset}),
        "succeeded",
    );
    let finetune = insert_run(
        &db,
        "finetune",
        "earlier fine-tune",
        json!({"kind": "finetune", "dataset_id": dataset}),
        "succeeded",
    );
    insert_artifact(&data, &db, finetune, "model.safetensors", b"model");
    let image_run = insert_run(
        &db,
        "pretrain_image",
        "moco lite0",
        json!({"kind": "pretrain_image", "dataset_id": dataset, "backbone": "efficientnet_lite0"}),
        "succeeded",
    );
    insert_artifact(&data, &db, image_run, "backbone.safetensors", b"backbone");
    let image_run_r18 = insert_run(
        &db,
        "pretrain_image",
        "moco r18",
        json!({"kind": "pretrain_image", "dataset_id": dataset, "backbone": "resnet18"}),
        "succeeded",
    );
    let box_run = insert_run(
        &db,
        "pretrain_box",
        "aligndet fcos",
        json!({"kind": "pretrain_box", "dataset_id": dataset, "proposals_run_id": proposals,
               "detector": "fcos", "backbone": "efficientnet_lite0"}),
        "succeeded",
    );
    insert_artifact(&data, &db, box_run, "pretrained.safetensors", b"weights");
    Fixture {
        server,
        db,
        data,
        dataset,
        other_dataset,
        proposals,
        other_proposals,
        finetune,
        image_run,
        image_run_r18,
        box_run,
        _imports: imports,
    }
}

/// A complete, valid box-domain pre-training form.
fn box_form(f: &Fixture) -> Vec<(&'static str, String)> {
    [
        ("kind", "pretrain_box"),
        ("name", "box pretrain"),
        ("split", "train"),
        ("detector", "fcos"),
        ("backbone", "efficientnet_lite0"),
        ("backbone_init", "imagenet_backbone"),
        ("max_boxes_per_image", "30"),
        ("box_selection", "random"),
        ("min_sizes", "320, 352"),
        ("max_size", "600"),
        ("hflip", "on"),
        ("embedding_dim", "128"),
        ("temperature", "0.3"),
        ("ema_momentum", "0.99"),
        ("samples", "512"),
        ("contrastive_weight", "1"),
        ("regression_weight", "2"),
        ("batch_size", "2"),
        ("steps", "300"),
        ("optimizer", "sgd"),
        ("lr", "0.005"),
        ("momentum", "0.9"),
        ("weight_decay", "0.0001"),
        ("warmup_steps", "20"),
        ("schedule", "step"),
        ("milestones", "200, 280"),
        ("gamma", "0.1"),
        ("min_factor", "0"),
        ("grad_clip_norm", ""),
        ("checkpoint_every", "50"),
        ("seed", "3"),
        ("loader_threads", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .chain([
        ("dataset_id", f.dataset.to_string()),
        ("proposals_run_id", f.proposals.to_string()),
    ])
    .collect()
}

/// A complete, valid image-domain pre-training form.
fn image_form(f: &Fixture) -> Vec<(&'static str, String)> {
    [
        ("kind", "pretrain_image"),
        ("name", "moco"),
        ("split", "train"),
        ("backbone", "resnet18"),
        ("init", "scratch"),
        ("crop_size", "96"),
        ("queue_size", "64"),
        ("embedding_dim", "64"),
        ("hidden_dim", "256"),
        ("temperature", "0.2"),
        ("key_momentum", "0.99"),
        ("batch_size", "8"),
        ("steps", "100"),
        ("optimizer", "sgd"),
        ("lr", "0.03"),
        ("momentum", "0.9"),
        ("weight_decay", "0.0001"),
        ("warmup_steps", "0"),
        ("schedule", "cosine"),
        ("milestones", ""),
        ("gamma", "0.1"),
        ("min_factor", "0"),
        ("grad_clip_norm", ""),
        ("checkpoint_every", "20"),
        ("seed", "1"),
        ("loader_threads", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .chain([("dataset_id", f.dataset.to_string())])
    .collect()
}

/// A complete, valid fine-tune form starting from the fixture's pre-trained detector.
fn finetune_form(f: &Fixture) -> Vec<(&'static str, String)> {
    [
        ("kind", "finetune"),
        ("name", "ft aligned"),
        ("train_split", "train"),
        ("val_split", "val"),
        ("detector", "fcos"),
        ("backbone", "efficientnet_lite0"),
        ("init_run", ""),
        ("init_artifact", "model.safetensors"),
        ("aligned_rule", "on"),
        ("trainable_backbone_stages", "3"),
        ("min_sizes", "512"),
        ("max_size", "853"),
        ("hflip", "on"),
        ("color_jitter", "0"),
        ("batch_size", "2"),
        ("steps", "100"),
        ("optimizer", "sgd"),
        ("lr", "0.01"),
        ("momentum", "0.9"),
        ("weight_decay", "0.0001"),
        ("warmup_steps", "10"),
        ("schedule", "step"),
        ("milestones", "70, 90"),
        ("gamma", "0.1"),
        ("min_factor", "0"),
        ("grad_clip_norm", "10"),
        ("eval_every", "50"),
        ("checkpoint_every", "50"),
        ("eval_max_images", "0"),
        ("seed", "0"),
        ("loader_threads", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .chain([
        ("dataset_id", f.dataset.to_string()),
        (
            "init",
            format!("checkpoint:{}:pretrained.safetensors", f.box_run),
        ),
    ])
    .collect()
}

/// A field to replace (or add), or to remove when the value is `None`.
type Change<'a> = (&'static str, Option<&'a str>);

/// Post `form` with some fields replaced (or added), or removed when the value is `None`.
fn post(
    f: &Fixture,
    mut form: Vec<(&'static str, String)>,
    changes: &[Change],
) -> reqwest::blocking::Response {
    for (k, v) in changes {
        form.retain(|(n, _)| n != k);
        if let Some(v) = v {
            form.push((k, v.to_string()));
        }
    }
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    f.server.browser_session().post_form("/runs", &pairs)
}

fn run_id_of(r: reqwest::blocking::Response) -> i64 {
    let url = r.url().clone();
    let status = r.status();
    let body = r.text().unwrap();
    url.path()
        .strip_prefix("/runs/")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| {
            let error = body
                .split("id=\"form-error\">")
                .nth(1)
                .unwrap_or("")
                .split("</div>")
                .next()
                .unwrap_or("");
            panic!("not redirected to a run page ({status}): {error}")
        })
}

/// The stored (resolved) config of a run.
fn stored(f: &Fixture, run: i64) -> Value {
    serde_json::from_str(
        &f.db
            .query(&format!("SELECT config::text FROM runs WHERE id = {run}")),
    )
    .unwrap()
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64()
        .is_some_and(|a| (a - b).abs() <= 1e-12 * b.abs().max(1e-12))
}

/// A refused form: 422, the form re-rendered, and the error box naming the problem.
fn refused(r: reqwest::blocking::Response, form_id: &str, expected: &str, what: &str) -> String {
    assert_eq!(r.status(), 422, "{what}");
    let body = r.text().unwrap();
    let error = body
        .split("id=\"form-error\">")
        .nth(1)
        .and_then(|rest| rest.split("</div>").next())
        .unwrap_or_else(|| panic!("no error box for {what}"))
        .replace("&#34;", "\"")
        .replace("&#35;", "#");
    assert!(
        error.contains(expected),
        "{what}: error {error:?} should contain {expected:?}"
    );
    assert!(
        body.contains(&format!("id=\"{form_id}\"")),
        "{what}: form re-rendered"
    );
    body
}

#[test]
fn the_pretraining_forms_queue_resolved_configs_and_name_bad_fields() {
    let f = fixture("pt-forms");
    let page = f.server.get("/runs/new").text().unwrap();
    assert!(page.contains("id=\"pretrain-box-form\""), "box form");
    assert!(page.contains("id=\"pretrain-image-form\""), "image form");
    // The proposals runs with their kept boxes, the hostile name escaped.
    assert!(
        page.contains(&format!(
            "<option value=\"{}\" data-dataset=\"{}\">#{} {HOSTILE_ESCAPED} (3 kept boxes on 2 images)</option>",
            f.proposals, f.dataset, f.proposals
        )),
        "proposals choice"
    );
    assert!(!page.contains(HOSTILE), "hostile name not raw");
    // The pretrain_image runs are offered as backbones.
    assert!(page.contains(&format!(
        "value=\"checkpoint:{}:backbone.safetensors\"",
        f.image_run
    )));
    // Defaults come from PretrainBoxConfig / PretrainImageConfig, and the per-detector ones
    // are there for the script.
    assert!(page.contains("name=\"temperature\" type=\"number\" step=\"any\" value=\"0.5\""));
    assert!(page.contains(
        "name=\"ema_momentum\" type=\"number\" step=\"any\" min=\"0\" max=\"1\" value=\"0.996\""
    ));
    assert!(page.contains("name=\"milestones\" value=\"\" placeholder=\"667, 917\""));
    assert!(page.contains("name=\"queue_size\" type=\"number\" min=\"0\" value=\"4096\""));
    assert!(page.contains("data-detector-defaults=\""));
    assert!(
        page.contains("&#34;lr&#34;:0.02"),
        "Faster R-CNN's lr for the script"
    );

    // A valid box-domain form: stored as typed, with the pretrain_image backbone.
    let run = run_id_of(post(
        &f,
        box_form(&f),
        &[(
            "backbone_init",
            Some(&format!("checkpoint:{}:backbone.safetensors", f.image_run)),
        )],
    ));
    let c = stored(&f, run);
    assert_eq!(c["kind"], "pretrain_box");
    assert_eq!(c["dataset_id"], f.dataset);
    assert_eq!(c["proposals_run_id"], f.proposals);
    assert_eq!(c["detector"], "fcos");
    assert_eq!(
        c["backbone_init"],
        json!({"from": "checkpoint", "artifact": {"run_id": f.image_run, "name": "backbone.safetensors"}})
    );
    assert_eq!(c["max_boxes_per_image"], 30);
    assert_eq!(c["box_selection"], "random");
    assert_eq!(
        c["views"],
        json!({"min_sizes": [320, 352], "max_size": 600, "hflip": true, "color_ops": false})
    );
    assert!(close(&c["temperature"], 0.3) && close(&c["ema_momentum"], 0.99));
    assert_eq!(c["samples"], 512);
    assert!(close(&c["regression_weight"], 2.0));
    assert!(close(&c["optim"]["lr"], 0.005));
    assert_eq!(
        c["optim"]["schedule"],
        json!({"kind": "step", "milestones": [200, 280], "gamma": 0.1})
    );
    assert_eq!(c["optim"]["grad_clip_norm"], Value::Null);
    assert_eq!(c["optim"]["seed"], 3);
    let r = f.server.run(run);
    assert_eq!(r["status"], "queued");
    // Its inputs are its parents.
    let page = f.server.get(&format!("/runs/{run}")).text().unwrap();
    assert!(page.contains(&format!("href=\"/runs/{}\"", f.proposals)));
    assert!(page.contains(&format!("href=\"/runs/{}\"", f.image_run)));

    // Blank detector fields take the chosen detector's reference values.
    let blank: [Change; 3] = [
        ("max_boxes_per_image", Some("")),
        ("samples", Some("")),
        ("lr", Some("")),
    ];
    let retina = run_id_of(post(
        &f,
        box_form(&f),
        &[blank.as_slice(), &[("detector", Some("retinanet"))]].concat(),
    ));
    let c = stored(&f, retina);
    assert_eq!(c["max_boxes_per_image"], 50, "RetinaNet keeps the first 50");
    assert_eq!(c["samples"], 2048);
    assert!(close(&c["optim"]["lr"], 0.01));
    let frcnn = run_id_of(post(
        &f,
        box_form(&f),
        &[blank.as_slice(), &[("detector", Some("faster_rcnn"))]].concat(),
    ));
    let c = stored(&f, frcnn);
    assert_eq!(c["max_boxes_per_image"], 0);
    assert_eq!(c["samples"], 4096, "Faster R-CNN samples 4096");
    assert!(close(&c["optim"]["lr"], 0.02), "Faster R-CNN lr 0.02");

    // A valid image-domain form.
    let moco = run_id_of(post(&f, image_form(&f), &[]));
    let c = stored(&f, moco);
    assert_eq!(c["kind"], "pretrain_image");
    assert_eq!(c["backbone"], "resnet18");
    assert_eq!(c["init"], json!({"from": "scratch"}));
    assert_eq!(c["crop_size"], 96);
    assert_eq!(c["queue_size"], 64);
    assert_eq!(c["hidden_dim"], 256);
    assert!(close(&c["key_momentum"], 0.99));
    assert_eq!(
        c["optim"]["schedule"],
        json!({"kind": "cosine", "min_factor": 0.0})
    );
    assert_eq!(c["optim"]["checkpoint_every"], 20);

    // Bad values and wrong input runs: refused, the field named, nothing stored.
    let runs_before = f.db.query("SELECT count(*) FROM runs");
    let other = f.other_proposals.to_string();
    let finetune = f.finetune.to_string();
    let r18_backbone = format!("checkpoint:{}:backbone.safetensors", f.image_run_r18);
    let box_run_as_backbone = format!("checkpoint:{}:backbone.safetensors", f.box_run);
    let bad_box: Vec<(Vec<Change>, String)> = vec![
        (vec![("temperature", Some("0"))], "temperature".into()),
        (
            vec![("temperature", Some("warm"))],
            "temperature: \"warm\" is not a finite number".into(),
        ),
        (vec![("ema_momentum", Some("1.5"))], "ema_momentum".into()),
        (vec![("samples", Some("8"))], "samples".into()),
        (
            vec![("min_sizes", Some("320, x"))],
            "views.min_sizes".into(),
        ),
        (vec![("max_size", Some("100"))], "views.max_size".into()),
        (vec![("detector", Some("yolo"))], "detector".into()),
        (
            vec![("split", Some("7pct_seed9"))],
            "split: \"7pct_seed9\" is not a split".into(),
        ),
        (
            vec![("proposals_run_id", Some(&other))],
            format!(
                "proposals_run_id: proposals run #{} made pseudo-boxes for another dataset (#{})",
                f.other_proposals, f.other_dataset
            ),
        ),
        (
            vec![("proposals_run_id", Some(&finetune))],
            format!(
                "proposals_run_id: run #{} is a finetune run, not a proposals run",
                f.finetune
            ),
        ),
        (
            vec![("proposals_run_id", Some("99999"))],
            "proposals_run_id: run 99999 not found".into(),
        ),
        (
            vec![("backbone_init", Some(&r18_backbone))],
            format!(
                "backbone_init: run #{} pre-trained a resnet18 backbone, not efficientnet_lite0",
                f.image_run_r18
            ),
        ),
        (
            vec![("backbone_init", Some(&box_run_as_backbone))],
            format!(
                "backbone_init: run #{} is a pretrain_box run, not a pretrain_image run",
                f.box_run
            ),
        ),
        (
            vec![("backbone", Some("resnet50"))],
            "backbone_init: ImageNet weights are shipped only".into(),
        ),
    ];
    for (changes, expected) in &bad_box {
        refused(
            post(&f, box_form(&f), changes),
            "pretrain-box-form",
            expected,
            &format!("{changes:?}"),
        );
    }
    let bad_image: [(&[Change], &str); 4] = [
        (&[("temperature", Some("0"))], "temperature"),
        (&[("queue_size", Some("100"))], "queue_size"),
        (&[("batch_size", Some("1"))], "batch_size"),
        (
            &[
                ("backbone", Some("resnet50")),
                ("init", Some("imagenet_backbone")),
            ],
            "init:",
        ),
    ];
    for (changes, expected) in bad_image {
        refused(
            post(&f, image_form(&f), changes),
            "pretrain-image-form",
            expected,
            &format!("{changes:?}"),
        );
    }
    assert_eq!(
        f.db.query("SELECT count(*) FROM runs"),
        runs_before,
        "nothing stored"
    );
    // What was typed comes back (escaped) in the form that was posted.
    let body = refused(
        post(
            &f,
            box_form(&f),
            &[("temperature", Some("0")), ("name", Some(HOSTILE))],
        ),
        "pretrain-box-form",
        "temperature",
        "typed values",
    );
    let form = &body[body.find("id=\"pretrain-box-form\"").unwrap()..];
    assert!(form.contains("name=\"temperature\" type=\"number\" step=\"any\" value=\"0\""));
    assert!(form.contains("name=\"max_boxes_per_image\" type=\"number\" min=\"0\" value=\"30\""));
    assert!(form.contains(HOSTILE_ESCAPED));
    assert!(!body.contains(HOSTILE));
}

#[test]
fn fine_tuning_from_a_pretrained_detector_takes_the_aligndet_rule() {
    let f = fixture("pt-finetune");
    let init = format!("checkpoint:{}:pretrained.safetensors", f.box_run);
    let page = f.server.get("/runs/new").text().unwrap();
    // The init choice lists the pre-trained detector, the pre-trained backbones and the
    // fine-tuned model.
    for (run, artifact) in [
        (f.box_run, "pretrained.safetensors"),
        (f.image_run, "backbone.safetensors"),
        (f.finetune, "model.safetensors"),
    ] {
        assert!(
            page.contains(&format!(
                "<option value=\"checkpoint:{run}:{artifact}\" data-kind="
            )),
            "checkpoint {run} {artifact}"
        );
    }
    assert!(page.contains("name=\"aligned_rule\" id=\"ft-aligned-rule\" checked"));
    assert!(page.contains("<span id=\"ft-aligned-numbers\">lr 0.015, weight decay 0.00005</span>"));

    // By default: lr ×1.5 and weight decay ÷2.
    let run = run_id_of(post(&f, finetune_form(&f), &[]));
    let c = stored(&f, run);
    assert_eq!(
        c["init"],
        json!({"from": "checkpoint", "artifact": {"run_id": f.box_run, "name": "pretrained.safetensors"}})
    );
    assert!(close(&c["optim"]["lr"], 0.015), "lr {}", c["optim"]["lr"]);
    assert!(
        close(&c["optim"]["weight_decay"], 5e-5),
        "wd {}",
        c["optim"]["weight_decay"]
    );
    let page = f.server.get(&format!("/runs/{run}")).text().unwrap();
    assert!(
        page.contains(&format!("href=\"/runs/{}\"", f.box_run)),
        "parent"
    );
    // Unticked: the numbers as typed.
    let plain = run_id_of(post(&f, finetune_form(&f), &[("aligned_rule", None)]));
    let c = stored(&f, plain);
    assert!(
        close(&c["optim"]["lr"], 0.01) && close(&c["optim"]["weight_decay"], 1e-4),
        "{c}"
    );
    // The rule is for pre-trained detectors only: a fine-tuned model's weights keep the numbers.
    let from_ft = run_id_of(post(
        &f,
        finetune_form(&f),
        &[(
            "init",
            Some(&format!("checkpoint:{}:model.safetensors", f.finetune)),
        )],
    ));
    assert!(close(&stored(&f, from_ft)["optim"]["lr"], 0.01));
    // A pre-trained backbone of the same kind is fine, without the rule.
    let from_backbone = run_id_of(post(
        &f,
        finetune_form(&f),
        &[(
            "init",
            Some(&format!("checkpoint:{}:backbone.safetensors", f.image_run)),
        )],
    ));
    assert!(close(&stored(&f, from_backbone)["optim"]["lr"], 0.01));

    // Detector and backbone must be the pre-trained ones.
    let runs_before = f.db.query("SELECT count(*) FROM runs");
    refused(
        post(&f, finetune_form(&f), &[("detector", Some("retinanet"))]),
        "finetune-form",
        &format!(
            "init: run #{} pre-trained fcos on efficientnet_lite0; this fine-tune is retinanet on efficientnet_lite0",
            f.box_run
        ),
        "other detector",
    );
    refused(
        post(
            &f,
            finetune_form(&f),
            &[
                ("backbone", Some("resnet18")),
                (
                    "init",
                    Some(&format!("checkpoint:{}:backbone.safetensors", f.image_run)),
                ),
            ],
        ),
        "finetune-form",
        "init: run #",
        "other backbone",
    );
    let body = refused(
        post(
            &f,
            finetune_form(&f),
            &[("init", Some("checkpoint:99999:pretrained.safetensors"))],
        ),
        "finetune-form",
        "init.artifact.run_id: run 99999 not found",
        "missing run",
    );
    // The choice made comes back selected even when it is not a listed checkpoint.
    assert!(body.contains("<option value=\"checkpoint:99999:pretrained.safetensors\" selected>"));
    assert_eq!(f.db.query("SELECT count(*) FROM runs"), runs_before);

    // The pre-trained run's "fine-tune from this" link opens the form pre-filled.
    let page = f
        .server
        .get(&format!("/runs/{}", f.box_run))
        .text()
        .unwrap();
    let href = page
        .split("id=\"finetune-from-this\"")
        .next()
        .and_then(|before| before.rsplit("href=\"").next())
        .and_then(|rest| rest.split('"').next())
        .expect("fine-tune link")
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    assert!(href.starts_with("/runs/new?kind=finetune&"), "{href}");
    let form = f.server.get(&href).text().unwrap();
    let ft = &form[form.find("id=\"finetune-form\"").unwrap()..];
    let ft = &ft[..ft.find("</form>").unwrap()];
    assert!(ft.contains(&format!("<option value=\"{init}\" data-kind=\"pretrain_box\" data-detector=\"fcos\" data-backbone=\"efficientnet_lite0\" selected>")));
    assert!(ft.contains(&format!("<option value=\"{}\" selected>", f.dataset)));
    assert!(ft.contains("<option value=\"fcos\" selected>"));
    assert!(ft.contains("<option value=\"efficientnet_lite0\" selected>"));
    assert!(ft.contains("id=\"ft-aligned-rule\" checked"));
}

#[test]
fn pretraining_run_pages_group_their_curves_and_link_the_next_step() {
    let f = fixture("pt-pages");
    // A box-domain run with a hostile name, its metrics and artifact.
    let run = insert_run(
        &f.db,
        "pretrain_box",
        HOSTILE,
        json!({"kind": "pretrain_box", "dataset_id": f.dataset, "proposals_run_id": f.proposals,
               "detector": "retinanet", "backbone": "efficientnet_lite0",
               "backbone_init": {"from": "checkpoint", "artifact": {"run_id": f.image_run, "name": "backbone.safetensors"}}}),
        "running",
    );
    let mut points = Vec::new();
    for step in 1..=6i64 {
        let s = step as f64;
        points.push(("loss/contrastive", step, 4.0 / s));
        points.push(("loss/regression", step, 1.0 / s));
        points.push(("loss/centerness", step, 0.5 / s));
        points.push(("train/lr", step, 0.001 * s));
        points.push(("train/ema_momentum", step, 0.996 + 0.0005 * s));
        points.push(("pretrain/positives", step, 100.0 + s));
        points.push(("pretrain/instances", step, 20.0));
        points.push(("train/images_per_s", step, 10.0 + s));
    }
    insert_metrics(&f.db, run, &points);

    let page = f.server.get(&format!("/runs/{run}")).text().unwrap();
    for key in [
        "loss",
        "lr",
        "ema-momentum",
        "pretrain-counts",
        "train/images_per_s",
    ] {
        assert!(page.contains(&format!("data-key=\"{key}\"")), "chart {key}");
    }
    for key in [
        "loss/contrastive",
        "train/lr",
        "pretrain/positives",
        "train/ema_momentum",
    ] {
        assert!(
            !page.contains(&format!("data-key=\"{key}\"")),
            "{key} is drawn in its group, not alone"
        );
    }
    for term in [
        "loss/contrastive",
        "loss/regression",
        "loss/centerness",
        "pretrain/positives",
        "pretrain/instances",
    ] {
        assert!(page.contains(term), "legend {term}");
    }
    let live = f.server.get(&format!("/runs/{run}/live")).text().unwrap();
    assert!(live.contains("data-key=\"loss\"") && live.contains("data-key=\"pretrain-counts\""));
    // The pseudo-box source, with its browser; the backbone's run; the artifact and its note.
    let source = page
        .split("id=\"pseudo-box-source\">")
        .nth(1)
        .and_then(|s| s.split("</td>").next())
        .expect("pseudo-box source");
    assert!(source.contains(&format!("href=\"/runs/{}\"", f.proposals)));
    assert!(source.contains(&format!("href=\"/runs/{}/proposals\"", f.proposals)));
    assert!(source.contains("3 kept boxes on 2 images"));
    assert!(source.contains(HOSTILE_ESCAPED));
    let init = page
        .split("id=\"backbone-init\">")
        .nth(1)
        .and_then(|s| s.split("</td>").next())
        .unwrap();
    assert!(
        init.contains("backbone.safetensors")
            && init.contains(&format!("href=\"/runs/{}\"", f.image_run))
    );
    assert!(page.contains(
        "<code>pretrained.safetensors</code> <span class=\"hint\">(not written yet)</span>"
    ));
    insert_artifact(&f.data, &f.db, run, "pretrained.safetensors", b"w");
    let page = f.server.get(&format!("/runs/{run}")).text().unwrap();
    assert!(page.contains(&format!(
        "href=\"/runs/{run}/artifacts/pretrained.safetensors\""
    )));
    assert!(page.contains("without the pre-training predictors"));
    assert!(page.contains(&format!(
        "init=checkpoint:{run}:pretrained.safetensors#finetune-form\" id=\"finetune-from-this\""
    )));
    assert!(page.contains("detector=retinanet"));
    // The hostile name: escaped in the title and everywhere else.
    assert!(page.contains(&format!("<h1>Run #{run}: {HOSTILE_ESCAPED}</h1>")));
    assert!(!page.contains(HOSTILE));

    // An image-domain run: its curves, and "use as backbone" pre-fills the box-domain form.
    let moco = insert_run(
        &f.db,
        "pretrain_image",
        "moco page",
        json!({"kind": "pretrain_image", "dataset_id": f.dataset, "backbone": "resnet18"}),
        "succeeded",
    );
    let mut points = Vec::new();
    for step in 1..=4i64 {
        points.push(("loss/contrastive", step, 5.0 - step as f64));
        points.push(("train/accuracy", step, 0.2 * step as f64));
        points.push(("train/lr", step, 0.03));
    }
    insert_metrics(&f.db, moco, &points);
    insert_artifact(&f.data, &f.db, moco, "backbone.safetensors", b"b");
    let page = f.server.get(&format!("/runs/{moco}")).text().unwrap();
    for key in ["loss", "accuracy", "lr"] {
        assert!(page.contains(&format!("data-key=\"{key}\"")), "chart {key}");
    }
    assert!(!page.contains("data-key=\"train/accuracy\""));
    let href = page
        .split("id=\"use-as-backbone\"")
        .next()
        .and_then(|before| before.rsplit("href=\"").next())
        .and_then(|rest| rest.split('"').next())
        .expect("use-as-backbone link")
        .replace("&#38;", "&");
    let form = f.server.get(&href).text().unwrap();
    let pb = &form[form.find("id=\"pretrain-box-form\"").unwrap()..];
    let pb = &pb[..pb.find("</form>").unwrap()];
    assert!(pb.contains(&format!(
        "<option value=\"checkpoint:{moco}:backbone.safetensors\" data-backbone=\"resnet18\" selected>"
    )));
    assert!(pb.contains("<option value=\"resnet18\" selected>"));

    // A fine-tune from the pre-trained detector: its load report per module.
    let ft = insert_run(
        &f.db,
        "finetune",
        "ft from aligned",
        json!({"kind": "finetune", "dataset_id": f.dataset, "detector": "retinanet",
               "backbone": "efficientnet_lite0",
               "init": {"from": "checkpoint", "artifact": {"run_id": run, "name": "pretrained.safetensors"}}}),
        "succeeded",
    );
    let load = json!({
        "source": format!("checkpoint run {run} artifact pretrained.safetensors"),
        "loaded": ["backbone.body.stem.0.weight", "backbone.body.blocks.1.0.weight",
                   "backbone.fpn.inner_blocks.0.0.weight", "backbone.fpn.layer_blocks.0.0.weight",
                   "head.classification_head.conv.0.0.weight", "head.regression_head.conv.0.0.weight"],
        "missing": ["head.classification_head.cls_logits.weight", "head.regression_head.bbox_reg.weight"],
        "unexpected": [],
        "shape_mismatch": []
    });
    insert_artifact(
        &f.data,
        &f.db,
        ft,
        "load_report.json",
        load.to_string().as_bytes(),
    );
    let page = f.server.get(&format!("/runs/{ft}")).text().unwrap();
    let modules = page
        .split("id=\"load-modules\"")
        .nth(1)
        .and_then(|s| s.split("</table>").next())
        .expect("modules table");
    for (module, row) in [
        (
            "backbone.body",
            "<td>2</td><td>0</td><td>0</td><td>0</td><td>all loaded</td>",
        ),
        (
            "backbone.fpn",
            "<td>2</td><td>0</td><td>0</td><td>0</td><td>all loaded</td>",
        ),
        (
            "head.classification_head",
            "<td>1</td><td>1</td><td>0</td><td>0</td><td>partly loaded</td>",
        ),
        (
            "head.regression_head",
            "<td>1</td><td>1</td><td>0</td><td>0</td><td>partly loaded</td>",
        ),
    ] {
        assert!(
            modules.contains(&format!("<td><code>{module}</code></td>{row}")),
            "{module}: {modules}"
        );
    }
    assert!(page.contains("2 of 4 modules loaded completely"));
    assert!(page.contains(&format!("id=\"init-run\">pretrain_box run #{run}</a>")));
}

#[test]
fn in_a_browser_the_detector_sets_its_defaults_and_the_rule_shows_its_numbers() {
    let f = fixture("pt-browser");
    let driver = ChromeDriver::start();
    let url = format!("{}/runs/new", f.server.url);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let box_run = f.box_run;
    runtime.block_on(async {
        use fantoccini::Locator;
        let c = driver.client_for(&f.server).await;
        c.goto(&url).await.unwrap();
        let value = async |css: &str| {
            c.find(Locator::Css(css))
                .await
                .unwrap()
                .prop("value")
                .await
                .unwrap()
                .unwrap_or_default()
        };
        let set = async |id: &str, v: &str| {
            c.execute(
                "const s = document.getElementById(arguments[0]); s.value = arguments[1]; \
                 s.dispatchEvent(new Event('change')); s.dispatchEvent(new Event('input'));",
                vec![json!(id), json!(v)],
            )
            .await
            .unwrap();
        };
        let pb = "#pretrain-box-form";
        assert_eq!(value(&format!("{pb} input[name=samples]")).await, "2048");
        set("pb-detector", "faster_rcnn").await;
        assert_eq!(value(&format!("{pb} input[name=samples]")).await, "4096");
        assert_eq!(value(&format!("{pb} input[name=lr]")).await, "0.02");
        set("pb-detector", "retinanet").await;
        assert_eq!(
            value(&format!("{pb} input[name=max_boxes_per_image]")).await,
            "50"
        );
        assert_eq!(value(&format!("{pb} input[name=samples]")).await, "2048");
        assert_eq!(value(&format!("{pb} input[name=lr]")).await, "0.01");

        // Fine-tune: the rule's box appears for a pre-trained detector, with its numbers.
        let rule = c
            .find(Locator::Css("#finetune-form .aligned-rule"))
            .await
            .unwrap();
        assert!(
            !rule.is_displayed().await.unwrap(),
            "hidden for the ImageNet init"
        );
        set(
            "ft-init",
            &format!("checkpoint:{box_run}:pretrained.safetensors"),
        )
        .await;
        assert!(rule.is_displayed().await.unwrap());
        c.execute(
            "const i = document.querySelector('#finetune-form input[name=lr]'); i.value = '0.02'; \
             i.dispatchEvent(new Event('input'));",
            vec![],
        )
        .await
        .unwrap();
        let numbers = c.find(Locator::Id("ft-aligned-numbers")).await.unwrap();
        assert_eq!(
            numbers.text().await.unwrap(),
            "lr 0.03, weight decay 0.00005"
        );
        c.close().await.unwrap();
    });
}
