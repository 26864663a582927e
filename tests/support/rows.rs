//! Rows inserted as if a worker had run: page tests that only need a finished run, its metric
//! points or its artifacts put them straight into the database (and the artifact store) instead
//! of training anything.

use crate::TestDb;
use serde_json::{Value, json};
use std::path::Path;

/// A dataset row named `small` without files: 22 images (train 1–20, val 21–22) and three 5 %
/// labeled draws of 4 images (1 epoch = 2 steps of batch 2), for runs that never read it;
/// returns its id.
pub fn insert_small_dataset(db: &TestDb) -> i64 {
    let splits = json!({"train": (1..=20).collect::<Vec<_>>(), "val": [21, 22],
                        "labeled": {"5pct_seed1": [1, 2, 3, 4], "5pct_seed2": [5, 6, 7, 8],
                                    "5pct_seed3": [9, 10, 11, 12]}});
    inserted_id(db.query(&format!(
        "INSERT INTO datasets (name, format, source, image_root, annotations_path, num_images, \
         num_annotations, splits) VALUES ('small', 'coco', 'test', '/nonexistent', \
         '/nonexistent/a.json', 22, 0, $j${splits}$j$::jsonb) RETURNING id"
    )))
}

/// The id an `INSERT … RETURNING id` printed (psql's first line).
fn inserted_id(out: String) -> i64 {
    out.lines()
        .next()
        .and_then(|id| id.trim().parse().ok())
        .unwrap_or_else(|| panic!("no id from the insert: {out:?}"))
}

/// A run of `kind` in `status` with `config` (its `dataset_id`, if any, becomes the run's
/// dataset); returns its id. `name` may hold any text: it is dollar-quoted.
pub fn insert_run(db: &TestDb, kind: &str, name: &str, config: &Value, status: &str) -> i64 {
    let dataset = config["dataset_id"]
        .as_i64()
        .map_or("NULL".to_string(), |d| d.to_string());
    inserted_id(db.query(&format!(
        "INSERT INTO runs (kind, name, config, status, dataset_id) \
         VALUES ('{kind}', $q${name}$q$, $q${config}$q$::jsonb, '{status}', {dataset}) RETURNING id"
    )))
}

/// Metric points `(key, step, value)` of a run's first attempt, two seconds apart per step.
pub fn insert_metrics<K: AsRef<str>>(db: &TestDb, run: i64, points: &[(K, i64, f64)]) {
    let values: Vec<String> = points
        .iter()
        .map(|(key, step, value)| {
            let wall = 1.0e9 + 2.0 * *step as f64;
            format!("({run}, '{}', {step}, {value}, {wall}, 1)", key.as_ref())
        })
        .collect();
    db.query(&format!(
        "INSERT INTO metrics (run_id, key, step, value, wall_time, attempt) VALUES {}",
        values.join(", ")
    ));
}

/// A run's artifact: the file in the store under `data_dir` and its row.
pub fn insert_artifact(data_dir: &Path, db: &TestDb, run: i64, name: &str, bytes: &[u8]) {
    let dir = data_dir.join("artifacts").join(run.to_string());
    std::fs::create_dir_all(&dir).expect("artifact folder");
    std::fs::write(dir.join(name), bytes).expect("artifact file");
    db.query(&format!(
        "INSERT INTO artifacts (run_id, name, bytes, attempt) VALUES ({run}, '{name}', {}, 1)",
        bytes.len()
    ));
}
