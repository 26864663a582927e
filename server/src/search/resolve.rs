//! Parsed terms → what the database is asked ([`Filter`]): config keys resolved to their paths
//! in the stored config (a short alias such as `lr` stands for `optim.lr`; one that names a
//! field of several kinds, such as `min_sizes`, stands for each of them), metric names and
//! field values checked against those that exist. Pure: the caller passes the known metric
//! names.

use super::{Field, Op, Term, Value};
use aligndet_common::jobs::{JobConfig, RunKind, RunStatus};

/// A config path as its parts (`["optim", "lr"]`), bound as a `TEXT[]` for `config #> $n`.
pub type Path = Vec<String>;

/// A comparison of a config value: the first of `paths` the run's config has.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigCond {
    pub paths: Vec<Path>,
    pub op: Op,
    pub value: Value,
}

/// A comparison of a metric's value at its last step.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricCond {
    pub key: String,
    pub op: Op,
    pub value: f64,
}

/// Everything a search asks; all of it must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// The name contains each (case-insensitive).
    pub words: Vec<String>,
    pub tags: Vec<String>,
    pub kinds: Vec<String>,
    pub statuses: Vec<String>,
    /// Dataset names (or `#id` / id).
    pub datasets: Vec<String>,
    pub config: Vec<ConfigCond>,
    pub metrics: Vec<MetricCond>,
}

/// Whether a metric is better high (AP, recall) or low (losses, times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    Max,
    Min,
}

impl Goal {
    /// Losses, errors and times are better low; everything else (AP, AR, throughput) high.
    pub fn of(key: &str) -> Goal {
        let k = key.to_ascii_lowercase();
        let low = ["loss", "error", "err", "_ms", "wait", "time", "seconds"];
        if low.iter().any(|w| k.contains(w)) {
            Goal::Min
        } else {
            Goal::Max
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Goal::Max => "max",
            Goal::Min => "min",
        }
    }
}

/// What the runs table is sorted by.
#[derive(Debug, Clone, PartialEq)]
pub enum SortKey {
    Id,
    Name,
    Kind,
    Status,
    Created,
    Finished,
    /// The best value of the chosen best-value metric.
    Best,
    Config(Vec<Path>),
    /// A metric's value at its last step.
    Metric(String),
}

/// Every config path the run kinds have (from their default configs), for aliases and for
/// saying which keys exist.
#[derive(Debug, Clone)]
pub struct ConfigKeys {
    paths: Vec<String>,
}

impl ConfigKeys {
    /// The leaves of each kind's default config, and the references a config may hold in
    /// place of a default (`init.artifact.run_id`, …).
    pub fn of_defaults() -> ConfigKeys {
        use aligndet_common::pretrain_config::{PretrainBoxConfig, PretrainImageConfig};
        use aligndet_common::train_config::TrainConfig;
        let mut configs = vec![
            JobConfig::Finetune(TrainConfig::default()),
            JobConfig::PretrainBox(PretrainBoxConfig::default()),
            JobConfig::PretrainImage(PretrainImageConfig::default()),
        ];
        let minimal = [
            serde_json::json!({"kind": "benchmark"}),
            serde_json::json!({"kind": "proposals", "dataset_id": 1}),
            serde_json::json!({"kind": "evaluate", "dataset_id": 1,
                               "detections": {"run_id": 1, "name": "detections.json"}}),
        ];
        configs.extend(
            minimal
                .into_iter()
                .filter_map(|j| serde_json::from_value(j).ok()),
        );
        let mut paths = Vec::new();
        for c in &configs {
            if let Ok(json) = serde_json::to_value(c) {
                leaves(&json, String::new(), &mut paths);
            }
        }
        for extra in [
            "init.artifact.run_id",
            "init.artifact.name",
            "backbone_init.artifact.run_id",
            "backbone_init.artifact.name",
        ] {
            paths.push(extra.to_string());
        }
        paths.sort();
        paths.dedup();
        ConfigKeys { paths }
    }

    /// The paths `key` stands for: itself where it is a path, else every path ending in
    /// `.key`. `None`: no such key.
    pub fn resolve(&self, key: &str) -> Option<Vec<Path>> {
        let split = |p: &str| p.split('.').map(str::to_string).collect::<Path>();
        if self.paths.iter().any(|p| p == key) {
            return Some(vec![split(key)]);
        }
        let suffix = format!(".{key}");
        let found: Vec<Path> = self
            .paths
            .iter()
            .filter(|p| p.ends_with(&suffix))
            .map(|p| split(p))
            .collect();
        (!found.is_empty()).then_some(found)
    }

