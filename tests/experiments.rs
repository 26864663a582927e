//! The experiment form against the real server and Postgres, without training: it makes the
//! whole chain with the right configs, inits and dependencies (paired arms, label-free arms
//! from the image-domain pre-training), and a bad field comes back named.

use aligndet_studio::experiments::*;
use aligndet_studio::*;
use serde_json::{Value, json};

#[test]
fn the_form_creates_the_whole_chain_with_paired_arms() {
    let f = fixture("exp-form");
    let page = f.server.get("/experiments/new").text().unwrap();
    assert!(
        page.contains("id=\"experiment-form\""),
        "the form is served"
    );
    let r = post_experiment(&f, &[]);
    let url = r.url().clone();
    let body = r.text().unwrap();
    let exp: i64 = url
        .path()
        .strip_prefix("/experiments/")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not redirected to the experiment: {body}"));

    let runs = experiment_runs(&f, exp);
    let of = |role: &str| -> Vec<&(i64, String, Value)> {
        runs.iter().filter(|r| r.1 == role).collect()
    };
    assert_eq!(
        of("pretrain_image").len(),
        0,
        "ImageNet backbone by default"
    );
    assert_eq!(of("proposals").len(), 1);
    assert_eq!(of("pretrain_box").len(), 1);
    assert_eq!(of("aligndet").len(), 6);
    assert_eq!(of("baseline").len(), 6);
    let proposals = of("proposals")[0];
    assert_eq!(proposals.2["kind"], "proposals");
    assert_eq!(proposals.2["strategy"], "aligndet");
    let pb = of("pretrain_box")[0];
    assert_eq!(pb.2["kind"], "pretrain_box");
    assert_eq!(pb.2["proposals_run_id"], proposals.0);
    assert_eq!(pb.2["backbone_init"], json!({"from": "imagenet_backbone"}));
    assert_eq!(pb.2["optim"]["steps"], 40);
    assert_eq!(pb.2["optim"]["batch_size"], 2);
    assert_eq!(pb.2["detector"], "fcos");
    assert_eq!(waits_for(&f, pb.0), vec![proposals.0]);

    let mut pairs = Vec::new();
    for a in of("aligndet") {
        let c = &a.2;
        let split = c["train_split"].as_str().unwrap();
        let b = of("baseline")
            .into_iter()
            .find(|b| b.2["train_split"] == c["train_split"])
            .unwrap_or_else(|| panic!("no baseline on {split}"));
        pairs.push((c["optim"]["seed"].as_u64().unwrap(), split.to_string()));
        assert!(
            split.ends_with(&format!("pct_seed{}", c["optim"]["seed"])),
            "split {split} matches seed {}",
            c["optim"]["seed"]
        );
        for key in ["augment", "val_split", "detector", "backbone"] {
            assert_eq!(
                c[key], b.2[key],
                "{key} differs between the arms on {split}"
            );
        }
        for key in [
            "seed",
            "steps",
            "batch_size",
            "schedule",
            "warmup_steps",
            "optimizer",
        ] {
            assert_eq!(
                c["optim"][key], b.2["optim"][key],
                "optim.{key} differs between the arms on {split}"
            );
        }
        assert_eq!(c["val_split"], "val");
        assert_eq!(c["optim"]["steps"], 30);
        assert!(
            (c["optim"]["lr"].as_f64().unwrap() - 0.03).abs() < 1e-12,
            "{}",
            c["optim"]["lr"]
        );
        assert!((c["optim"]["weight_decay"].as_f64().unwrap() - 0.0001).abs() < 1e-15);
        assert!((b.2["optim"]["lr"].as_f64().unwrap() - 0.02).abs() < 1e-12);
        assert!((b.2["optim"]["weight_decay"].as_f64().unwrap() - 0.0002).abs() < 1e-15);
        assert_eq!(
            c["init"],
            json!({"from": "checkpoint", "artifact": {"run_id": pb.0, "name": "pretrained.safetensors"}})
        );
        assert_eq!(b.2["init"], json!({"from": "imagenet_backbone"}));
        assert_eq!(waits_for(&f, a.0), vec![pb.0]);
        assert_eq!(waits_for(&f, b.0), Vec::<i64>::new());
    }
    pairs.sort();
    assert_eq!(
        pairs,
        vec![
            (1, "10pct_seed1".into()),
            (1, "5pct_seed1".into()),
            (2, "10pct_seed2".into()),
            (2, "5pct_seed2".into()),
            (3, "10pct_seed3".into()),
            (3, "5pct_seed3".into()),
        ]
    );

    // The page: runs by role, what they wait for, the compare link, the name escaped.
    let page = f.server.get(&format!("/experiments/{exp}")).text().unwrap();
    assert!(
        page.contains("exp &#60;b&#62;one&#60;/b&#62;")
            || page.contains("exp &lt;b&gt;one&lt;/b&gt;")
    );
    assert!(!page.contains("<b>one</b>"));
    assert!(page.contains(&format!("waiting for run {}", pb.0)));
    let finetunes: Vec<String> = runs
        .iter()
        .filter(|r| r.2["kind"] == "finetune")
        .map(|r| r.0.to_string())
        .collect();
    assert!(page.contains(&format!("/compare?runs={}", finetunes.join(","))));
    let list = f.server.get("/experiments").text().unwrap();
    assert!(list.contains(&format!("href=\"/experiments/{exp}\"")));

    // The queue runs the chain in order: first the inputs and the baselines (nothing to wait
    // for), never an AlignDet fine-tune before the pre-training succeeded.
    let w = Proto::register(&f.server);
    let mut claimed = Vec::new();
    while let Some((id, _, spec)) = w.claim() {
        claimed.push((id, spec["config"]["kind"].as_str().unwrap().to_string()));
    }
    let ids: Vec<i64> = claimed.iter().map(|c| c.0).collect();
    assert!(ids.contains(&proposals.0));
    assert!(
        !ids.contains(&pb.0),
        "pre-training waits for the pseudo-boxes"
    );
    assert!(of("aligndet").iter().all(|a| !ids.contains(&a.0)));
    assert_eq!(ids.len(), 1 + 6, "the proposals run and the six baselines");
}

