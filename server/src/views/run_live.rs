//! The live part of a run's page ([`RunLive`], `run_live.html`): status, attempts, log tail,
//! charts and summaries; served inside the run page and alone as `GET /runs/{id}/live`.

use super::chart_groups::{
    ChartContext, EVAL_PROGRESS, FINETUNE_CHARTS, PRETRAIN_BOX_CHARTS, PRETRAIN_IMAGE_CHARTS,
    PROPOSALS_CHARTS, grouped_charts,
};
use super::chart_view::{ChartQuery, XChoice, XMap, epochs_per_step};
use super::charts::{EvalHistory, finetune_charts};
use crate::db;
use crate::db::logs::{LogRow, WarningRow};
use crate::db::runs::{AttemptRow, RunRow};
use crate::error::PageError;
use crate::numbers::filters;
use crate::state::AppState;
use aligndet_common::jobs::RunKind;
use askama::Template;

#[derive(Template)]
#[template(path = "run_live.html")]
struct RunLive {
    run: RunRow,
    terminal: bool,
    /// A queued run no connected worker can take: what it waits for.
    waiting: Option<String>,
    attempts: Vec<AttemptRow>,
    /// The run's latest Slurm job, when an agent placed it.
    slurm: Option<crate::queue::slurm::PlacementRow>,
    logs: Vec<LogRow>,
    /// Training-health warnings, the latest line of each code.
    warnings: Vec<WarningRow>,
    /// An evaluation under way: "at step N: P % of the images".
    evaluating: Option<String>,
    charts: Vec<(String, String)>,
    summaries: Vec<(String, f64)>,
    /// Fine-tune runs: the COCO statistics at each periodic evaluation (box, and mask).
    eval_history: EvalHistory,
    /// Parts of the chart query that were ignored, and why.
    chart_notes: Vec<String>,
}

impl RunLive {
    fn stat_names(&self) -> &'static [&'static str] {
        &aligndet_common::report::COCO_STAT_NAMES
    }
}

/// The x axis a query asked for, as a map of steps; one the run cannot offer falls back to the
/// step with a note.
async fn x_map(
    s: &AppState,
    run: &RunRow,
    query: &mut ChartQuery,
    curves: &crate::serving::live_series::LiveSeries,
) -> Result<XMap, PageError> {
    let epoch = if query.x == XChoice::Epoch {
        epochs_per_step(s, run).await?
    } else {
        None
    };
    if !super::chart_view::x_choices(run, epoch).contains(&query.x) {
        query.notes.push(format!(
            "x={} ignored: this run's curves are drawn against the step only{}",
            query.x.as_str(),
            if query.x == XChoice::Epoch {
                " or time (no batch size and training split of known size)"
            } else {
                ""
            }
        ));
        query.x = XChoice::Step;
    }
    Ok(match query.x {
        XChoice::Step => XMap::Step,
        XChoice::Epoch => XMap::Scale(epoch.unwrap_or(1.0)),
        XChoice::Time => {
            let mut steps: Vec<i64> = curves
                .keys
                .values()
                .flat_map(|k| k.points.iter().map(|p| p.0 as i64))
                .collect();
            steps.sort_unstable();
            steps.dedup();
            XMap::Seconds(db::compare::seconds_at_steps(&s.pool, run.id, &steps).await?)
        }
    })
}

/// The live fragment of a run as HTML, its charts as `query` asks.
pub async fn live_html(s: &AppState, run: RunRow, query: &ChartQuery) -> Result<String, PageError> {
    let id = run.id;
    // Cached per run until it changes; never a full read of a long series per viewer.
    let curves = crate::serving::live_series::for_run(s, id).await?;
    let keys = curves.key_counts();
    let mut query = query.clone();
    let xmap = x_map(s, &run, &mut query, &curves).await?;
    let ctx = ChartContext {
        curves: &curves,
        query: &query,
        xmap: &xmap,
    };
    let grouped = match run.kind {
        RunKind::PretrainBox => &PRETRAIN_BOX_CHARTS[..],
        RunKind::PretrainImage => &PRETRAIN_IMAGE_CHARTS[..],
        RunKind::Proposals => &PROPOSALS_CHARTS[..],
        RunKind::Finetune => &FINETUNE_CHARTS[..],
        _ => &[],
    };
    let (mut charts, eval_history, mut used) = if run.kind == RunKind::Finetune {
        finetune_charts(s, &run, &keys, &ctx).await?
    } else {
        (Vec::new(), EvalHistory::default(), Vec::new())
    };
    charts.extend(grouped_charts(&ctx, &keys, grouped, &mut used));
    used.push(EVAL_PROGRESS.to_string());
    let evaluating = curves
        .points(EVAL_PROGRESS)
        .last()
        .filter(|(_, done)| *done < 1.0 && !run.status.is_terminal())
        .map(|(step, done)| format!("at step {step}: {:.0} % of the images", done * 100.0));
    let mut summaries = Vec::new();
    for (key, n) in keys.into_iter().filter(|(k, _)| !used.contains(k)) {
        if n <= 1 {
            if let Some(v) = curves.single_value(&key) {
                summaries.push((key, v));
            }
            continue;
        }
        let x_fixed = (run.kind == RunKind::Proposals).then_some("step (as the job logged it)");
        let pts = ctx.series(&key, x_fixed, &mut Vec::new());
        charts.push(ctx.chart(&key, &key, x_fixed, "", &[(key.clone(), pts)]));
    }
    let waiting = if run.status == aligndet_common::jobs::RunStatus::Queued {
        crate::queue::matching::waiting_reason(&s.pool, id).await?
    } else {
        None
    };
    let page = RunLive {
        terminal: run.status.is_terminal(),
        waiting,
        attempts: db::runs::attempts(&s.pool, id).await?,
        slurm: crate::queue::slurm::latest_for_run(&s.pool, id).await?,
        logs: db::logs::tail(&s.pool, id, 200).await?,
        warnings: db::logs::warnings(&s.pool, id).await?,
        evaluating,
        charts,
        summaries,
        eval_history,
        chart_notes: query.notes,
        run,
    };
    page.render()
        .map_err(|e| PageError::from(anyhow::anyhow!("template: {e}")))
}
