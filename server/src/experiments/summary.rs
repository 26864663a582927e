//! Reading an experiment back: one [`RunView`] per run (progress, waiting, final AP), the
//! per-fraction [`SummaryRow`]s of both arms, the `/compare` link and the API's JSON.

use super::Role;
use crate::compare;
use crate::db;
use crate::db::runs::RunRow;
use crate::state::AppState;
use crate::{numbers, stats};
use aligndet_common::jobs::{JobConfig, RunKind, RunStatus};
use serde::Serialize;
use std::collections::BTreeMap;

/// One run of an experiment as the page and the API show it.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub id: i64,
    pub role: String,
    pub kind: RunKind,
    pub name: String,
    pub status: RunStatus,
    pub error: Option<String>,
    pub attempts: i32,
    pub seed: Option<u64>,
    pub fraction: Option<u32>,
    pub train_split: Option<String>,
    /// Dependencies not succeeded yet.
    pub waiting_for: Vec<i64>,
    /// Last step reported and the run's total, when it has steps.
    pub step: Option<i64>,
    pub steps: Option<u64>,
    /// Final COCO statistics of a succeeded fine-tune (name → value).
    pub eval: Option<serde_json::Map<String, serde_json::Value>>,
    /// Its tags and note (run management).
    pub tags: Vec<String>,
    pub note: String,
}

impl RunView {
    pub fn progress(&self) -> String {
        match (self.step, self.steps) {
            _ if self.status == RunStatus::Succeeded => "done".into(),
            (Some(s), Some(n)) if n > 0 => format!("step {s} / {n}"),
            (None, Some(n)) => format!("0 / {n}"),
            _ => String::new(),
        }
    }
    pub fn waiting_text(&self) -> String {
        if self.status != RunStatus::Queued || self.waiting_for.is_empty() {
            return String::new();
        }
        let ids: Vec<String> = self.waiting_for.iter().map(|i| i.to_string()).collect();
        format!("waiting for run {}", ids.join(", "))
    }
    /// A final statistic by its key in `eval` (`AP`, `segm_AP`, …).
    fn stat(&self, key: &str) -> Option<f64> {
        self.eval
            .as_ref()
            .and_then(|e| e.get(key))
            .and_then(|v| v.as_f64())
    }
    pub fn ap(&self) -> Option<f64> {
        self.stat("AP")
    }
    pub fn mask_ap(&self) -> Option<f64> {
        self.stat(&format!("{}AP", compare::MASK_PREFIX))
    }
    pub fn ap_text(&self) -> String {
        self.ap().map(numbers::ap100).unwrap_or_default()
    }
    pub fn mask_ap_text(&self) -> String {
        self.mask_ap().map(numbers::ap100).unwrap_or_default()
    }
    pub fn seed_text(&self) -> String {
        self.seed.map(|s| s.to_string()).unwrap_or_default()
    }
    pub fn fraction_text(&self) -> String {
        self.fraction.map(|f| format!("{f}%")).unwrap_or_default()
    }
    pub fn error_text(&self) -> String {
        self.error.clone().unwrap_or_default()
    }
}

/// The labeled fraction of a split named `{p}pct_seed{s}`.
fn fraction_of(split: &str) -> Option<u32> {
    split.split_once("pct_seed")?.0.parse().ok()
}

/// The final evaluation of a finished fine-tune by the comparison's rules
/// ([`compare::final_stats`], [`compare::final_mask_stats`]): box statistics by name (`AP`,
/// …) and mask statistics prefixed (`segm_AP`, …), undefined ones left out.
async fn final_eval(
    s: &AppState,
    run_id: i64,
) -> anyhow::Result<Option<serde_json::Map<String, serde_json::Value>>> {
    // An unreadable eval.json counts as none: the last evaluation point stands in for it.
    let report = s.eval_report(run_id).await?.ok().flatten();
    let last: BTreeMap<String, f64> = db::experiments::final_eval_metrics(&s.pool, run_id)
        .await?
        .into_iter()
        .map(|(k, v)| (format!("eval/{k}"), v))
        .collect();
    let (boxes, _) = compare::final_stats(report.as_ref().map(|r| r.stats.as_slice()), &last);
    let segm = report.as_ref().and_then(|r| r.segm.as_ref());
    let (masks, _) = compare::final_mask_stats(segm.map(|m| m.stats.as_slice()), &last);
    if boxes.is_empty() && masks.is_empty() {
        return Ok(None);
    }
    let masks = masks
        .into_iter()
        .map(|(k, v)| (format!("{}{k}", compare::MASK_PREFIX), v));
    Ok(Some(
        boxes
            .into_iter()
            .chain(masks)
            .map(|(k, v)| (k, serde_json::Value::from(v)))
            .collect(),
    ))
}