    /// The short names a person can type (last parts), for messages.
    pub fn short_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .paths
            .iter()
            .map(|p| p.rsplit('.').next().unwrap_or(p).to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

fn leaves(v: &serde_json::Value, prefix: String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(child, path, out);
            }
        }
        _ if !prefix.is_empty() => out.push(prefix),
        _ => {}
    }
}

fn unknown_config(key: &str, keys: &ConfigKeys) -> String {
    format!(
        "unknown config key `{key}`; known: {}",
        keys.short_names().join(", ")
    )
}

fn unknown_metric(key: &str, metrics: &[String]) -> String {
    if metrics.is_empty() {
        format!("unknown metric `{key}`; no run has reported metrics yet")
    } else {
        format!("unknown metric `{key}`; known: {}", metrics.join(", "))
    }
}

/// Whether a key names a metric (`eval/AP`, `loss/total`) rather than a config value.
pub fn is_metric(key: &str) -> bool {
    key.contains('/')
}

/// Check the terms against what exists and gather them into a [`Filter`]. The error says what
/// is wrong and where.
pub fn resolve(terms: &[Term], keys: &ConfigKeys, metrics: &[String]) -> Result<Filter, String> {
    let mut f = Filter::default();
    for term in terms {
        match term {
            Term::Word(w) => f.words.push(w.clone()),
            Term::Field { field, value } => match field {
                Field::Tag => f.tags.push(value.clone()),
                Field::Dataset => f.datasets.push(value.clone()),
                Field::Kind => match RunKind::parse(value) {
                    Some(k) => f.kinds.push(k.as_str().to_string()),
                    None => {
                        let all: Vec<&str> = RunKind::ALL.iter().map(|k| k.as_str()).collect();
                        return Err(format!("unknown kind `{value}`; kinds: {}", all.join(", ")));
                    }
                },
                Field::Status => match RunStatus::parse(value) {
                    Some(s) => f.statuses.push(s.as_str().to_string()),
                    None => {
                        let all: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                        return Err(format!(
                            "unknown status `{value}`; statuses: {}",
                            all.join(", ")
                        ));
                    }
                },
            },
            Term::Compare {
                key,
                op,
                value,
                column,
            } if is_metric(key) => {
                if !metrics.contains(key) {
                    return Err(format!(
                        "at column {column}: {}",
                        unknown_metric(key, metrics)
                    ));
                }
                let Value::Num(x) = value else {
                    return Err(format!(
                        "at column {column}: `{key}` is a metric: compare it with a number"
                    ));
                };
                f.metrics.push(MetricCond {
                    key: key.clone(),
                    op: *op,
                    value: *x,
                });
            }
            Term::Compare {
                key,
                op,
                value,
                column,
            } => {
                let paths = keys
                    .resolve(key)
                    .ok_or_else(|| format!("at column {column}: {}", unknown_config(key, keys)))?;
                f.config.push(ConfigCond {
                    paths,
                    op: *op,
                    value: value.clone(),
                });
            }
        }
    }
    Ok(f)
}

