//! The experiment tests' harness: a worker that speaks the protocol itself (claims, uploads,
//! reports a status) without training, and a small dataset with labeled subsets on which the
//! experiment form is posted.

use crate::*;
use serde_json::{Value, json};

/// A worker that is only this test: claims and reports over the API.
pub struct Proto<'a>(ApiWorker<'a>);

impl<'a> Proto<'a> {
    pub fn register(server: &'a Server) -> Proto<'a> {
        Proto(ApiWorker::register(server, "protocol"))
    }

    /// The next claimed job's (run id, attempt, spec), or `None` when nothing is claimable.
    pub fn claim(&self) -> Option<(i64, i64, Value)> {
        let spec = self.0.claim()?;
        Some((
            spec["run_id"].as_i64().unwrap(),
            spec["attempt"].as_i64().unwrap(),
            spec,
        ))
    }

    pub fn finish(&self, run: i64, attempt: i64, status: &str) {
        let error = (status == "failed").then_some("boom");
        let r = self.0.post(
            &format!("runs/{run}/status"),
            &json!({"attempt": attempt, "status": status, "error": error}),
        );
        assert!(r.status().is_success(), "status: {}", r.status());
    }

    pub fn upload(&self, run: i64, attempt: i64, name: &str, bytes: Vec<u8>) {
        let r = self.0.put_artifact(run, attempt, name, bytes);
        assert!(r.status().is_success(), "upload {name}: {}", r.status());
    }
}

/// A run's (status, error).
pub fn status(server: &Server, run: i64) -> (String, String) {
    let r = server.run(run);
    (
        r["status"].as_str().unwrap_or("").to_string(),
        r["error"].as_str().unwrap_or("").to_string(),
    )
}

/// The experiment tests' dataset, as [`SmallDataset`] starts it.
pub type Fixture = SmallDataset;

/// Ten images: train 1–8, val 9–10, labeled subsets 5pct/10pct × seeds 1–3.
pub fn fixture(tag: &str) -> Fixture {
    let mut labeled = serde_json::Map::new();
    for p in [5, 10] {
        for s in 1..=3i64 {
            labeled.insert(format!("{p}pct_seed{s}"), json!([s, s + 3]));
        }
    }
    let splits = json!({"train": [1, 2, 3, 4, 5, 6, 7, 8], "val": [9, 10], "labeled": labeled});
    SmallDataset::start(tag, 10, &splits)
}

pub fn post_experiment(
    f: &Fixture,
    changes: &[(&'static str, &str)],
) -> reqwest::blocking::Response {
    let dataset = f.dataset.to_string();
    let mut fields: Vec<(&str, String)> = [
        ("name", "exp <b>one</b>"),
        ("dataset_id", dataset.as_str()),
        ("detector", "fcos"),
        ("backbone", "efficientnet_lite0"),
        ("proposals", "new"),
        ("proposals_max_images", ""),
        ("pretrain_steps", "40"),
        ("pretrain_batch_size", "2"),
        ("pretrain_lr", ""),
        ("finetune_steps", "30"),
        ("finetune_batch_size", "2"),
        ("finetune_lr", "0.02"),
        ("finetune_weight_decay", "0.0002"),
        ("lr_multiplier", "1.5"),
        ("wd_multiplier", "0.5"),
        ("seeds", "1, 2, 3"),
        ("fractions", "5, 10"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    for (k, v) in changes {
        match fields.iter_mut().find(|(n, _)| n == k) {
            Some(f) => f.1 = v.to_string(),
            None => fields.push((k, v.to_string())),
        }
    }
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    f.server.browser_session().post_form("/experiments", &pairs)
}

/// Every run of an experiment: (id, role, config), by id.
pub fn experiment_runs(f: &Fixture, exp: i64) -> Vec<(i64, String, Value)> {
    let out = f.db.query(&format!(
        "SELECT json_agg(json_build_array(id, experiment_role, config) ORDER BY id) FROM runs WHERE experiment_id = {exp}"
    ));
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    rows.into_iter()
        .map(|r| {
            (
                r[0].as_i64().unwrap(),
                r[1].as_str().unwrap().to_string(),
                r[2].clone(),
            )
        })
        .collect()
}

/// Which runs a run waits for.
pub fn waits_for(f: &Fixture, run: i64) -> Vec<i64> {
    let out = f.db.query(&format!(
        "SELECT coalesce(json_agg(parent_id ORDER BY parent_id), '[]') FROM run_parents WHERE run_id = {run} AND waits"
    ));
    serde_json::from_str(&out).unwrap()
}
