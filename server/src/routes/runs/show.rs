//! A run's page (`GET /runs/{id}`), its live fragment and change events (SSE), cancel, and
//! artifact downloads.

use crate::accounts::Role;
use crate::accounts::gate::UserPage;
use crate::db;
use crate::db::runs::{ArtifactRow, ParentRow, RunRow};
use crate::error::PageResult;
use crate::error::{OrNotFound, PageError, PagePath};
use crate::manage::stamp::Stamp;
use crate::numbers::{coco_stat, filters};
use crate::routes::render;
use crate::state::AppState;
use crate::views::chart_view::{ChartQuery, epochs_per_step, x_choices};
use crate::views::eval::{EvalView, eval_view};
use crate::views::finetune::{FinetuneView, finetune_view};
use crate::views::pretrain::{PretrainView, pretrain_view};
use crate::views::run_live::live_html;
use aligndet_common::jobs::RunKind;
use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect};
use futures_util::Stream;
use std::convert::Infallible;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    evaluation: Option<EvalView>,
    finetune: Option<FinetuneView>,
    pretrain: Option<PretrainView>,
    run: RunRow,
    terminal: bool,
    csrf: String,
    live: String,
    config_pretty: String,
    artifacts: Vec<ArtifactRow>,
    parents: Vec<ParentRow>,
    controls: ChartControls,
    /// Editors and admins see Clone, Archive, tag editing and Cancel.
    can_edit: bool,
    /// Admins and the run's creator see Delete.
    can_delete: bool,
    /// The reproducibility stamp as (what, value) rows (empty: none recorded yet).
    stamp: Vec<(String, String)>,
}

/// The chart view form above the charts (a GET form: the view lives in the URL).
struct ChartControls {
    /// (value, label, selected); empty when the run offers the step only.
    x_options: Vec<(&'static str, &'static str, bool)>,
    log_x: bool,
    log_y: bool,
    /// The smoothing weight as typed back, empty for none.
    smooth: String,
}

impl ChartControls {
    async fn of(s: &AppState, run: &RunRow, q: &ChartQuery) -> Result<ChartControls, PageError> {
        let choices = x_choices(run, epochs_per_step(s, run).await?);
        let x_options = if choices.len() > 1 {
            choices
                .iter()
                .map(|c| (c.as_str(), c.label(), *c == q.x))
                .collect()
        } else {
            Vec::new()
        };
        Ok(ChartControls {
            x_options,
            log_x: q.view.log_x,
            log_y: q.view.log_y,
            smooth: if q.view.smooth > 0.0 {
                q.view.smooth.to_string()
            } else {
                String::new()
            },
        })
    }
}

impl RunPage {
    fn stat(&self, v: &f64) -> String {
        coco_stat(*v)
    }

    /// Why the artifacts list is empty, from where the run stands.
    fn no_artifacts(&self) -> &'static str {
        use aligndet_common::jobs::RunStatus;
        match self.run.status {
            RunStatus::Queued => "none yet: the run is queued",
            RunStatus::Running if self.run.cancel_requested => {
                "none yet: cancelling (the worker stops at its next step)"
            }
            RunStatus::Running => "none yet: running (files appear as the job writes them)",
            RunStatus::Succeeded => "none: the job finished without writing files",
            RunStatus::Failed => "none: the run failed before writing any",
            RunStatus::Cancelled => "none: the run was cancelled before its first checkpoint",
        }
    }
}

pub async fn show(
    UserPage { s, user, csrf }: UserPage,
    PagePath(id): PagePath<i64>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let run = db::runs::get(&s.pool, id).await?.or_not_found("run", id)?;
    let query = ChartQuery::parse(raw.as_deref());
    let live = live_html(&s, run.clone(), &query).await?;
    let controls = ChartControls::of(&s, &run, &query).await?;
    let is_finetune = run.kind == RunKind::Finetune;
    // A fine-tune run's final evaluation has the evaluate job's schema: same section.
    let evaluation = if run.kind == RunKind::Evaluate || is_finetune {
        s.eval_report(id).await?.ok().flatten().map(eval_view)
    } else {
        None
    };
    let artifacts = db::runs::artifacts(&s.pool, id).await?;
    let finetune = if is_finetune {
        Some(finetune_view(&s, &run, &artifacts).await?)
    } else {
        None
    };
    let pretrain = pretrain_view(&s, &run, &artifacts).await?;
    Ok(render(&RunPage {
        evaluation,
        finetune,
        pretrain,
        terminal: run.status.is_terminal(),
        config_pretty: serde_json::to_string_pretty(&run.config.json)?,
        artifacts,
        parents: db::runs::parents(&s.pool, id).await?,
        csrf: csrf.0,
        live,
        controls,
        can_edit: user.role >= Role::Editor,
        can_delete: user.role >= Role::Admin || run.created_by == Some(user.id),
        stamp: Stamp::of_json(run.stamp.as_ref())
            .map(|st| st.rows())
            .unwrap_or_default(),
        run,
    }))
}

pub async fn live_fragment(
    State(s): State<AppState>,
    PagePath(id): PagePath<i64>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let run = db::runs::get(&s.pool, id).await?.or_not_found("run", id)?;
    let query = ChartQuery::parse(raw.as_deref());
    Ok(Html(live_html(&s, run, &query).await?).into_response())
}

/// Server-sent events: one `changed` event whenever the run's data changes (Postgres NOTIFY).
pub async fn events(
    State(s): State<AppState>,
    PagePath(id): PagePath<i64>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, PageError> {
    db::runs::get(&s.pool, id).await?.or_not_found("run", id)?;
    let stream = BroadcastStream::new(s.run_changed.subscribe()).filter_map(move |msg| match msg {
        Ok(run_id) if run_id == id => {
            Some(Ok(Event::default().event("changed").data(id.to_string())))
        }
        // Lagged: we missed notifications, so tell the page to refresh anyway.
        Err(_) => Some(Ok(Event::default().event("changed").data(id.to_string()))),
        _ => None,
    });
    // The stream would otherwise outlive a shutdown for as long as the page stays open; the
    // page's EventSource reconnects to the restarted server by itself.
    let stream = futures_util::StreamExt::take_until(stream, s.shutdown.wait());
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

pub async fn cancel(State(s): State<AppState>, PagePath(id): PagePath<i64>) -> PageResult {
    db::runs::request_cancel(&s.pool, id)
        .await?
        .or_not_found("run", id)?;
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

/// Streamed from the file, with Range and ETag (`serving::artifacts`).
pub async fn download_artifact(
    State(s): State<AppState>,
    PagePath((id, name)): PagePath<(i64, String)>,
    req: axum::extract::Request,
) -> PageResult {
    use crate::serving::artifacts::serve;
    use crate::state::ArtifactFile;
    let path = match s.locate_artifact(&s.pool, id, &name).await? {
        ArtifactFile::BadName(why) => return Err(PageError::bad_request(why)),
        ArtifactFile::Missing(msg) => return Err(PageError::not_found(msg)),
        ArtifactFile::Found(path) => path,
    };
    // The name passed the artifact rules (A-Z a-z 0-9 . _ -): safe inside the quotes.
    let disposition = format!("attachment; filename=\"{name}\"");
    Ok(serve(path, req, Some(&disposition)).await?)
}