pub async fn run_views(s: &AppState, runs: Vec<RunRow>) -> anyhow::Result<Vec<RunView>> {
    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let deps = db::runs::dependencies(&s.pool, &ids).await?;
    let steps = db::experiments::last_steps(&s.pool, &ids).await?;
    let mut views = Vec::with_capacity(runs.len());
    for r in runs {
        let config: Option<JobConfig> = r.config.job().cloned();
        let (seed, fraction, train_split, total) = match &config {
            Some(JobConfig::Finetune(c)) => (
                Some(c.optim.seed),
                fraction_of(&c.train_split),
                Some(c.train_split.clone()),
                Some(c.optim.steps as u64),
            ),
            Some(JobConfig::PretrainBox(c)) => (None, None, None, Some(c.optim.steps as u64)),
            Some(JobConfig::PretrainImage(c)) => (None, None, None, Some(c.optim.steps as u64)),
            _ => (None, None, None, None),
        };
        let eval = if r.kind == RunKind::Finetune && r.status == RunStatus::Succeeded {
            final_eval(s, r.id).await?
        } else {
            None
        };
        views.push(RunView {
            id: r.id,
            role: r.experiment_role.clone().unwrap_or_default(),
            waiting_for: deps
                .iter()
                .filter(|d| d.run_id == r.id && d.status != "succeeded")
                .map(|d| d.parent_id)
                .collect(),
            step: steps.iter().find(|(id, _)| *id == r.id).map(|(_, st)| *st),
            steps: total,
            kind: r.kind,
            name: r.name,
            tags: r.tags,
            note: r.note,
            status: r.status,
            error: r.error,
            attempts: r.attempts,
            seed,
            fraction,
            train_split,
            eval,
        });
    }
    views.sort_by_key(|v| {
        (
            Role::ALL
                .iter()
                .position(|r| r.as_str() == v.role)
                .unwrap_or(Role::ALL.len()),
            v.fraction,
            v.seed,
            v.id,
        )
    });
    Ok(views)
}

/// One row of the experiment's summary: a labeled fraction, both arms' box AP over finished
/// seeds, and their mask AP when the detector has masks.
pub struct SummaryRow {
    pub fraction: String,
    pub baseline: String,
    pub aligndet: String,
    pub margin: String,
    pub seeds: String,
    pub mask: Option<ArmsSummary>,
}

/// Both arms' mean ± std of one statistic and the paired margin.
pub struct ArmsSummary {
    pub baseline: String,
    pub aligndet: String,
    pub margin: String,
}

pub fn summary(views: &[RunView]) -> Vec<SummaryRow> {
    let mut fractions: Vec<u32> = views.iter().filter_map(|v| v.fraction).collect();
    fractions.sort_unstable();
    fractions.dedup();
    let has_masks = views.iter().any(|v| v.mask_ap().is_some());
    fractions
        .into_iter()
        .map(|f| {
            let seeds: Vec<Option<u64>> = {
                let mut s: Vec<Option<u64>> = views
                    .iter()
                    .filter(|v| v.fraction == Some(f))
                    .map(|v| v.seed)
                    .collect();
                s.sort_unstable();
                s.dedup();
                s
            };
            let (boxes, paired) = arms_summary(views, f, &seeds, RunView::ap);
            SummaryRow {
                fraction: format!("{f}%"),
                baseline: boxes.baseline,
                aligndet: boxes.aligndet,
                margin: boxes.margin,
                seeds: format!("{paired} of {}", seeds.len()),
                mask: has_masks.then(|| arms_summary(views, f, &seeds, RunView::mask_ap).0),
            }
        })
        .collect()
}

/// Both arms' `value` at labeled fraction `f` over `seeds`, and how many seeds pair up.
fn arms_summary(
    views: &[RunView],
    f: u32,
    seeds: &[Option<u64>],
    value: fn(&RunView) -> Option<f64>,
) -> (ArmsSummary, usize) {
    let ap = |role: Role, seed: Option<u64>| {
        views
            .iter()
            .find(|v| v.role == role.as_str() && v.fraction == Some(f) && v.seed == seed)
            .and_then(value)
    };
    let base: Vec<f64> = seeds
        .iter()
        .filter_map(|s| ap(Role::Baseline, *s))
        .collect();
    let ours: Vec<f64> = seeds
        .iter()
        .filter_map(|s| ap(Role::Aligndet, *s))
        .collect();
    // The seeds both arms finished, paired.
    let (paired_base, paired_ours): (Vec<_>, Vec<_>) = seeds
        .iter()
        .filter_map(|s| {
            let key = format!("{s:?}");
            let pair = (ap(Role::Baseline, *s)?, ap(Role::Aligndet, *s)?);
            Some(((key.clone(), pair.0), (key, pair.1)))
        })
        .unzip();
    let arm = |v: &[f64]| {
        format!(
            "{} (n={})",
            numbers::ap_spread(&stats::summarize(v)),
            v.len()
        )
    };
    let summary = ArmsSummary {
        baseline: arm(&base),
        aligndet: arm(&ours),
        margin: stats::delta(&paired_base, &paired_ours)
            .map(|d| numbers::ap_delta(&d))
            .unwrap_or_else(|| numbers::UNDEFINED.into()),
    };
    (summary, paired_base.len())
}

