//! The HTML forms as text, field by field, and their text → value step. One copy of the field
//! helpers every form shares (enums by their JSON spelling, whole and real numbers, number
//! lists, init choices), then one module per form:
//!
//! - [`optim`]: the optimisation fields every training form has (a config's `optim`);
//! - [`finetune`], [`pretrain_box`], [`pretrain_image`]: the new-run page's training forms;
//! - [`training`]: what the new-run page does with any of the three ([`TrainingForm`]);
//! - [`job_fields`]: the new-run page's benchmark, proposals and evaluation forms;
//! - [`experiment`]: the new-experiment form.
//!
//! Only parsing happens here, with the field named when it fails ([`FieldError`]); ranges and
//! combinations are the configs' `validate` (and the experiment planner's) job.

pub mod actions;
pub mod clone;
pub mod experiment;
pub mod finetune;
pub mod job_fields;
pub mod optim;
pub mod placement;
pub mod pretrain_box;
pub mod pretrain_image;
pub mod training;

pub use experiment::ExperimentForm;
pub use finetune::FinetuneForm;
pub use optim::OptimForm;
pub use placement::PlacementForm;
pub use pretrain_box::PretrainBoxForm;
pub use pretrain_image::PretrainImageForm;
pub use training::{TrainingForm, TrainingForms};

use aligndet_common::config_error::ConfigError;
use aligndet_common::optim_config::OPTIM_KEY;
use aligndet_common::train_config::InitConfig;
use serde::Deserialize;

/// A person's mistake in one field: the field as the config names it (`lr`,
/// `schedule.milestones`, `init.artifact.run_id`; blank when no one field is to blame) and
/// what is wrong. Shown as "field: message" in the form's summary and as the message beside
/// the field's input.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// A mistake no one field is to blame for (shown only in the summary).
    pub fn general(message: impl Into<String>) -> FieldError {
        FieldError::new("", message)
    }

    /// A "field: message" text (the experiment planner's errors) split back into its parts;
    /// text that does not start with a field name is a general error.
    pub fn from_text(text: &str) -> FieldError {
        match text.split_once(": ") {
            Some((field, message))
                if !field.is_empty()
                    && field
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') =>
            {
                FieldError::new(field, message)
            }
            _ => FieldError::general(text),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl From<ConfigError> for FieldError {
    fn from(e: ConfigError) -> FieldError {
        FieldError {
            field: e.field,
            message: e.problem,
        }
    }
}

/// A form's error, placed: the input it belongs beside (none: only the summary at the top).
pub struct PlacedError {
    pub error: FieldError,
    /// The form (`ft`, `pb`, `pi`, `experiment`) and the `name` of the input.
    pub input: Option<(&'static str, String)>,
}

impl PlacedError {
    /// The error beside `input` of `form` (when the form has that input).
    pub fn new(error: FieldError, form: &'static str, input: Option<&str>) -> PlacedError {
        PlacedError {
            input: input.map(|i| (form, i.to_string())),
            error,
        }
    }

    /// An error of no one input (the summary box only).
    pub fn general(error: FieldError) -> PlacedError {
        PlacedError { error, input: None }
    }

    /// Whether it belongs beside `name` of `form`.
    pub fn is_at(&self, form: &str, name: &str) -> bool {
        self.input
            .as_ref()
            .is_some_and(|(f, n)| f == &form && n == name)
    }
}

/// The inputs every training form has besides the optimisation and placement ones.
const TRAINING_INPUTS: &[&str] = &["name", "dataset_id"];

/// [`input_for`] on a training form: its own inputs and the ones every training form has (name,
/// dataset, optimisation, placement).
pub fn training_input_for(field: &str, own: &[&str]) -> Option<String> {
    if let Some(input) = placement::input_of_requirement(field) {
        return Some(input.to_string());
    }
    let all: Vec<&str> = own
        .iter()
        .chain(TRAINING_INPUTS)
        .chain(optim::INPUTS)
        .chain(placement::INPUTS)
        .copied()
        .collect();
    input_for(field, &all)
}

/// A posted form as its text struct (`#[derive(Deserialize)]` with `#[serde(default)]`): each
/// field as typed, trimmed; an absent field blank, an absent (unticked) checkbox `false` (see
/// [`ticked`]); names the struct does not have (the CSRF token, `kind`) ignored; of a repeated
/// name the first counts.
pub fn read_posted<T: serde::de::DeserializeOwned>(
    fields: &[(String, String)],
) -> Result<T, crate::error::PageError> {
    let mut seen = std::collections::HashSet::new();
    let pairs = fields
        .iter()
        .filter(|(name, _)| seen.insert(name.as_str()))
        .map(|(name, value)| (name.as_str(), value.trim()));
    T::deserialize(serde::de::value::MapDeserializer::<
        _,
        serde::de::value::Error,
    >::new(pairs))
    .map_err(|e| crate::error::PageError::bad_request(format!("the form could not be read: {e}")))
}

/// `deserialize_with` of a checkbox: posted (whatever its value) means ticked.
pub fn ticked<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d)?;
    Ok(true)
}

/// The dataset select's value (blank or not a number: none was chosen).
pub fn dataset_id(v: &str) -> Result<i64, FieldError> {
    v.parse()
        .map_err(|_| FieldError::new("dataset_id", "choose a dataset"))
}

/// The input of a form that a config field is shown beside: the field itself when the form has
/// an input of that name, else its last part without the config's grouping (`optim.`,
/// `augment.`, `views.`, `schedule.`), else, for a checkpoint (`init.artifact.run_id`), the
/// init choice.
pub fn input_for(field: &str, inputs: &[&str]) -> Option<String> {
    let has = |name: &str| inputs.contains(&name).then(|| name.to_string());
    let field = field
        .strip_prefix(OPTIM_KEY)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(field);
    if let Some(found) = has(field) {
        return Some(found);
    }
    for group in ["augment.", "views.", "schedule."] {
        if let Some(rest) = field.strip_prefix(group) {
            return has(rest);
        }
    }
    field
        .split_once(".artifact.")
        .and_then(|(init, _)| has(init))
}

/// The attributes of an input: marked invalid, focused (so the page scrolls to it) and
/// described by its message when `error` is beside it, none otherwise.
pub fn invalid_attrs(error: Option<&PlacedError>, form: &str, name: &str) -> &'static str {
    if error.is_some_and(|e| e.is_at(form, name)) {
        r#" aria-invalid="true" aria-describedby="field-error" autofocus"#
    } else {
        ""
    }
}

