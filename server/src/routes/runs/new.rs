//! The new-run page (`GET /runs/new`, optionally pre-filled) and the handlers that create runs
//! from its forms (`POST /runs`), from the raw JSON editor (`POST /runs/json`) and from an
//! uploaded detections file (`POST /runs/evaluate`); a run's clone (`GET /runs/{id}/clone`).

use crate::accounts::CurrentUser;
use crate::db;
use crate::error::{OrNotFound, PageError, PagePath, PageQuery};
use crate::forms::clone::forms_of;
use crate::forms::{
    FieldError, FinetuneForm, PlacedError, PlacementForm, PretrainBoxForm, PretrainImageForm,
    TrainingForm, TrainingForms, checkpoint_parts, real,
};
use crate::routes::render;
use crate::security::CsrfToken;
use crate::state::AppState;
use crate::submit;
use crate::views::new_run::NewRunPage;
use aligndet_common::capabilities::Requirements;
use aligndet_common::jobs::{JobConfig, RunKind};
use aligndet_common::pretrain_config::PretrainBoxConfig;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use std::collections::HashMap;

/// `GET /runs/new`, optionally pre-filled: `kind` names the form, and `dataset_id`,
/// `detector`, `backbone`, `init` / `backbone_init`, `proposals_run_id` replace its defaults
/// (the run pages' "fine-tune from this" and "use as backbone" links).
pub async fn new_form(
    State(s): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    PageQuery(query): PageQuery<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let mut forms = TrainingForms::defaults();
    match given(&query, "kind").as_deref().and_then(RunKind::parse) {
        Some(RunKind::Finetune) => {
            let ft = &mut forms.ft;
            let inputs = [
                ("dataset_id", &mut ft.dataset_id),
                ("detector", &mut ft.detector),
                ("backbone", &mut ft.backbone),
                ("init", &mut ft.init),
            ];
            prefill(&query, inputs);
            if let Some((run, artifact)) = checkpoint_parts(&ft.init) {
                ft.init_run = run.to_string();
                ft.init_artifact = artifact.to_string();
            }
        }
        Some(RunKind::PretrainBox) => {
            if let Some(d) = given(&query, "detector")
                .and_then(|d| serde_json::from_value(serde_json::Value::String(d)).ok())
            {
                forms.pb = PretrainBoxForm::of_config(&PretrainBoxConfig::for_detector(d));
            }
            let pb = &mut forms.pb;
            prefill(
                &query,
                [
                    ("dataset_id", &mut pb.dataset_id),
                    ("proposals_run_id", &mut pb.proposals_run_id),
                    ("backbone", &mut pb.backbone),
                    ("backbone_init", &mut pb.backbone_init),
                ],
            );
        }
        Some(RunKind::PretrainImage) => {
            let pi = &mut forms.pi;
            prefill(
                &query,
                [
                    ("dataset_id", &mut pi.dataset_id),
                    ("backbone", &mut pi.backbone),
                ],
            );
        }
        _ => {}
    }
    Ok(render(&NewRunPage::new(&s, csrf.0, None, forms).await?))
}

/// `GET /runs/{id}/clone`: the new-run page with the run's form (by kind) filled from its
/// config and the raw JSON editor holding the config itself; a run whose dataset was deleted
/// opens with that said beside the dataset choice.
pub async fn clone_form(
    State(s): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    PagePath(id): PagePath<i64>,
) -> Result<Response, PageError> {
    let run = db::runs::get(&s.pool, id).await?.or_not_found("run", id)?;
    let config = run.config.typed.as_ref().map_err(|e| {
        PageError::bad_request(format!(
            "run #{id}'s stored config cannot be read by this version ({e}); it cannot be cloned"
        ))
    })?;
    let name: String = format!("{} (clone)", run.name).chars().take(200).collect();
    let (forms, tag) = forms_of(config, &name).unwrap_or((TrainingForms::defaults(), ""));
    let mut error = None;
    if let Some(d) = config.dataset_id()
        && db::datasets::get(&s.pool, d).await?.is_none()
    {
        let e = FieldError::new(
            "dataset_id",
            format!("run #{id} used dataset #{d}, which was deleted: choose another dataset"),
        );
        error = Some(PlacedError::new(e, tag, Some("dataset_id")));
    }
    let form = match tag {
        "ft" => "the fine-tune form",
        "pb" => "the box-domain pre-training form",
        "pi" => "the image-domain pre-training form",
        _ => "the JSON editor",
    };
    let notice = format!(
        "Cloning run #{id} ({}): {form} below holds its config; change what you like and queue it.",
        run.name
    );
    let page = NewRunPage::new(&s, csrf.0, error, forms)
        .await?
        .with_json(&name, &serde_json::to_string_pretty(&run.config.json)?)
        .with_notice(notice);
    Ok(render(&page))
}

