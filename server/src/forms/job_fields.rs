//! The new-run page's benchmark, proposals and evaluation forms: their posted fields as the
//! job's JSON config (a blank field leaves the config's default). Only the text → value step
//! happens here; `JobConfig` decoding and `validate` decide what is acceptable.

use super::real;
use aligndet_common::jobs::RunKind;
use serde_json::{Map, Value};

/// The run name and the JSON config of a posted benchmark, proposals or evaluation form;
/// `field` gives a posted field's trimmed text. The error is the person's mistake, "field:
/// problem" where one field is to blame.
pub fn job_json(field: impl Fn(&str) -> Option<String>) -> Result<(String, Value), String> {
    let kind = field("kind").unwrap_or_default();
    let mut config = Map::new();
    config.insert("kind".into(), kind.clone().into());
    match RunKind::parse(&kind) {
        Some(RunKind::Benchmark) => benchmark(&field, &mut config)?,
        Some(RunKind::Proposals) => proposals(&field, &mut config)?,
        Some(RunKind::Evaluate) => evaluate(&field, &mut config)?,
        // The training forms have their own typed forms ([`super::TrainingForm`]).
        Some(RunKind::Finetune | RunKind::PretrainBox | RunKind::PretrainImage) | None => {
            return Err(format!("unknown run kind {kind:?}"));
        }
    }
    Ok((field("name").unwrap_or_default(), Value::Object(config)))
}

/// Each of `keys` given as a whole number of type `T`, into `into`.
fn whole_numbers<T: std::str::FromStr + Into<Value>>(
    field: &impl Fn(&str) -> Option<String>,
    keys: &[&str],
    into: &mut Map<String, Value>,
) -> Result<(), String> {
    for &key in keys {
        if let Some(v) = field(key).filter(|v| !v.is_empty()) {
            let n: T = v
                .parse()
                .map_err(|_| format!("{key}: {v:?} is not a whole number"))?;
            into.insert(key.into(), n.into());
        }
    }
    Ok(())
}

/// The dataset select's value.
fn dataset(field: &impl Fn(&str) -> Option<String>) -> Result<i64, String> {
    field("dataset_id")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "choose a dataset".to_string())
}

fn benchmark(
    field: &impl Fn(&str) -> Option<String>,
    config: &mut Map<String, Value>,
) -> Result<(), String> {
    if let Some(b) = field("backbone") {
        config.insert("backbone".into(), b.into());
    }
    let keys = ["batch_size", "resolution", "steps", "warmup_steps"];
    whole_numbers::<u32>(field, &keys, config)
}

fn proposals(
    field: &impl Fn(&str) -> Option<String>,
    config: &mut Map<String, Value>,
) -> Result<(), String> {
    config.insert("dataset_id".into(), dataset(field)?.into());
    if let Some(st) = field("strategy") {
        config.insert("strategy".into(), st.into());
    }
    whole_numbers::<u64>(field, &["max_images", "seed"], config)?;
    let mut filter = Map::new();
    for key in ["min_side", "max_aspect", "max_relative_size", "nms_iou"] {
        if let Some(x) = real(key, &field(key).unwrap_or_default()).map_err(|e| e.to_string())? {
            filter.insert(key.into(), x.into());
        }
    }
    whole_numbers::<u32>(field, &["top_k"], &mut filter)?;
    config.insert("filter".into(), Value::Object(filter));
    Ok(())
}

fn evaluate(
    field: &impl Fn(&str) -> Option<String>,
    config: &mut Map<String, Value>,
) -> Result<(), String> {
    config.insert("dataset_id".into(), dataset(field)?.into());
    if let Some(split) = field("split").filter(|v| !v.is_empty()) {
        config.insert("split".into(), split.into());
    }
    let run_id: i64 = field("detections_run")
        .and_then(|v| v.parse().ok())
        .ok_or("give the run whose artifact holds the detections")?;
    let name = field("detections_artifact").unwrap_or_default();
    config.insert(
        "detections".into(),
        serde_json::json!({"run_id": run_id, "name": name}),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(fields: &[(&str, &str)]) -> Result<(String, Value), String> {
        job_json(|k| {
            fields
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn given_fields_become_the_config_and_blank_ones_are_left_out() {
        let (name, config) = posted(&[
            ("kind", "proposals"),
            ("name", "boxes"),
            ("dataset_id", "3"),
            ("max_images", "10"),
            ("seed", ""),
            ("nms_iou", "0.5"),
            ("top_k", "200"),
        ])
        .unwrap();
        assert_eq!(name, "boxes");
        assert_eq!(
            config,
            serde_json::json!({"kind": "proposals", "dataset_id": 3, "max_images": 10,
                "filter": {"nms_iou": 0.5, "top_k": 200}})
        );
        let (_, config) = posted(&[("kind", "benchmark"), ("steps", "5")]).unwrap();
        assert_eq!(config, serde_json::json!({"kind": "benchmark", "steps": 5}));
    }

    #[test]
    fn mistakes_name_the_field() {
        let e = posted(&[("kind", "benchmark"), ("steps", "many")]).unwrap_err();
        assert_eq!(e, "steps: \"many\" is not a whole number");
        let e = posted(&[("kind", "evaluate")]).unwrap_err();
        assert_eq!(e, "choose a dataset");
        let e = posted(&[("kind", "finetune")]).unwrap_err();
        assert_eq!(e, "unknown run kind \"finetune\"");
    }
}