/// The ids of the fine-tune runs (in creation order) as the `/compare` page takes them.
pub fn compare_url(runs: &[RunView]) -> String {
    let mut ids: Vec<i64> = runs
        .iter()
        .filter(|r| r.kind == RunKind::Finetune)
        .map(|r| r.id)
        .collect();
    ids.sort_unstable();
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("/compare?runs={}", ids.join(","))
}

/// The experiment as JSON (for `GET /api/v1/experiments/{id}`); `None` when absent.
pub async fn summary_json(s: &AppState, id: i64) -> anyhow::Result<Option<serde_json::Value>> {
    let Some(exp) = db::experiments::get(&s.pool, id).await? else {
        return Ok(None);
    };
    let runs = run_views(s, db::experiments::runs(&s.pool, id).await?).await?;
    let done = runs.iter().all(|r| r.status.is_terminal());
    let dataset_id = exp.spec.get("dataset_id").and_then(|v| v.as_i64());
    let dataset_name = match dataset_id {
        Some(d) => db::datasets::get(&s.pool, d).await?.map(|d| d.name),
        None => None,
    };
    Ok(Some(serde_json::json!({
        "id": exp.id,
        "name": exp.name,
        "dataset": {"id": dataset_id, "name": dataset_name},
        "spec": exp.spec,
        "created_at": exp.created_at,
        "done": done,
        "compare_url": compare_url(&runs),
        "runs": runs,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: i64, role: Role, seed: u64, ap: f64) -> RunView {
        RunView {
            id,
            role: role.as_str().into(),
            kind: RunKind::Finetune,
            name: format!("run {id}"),
            status: RunStatus::Succeeded,
            error: None,
            attempts: 1,
            seed: Some(seed),
            fraction: Some(5),
            train_split: Some(format!("5pct_seed{seed}")),
            waiting_for: vec![],
            step: None,
            steps: Some(10),
            tags: vec![],
            note: String::new(),
            eval: Some(
                [("AP".to_string(), serde_json::Value::from(ap))]
                    .into_iter()
                    .collect(),
            ),
        }
    }

    #[test]
    fn one_seed_has_no_spread_and_three_have_an_interval() {
        let one = [
            view(1, Role::Baseline, 1, 0.006),
            view(2, Role::Aligndet, 1, 0.008),
        ];
        let row = &summary(&one)[0];
        assert_eq!(row.baseline, "0.6 ± — (n=1)");
        assert_eq!(row.aligndet, "0.8 ± — (n=1)");
        assert_eq!(row.margin, "+0.2 (95% CI —: one seed: no spread)");
        assert_eq!(one[0].ap_text(), "0.6");
        let three: Vec<RunView> = [(0.30, 0.40), (0.32, 0.41), (0.34, 0.45)]
            .iter()
            .enumerate()
            .flat_map(|(i, (b, a))| {
                let s = i as u64 + 1;
                [
                    view(10 + s as i64, Role::Baseline, s, *b),
                    view(20 + s as i64, Role::Aligndet, s, *a),
                ]
            })
            .collect();
        let row = &summary(&three)[0];
        assert_eq!(row.baseline, "32.0 ± 2.0 (n=3)");
        assert_eq!(row.margin, "+10.0 (95% CI +7.5 to +12.5, paired, n=3)");
        assert_eq!(row.seeds, "3 of 3");
        // A baseline without its AlignDet twin: nothing paired yet.
        let row = &summary(&three[..1])[0];
        assert_eq!(row.margin, "—");
        assert!(row.mask.is_none(), "box-only runs have no mask columns");
    }

    #[test]
    fn mask_ap_is_summarised_beside_box_ap() {
        let mut runs = [
            view(1, Role::Baseline, 1, 0.30),
            view(2, Role::Aligndet, 1, 0.40),
        ];
        for (r, mask_ap) in runs.iter_mut().zip([0.20, 0.26]) {
            r.eval
                .as_mut()
                .unwrap()
                .insert("segm_AP".into(), serde_json::Value::from(mask_ap));
        }
        assert_eq!(runs[1].mask_ap_text(), "26.0");
        let row = &summary(&runs)[0];
        assert_eq!(row.margin, "+10.0 (95% CI —: one seed: no spread)");
        let mask = row.mask.as_ref().expect("mask AP");
        assert_eq!(mask.baseline, "20.0 ± — (n=1)");
        assert_eq!(mask.margin, "+6.0 (95% CI —: one seed: no spread)");
    }
}