/// The sort choice of the runs table: `id`, `name`, `kind`, `status`, `created`, `finished`,
/// `best`, `config:KEY` or `metric:KEY` (blank: id).
pub fn sort_key(text: &str, keys: &ConfigKeys, metrics: &[String]) -> Result<SortKey, String> {
    Ok(match text.trim() {
        "" | "id" => SortKey::Id,
        "name" => SortKey::Name,
        "kind" => SortKey::Kind,
        "status" => SortKey::Status,
        "created" => SortKey::Created,
        "finished" => SortKey::Finished,
        "best" => SortKey::Best,
        other => {
            if let Some(key) = other.strip_prefix("config:") {
                SortKey::Config(
                    keys.resolve(key)
                        .ok_or_else(|| format!("sort: {}", unknown_config(key, keys)))?,
                )
            } else if let Some(key) = other.strip_prefix("metric:") {
                if !metrics.iter().any(|m| m == key) {
                    return Err(format!("sort: {}", unknown_metric(key, metrics)));
                }
                SortKey::Metric(key.to_string())
            } else {
                return Err(format!(
                    "sort: unknown column `{other}`; use id, name, kind, status, created, finished, best, config:KEY or metric:KEY"
                ));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::parse;

    fn metrics() -> Vec<String> {
        vec!["eval/AP".into(), "loss/total".into()]
    }

    #[test]
    fn aliases_reach_the_nested_paths() {
        let keys = ConfigKeys::of_defaults();
        assert_eq!(
            keys.resolve("lr"),
            Some(vec![vec!["optim".into(), "lr".into()]])
        );
        assert_eq!(
            keys.resolve("optim.lr"),
            Some(vec![vec!["optim".into(), "lr".into()]])
        );
        assert_eq!(
            keys.resolve("detector"),
            Some(vec![vec!["detector".into()]])
        );
        let sizes = keys.resolve("min_sizes").unwrap();
        assert!(
            sizes.len() >= 2,
            "fine-tune augment and pre-training views: {sizes:?}"
        );
        assert_eq!(keys.resolve("nope"), None);
    }

    #[test]
    fn terms_become_the_filter() {
        let keys = ConfigKeys::of_defaults();
        let terms = parse("res18 tag:x kind:finetune status:running dataset:d lr > 0.005 detector = fcos eval/AP > 0.3").unwrap();
        let f = resolve(&terms, &keys, &metrics()).unwrap();
        assert_eq!(f.words, vec!["res18"]);
        assert_eq!(f.tags, vec!["x"]);
        assert_eq!(f.kinds, vec!["finetune"]);
        assert_eq!(f.statuses, vec!["running"]);
        assert_eq!(f.datasets, vec!["d"]);
        assert_eq!(f.config.len(), 2);
        assert_eq!(f.config[0].op, Op::Gt);
        assert_eq!(f.config[1].value, Value::Text("fcos".into()));
        assert_eq!(
            f.metrics,
            vec![MetricCond {
                key: "eval/AP".into(),
                op: Op::Gt,
                value: 0.3
            }]
        );
    }

    #[test]
    fn unknown_names_are_said_so() {
        let keys = ConfigKeys::of_defaults();
        let e = resolve(&parse("eval/APx > 0.3").unwrap(), &keys, &metrics()).unwrap_err();
        assert_eq!(
            e,
            "at column 1: unknown metric `eval/APx`; known: eval/AP, loss/total"
        );
        let e = resolve(&parse("x lrr > 1").unwrap(), &keys, &metrics()).unwrap_err();
        assert!(
            e.starts_with("at column 3: unknown config key `lrr`; known: "),
            "{e}"
        );
        assert!(e.contains("lr, "), "{e}");
        let e = resolve(&parse("kind:nope").unwrap(), &keys, &metrics()).unwrap_err();
        assert!(e.contains("unknown kind `nope`"), "{e}");
        let e = resolve(&parse("status:done").unwrap(), &keys, &metrics()).unwrap_err();
        assert!(e.contains("unknown status `done`"), "{e}");
        let e = resolve(&parse("eval/AP = high").unwrap(), &keys, &metrics()).unwrap_err();
        assert!(e.contains("compare it with a number"), "{e}");
    }

    #[test]
    fn sort_keys() {
        let keys = ConfigKeys::of_defaults();
        let m = metrics();
        assert_eq!(sort_key("", &keys, &m).unwrap(), SortKey::Id);
        assert_eq!(sort_key("best", &keys, &m).unwrap(), SortKey::Best);
        assert_eq!(
            sort_key("metric:eval/AP", &keys, &m).unwrap(),
            SortKey::Metric("eval/AP".into())
        );
        assert!(matches!(
            sort_key("config:lr", &keys, &m).unwrap(),
            SortKey::Config(_)
        ));
        assert!(
            sort_key("metric:x/y", &keys, &m)
                .unwrap_err()
                .contains("unknown metric")
        );
        assert!(
            sort_key("colour", &keys, &m)
                .unwrap_err()
                .contains("unknown column")
        );
    }

    #[test]
    fn goals() {
        assert_eq!(Goal::of("eval/AP"), Goal::Max);
        assert_eq!(Goal::of("eval/AR100"), Goal::Max);
        assert_eq!(Goal::of("loss/total"), Goal::Min);
        assert_eq!(Goal::of("train/data_wait_ms"), Goal::Min);
        assert_eq!(Goal::of("train/images_per_s"), Goal::Max);
    }
}