/// The message shown under an input (escaped HTML), when `error` is beside it.
pub fn error_note(error: Option<&PlacedError>, form: &str, name: &str) -> String {
    match error {
        Some(e) if e.is_at(form, name) => format!(
            r#"<small class="field-error" id="field-error">{}</small>"#,
            escape_html(&e.error.message)
        ),
        _ => String::new(),
    }
}

/// Text as HTML text or attribute value.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A select's options: each value as JSON spells it, with its label.
pub fn choices<T: serde::Serialize + Copy>(
    all: &[T],
    label: impl Fn(T) -> &'static str,
) -> Vec<(String, &'static str)> {
    all.iter().map(|&k| (wire_name(&k), label(k))).collect()
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
pub fn enum_of<T: serde::de::DeserializeOwned>(field: &str, v: &str) -> Result<T, FieldError> {
    serde_json::from_value(serde_json::Value::String(v.to_string()))
        .map_err(|e| FieldError::new(field, e.to_string()))
}

/// A whole number, or `None` when blank.
pub fn number<T: std::str::FromStr>(field: &str, v: &str) -> Result<Option<T>, FieldError> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| FieldError::new(field, format!("{v:?} is not a whole number in range")))
}

/// A finite real number, or `None` when blank (JSON has no NaN or infinity).
pub fn real(field: &str, v: &str) -> Result<Option<f64>, FieldError> {
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(Some(x)),
        _ => Err(FieldError::new(
            field,
            format!("{v:?} is not a finite number"),
        )),
    }
}

/// Comma- (or space-) separated whole numbers; blank gives an empty list.
pub fn number_list<T: std::str::FromStr>(field: &str, v: &str) -> Result<Vec<T>, FieldError> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse()
                .map_err(|_| FieldError::new(field, format!("{p:?} is not a whole number")))
        })
        .collect()
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
/// config's value; `field` names it in errors.
pub fn init_config(field: &str, v: &str) -> Result<InitConfig, FieldError> {
    match v {
        "scratch" => Ok(InitConfig::Scratch),
        "imagenet_backbone" => Ok(InitConfig::ImagenetBackbone),
        _ => {
            let (run_id, name) = checkpoint_parts(v).ok_or_else(|| {
                FieldError::new(
                    field,
                    format!(
                        "{v:?} is not one of scratch, imagenet_backbone or a listed checkpoint"
                    ),
                )
            })?;
            checkpoint_init(&format!("{field}.artifact.name"), run_id, name)
        }
    }
}

