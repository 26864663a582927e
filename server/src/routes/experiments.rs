//! Experiment pages: the list, the new-experiment form and its post, an experiment's page.
//! Thin adapters over [`crate::experiments`] (planning, creation, summaries) and
//! [`crate::forms::experiment`] (the form's text).

use crate::accounts::gate::UserPage;
use crate::db;
use crate::db::datasets::DatasetRow;
use crate::db::experiments::{ExperimentRow, ExperimentSummary};
use crate::error::PageForm;
use crate::error::PageResult;
use crate::error::{OrNotFound, PageError, PagePath};
use crate::experiments::summary::summary;
use crate::experiments::{RunView, SummaryRow, compare_url, create, run_views};
use crate::forms::{ExperimentForm, FieldError, PlacedError, choices, error_note, invalid_attrs};
use crate::numbers::filters;
use crate::routes::{refused, render};
use crate::state::AppState;
use aligndet_common::jobs::{RunKind, RunStatus};
use aligndet_common::train_config::{BackboneKind, DetectorKind};
use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect};

#[derive(Template)]
#[template(path = "new_experiment.html")]
struct NewExperimentPage {
    csrf: String,
    /// A refused post's error, beside its input when the form has it.
    error: Option<PlacedError>,
    form: ExperimentForm,
    datasets: Vec<DatasetRow>,
    /// Succeeded proposals runs: (id, dataset id, label).
    proposals_runs: Vec<(i64, String)>,
    /// Box-domain pre-trainings that have not failed: (id, label).
    pretrained_runs: Vec<(i64, String)>,
    detectors: Vec<(String, &'static str)>,
    backbones: Vec<(String, &'static str)>,
}

impl NewExperimentPage {
    async fn new(
        s: &AppState,
        csrf: String,
        error: Option<PlacedError>,
        form: ExperimentForm,
    ) -> Result<NewExperimentPage, PageError> {
        let datasets = db::datasets::list(&s.pool).await?;
        let runs = db::runs::list(
            &s.pool,
            &db::runs::RunFilter {
                kind: Some(RunKind::Proposals.as_str().into()),
                status: Some(RunStatus::Succeeded.as_str().into()),
                ..Default::default()
            },
        )
        .await?;
        let label = |r: &db::runs::RunRow| {
            let dataset = datasets
                .iter()
                .find(|d| Some(d.id) == r.dataset_id)
                .map(|d| d.name.clone())
                .unwrap_or_else(|| "?".into());
            (r.id, format!("#{} {} (dataset {dataset})", r.id, r.name))
        };
        let proposals_runs = runs.iter().map(label).collect();
        let pretrained_runs = db::runs::list(
            &s.pool,
            &db::runs::RunFilter {
                kind: Some(RunKind::PretrainBox.as_str().into()),
                ..Default::default()
            },
        )
        .await?
        .iter()
        .filter(|r| r.status != RunStatus::Failed && r.status != RunStatus::Cancelled)
        .map(|r| {
            let (id, text) = label(r);
            (id, format!("{text}, {}", r.status))
        })
        .collect();
        Ok(NewExperimentPage {
            csrf,
            error,
            form,
            datasets,
            proposals_runs,
            pretrained_runs,
            detectors: choices(&DetectorKind::ALL, |k| k.label()),
            backbones: choices(&BackboneKind::ALL, |k| k.label()),
        })
    }

    /// The attributes of input `name` (marked invalid and focused when the error is beside it).
    fn invalid(&self, name: &str) -> &'static str {
        invalid_attrs(self.error.as_ref(), "experiment", name)
    }

    /// The error's message under input `name`, when it is beside it (escaped HTML).
    fn note(&self, name: &str) -> String {
        error_note(self.error.as_ref(), "experiment", name)
    }
}

pub async fn new_form(UserPage { s, csrf, .. }: UserPage) -> PageResult {
    Ok(render(
        &NewExperimentPage::new(&s, csrf.0, None, ExperimentForm::defaults()).await?,
    ))
}

pub async fn create_from_form(
    UserPage { s, user, csrf }: UserPage,
    PageForm(fields): PageForm<Vec<(String, String)>>,
) -> PageResult {
    let form = ExperimentForm::posted(&fields)?;
    let outcome = match form.to_spec() {
        Ok(spec) => create(&s, &spec, Some(user.id))
            .await?
            .map_err(|e| FieldError::from_text(&e)),
        Err(e) => Err(e),
    };
    let outcome = outcome.map_err(|e| {
        let input = ExperimentForm::input_for(&e.field);
        PlacedError::new(e, "experiment", input.as_deref())
    });
    match outcome {
        Ok(created) => Ok(Redirect::to(&format!("/experiments/{}", created.id)).into_response()),
        Err(e) => Ok(refused(
            &NewExperimentPage::new(&s, csrf.0, Some(e), form).await?,
        )),
    }
}

#[derive(Template)]
#[template(path = "experiment.html")]
struct ExperimentPage {
    exp: ExperimentRow,
    spec_pretty: String,
    runs: Vec<RunView>,
    reused_proposals: Option<i64>,
    reused_pretraining: Option<i64>,
    compare_url: String,
    finished: usize,
    failed: usize,
    summary: Vec<SummaryRow>,
}

impl ExperimentPage {
    /// Whether a run has mask AP (the tables then show it beside box AP).
    fn has_masks(&self) -> bool {
        self.runs.iter().any(|r| r.mask_ap().is_some())
    }
}

pub async fn show(State(s): State<AppState>, PagePath(id): PagePath<i64>) -> PageResult {
    let exp = db::experiments::get(&s.pool, id)
        .await?
        .or_not_found("experiment", id)?;
    let runs = run_views(&s, db::experiments::runs(&s.pool, id).await?).await?;
    let reused_proposals = exp
        .spec
        .get("proposals_run_id")
        .and_then(|v| v.as_i64())
        .filter(|pid| !runs.iter().any(|r| r.id == *pid));
    let reused_pretraining = exp.spec.get("pretrained_run_id").and_then(|v| v.as_i64());
    Ok(render(&ExperimentPage {
        spec_pretty: serde_json::to_string_pretty(&exp.spec)?,
        compare_url: compare_url(&runs),
        finished: runs.iter().filter(|r| r.status.is_terminal()).count(),
        failed: runs
            .iter()
            .filter(|r| matches!(r.status, RunStatus::Failed | RunStatus::Cancelled))
            .count(),
        summary: summary(&runs),
        reused_proposals,
        reused_pretraining,
        runs,
        exp,
    }))
}

#[derive(Template)]
#[template(path = "experiments.html")]
struct ExperimentsPage {
    experiments: Vec<ExperimentSummary>,
}

pub async fn list_page(State(s): State<AppState>) -> PageResult {
    Ok(render(&ExperimentsPage {
        experiments: db::experiments::list(&s.pool).await?,
    }))
}
