//! The live part of a run's page ([`RunLive`], `run_live.html`): status, attempts, log tail,
//! charts and summaries; served inside the run page and alone as `GET /runs/{id}/live`.

use super::charts::{PRETRAIN_BOX_CHARTS, PRETRAIN_IMAGE_CHARTS, finetune_charts, grouped_charts};
use crate::db;
use crate::db::logs::LogRow;
use crate::db::runs::{AttemptRow, RunRow};
use crate::error::PageError;
use crate::numbers::filters;
use crate::plots;
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
    charts: Vec<(String, String)>,
    summaries: Vec<(String, f64)>,
    /// Fine-tune runs: the 12 COCO statistics at each periodic evaluation, (step, cells).
    eval_history: Vec<(i64, Vec<String>)>,
}

impl RunLive {
    fn stat_names(&self) -> &'static [&'static str] {
        &aligndet_common::report::COCO_STAT_NAMES
    }
}

/// The live fragment of a run as HTML.
pub async fn live_html(s: &AppState, run: RunRow) -> Result<String, PageError> {
    let id = run.id;
    // Cached per run until it changes; never a full read of a long series per viewer.
    let curves = crate::serving::live_series::for_run(s, id).await?;
    let keys = curves.key_counts();
    let grouped = match run.kind {
        RunKind::PretrainBox => &PRETRAIN_BOX_CHARTS[..],
        RunKind::PretrainImage => &PRETRAIN_IMAGE_CHARTS[..],
        _ => &[],
    };
    let (mut charts, eval_history, used) = if run.kind == RunKind::Finetune {
        finetune_charts(s, &run, &keys, &curves).await?
    } else {
        let mut used = Vec::new();
        let charts = grouped_charts(&curves, &keys, grouped, &mut used);
        (charts, Vec::new(), used)
    };
    let mut summaries = Vec::new();
    for (key, n) in keys.into_iter().filter(|(k, _)| !used.contains(k)) {
        if n <= 1 {
            if let Some(v) = curves.single_value(&key) {
                summaries.push((key, v));
            }
            continue;
        }
        let svg = curves.chart(&format!("key:{key}"), || {
            plots::line_chart(&key, "step", &[(key.clone(), curves.points(&key))])
        });
        charts.push((key, svg));
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
        charts,
        summaries,
        eval_history,
        run,
    };
    page.render()
        .map_err(|e| PageError::from(anyhow::anyhow!("template: {e}")))
}
