//! A run's reproducibility stamp: what the claiming trainer reported about itself (version, git
//! commit and dirty flag, libtorch, device) and what the server handed it (the sha256 of the
//! dataset's annotations and of every input artifact, the pseudo-boxes among them). Recorded at
//! each claim (the last attempt's stays) and shown on the run page.

use aligndet_common::api::TrainerStamp;
use aligndet_common::artifacts;
use aligndet_common::content::{ArtifactInput, DatasetContent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamp {
    pub attempt: i32,
    /// `None`: a worker from before stamps (it did not say).
    pub trainer: Option<TrainerStamp>,
    pub dataset: Option<DatasetStamp>,
    #[serde(default)]
    pub inputs: Vec<InputStamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetStamp {
    pub id: i64,
    pub name: String,
    pub annotations_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputStamp {
    pub run_id: i64,
    pub name: String,
    pub sha256: String,
}

impl Stamp {
    pub fn new(
        attempt: i32,
        trainer: Option<TrainerStamp>,
        dataset: Option<&DatasetContent>,
        inputs: &[ArtifactInput],
    ) -> Stamp {
        Stamp {
            attempt,
            trainer,
            dataset: dataset.map(|d| DatasetStamp {
                id: d.dataset_id,
                name: d.name.clone(),
                annotations_sha256: d.annotations.sha256.clone(),
            }),
            inputs: inputs
                .iter()
                .map(|i| InputStamp {
                    run_id: i.run_id,
                    name: i.name.clone(),
                    sha256: i.blob.sha256.clone(),
                })
                .collect(),
        }
    }

    /// The stamp as the run page lists it: (what, value) rows.
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![("attempt".to_string(), self.attempt.to_string())];
        match &self.trainer {
            Some(t) => {
                let dirty = match t.git_dirty {
                    Some(true) => " (dirty: uncommitted changes)",
                    Some(false) => " (clean)",
                    None => "",
                };
                rows.push(("trainer version".into(), t.version.clone()));
                rows.push(("git commit".into(), format!("{}{dirty}", t.git_commit)));
                rows.push(("libtorch".into(), t.libtorch_version.clone()));
                rows.push(("device".into(), t.device.clone()));
            }
            None => rows.push((
                "trainer".into(),
                "not reported (a worker from before stamps)".into(),
            )),
        }
        if let Some(d) = &self.dataset {
            rows.push((
                format!("dataset #{} {} annotations sha256", d.id, d.name),
                d.annotations_sha256.clone(),
            ));
        }
        for i in &self.inputs {
            let what = if i.name == artifacts::PSEUDO_BOXES {
                "pseudo-boxes"
            } else {
                "input"
            };
            rows.push((
                format!("{what} {} of run #{} sha256", i.name, i.run_id),
                i.sha256.clone(),
            ));
        }
        rows
    }

    /// A stored stamp (`None` when absent or unreadable).
    pub fn of_json(v: Option<&serde_json::Value>) -> Option<Stamp> {
        v.and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aligndet_common::content::Blob;

    #[test]
    fn rows_name_every_hash() {
        let blob = |s: &str| Blob {
            sha256: s.into(),
            bytes: 1,
        };
        let dataset = DatasetContent {
            dataset_id: 3,
            name: "trees".into(),
            annotations: blob("aa"),
            images: vec![],
            splits: None,
        };
        let inputs = [ArtifactInput {
            run_id: 7,
            name: artifacts::PSEUDO_BOXES.into(),
            blob: blob("bb"),
        }];
        let trainer = TrainerStamp {
            version: "0.1.0".into(),
            git_commit: "abc".into(),
            git_dirty: Some(true),
            libtorch_version: "2.11.0".into(),
            device: "cpu".into(),
        };
        let s = Stamp::new(2, Some(trainer), Some(&dataset), &inputs);
        let back = Stamp::of_json(Some(&serde_json::to_value(&s).unwrap())).unwrap();
        assert_eq!(back, s);
        let text = format!("{:?}", s.rows());
        assert!(text.contains("abc (dirty"), "{text}");
        assert!(
            text.contains("dataset #3 trees annotations sha256\", \"aa"),
            "{text}"
        );
        assert!(
            text.contains("pseudo-boxes pseudo_boxes.json of run #7 sha256\", \"bb"),
            "{text}"
        );
        let old = Stamp::new(1, None, None, &[]);
        assert!(format!("{:?}", old.rows()).contains("not reported"));
    }
}