/// The raw JSON editor's post: a run name and a config as JSON.
#[derive(serde::Deserialize)]
pub struct JsonRunForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    config: String,
}

/// `POST /runs/json`: the config typed as JSON goes through the same checks as the forms'
/// (its `validate`, then [`submit`]), so it is refused with the same field errors.
pub async fn create_from_json(
    State(s): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Extension(csrf): Extension<CsrfToken>,
    axum::Form(form): axum::Form<JsonRunForm>,
) -> Result<Response, PageError> {
    let config = serde_json::from_str::<JobConfig>(&form.config)
        .map_err(|e| FieldError::new("config", format!("not a run config: {e}")));
    let anywhere = PlacementForm::default();
    let outcome = queue_from_form(&s, &user, form.name.trim(), config, false, &anywhere).await?;
    match outcome {
        Ok(id) => Ok(Redirect::to(&format!("/runs/{id}")).into_response()),
        Err(e) => {
            let page = NewRunPage::new(
                &s,
                csrf.0,
                Some(PlacedError::general(e)),
                TrainingForms::defaults(),
            )
            .await?
            .with_json(&form.name, &form.config);
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
        }
    }
}

/// A query parameter's value, trimmed (`None` when absent or blank).
fn given(query: &[(String, String)], key: &str) -> Option<String> {
    query
        .iter()
        .find(|(n, _)| n == key)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Each (query key, input) pair: the query's value, where given, replaces the input's default.
fn prefill<'a>(
    query: &[(String, String)],
    inputs: impl IntoIterator<Item = (&'a str, &'a mut String)>,
) {
    for (key, input) in inputs {
        if let Some(v) = given(query, key) {
            *input = v;
        }
    }
}

/// A person's mistake (the form comes back with it) inside a server result (500 otherwise).
type Checked<T> = Result<Result<T, FieldError>, PageError>;

/// The other forms' JSON (benchmark, proposals, evaluation) → the typed job config, validated
/// (the error names the field).
fn typed_config(json: &serde_json::Value) -> Result<aligndet_common::jobs::JobConfig, FieldError> {
    let config = serde_json::from_value::<aligndet_common::jobs::JobConfig>(json.clone())
        .map_err(|e| FieldError::general(format!("invalid config: {e}")))?;
    config.validate()?;
    Ok(config)
}

/// Queue a run built from a form: the config is typed and validated, then [`submit`] makes the
/// same checks as for a script's run. The inner error is the person's ("field: problem"; the
/// form comes back with it), the outer one the server's.
async fn queue_from_form(
    s: &AppState,
    user: &CurrentUser,
    name: &str,
    config: Result<JobConfig, FieldError>,
    aligned_rule: bool,
    placement: &PlacementForm,
) -> Checked<i64> {
    let checked = config.and_then(|c| {
        c.validate()?;
        Ok((c, placement.parse()?))
    });
    let (config, (requirements, priority)) = match checked {
        Ok(parsed) => parsed,
        Err(e) => return Ok(Err(e)),
    };
    let run = submit::NewRun {
        name: name.to_string(),
        config,
        max_attempts: None,
        parents: vec![],
        depends_on: vec![],
        aligned_rule,
        requirements,
        priority,
        created_by: Some(user.id),
    };
    match submit::submit(s, run).await {
        Ok(id) => Ok(Ok(id)),
        Err(submit::SubmitError::Field(e)) => Ok(Err(e)),
        Err(submit::SubmitError::Internal(e)) => Err(e.into()),
    }
}

