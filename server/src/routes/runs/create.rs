//! The handlers that create runs from the new-run page: its forms (`POST /runs`) and the raw
//! JSON editor (`POST /runs/json`). Each refused post shows the page again with what was
//! typed and the error beside its input.

use crate::accounts::CurrentUser;
use crate::accounts::gate::UserPage;
use crate::error::PageError;
use crate::error::PageForm;
use crate::error::PageResult;
use crate::forms::actions::JsonRunForm;
use crate::forms::job_fields::job_json;
use crate::forms::{
    FieldError, FinetuneForm, PlacedError, PlacementForm, PretrainBoxForm, PretrainImageForm,
    TrainingForm, TrainingForms,
};
use crate::routes::refused;
use crate::state::AppState;
use crate::submit;
use crate::views::new_run::NewRunPage;
use aligndet_common::jobs::{JobConfig, RunKind};
use axum::response::{IntoResponse, Redirect};

/// `POST /runs/json`: the config typed as JSON goes through the same checks as the forms'
/// (its `validate`, then [`submit`]), so it is refused with the same field errors.
pub async fn create_from_json(
    UserPage { s, user, csrf }: UserPage,
    PageForm(form): PageForm<JsonRunForm>,
) -> PageResult {
    let config = serde_json::from_str::<JobConfig>(&form.config)
        .map_err(|e| FieldError::new("config", format!("not a run config: {e}")));
    let anywhere = PlacementForm::default();
    let outcome = queue_from_form(&s, &user, form.name.trim(), config, false, &anywhere).await?;
    match outcome {
        Ok(id) => Ok(Redirect::to(&format!("/runs/{id}")).into_response()),
        Err(e) => {
            let error = Some(PlacedError::general(e));
            let page = NewRunPage::new(&s, csrf.0, error, TrainingForms::defaults())
                .await?
                .with_json(&form.name, &form.config);
            Ok(refused(&page))
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
    UserPage { s, user, csrf }: UserPage,
    PageForm(form): PageForm<Vec<(String, String)>>,
) -> PageResult {
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
    };
    // The training forms come back with what was typed and the error naming the field.
    let (outcome, forms) = match field("kind").as_deref().and_then(RunKind::parse) {
        Some(RunKind::Finetune) => queue_training(&s, &user, FinetuneForm::posted(&form)?).await?,
        Some(RunKind::PretrainBox) => {
            queue_training(&s, &user, PretrainBoxForm::posted(&form)?).await?
        }
        Some(RunKind::PretrainImage) => {
            queue_training(&s, &user, PretrainImageForm::posted(&form)?).await?
        }
        _ => {
            let outcome = match job_json(field) {
                Ok((name, config)) => {
                    let anywhere = PlacementForm::default();
                    let config = typed_config(&config);
                    queue_from_form(&s, &user, &name, config, false, &anywhere).await?
                }
                Err(e) => Err(FieldError::general(e)),
            };
            (
                outcome.map_err(PlacedError::general),
                TrainingForms::defaults(),
            )
        }
    };
    match outcome {
        Ok(id) => Ok(Redirect::to(&format!("/runs/{id}")).into_response()),
        Err(e) => Ok(refused(&NewRunPage::new(&s, csrf.0, Some(e), forms).await?)),
    }
}
