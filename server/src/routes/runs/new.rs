//! The new-run page (`GET /runs/new`, optionally pre-filled) and a run's clone
//! (`GET /runs/{id}/clone`): the page's forms filled before anything is typed. What the forms
//! post is [`super::create`]'s.

use crate::accounts::gate::UserPage;
use crate::db;
use crate::error::PageResult;
use crate::error::{OrNotFound, PageError, PagePath, PageQuery};
use crate::forms::clone::forms_of;
use crate::forms::{FieldError, PlacedError, PretrainBoxForm, TrainingForms, checkpoint_parts};
use crate::routes::render;
use crate::views::new_run::NewRunPage;
use aligndet_common::jobs::RunKind;
use aligndet_common::pretrain_config::PretrainBoxConfig;

/// `GET /runs/new`, optionally pre-filled: `kind` names the form, and `dataset_id`,
/// `detector`, `backbone`, `init` / `backbone_init`, `proposals_run_id` replace its defaults
/// (the run pages' "fine-tune from this" and "use as backbone" links).
pub async fn new_form(
    UserPage { s, csrf, .. }: UserPage,
    PageQuery(query): PageQuery<Vec<(String, String)>>,
) -> PageResult {
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
    UserPage { s, csrf, .. }: UserPage,
    PagePath(id): PagePath<i64>,
) -> PageResult {
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