/// Queue the run a posted training form describes: the form comes back with the outcome (the
/// run's id, or the error placed beside its input) so that a refused form keeps it.
async fn queue_training<F: TrainingForm>(
    s: &AppState,
    user: &CurrentUser,
    form: F,
) -> Result<(Result<i64, PlacedError>, TrainingForms), PageError> {
    let outcome = queue_from_form(
        s,
        user,
        form.run_name(),
        form.job_config(),
        form.aligned_rule(),
        form.placement(),
    )
    .await?
    .map_err(|e| {
        let input = form.input_of(&e.field);
        PlacedError::new(e, F::TAG, input.as_deref())
    });
    Ok((outcome, form.among_defaults()))
}

/// The new-run form, posted as url-encoded fields. Numbers arrive as strings; the typed config
/// (with its validation) decides what is acceptable.
pub async fn create(
    State(s): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Extension(csrf): Extension<CsrfToken>,
    axum::Form(form): axum::Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
    };
    // The training forms come back with what was typed and the error naming the field.
    let kind = field("kind").as_deref().and_then(RunKind::parse);
    let training = match kind {
        Some(RunKind::Finetune) => {
            Some(queue_training(&s, &user, FinetuneForm::posted(&form)?).await?)
        }
        Some(RunKind::PretrainBox) => {
            Some(queue_training(&s, &user, PretrainBoxForm::posted(&form)?).await?)
        }
        Some(RunKind::PretrainImage) => {
            Some(queue_training(&s, &user, PretrainImageForm::posted(&form)?).await?)
        }
        _ => None,
    };
    if let Some((outcome, forms)) = training {
        return match outcome {
            Ok(id) => Ok(Redirect::to(&format!("/runs/{id}")).into_response()),
            Err(e) => Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                render(&NewRunPage::new(&s, csrf.0, Some(e), forms).await?),
            )
                .into_response()),
        };
    }
    let result = (|| {
        let kind = field("kind").unwrap_or_default();
        let mut config = serde_json::Map::new();
        config.insert("kind".into(), kind.clone().into());
        match RunKind::parse(&kind) {
            Some(RunKind::Benchmark) => {
                if let Some(b) = field("backbone") {
                    config.insert("backbone".into(), b.into());
                }
                for key in ["batch_size", "resolution", "steps", "warmup_steps"] {
                    if let Some(v) = field(key).filter(|v| !v.is_empty()) {
                        let n: u32 = v
                            .parse()
                            .map_err(|_| format!("{key}: {v:?} is not a whole number"))?;
                        config.insert(key.into(), n.into());
                    }
                }
            }
            Some(RunKind::Proposals) => {
                let dataset: i64 = field("dataset_id")
                    .and_then(|v| v.parse().ok())
                    .ok_or("choose a dataset")?;
                config.insert("dataset_id".into(), dataset.into());
                if let Some(st) = field("strategy") {
                    config.insert("strategy".into(), st.into());
                }
                for key in ["max_images", "seed"] {
                    if let Some(v) = field(key).filter(|v| !v.is_empty()) {
                        let n: u64 = v
                            .parse()
                            .map_err(|_| format!("{key}: {v:?} is not a whole number"))?;
                        config.insert(key.into(), n.into());
                    }
                }
                let mut filter = serde_json::Map::new();
                for key in ["min_side", "max_aspect", "max_relative_size", "nms_iou"] {
                    if let Some(x) =
                        real(key, &field(key).unwrap_or_default()).map_err(|e| e.to_string())?
                    {
                        filter.insert(key.into(), x.into());
                    }
                }
                if let Some(v) = field("top_k").filter(|v| !v.is_empty()) {
                    let n: u32 = v
                        .parse()
                        .map_err(|_| format!("top_k: {v:?} is not a whole number"))?;
                    filter.insert("top_k".into(), n.into());
                }
                config.insert("filter".into(), serde_json::Value::Object(filter));
            }
            Some(RunKind::Evaluate) => {
                let dataset: i64 = field("dataset_id")
                    .and_then(|v| v.parse().ok())
                    .ok_or("choose a dataset")?;
                config.insert("dataset_id".into(), dataset.into());
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
            }
            // The training forms are handled above, with their own re-rendering.
            Some(RunKind::Finetune | RunKind::PretrainBox | RunKind::PretrainImage) | None => {
                return Err(format!("unknown run kind {kind:?}"));
            }
        }
        Ok((
            field("name").unwrap_or_default(),
            serde_json::Value::Object(config),
        ))
    })();
    let outcome = match result {
        Ok((name, config)) => {
            let anywhere = PlacementForm::default();
            queue_from_form(&s, &user, &name, typed_config(&config), false, &anywhere).await?
        }
        Err(e) => Err(FieldError::general(e)),
    };
    match outcome {
        Ok(id) => Ok(Redirect::to(&format!("/runs/{id}")).into_response()),
        Err(e) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            render(
                &NewRunPage::new(
                    &s,
                    csrf.0,
                    Some(PlacedError::general(e)),
                    TrainingForms::defaults(),
                )
                .await?,
            ),
        )
            .into_response()),
    }
}

