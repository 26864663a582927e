//! The pre-training forms against the real server and Postgres: `pretrain_box` and
//! `pretrain_image` (resolved configs stored, per-detector defaults, bad values and wrong input
//! runs refused with the field named), and fine-tuning from a pre-trained detector (AlignDet's
//! lr ×1.5 / wd ÷2 by default, detector and backbone must match). Input runs are inserted
//! directly (`support/pretrain.rs`): no worker is needed.

use aligndet_studio::pretrain::*;
use aligndet_studio::*;
use serde_json::{Value, json};

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
