//! The pre-training page tests' fixture: a small dataset with finished input runs of every kind
//! (proposals, fine-tune, image- and box-domain pre-training) inserted directly, and the three
//! forms (box-domain, image-domain, fine-tune) as the new-run page posts them.

use crate::*;
use serde_json::{Value, json};

/// A name that must never reach a page unescaped.
pub const HOSTILE: &str = "<script>alert('x')</script> & \"co\"";
pub const HOSTILE_ESCAPED: &str =
    "&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62; &#38; &#34;co&#34;";

/// The small dataset (its server first, so it stops before the database and folders go) and
/// the finished runs inserted beside it; `f.server`, `f.db`, `f.dataset` read the dataset's.
pub struct Fixture {
    pub base: SmallDataset,
    /// A second dataset (only its row), for runs of "another dataset".
    pub other_dataset: i64,
    /// A succeeded proposals run of `dataset` (hostile name), with kept boxes on 2 images.
    pub proposals: i64,
    /// A succeeded proposals run of `other_dataset`.
    pub other_proposals: i64,
    /// A succeeded fine-tune run (not a proposals run).
    pub finetune: i64,
    /// A succeeded pretrain_image run of efficientnet_lite0 with its backbone.safetensors.
    pub image_run: i64,
    /// A succeeded pretrain_image run of resnet18.
    pub image_run_r18: i64,
    /// A succeeded pretrain_box run (FCOS, efficientnet_lite0) with pretrained.safetensors.
    pub box_run: i64,
}

impl std::ops::Deref for Fixture {
    type Target = SmallDataset;

    fn deref(&self) -> &SmallDataset {
        &self.base
    }
}

pub fn fixture(tag: &str) -> Fixture {
    let splits = json!({"train": [1, 2, 3, 4], "val": [5, 6], "labeled": {"50pct_seed1": [1, 3]}});
    let base = SmallDataset::start(tag, 6, &splits);
    let (db, dataset, data) = (&base.db, base.dataset, &base.data);
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
        db,
        "proposals",
        HOSTILE,
        &json!({"kind": "proposals", "dataset_id": dataset}),
        "succeeded",
    );
    // Image 1: 3 boxes, 2 kept; image 2: 2 boxes, 1 kept.
    db.query(&format!(
        "INSERT INTO proposal_images (run_id, image_id, boxes, removed_by, seconds, attempt) VALUES \
         ({proposals}, 1, '{{0,0,10,10, 5,5,20,20, 1,1,2,2}}', '{{0,0,1}}', 0.1, 1), \
         ({proposals}, 2, '{{0,0,30,30, 2,2,4,4}}', '{{0,2}}', 0.1, 1)"
    ));
    let other_proposals = insert_run(
        db,
        "proposals",
        "other boxes",
        &json!({"kind": "proposals", "dataset_id": other_dataset}),
        "succeeded",
    );
    let finetune = insert_run(
        db,
        "finetune",
        "earlier fine-tune",
        &json!({"kind": "finetune", "dataset_id": dataset}),
        "succeeded",
    );
    insert_artifact(data.path(), db, finetune, "model.safetensors", b"model");
    let image_run = insert_run(
        db,
        "pretrain_image",
        "moco lite0",
        &json!({"kind": "pretrain_image", "dataset_id": dataset, "backbone": "efficientnet_lite0"}),
        "succeeded",
    );
    insert_artifact(
        data.path(),
        db,
        image_run,
        "backbone.safetensors",
        b"backbone",
    );
    let image_run_r18 = insert_run(
        db,
        "pretrain_image",
        "moco r18",
        &json!({"kind": "pretrain_image", "dataset_id": dataset, "backbone": "resnet18"}),
        "succeeded",
    );
    let box_run = insert_run(
        db,
        "pretrain_box",
        "aligndet fcos",
        &json!({"kind": "pretrain_box", "dataset_id": dataset, "proposals_run_id": proposals,
               "detector": "fcos", "backbone": "efficientnet_lite0"}),
        "succeeded",
    );
    insert_artifact(
        data.path(),
        db,
        box_run,
        "pretrained.safetensors",
        b"weights",
    );
    Fixture {
        base,
        other_dataset,
        proposals,
        other_proposals,
        finetune,
        image_run,
        image_run_r18,
        box_run,
    }
}

/// A complete, valid box-domain pre-training form.
pub fn box_form(f: &Fixture) -> Vec<(&'static str, String)> {
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
pub fn image_form(f: &Fixture) -> Vec<(&'static str, String)> {
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
pub fn finetune_form(f: &Fixture) -> Vec<(&'static str, String)> {
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
pub type Change<'a> = (&'static str, Option<&'a str>);

/// Post `form` with some fields replaced (or added), or removed when the value is `None`.
pub fn post(
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

/// The stored (resolved) config of a run.
pub fn stored(f: &Fixture, run: i64) -> Value {
    serde_json::from_str(
        &f.db
            .query(&format!("SELECT config::text FROM runs WHERE id = {run}")),
    )
    .unwrap()
}

pub fn close(a: &Value, b: f64) -> bool {
    a.as_f64()
        .is_some_and(|a| (a - b).abs() <= 1e-12 * b.abs().max(1e-12))
}
