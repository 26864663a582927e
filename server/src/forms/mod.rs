//! The HTML forms as text, field by field, and their text → value step. One copy of the field
//! helpers every form shares (enums by their JSON spelling, whole and real numbers, number
//! lists, init choices), then one module per form:
//!
//! - [`optim`]: the optimisation fields every training form has;
//! - [`finetune`], [`pretrain_box`], [`pretrain_image`]: the new-run page's training forms;
//! - [`experiment`]: the new-experiment form.
//!
//! Only parsing happens here, with the field named when it fails; ranges and combinations are
//! the configs' `validate` (and the experiment planner's) job.

pub mod experiment;
pub mod finetune;
pub mod optim;
pub mod pretrain_box;
pub mod pretrain_image;

pub use experiment::ExperimentForm;
pub use finetune::FinetuneForm;
pub use optim::OptimForm;
pub use pretrain_box::PretrainBoxForm;
pub use pretrain_image::PretrainImageForm;

use aligndet_common::train_config::InitConfig;

/// The values of the new-run page's three training forms, each a default or what was posted.
pub struct TrainingForms {
    pub ft: FinetuneForm,
    pub pb: PretrainBoxForm,
    pub pi: PretrainImageForm,
}

impl TrainingForms {
    pub fn defaults() -> TrainingForms {
        TrainingForms {
            ft: FinetuneForm::defaults(),
            pb: PretrainBoxForm::defaults(),
            pi: PretrainImageForm::defaults(),
        }
    }
}

/// How a config enum is spelled in JSON (and so in the form's option values).
pub fn wire_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A JSON value as form text: numbers as Rust prints them (0.0001, not 1e-4), null as blank.
pub fn json_text(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n
            .as_u64()
            .map(|u| u.to_string())
            .or_else(|| n.as_i64().map(|i| i.to_string()))
            .or_else(|| n.as_f64().map(|f| f.to_string()))
            .unwrap_or_default(),
        other => other.to_string(),
    }
}

/// Numbers as a form's list text: `5, 10`.
pub fn comma_list<T: ToString>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(", ")
}

/// A config enum from its JSON spelling; serde's message lists the accepted values.
pub fn enum_of<T: serde::de::DeserializeOwned>(field: &str, v: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(v.to_string()))
        .map_err(|e| format!("{field}: {e}"))
}

/// A config enum's JSON spelling, checked.
pub fn enum_value<T: serde::de::DeserializeOwned + serde::Serialize>(
    field: &str,
    v: &str,
) -> Result<serde_json::Value, String> {
    let parsed: T = enum_of(field, v)?;
    serde_json::to_value(parsed).map_err(|e| format!("{field}: {e}"))
}

/// A whole number, or `None` when blank.
pub fn number<T: std::str::FromStr>(field: &str, v: &str) -> Result<Option<T>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("{field}: {v:?} is not a whole number in range"))
}

/// A finite real number, or `None` when blank (JSON has no NaN or infinity).
pub fn real(field: &str, v: &str) -> Result<Option<f64>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(Some(x)),
        _ => Err(format!("{field}: {v:?} is not a finite number")),
    }
}

/// Comma- (or space-) separated whole numbers; blank gives an empty list.
pub fn number_list<T: std::str::FromStr>(field: &str, v: &str) -> Result<Vec<T>, String> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse()
                .map_err(|_| format!("{field}: {p:?} is not a whole number"))
        })
        .collect()
}

/// A whole number into `c[key]` unless blank; `field` names it in the error.
pub fn put_number<T: std::str::FromStr + Into<serde_json::Value>>(
    c: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
    field: &str,
    v: &str,
) -> Result<(), String> {
    if let Some(n) = number::<T>(field, v)? {
        c.insert(key.into(), n.into());
    }
    Ok(())
}

/// A finite real number into `c[key]` unless blank; `field` names it in the error.
pub fn put_real(
    c: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
    field: &str,
    v: &str,
) -> Result<(), String> {
    if let Some(x) = real(field, v)? {
        c.insert(key.into(), x.into());
    }
    Ok(())
}

/// Where the weights of a run's artifact come from, as the forms spell it.
pub fn checkpoint_value(run_id: i64, name: &str) -> String {
    format!("checkpoint:{run_id}:{name}")
}

/// The run id and artifact name of a `checkpoint:RUN:ARTIFACT` choice.
pub fn checkpoint_parts(v: &str) -> Option<(i64, &str)> {
    let rest = v.strip_prefix("checkpoint:")?;
    let (run, name) = rest.split_once(':')?;
    Some((run.parse().ok()?, name))
}

/// An `init` field (`scratch`, `imagenet_backbone` or `checkpoint:RUN:ARTIFACT`) as the
/// config's JSON; `field` names it in errors.
pub fn init_json(field: &str, v: &str) -> Result<serde_json::Value, String> {
    use serde_json::json;
    match v {
        "scratch" | "imagenet_backbone" => Ok(json!({ "from": v })),
        _ => {
            let (run_id, name) = checkpoint_parts(v).ok_or_else(|| {
                format!(
                    "{field}: {v:?} is not one of scratch, imagenet_backbone or a listed checkpoint"
                )
            })?;
            aligndet_common::artifacts::check_artifact_name(name)
                .map_err(|e| format!("{field}.artifact.name: {e}"))?;
            Ok(json!({ "from": "checkpoint", "artifact": { "run_id": run_id, "name": name } }))
        }
    }
}

/// An `InitConfig` as an init field's text.
pub fn init_text(init: &InitConfig) -> String {
    match init {
        InitConfig::Scratch => "scratch".into(),
        InitConfig::ImagenetBackbone => "imagenet_backbone".into(),
        InitConfig::Checkpoint { artifact } => checkpoint_value(artifact.run_id, &artifact.name),
    }
}