/// Multipart form: `name`, `dataset_id`, `split`, and the COCO results file `detections`.
/// The run and its input artifact are stored in one transaction, so no worker can claim the run
/// before its detections are in place.
pub async fn create_evaluate_upload(
    State(s): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    mut multipart: axum::extract::Multipart,
) -> Result<Response, PageError> {
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut detections: Option<Vec<u8>> = None;
    let limit = (s.cfg.upload_limit_mib * 1024 * 1024) as usize;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| PageError::bad_request(format!("the upload could not be read: {e}")))?
    {
        let name = field.name().unwrap_or("").to_string();
        if name == "detections" {
            let bytes = field.bytes().await.map_err(|e| {
                PageError::bad_request(format!("the detections upload failed or is too large: {e}"))
            })?;
            if bytes.len() > limit {
                return Err(PageError::bad_request(
                    "the detections file is larger than the upload limit",
                ));
            }
            detections = Some(bytes.to_vec());
        } else {
            let text = field
                .text()
                .await
                .map_err(|e| PageError::bad_request(e.to_string()))?;
            fields.insert(name, text);
        }
    }
    let detections =
        detections.ok_or_else(|| PageError::bad_request("choose a COCO results file to upload"))?;
    // Refuse what is not JSON now, with the parser's position; the worker checks the rest.
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&detections) {
        return Err(PageError::bad_request(format!(
            "the detections file is not valid JSON: {e}"
        )));
    }
    let dataset_id: i64 = fields
        .get("dataset_id")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| PageError::bad_request("choose a dataset"))?;
    let split = fields
        .get("split")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let name = aligndet_common::names::check_display_name(
        fields.get("name").map_or("evaluation", |n| n.as_str()),
        "the run name",
        200,
    )
    .map_err(PageError::bad_request)?;
    if db::datasets::get(&s.pool, dataset_id).await?.is_none() {
        return Err(PageError::bad_request(format!(
            "dataset_id: dataset {dataset_id} not found"
        )));
    }
    let artifact = "detections.json";

    let mut tx = s.pool.begin().await?;
    // The run id is needed in the config; insert with a placeholder and set it in the same tx.
    let mut config = aligndet_common::jobs::EvaluateConfig {
        dataset_id,
        split,
        detections: aligndet_common::artifacts::ArtifactRef {
            run_id: 0,
            name: artifact.into(),
        },
    };
    let job = JobConfig::Evaluate(config.clone());
    let config_json = serde_json::to_value(&job)?;
    let id = db::runs::create_in(
        &mut tx,
        &db::runs::NewRun {
            kind: RunKind::Evaluate.as_str(),
            name: &name,
            config: config_json,
            dataset_id: Some(dataset_id),
            max_attempts: s.cfg.max_attempts,
            parents: vec![],
            experiment: None,
            requirements: &Requirements::for_config(&job),
            priority: 0,
            created_by: Some(user.id),
        },
    )
    .await?;
    config.detections.run_id = id;
    config
        .validate()
        .map_err(|e| PageError::bad_request(e.to_string()))?;
    db::runs::set_config(
        &mut tx,
        id,
        &serde_json::to_value(aligndet_common::jobs::JobConfig::Evaluate(config))?,
    )
    .await?;
    let dir = s.artifacts_dir(id);
    tokio::fs::create_dir_all(&dir).await?;
    tokio::fs::write(dir.join(artifact), &detections).await?;
    db::runs::insert_artifact_in(&mut tx, id, artifact, detections.len() as i64).await?;
    if let Err(e) = tx.commit().await {
        let _ = tokio::fs::remove_dir_all(&dir).await;
        return Err(e.into());
    }
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}
