//! The comparison itself: [`compare`] groups runs into arms, summarises their final numbers,
//! deltas, convergence and config differences into a [`Comparison`].

use super::{ArmRole, COMPARED_STATS, FinalSource, MIN_EVALS, RunData, arm_role, role_labels};
use super::{
    arm_config, arm_names, at_position, default_baseline, differing_paths, first_crossing, flatten,
    group_arms,
};
use crate::stats::{Delta, Summary, delta, summarize};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub arm: usize,
    /// What was removed to group it (its seed, split draw): pairs runs across arms.
    pub seed_key: String,
    pub final_source: FinalSource,
    pub finals: BTreeMap<String, f64>,
    /// Final mask statistics (Mask R-CNN runs; empty otherwise).
    pub mask_finals: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Arm {
    pub index: usize,
    /// The arm's name: its role ("AlignDet", "baseline", "label-free"), numbered when several
    /// arms share a role.
    pub label: String,
    pub role: ArmRole,
    /// The settings that tell it apart ("init=imagenet_backbone", "lr=0.015, …").
    pub subtitle: String,
    /// The fields that differ between arms, with this arm's values.
    pub fields: Vec<(String, String)>,
    pub runs: Vec<i64>,
    pub is_baseline: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArmStat {
    pub summary: Summary,
    /// `None` for the baseline arm or where either side has no value.
    pub delta: Option<Delta>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatRow {
    pub stat: String,
    pub arms: Vec<ArmStat>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassRow {
    pub category_id: i64,
    pub name: String,
    pub arms: Vec<ArmStat>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunCrossing {
    pub run_id: i64,
    pub step: Option<f64>,
    pub epoch: Option<f64>,
    pub wall_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArmCrossing {
    /// Runs that reached the target, of `n`.
    pub reached: usize,
    /// The arm's runs with at least [`MIN_EVALS`] evaluations (the others say nothing here).
    pub n: usize,
    /// Means over the runs that reached it.
    pub mean_step: Option<f64>,
    pub mean_epoch: Option<f64>,
    /// Baseline mean step / this arm's mean step (> 1: faster than the baseline).
    pub speedup: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FractionRow {
    pub fraction: f64,
    /// fraction × the baseline arm's mean final AP.
    pub target: f64,
    /// The runs with at least [`MIN_EVALS`] evaluations, in arm order.
    pub runs: Vec<RunCrossing>,
    pub arms: Vec<ArmCrossing>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffRow {
    pub path: String,
    /// One value per run (in `runs` order); `None` where the run's config lacks the path.
    pub values: Vec<Option<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Runs ordered by arm.
    pub runs: Vec<RunSummary>,
    pub arms: Vec<Arm>,
    pub baseline: usize,
    pub stats: Vec<StatRow>,
    pub per_class: Vec<ClassRow>,
    pub fractions: Vec<f64>,
    /// The baseline arm's mean final AP, which the convergence targets are fractions of.
    pub baseline_final_ap: Option<f64>,
    pub convergence: Vec<FractionRow>,
    pub config_diff: Vec<DiffRow>,
}

/// Compare runs (any order; the result orders them by arm). `baseline` is an arm index; out of
/// range is an error naming the valid ones.
pub fn compare(
    input: &[RunData],
    baseline: Option<usize>,
    fractions: &[f64],
) -> Result<(Comparison, Vec<usize>), String> {
    let normalized: Vec<(Value, String)> = input.iter().map(|r| arm_config(&r.config)).collect();
    let arm_cfgs: Vec<Value> = normalized.iter().map(|n| n.0.clone()).collect();
    let groups = group_arms(&arm_cfgs);
    let first_cfgs: Vec<Value> = groups.iter().map(|g| arm_cfgs[g[0]].clone()).collect();
    let roles: Vec<ArmRole> = groups
        .iter()
        .map(|g| arm_role(&input[g[0]].config, input[g[0]].experiment_role.as_deref()))
        .collect();
    let baseline = match baseline {
        Some(b) if b < groups.len() => b,
        Some(b) => {
            return Err(format!(
                "baseline {b} is not an arm: these runs form {} arm(s), numbered 0 to {}",
                groups.len(),
                groups.len() - 1
            ));
        }
        None => roles
            .iter()
            .position(|r| *r == ArmRole::Baseline)
            .unwrap_or_else(|| default_baseline(&first_cfgs)),
    };
    let names = arm_names(&first_cfgs, baseline);
    let labels = role_labels(&roles);
    // Runs in arm order: `order[k]` is the input index of the k-th run.
    let order: Vec<usize> = groups.iter().flatten().copied().collect();
    let arm_of = |i: usize| groups.iter().position(|g| g.contains(&i)).unwrap_or(0);
    let runs: Vec<RunSummary> = order
        .iter()
        .map(|&i| RunSummary {
            id: input[i].id,
            name: input[i].name.clone(),
            kind: input[i].kind.clone(),
            arm: arm_of(i),
            seed_key: normalized[i].1.clone(),
            final_source: input[i].final_source,
            finals: input[i].finals.clone(),
            mask_finals: input[i].mask_finals.clone(),
        })
        .collect();
    let arms: Vec<Arm> = groups
        .iter()
        .zip(names)
        .enumerate()
        .map(|(a, (g, (subtitle, fields)))| Arm {
            index: a,
            label: labels[a].clone(),
            role: roles[a],
            subtitle,
            fields,
            runs: g.iter().map(|&i| input[i].id).collect(),
            is_baseline: a == baseline,
        })
        .collect();

    // Keyed values per arm for one quantity, then summaries and deltas.
    let arm_stats = |value: &dyn Fn(&RunData) -> Option<f64>| -> Vec<ArmStat> {
        let keyed: Vec<Vec<(String, f64)>> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .filter_map(|&i| value(&input[i]).map(|v| (normalized[i].1.clone(), v)))
                    .collect()
            })
            .collect();
        keyed
            .iter()
            .enumerate()
            .map(|(a, vals)| ArmStat {
                summary: summarize(&vals.iter().map(|x| x.1).collect::<Vec<_>>()),
                delta: if a == baseline {
                    None
                } else {
                    delta(&keyed[baseline], vals)
                },
            })
            .collect()
    };
    // Box rows, then mask rows ("mask AP", …) for runs that have masks.
    let stats: Vec<StatRow> = [("", false), ("mask ", true)]
        .into_iter()
        .flat_map(|(label, mask)| {
            COMPARED_STATS
                .iter()
                .filter(move |s| input.iter().any(|r| r.finals_of(mask).contains_key(**s)))
                .map(move |s| StatRow {
                    stat: format!("{label}{s}"),
                    arms: arm_stats(&|r: &RunData| r.finals_of(mask).get(*s).copied()),
                })
        })
        .collect();

    let mut classes: Vec<(i64, String)> = Vec::new();
    for &i in &order {
        for c in &input[i].per_class {
            if !classes.iter().any(|(id, _)| *id == c.category_id) {
                classes.push((c.category_id, c.name.clone()));
            }
        }
    }
    let per_class: Vec<ClassRow> = classes
        .into_iter()
        .map(|(id, name)| ClassRow {
            category_id: id,
            name,
            arms: arm_stats(&|r: &RunData| {
                r.per_class
                    .iter()
                    .find(|c| c.category_id == id)
                    .map(|c| c.ap)
                    .filter(|v| *v >= 0.0 && v.is_finite())
            }),
        })
        .collect();

    let baseline_final_ap = summarize(
        &groups[baseline]
            .iter()
            .filter_map(|&i| input[i].finals.get("AP").copied())
            .collect::<Vec<_>>(),
    )
    .mean;
    let mut convergence = Vec::new();
    let enough_evals = |r: &RunData| r.eval_ap.len() >= MIN_EVALS;
    if let Some(base_ap) = baseline_final_ap.filter(|v| *v > 0.0)
        && input.iter().any(enough_evals)
    {
        for &f in fractions {
            let target = f * base_ap;
            let crossing = |r: &RunData| -> RunCrossing {
                let values: Vec<f64> = r.eval_ap.iter().map(|p| p.value).collect();
                let pos = first_crossing(&values, target);
                let steps: Vec<f64> = r.eval_ap.iter().map(|p| p.step as f64).collect();
                let walls: Vec<f64> = r.eval_ap.iter().map(|p| p.wall).collect();
                let step = pos.map(|p| at_position(&steps, p));
                RunCrossing {
                    run_id: r.id,
                    step,
                    epoch: step.and_then(|s| r.epoch_at(s)),
                    wall_s: pos.map(|p| at_position(&walls, p)),
                }
            };
            let per_run: Vec<RunCrossing> = order
                .iter()
                .filter(|&&i| enough_evals(&input[i]))
                .map(|&i| crossing(&input[i]))
                .collect();
            let arm_rows: Vec<ArmCrossing> = groups
                .iter()
                .map(|g| {
                    let cs: Vec<&RunCrossing> = g
                        .iter()
                        .filter_map(|&i| per_run.iter().find(|c| c.run_id == input[i].id))
                        .collect();
                    let steps: Vec<f64> = cs.iter().filter_map(|c| c.step).collect();
                    let epochs: Vec<f64> = cs.iter().filter_map(|c| c.epoch).collect();
                    ArmCrossing {
                        reached: steps.len(),
                        n: cs.len(),
                        mean_step: summarize(&steps).mean,
                        mean_epoch: summarize(&epochs).mean,
                        speedup: None,
                    }
                })
                .collect();
            let base_step = arm_rows[baseline].mean_step;
            let arm_rows = arm_rows
                .into_iter()
                .map(|mut a| {
                    a.speedup = match (base_step, a.mean_step) {
                        (Some(b), Some(s)) if s > 0.0 => Some(b / s),
                        _ => None,
                    };
                    a
                })
                .collect();
            convergence.push(FractionRow {
                fraction: f,
                target,
                runs: per_run,
                arms: arm_rows,
            });
        }
    }

    let flats: Vec<BTreeMap<String, String>> =
        order.iter().map(|&i| flatten(&input[i].config)).collect();
    let config_diff = differing_paths(&flats)
        .into_iter()
        .map(|p| DiffRow {
            values: flats.iter().map(|f| f.get(&p).cloned()).collect(),
            path: p,
        })
        .collect();

    Ok((
        Comparison {
            runs,
            arms,
            baseline,
            stats,
            per_class,
            fractions: fractions.to_vec(),
            baseline_final_ap,
            convergence,
            config_diff,
        },
        order,
    ))
}
