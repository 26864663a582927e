//! A run's tags and note (`POST /runs/{id}/tags`), archiving (`POST /runs/{id}/archive`) and
//! deletion: a confirmation page (`GET /runs/{id}/delete`) and the delete itself
//! (`POST /runs/{id}/delete`), allowed to admins and the run's creator.

use crate::accounts::gate::UserPage;
use crate::accounts::{CurrentUser, Role};
use crate::db;
use crate::db::run_manage::{Deletion, Dependent};
use crate::db::runs::RunRow;
use crate::error::PageForm;
use crate::error::PageResult;
use crate::error::{OrNotFound, PageError, PagePath};
use crate::forms::actions::{ArchiveForm, TagsForm};
use crate::manage;
use crate::numbers::filters;
use crate::routes::render;
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};

pub async fn set_tags(
    State(s): State<AppState>,
    PagePath(id): PagePath<i64>,
    PageForm(form): PageForm<TagsForm>,
) -> PageResult {
    let tags = manage::parse_tags(&form.tags).map_err(PageError::bad_request)?;
    let note = manage::check_note(&form.note).map_err(PageError::bad_request)?;
    if !db::run_manage::set_tags_note(&s.pool, id, &tags, &note).await? {
        return Err(PageError::not_found(format!("run {id} not found")));
    }
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

pub async fn archive(
    State(s): State<AppState>,
    PagePath(id): PagePath<i64>,
    PageForm(form): PageForm<ArchiveForm>,
) -> PageResult {
    let archived = form.archive.0;
    if !db::run_manage::set_archived(&s.pool, id, archived).await? {
        return Err(PageError::not_found(format!("run {id} not found")));
    }
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

/// Admins may delete any run, others only the runs they created.
fn may_delete(user: &CurrentUser, run: &RunRow) -> Result<(), PageError> {
    if user.role >= Role::Admin || run.created_by == Some(user.id) {
        return Ok(());
    }
    Err(PageError::new(
        StatusCode::FORBIDDEN,
        format!(
            "Run #{} was created by {}; only its creator or an admin may delete it (you are {}, {}).",
            run.id,
            run.creator.as_deref().unwrap_or("nobody on record"),
            user.name,
            user.role
        ),
    ))
}

#[derive(Template)]
#[template(path = "run_delete.html")]
struct DeletePage {
    run: RunRow,
    csrf: String,
    metrics: i64,
    logs: i64,
    artifacts: i64,
    /// Why it cannot be deleted now (blank: it can).
    blocked: String,
    needed: Vec<Dependent>,
}

/// Why a run cannot be deleted now, if it cannot.
fn blocked_reason(run: &RunRow, needed: &[Dependent]) -> String {
    if !run.status.is_terminal() {
        return format!("Run #{} is {}: cancel it first.", run.id, run.status);
    }
    match needed {
        [] => String::new(),
        _ => format!(
            "Run #{} cannot be deleted while runs that read its output are queued or running: {}.",
            run.id,
            needed
                .iter()
                .map(|d| format!("#{} {} ({})", d.id, d.name, d.status))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub async fn delete_form(
    UserPage { s, user, csrf }: UserPage,
    PagePath(id): PagePath<i64>,
) -> PageResult {
    let run = db::runs::get(&s.pool, id).await?.or_not_found("run", id)?;
    may_delete(&user, &run)?;
    let (metrics, logs, artifacts) = db::run_manage::footprint(&s.pool, id).await?;
    let needed = db::run_manage::active_dependents(&s.pool, id).await?;
    Ok(render(&DeletePage {
        blocked: blocked_reason(&run, &needed),
        run,
        csrf: csrf.0,
        metrics,
        logs,
        artifacts,
        needed,
    }))
}

pub async fn delete(UserPage { s, user, .. }: UserPage, PagePath(id): PagePath<i64>) -> PageResult {
    let run = db::runs::get(&s.pool, id).await?.or_not_found("run", id)?;
    may_delete(&user, &run)?;
    let refused = |why: String| Err(PageError::new(StatusCode::CONFLICT, why));
    match manage::delete_run(&s, id).await? {
        Deletion::Deleted => Ok(Redirect::to(&format!("/runs?deleted={id}")).into_response()),
        Deletion::NotFound => Err(PageError::not_found(format!("run {id} not found"))),
        Deletion::Active(_) => refused(blocked_reason(&run, &[])),
        Deletion::Needed(needed) => {
            let mut ended = run.clone();
            ended.status = aligndet_common::jobs::RunStatus::Succeeded;
            refused(blocked_reason(&ended, &needed))
        }
    }
}