/// A checkpoint init of run `run_id`'s artifact `name` (the name checked; `field` names it).
pub fn checkpoint_init(field: &str, run_id: i64, name: &str) -> Result<InitConfig, FieldError> {
    aligndet_common::artifacts::check_artifact_name(name).map_err(|e| FieldError::new(field, e))?;
    Ok(InitConfig::Checkpoint {
        artifact: aligndet_common::artifacts::ArtifactRef {
            run_id,
            name: name.to_string(),
        },
    })
}

/// A list field's numbers, or `default` when blank.
pub fn number_list_or<T: std::str::FromStr>(
    field: &str,
    v: &str,
    default: Vec<T>,
) -> Result<Vec<T>, FieldError> {
    if v.is_empty() {
        Ok(default)
    } else {
        number_list(field, v)
    }
}

/// An init field's value, or `default` when blank.
pub fn init_or(field: &str, v: &str, default: &InitConfig) -> Result<InitConfig, FieldError> {
    if v.is_empty() {
        Ok(default.clone())
    } else {
        init_config(field, v)
    }
}

/// A text field as typed, or `default` when blank.
pub fn text_or(v: &str, default: &str) -> String {
    if v.is_empty() { default } else { v }.to_string()
}

/// A stored id as a select's or input's value (0, a fresh config's "none chosen", is blank).
pub fn id_text(id: i64) -> String {
    if id > 0 {
        id.to_string()
    } else {
        String::new()
    }
}

/// The resize inputs every training form has (`min_sizes`, `max_size`) as the shorter-side sizes
/// and the longer-side cap, blank keeping `d_min` / `d_max`; `group` is where the config keeps
/// them (`augment`, `views`), for the errors.
pub fn resize_sizes(
    group: &str,
    min_sizes: &str,
    max_size: &str,
    (d_min, d_max): (&[u32], u32),
) -> Result<(Vec<u32>, u32), FieldError> {
    let min_sizes = number_list_or(&format!("{group}.min_sizes"), min_sizes, d_min.to_vec())?;
    let max_size = number(&format!("{group}.max_size"), max_size)?.unwrap_or(d_max);
    Ok((min_sizes, max_size))
}

/// An `InitConfig` as an init field's text.
pub fn init_text(init: &InitConfig) -> String {
    match init {
        InitConfig::Scratch => "scratch".into(),
        InitConfig::ImagenetBackbone => "imagenet_backbone".into(),
        InitConfig::Checkpoint { artifact } => checkpoint_value(artifact.run_id, &artifact.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_as_text_and_back() {
        let e = FieldError::new("schedule.milestones", "must be increasing");
        assert_eq!(e.to_string(), "schedule.milestones: must be increasing");
        assert_eq!(FieldError::from_text(&e.to_string()), e);
        let general = FieldError::from_text("choose a dataset");
        assert_eq!(general.field, "");
        assert_eq!(general.to_string(), "choose a dataset");
        assert_eq!(
            FieldError::from_text("fractions: dataset \"x\": y").field,
            "fractions"
        );
    }

    #[test]
    fn posted_fields_become_the_forms_text() {
        let fields: Vec<(String, String)> = [
            ("name", "  my run "),
            ("csrf", "token"),
            ("lr", "0.02"),
            ("lr", "9"),
            ("hflip", "on"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let form = FinetuneForm::posted(&fields).unwrap();
        assert_eq!(form.name, "my run", "trimmed");
        assert_eq!(form.opt.lr, "0.02", "the first of a repeated name");
        assert!(form.hflip, "a posted checkbox is ticked");
        assert!(!form.no_decay_norm_and_bias, "an absent one is not");
        assert_eq!(form.opt.steps, "", "absent is blank");
        assert_eq!(
            form.opt.reference.steps, 1000,
            "the kind's reference schedule"
        );
    }

    #[test]
    fn the_error_sits_beside_its_input_only() {
        let placed = PlacedError::new(FieldError::new("lr", "<bad>"), "ft", Some("lr"));
        assert!(invalid_attrs(Some(&placed), "ft", "lr").contains("aria-invalid=\"true\""));
        assert_eq!(invalid_attrs(Some(&placed), "pb", "lr"), "");
        assert_eq!(invalid_attrs(None, "ft", "lr"), "");
        assert_eq!(
            error_note(Some(&placed), "ft", "lr"),
            "<small class=\"field-error\" id=\"field-error\">&lt;bad&gt;</small>"
        );
        assert_eq!(error_note(Some(&placed), "ft", "steps"), "");
        let general = PlacedError::general(FieldError::general("x"));
        assert_eq!(invalid_attrs(Some(&general), "ft", "lr"), "");
    }
}