#[test]
fn a_label_free_experiment_starts_both_arms_from_the_image_pretraining() {
    let f = fixture("exp-free");
    let r = post_experiment(
        &f,
        &[
            ("label_free", "on"),
            ("backbone", "resnet18"),
            ("image_steps", "20"),
            ("image_batch_size", "4"),
            ("seeds", "2"),
            ("fractions", "10"),
        ],
    );
    assert!(
        r.url().path().starts_with("/experiments/"),
        "{}",
        r.text().unwrap()
    );
    let exp: i64 =
        f.db.query("SELECT max(id) FROM experiments")
            .parse()
            .unwrap();
    let runs = experiment_runs(&f, exp);
    let roles: Vec<&str> = runs.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        roles,
        [
            "pretrain_image",
            "proposals",
            "pretrain_box",
            "aligndet",
            "baseline"
        ]
    );
    let (img, _, ic) = &runs[0];
    assert_eq!(ic["kind"], "pretrain_image");
    assert_eq!(ic["init"], json!({"from": "scratch"}));
    assert_eq!(ic["optim"]["steps"], 20);
    assert_eq!(ic["backbone"], "resnet18");
    let backbone =
        json!({"from": "checkpoint", "artifact": {"run_id": img, "name": "backbone.safetensors"}});
    let (pb, _, pc) = &runs[2];
    assert_eq!(pc["backbone_init"], backbone);
    assert_eq!(waits_for(&f, *pb), vec![*img, runs[1].0]);
    let (base, _, bc) = &runs[4];
    assert_eq!(bc["init"], backbone);
    assert_eq!(bc["train_split"], "10pct_seed2");
    assert_eq!(waits_for(&f, *base), vec![*img]);
    assert_eq!(waits_for(&f, runs[3].0), vec![*pb]);
}

#[test]
fn bad_form_fields_come_back_named() {
    let f = fixture("exp-bad");
    for (changes, needle) in [
        (
            vec![("seeds", "1, x")],
            "seeds: \"x\" is not a whole number",
        ),
        (
            vec![("fractions", "7")],
            "fractions: dataset \"small\" has no split \"7pct_seed1\"",
        ),
        (vec![("backbone", "resnet50")], "backbone: ImageNet weights"),
        (vec![("finetune_steps", "0")], "finetune_steps: must be"),
        (
            vec![("finetune_lr", "-1")],
            "finetune_lr: must be a positive number",
        ),
        (
            vec![("proposals", "12345")],
            "proposals_run_id: run 12345 not found",
        ),
        (vec![("name", "")], "name: must be"),
    ] {
        let r = post_experiment(&f, &changes);
        assert_eq!(r.status(), 422, "{changes:?}");
        let body = r.text().unwrap();
        let err = form_error(&body).unwrap_or_else(|| panic!("no error box for {changes:?}"));
        // The error box is HTML-escaped text: compare with the quotes escaped.
        let escaped = needle.replace('"', "&#34;");
        assert!(
            err.contains(needle)
                || err.contains(&escaped)
                || err.contains(&needle.replace('"', "&quot;")),
            "{changes:?}: {err}"
        );
    }
    // A hostile name comes back escaped with the form.
    let r = post_experiment(&f, &[("name", "<script>x</script>"), ("seeds", "")]);
    assert_eq!(r.status(), 422);
    let body = r.text().unwrap();
    assert!(!body.contains("<script>x</script>"));
    assert!(body.contains("seeds: give at least one seed"));
    assert_eq!(
        f.db.query("SELECT count(*) FROM runs"),
        "0",
        "nothing was queued"
    );
    assert_eq!(f.db.query("SELECT count(*) FROM experiments"), "0");
}
