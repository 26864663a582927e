//! Comparing any set of runs (`/compare`): pure computation, no database. The route
//! (`routes::compare`) loads configs, metrics and `eval.json` into [`RunData`]; [`compare`] groups
//! the runs into arms (seeds of one setting), summarises the final numbers per arm (mean ± std,
//! n), the deltas against a baseline arm (paired per seed where both arms ran the same seeds),
//! the convergence speed and the config paths whose values differ.

use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Most runs one comparison takes.
pub const MAX_RUNS: usize = 50;
/// The final statistics compared (COCO order).
pub const COMPARED_STATS: [&str; 6] = ["AP", "AP50", "AP75", "APs", "APm", "APl"];
pub const DEFAULT_FRACTIONS: [f64; 3] = [0.5, 0.75, 0.9];

/// What the x axis of the curves measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XAxis {
    Step,
    Epoch,
    Images,
    Wall,
}

impl XAxis {
    pub const ALL: [XAxis; 4] = [XAxis::Step, XAxis::Epoch, XAxis::Images, XAxis::Wall];
    pub fn parse(s: &str) -> Option<XAxis> {
        Some(match s {
            "step" => XAxis::Step,
            "epoch" => XAxis::Epoch,
            "images" => XAxis::Images,
            "wall" => XAxis::Wall,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            XAxis::Step => "step",
            XAxis::Epoch => "epoch",
            XAxis::Images => "images",
            XAxis::Wall => "wall",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            XAxis::Step => "optimizer step",
            XAxis::Epoch => "epoch (images seen / train split size)",
            XAxis::Images => "images seen (step × batch size)",
            XAxis::Wall => "seconds since the run's first metric",
        }
    }
}

/// The query of `/compare` (page and API), validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareParams {
    /// Distinct run ids in the order given.
    pub runs: Vec<i64>,
    /// Arm index of the baseline (checked against the arms later).
    pub baseline: Option<usize>,
    pub x: XAxis,
    pub fractions: Vec<f64>,
}

/// Parse a raw query string: `runs=1,2,3` and/or `runs=1&runs=2`, `baseline=<arm index>`,
/// `x=step|epoch|images|wall`, `fractions=0.5,0.9`. The error names the problem.
pub fn parse_params(raw: &str) -> Result<CompareParams, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw).map_err(|e| format!("unreadable query string: {e}"))?;
    let mut runs: Vec<i64> = Vec::new();
    let mut baseline = None;
    let mut x = XAxis::Step;
    let mut fractions = DEFAULT_FRACTIONS.to_vec();
    for (k, v) in &pairs {
        match k.as_str() {
            "runs" => {
                for tok in v.split([',', ' ', '\t', '\n']).map(str::trim) {
                    if tok.is_empty() {
                        continue;
                    }
                    let id: i64 = tok
                        .parse()
                        .map_err(|_| format!("run id {tok:?} is not a number"))?;
                    if !runs.contains(&id) {
                        runs.push(id);
                    }
                }
            }
            "baseline" if !v.trim().is_empty() => {
                baseline = Some(
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| format!("baseline {v:?} is not an arm index (0, 1, …)"))?,
                );
            }
            "x" if !v.trim().is_empty() => {
                x = XAxis::parse(v.trim()).ok_or_else(|| {
                    format!("x axis {v:?} is not one of step, epoch, images, wall")
                })?;
            }
            "fractions" if !v.trim().is_empty() => {
                let mut fs = Vec::new();
                for tok in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    let f: f64 = tok
                        .parse()
                        .ok()
                        .filter(|f: &f64| f.is_finite() && *f > 0.0 && *f <= 1.5)
                        .ok_or_else(|| format!("fraction {tok:?} is not a number in (0, 1.5]"))?;
                    fs.push(f);
                }
                if fs.is_empty() || fs.len() > 10 {
                    return Err("give 1 to 10 fractions, e.g. fractions=0.5,0.75,0.9".into());
                }
                fractions = fs;
            }
            _ => {}
        }
    }
    if runs.is_empty() {
        return Err("no runs given: name them as /compare?runs=12,15,18".into());
    }
    if runs.len() > MAX_RUNS {
        return Err(format!(
            "{} runs given; at most {MAX_RUNS} can be compared at once",
            runs.len()
        ));
    }
    Ok(CompareParams {
        runs,
        baseline,
        x,
        fractions,
    })
}

/// One evaluation point of a run's `eval/AP` curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EvalPoint {
    pub step: i64,
    pub value: f64,
    /// Seconds since the run's first metric point.
    pub wall: f64,
}

/// Per-class AP of a run's final evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassAp {
    pub category_id: i64,
    pub name: String,
    pub ap: f64,
}

/// Where a run's final numbers came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSource {
    EvalJson,
    LastEvalPoint,
    None,
}

/// Everything the comparison needs of one run.
#[derive(Debug, Clone)]
pub struct RunData {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub config: Value,
    pub batch_size: Option<u32>,
    /// Images in the run's training split (for epochs).
    pub train_images: Option<usize>,
    /// Final statistics by name (`AP`, `AP50`, …), undefined ones left out.
    pub finals: BTreeMap<String, f64>,
    pub final_source: FinalSource,
    pub per_class: Vec<ClassAp>,
    pub eval_ap: Vec<EvalPoint>,
}

impl RunData {
    /// Images seen after `step` optimizer steps.
    pub fn images_at(&self, step: f64) -> Option<f64> {
        self.batch_size.map(|b| step * b as f64)
    }
    /// Epochs after `step` optimizer steps.
    pub fn epoch_at(&self, step: f64) -> Option<f64> {
        let n = self.train_images.filter(|n| *n > 0)?;
        Some(self.images_at(step)? / n as f64)
    }
    /// The x coordinate of a point on the chosen axis (`None` where the run lacks what it needs).
    pub fn x_of(&self, axis: XAxis, step: i64, wall: f64) -> Option<f64> {
        match axis {
            XAxis::Step => Some(step as f64),
            XAxis::Images => self.images_at(step as f64),
            XAxis::Epoch => self.epoch_at(step as f64),
            XAxis::Wall => Some(wall),
        }
    }
}

/// A run's final numbers: `eval.json`'s 12 statistics when present (−1 = undefined, left out),
/// else the last point of each `eval/<stat>` series.
pub fn final_stats(
    eval_json_stats: Option<&[f64]>,
    last_points: &BTreeMap<String, f64>,
) -> (BTreeMap<String, f64>, FinalSource) {
    use aligndet_common::report::COCO_STAT_NAMES;
    if let Some(stats) = eval_json_stats {
        let m: BTreeMap<String, f64> = COCO_STAT_NAMES
            .iter()
            .zip(stats)
            .filter(|(_, v)| **v >= 0.0 && v.is_finite())
            .map(|(n, v)| (n.to_string(), *v))
            .collect();
        return (m, FinalSource::EvalJson);
    }
    let m: BTreeMap<String, f64> = COCO_STAT_NAMES
        .iter()
        .filter_map(|n| {
            last_points
                .get(&format!("eval/{n}"))
                .filter(|v| **v >= 0.0 && v.is_finite())
                .map(|v| (n.to_string(), *v))
        })
        .collect();
    if m.is_empty() {
        (m, FinalSource::None)
    } else {
        (m, FinalSource::LastEvalPoint)
    }
}

// ---------------------------------------------------------------------------------------------
// Configs: flatten, normalise for arms, diff.

/// `5pct_seed2` → `5pct`; names without a `_seed<digits>` tail are kept.
pub fn strip_split_seed(name: &str) -> &str {
    if let Some(i) = name.rfind("_seed") {
        let tail = &name[i + 5..];
        if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) {
            return &name[..i];
        }
    }
    name
}

/// The config with what varies between seeds of one setting removed: every `seed` field, the
/// seed part of split names and the init checkpoint's run id. Also returns what was removed
/// (the key that pairs runs of two arms: same seeds, same split draw).
pub fn arm_config(config: &Value) -> (Value, String) {
    let mut c = config.clone();
    let mut removed = Vec::new();
    strip_seeds(&mut c, "", &mut removed);
    if let Some(art) = c
        .get_mut("init")
        .and_then(|i| i.get_mut("artifact"))
        .and_then(Value::as_object_mut)
    {
        art.remove("run_id");
    }
    (c, removed.join(", "))
}

fn strip_seeds(v: &mut Value, path: &str, removed: &mut Vec<String>) {
    let Value::Object(map) = v else { return };
    if let Some(seed) = map.remove("seed") {
        removed.push(format!("{}seed={}", prefix(path), value_text(&seed)));
    }
    for (k, child) in map.iter_mut() {
        let p = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        match child {
            Value::String(s) if k.ends_with("split") => {
                let stripped = strip_split_seed(s);
                if stripped.len() != s.len() {
                    removed.push(format!("{p}={s}"));
                    *s = stripped.to_string();
                }
            }
            Value::Object(_) => strip_seeds(child, &p, removed),
            _ => {}
        }
    }
}

fn prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}.")
    }
}

/// A number as Python would print it (`0.015`, `5e-05`, `1000`): what researchers read in configs.
pub fn format_number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let e = v.abs().log10().floor() as i32;
    if !(-4..16).contains(&e) {
        let s = format!("{v:e}");
        if let Some((m, ex)) = s.split_once('e') {
            let ex: i32 = ex.parse().unwrap_or(0);
            return format!("{m}e{}{:02}", if ex < 0 { '-' } else { '+' }, ex.abs());
        }
    }
    format!("{v}")
}

/// A leaf value as text: strings bare, numbers as Python prints them, arrays `[a, b]`.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.to_string(),
            (_, Some(u)) => u.to_string(),
            _ => format_number(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(value_text).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(_) => serde_json::to_string(v).unwrap_or_default(),
    }
}

/// Dotted paths of every leaf (objects are walked; arrays are leaves), e.g. `augment.min_sizes`.
pub fn flatten(config: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    flatten_into(config, "", &mut out);
    out
}

fn flatten_into(v: &Value, path: &str, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten_into(child, &p, out);
            }
        }
        _ => {
            out.insert(path.to_string(), value_text(v));
        }
    }
}

/// Paths whose value differs (or is missing) somewhere across the flattened configs, sorted.
pub fn differing_paths(flats: &[BTreeMap<String, String>]) -> Vec<String> {
    let all: BTreeSet<&String> = flats.iter().flat_map(|f| f.keys()).collect();
    all.into_iter()
        .filter(|p| {
            let first = flats.first().and_then(|f| f.get(*p));
            flats.iter().any(|f| f.get(*p) != first)
        })
        .cloned()
        .collect()
}

/// Group runs whose arm configs are equal; arms in order of their first run.
pub fn group_arms(arm_configs: &[Value]) -> Vec<Vec<usize>> {
    let mut arms: Vec<(Value, Vec<usize>)> = Vec::new();
    for (i, c) in arm_configs.iter().enumerate() {
        match arms.iter_mut().find(|(k, _)| k == c) {
            Some((_, members)) => members.push(i),
            None => arms.push((c.clone(), vec![i])),
        }
    }
    arms.into_iter().map(|(_, m)| m).collect()
}

/// `init` in words: `scratch`, `imagenet_backbone`, `checkpoint model.safetensors`.
pub fn init_text(config: &Value) -> Option<String> {
    let init = config.get("init")?;
    let from = init
        .get("from")
        .map(value_text)
        .unwrap_or_else(|| value_text(init));
    Some(match init.get("artifact").and_then(|a| a.get("name")) {
        Some(name) => format!("{from} {}", value_text(name)),
        None => from,
    })
}

fn is_checkpoint_init(config: &Value) -> bool {
    config
        .get("init")
        .and_then(|i| i.get("from"))
        .and_then(Value::as_str)
        == Some("checkpoint")
}

/// The default baseline: the first arm whose init is not a checkpoint, else the first arm.
pub fn default_baseline(arm_configs: &[Value]) -> usize {
    arm_configs
        .iter()
        .position(|c| !is_checkpoint_init(c))
        .unwrap_or(0)
}

/// Flattened arm config with every `init.*` path folded into one `init` entry.
fn arm_fields(config: &Value) -> BTreeMap<String, String> {
    let mut f: BTreeMap<String, String> = flatten(config)
        .into_iter()
        .filter(|(p, _)| p != "init" && !p.starts_with("init."))
        .collect();
    if let Some(init) = init_text(config) {
        f.insert("init".into(), init);
    }
    f
}

/// The fields that tell arms apart, per arm (`init` first), and a short label per arm: the
/// baseline is named by its init (or all its distinguishing fields), the others by what differs
/// from the baseline.
pub fn arm_names(arm_configs: &[Value], baseline: usize) -> Vec<(String, Vec<(String, String)>)> {
    let flats: Vec<BTreeMap<String, String>> = arm_configs.iter().map(arm_fields).collect();
    let mut diff = differing_paths(&flats);
    diff.sort_by_key(|p| (p != "init", p.clone()));
    let missing = "—".to_string();
    flats
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let fields: Vec<(String, String)> = diff
                .iter()
                .map(|p| (p.clone(), f.get(p).unwrap_or(&missing).clone()))
                .collect();
            let shown: Vec<&(String, String)> = if i == baseline {
                let init: Vec<&(String, String)> =
                    fields.iter().filter(|(p, _)| p == "init").collect();
                if init.is_empty() {
                    fields.iter().collect()
                } else {
                    init
                }
            } else {
                fields
                    .iter()
                    .filter(|(p, v)| flats[baseline].get(p).unwrap_or(&missing) != v)
                    .collect()
            };
            let mut parts: Vec<String> = shown
                .iter()
                .take(4)
                .map(|(p, v)| format!("{p}={v}"))
                .collect();
            if shown.len() > 4 {
                parts.push(format!("… (+{} more)", shown.len() - 4));
            }
            let label = if parts.is_empty() {
                if arm_configs.len() == 1 {
                    "all runs".to_string()
                } else {
                    format!("arm {i}")
                }
            } else {
                parts.join(", ")
            };
            (label, fields)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Statistics.

/// Mean ± sample standard deviation (n − 1) of some values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub mean: Option<f64>,
    /// `None` below 2 values.
    pub std: Option<f64>,
}

pub fn summarize(values: &[f64]) -> Summary {
    let n = values.len();
    if n == 0 {
        return Summary {
            n,
            mean: None,
            std: None,
        };
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = (n >= 2)
        .then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
    Summary {
        n,
        mean: Some(mean),
        std,
    }
}

/// An arm's difference to the baseline arm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Delta {
    /// Arm mean − baseline mean.
    pub mean: f64,
    /// Std (n − 1) of the per-seed differences, when the runs pair up by seed.
    pub std: Option<f64>,
    pub paired: bool,
    /// Pairs when paired, else the smaller of the two arms' n.
    pub n: usize,
}

/// Delta of `arm` against `base`, values keyed by each run's seed key. Paired when both arms
/// have the same set of keys, each once.
pub fn delta(base: &[(String, f64)], arm: &[(String, f64)]) -> Option<Delta> {
    let b = summarize(&base.iter().map(|x| x.1).collect::<Vec<_>>());
    let a = summarize(&arm.iter().map(|x| x.1).collect::<Vec<_>>());
    let mean = a.mean? - b.mean?;
    let keys = |xs: &[(String, f64)]| -> Option<BTreeMap<String, f64>> {
        let m: BTreeMap<String, f64> = xs.iter().cloned().collect();
        (m.len() == xs.len()).then_some(m)
    };
    if let (Some(kb), Some(ka)) = (keys(base), keys(arm))
        && kb.keys().eq(ka.keys())
    {
        let diffs: Vec<f64> = ka.iter().map(|(k, v)| v - kb[k]).collect();
        let s = summarize(&diffs);
        return Some(Delta {
            mean,
            std: s.std,
            paired: true,
            n: diffs.len(),
        });
    }
    Some(Delta {
        mean,
        std: None,
        paired: false,
        n: a.n.min(b.n),
    })
}

/// Where a curve first reaches `target`, as a fractional index into its points (0 = the first
/// point already reaches it; 2.5 = halfway between points 2 and 3), by linear interpolation.
pub fn first_crossing(values: &[f64], target: f64) -> Option<f64> {
    for (i, &v) in values.iter().enumerate() {
        if v >= target {
            if i == 0 {
                return Some(0.0);
            }
            let prev = values[i - 1];
            let t = if v > prev {
                ((target - prev) / (v - prev)).clamp(0.0, 1.0)
            } else {
                1.0
            };
            return Some((i - 1) as f64 + t);
        }
    }
    None
}

/// The value of `xs` at a fractional index.
pub fn at_position(xs: &[f64], pos: f64) -> f64 {
    let i = pos.floor() as usize;
    let t = pos - i as f64;
    match (xs.get(i), xs.get(i + 1)) {
        (Some(a), Some(b)) if t > 0.0 => a + t * (b - a),
        (Some(a), _) => *a,
        _ => f64::NAN,
    }
}

/// Mean curve of an arm's runs, when they all share the same steps (x = mean of the runs' x
/// at each step). `None` for a single run or different steps.
pub fn mean_curve(curves: &[Vec<(i64, f64, f64)>]) -> Option<Vec<(f64, f64)>> {
    if curves.len() < 2 || curves[0].is_empty() {
        return None;
    }
    let steps: Vec<i64> = curves[0].iter().map(|p| p.0).collect();
    if curves
        .iter()
        .any(|c| c.len() != steps.len() || c.iter().zip(&steps).any(|(p, s)| p.0 != *s))
    {
        return None;
    }
    let n = curves.len() as f64;
    Some(
        (0..steps.len())
            .map(|i| {
                let x = curves.iter().map(|c| c[i].1).sum::<f64>() / n;
                let y = curves.iter().map(|c| c[i].2).sum::<f64>() / n;
                (x, y)
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// The comparison.

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
}

#[derive(Debug, Clone, Serialize)]
pub struct Arm {
    pub index: usize,
    pub label: String,
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
    let baseline = match baseline {
        Some(b) if b < groups.len() => b,
        Some(b) => {
            return Err(format!(
                "baseline {b} is not an arm: these runs form {} arm(s), numbered 0 to {}",
                groups.len(),
                groups.len() - 1
            ));
        }
        None => default_baseline(&first_cfgs),
    };
    let names = arm_names(&first_cfgs, baseline);
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
        })
        .collect();
    let arms: Vec<Arm> = groups
        .iter()
        .zip(names)
        .enumerate()
        .map(|(a, (g, (label, fields)))| Arm {
            index: a,
            label,
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
    let stats: Vec<StatRow> = COMPARED_STATS
        .iter()
        .filter(|s| input.iter().any(|r| r.finals.contains_key(**s)))
        .map(|s| StatRow {
            stat: s.to_string(),
            arms: arm_stats(&|r: &RunData| r.finals.get(*s).copied()),
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
    if let Some(base_ap) = baseline_final_ap.filter(|v| *v > 0.0) {
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
            let per_run: Vec<RunCrossing> = order.iter().map(|&i| crossing(&input[i])).collect();
            let arm_rows: Vec<ArmCrossing> = groups
                .iter()
                .map(|g| {
                    let cs: Vec<&RunCrossing> = g
                        .iter()
                        .map(|&i| {
                            per_run
                                .iter()
                                .find(|c| c.run_id == input[i].id)
                                .expect("every run has a crossing row")
                        })
                        .collect();
                    let steps: Vec<f64> = cs.iter().filter_map(|c| c.step).collect();
                    let epochs: Vec<f64> = cs.iter().filter_map(|c| c.epoch).collect();
                    ArmCrossing {
                        reached: steps.len(),
                        n: g.len(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(init: Value, lr: f64, seed: u64, split: &str) -> Value {
        json!({"kind": "finetune", "dataset_id": 1, "train_split": split, "val_split": "val",
               "init": init, "lr": lr, "weight_decay": 1e-4, "seed": seed,
               "augment": {"min_sizes": [512, 640], "hflip": true}})
    }

    fn ckpt(run: i64) -> Value {
        json!({"from": "checkpoint", "artifact": {"run_id": run, "name": "pretrained.safetensors"}})
    }

    #[test]
    fn params_accept_both_list_forms_and_name_bad_input() {
        let p =
            parse_params("runs=3,1&runs=2&runs=3&x=epoch&baseline=1&fractions=0.5,0.8").unwrap();
        assert_eq!(p.runs, vec![3, 1, 2]);
        assert_eq!(p.x, XAxis::Epoch);
        assert_eq!(p.baseline, Some(1));
        assert_eq!(p.fractions, vec![0.5, 0.8]);
        let p = parse_params("runs=4%2C5").unwrap();
        assert_eq!(p.runs, vec![4, 5]);
        assert_eq!(p.fractions, DEFAULT_FRACTIONS.to_vec());
        assert!(parse_params("").unwrap_err().contains("no runs"));
        assert!(parse_params("runs=").unwrap_err().contains("no runs"));
        assert!(parse_params("runs=1,abc").unwrap_err().contains("\"abc\""));
        let many: Vec<String> = (1..=51).map(|i| i.to_string()).collect();
        assert!(
            parse_params(&format!("runs={}", many.join(",")))
                .unwrap_err()
                .contains("at most 50")
        );
        assert!(
            parse_params("runs=1&x=time")
                .unwrap_err()
                .contains("x axis")
        );
        assert!(
            parse_params("runs=1&baseline=-1")
                .unwrap_err()
                .contains("baseline")
        );
        assert!(
            parse_params("runs=1&fractions=0,1")
                .unwrap_err()
                .contains("fraction")
        );
    }

    #[test]
    fn seeds_split_draws_and_checkpoint_runs_fold_into_one_arm() {
        assert_eq!(strip_split_seed("5pct_seed2"), "5pct");
        assert_eq!(strip_split_seed("train"), "train");
        assert_eq!(strip_split_seed("my_seedling"), "my_seedling");
        let a = cfg(ckpt(7), 0.015, 1, "5pct_seed1");
        let b = cfg(ckpt(8), 0.015, 2, "5pct_seed2");
        let c = cfg(json!({"from": "imagenet_backbone"}), 0.01, 1, "5pct_seed1");
        let (na, ka) = arm_config(&a);
        let (nb, _) = arm_config(&b);
        assert_eq!(na, nb);
        assert_eq!(ka, "seed=1, train_split=5pct_seed1");
        assert_eq!(na["train_split"], "5pct");
        assert!(na["init"]["artifact"].get("run_id").is_none());
        let arms = group_arms(&[na.clone(), arm_config(&c).0, nb]);
        assert_eq!(arms, vec![vec![0, 2], vec![1]]);
        let cfgs = vec![na, arm_config(&c).0];
        assert_eq!(default_baseline(&cfgs), 1);
        let names = arm_names(&cfgs, 1);
        assert_eq!(
            names[0].0,
            "init=checkpoint pretrained.safetensors, lr=0.015"
        );
        assert_eq!(names[1].0, "init=imagenet_backbone");
        assert_eq!(
            names[0].1[0],
            ("init".into(), "checkpoint pretrained.safetensors".into())
        );
    }

    #[test]
    fn numbers_print_like_python_and_configs_flatten() {
        assert_eq!(format_number(5e-5), "5e-05");
        assert_eq!(format_number(0.015), "0.015");
        assert_eq!(format_number(0.0001), "0.0001");
        assert_eq!(format_number(2.5e17), "2.5e+17");
        let f = flatten(&cfg(ckpt(7), 0.015, 1, "5pct_seed1"));
        assert_eq!(f["init.artifact.run_id"], "7");
        assert_eq!(f["augment.min_sizes"], "[512, 640]");
        assert_eq!(f["weight_decay"], "0.0001");
        let g = flatten(&cfg(json!({"from": "scratch"}), 0.015, 2, "5pct_seed2"));
        assert_eq!(
            differing_paths(&[f, g]),
            vec![
                "init.artifact.name",
                "init.artifact.run_id",
                "init.from",
                "seed",
                "train_split"
            ]
        );
    }

    #[test]
    fn summaries_use_n_minus_one_and_deltas_pair_by_seed() {
        let s = summarize(&[1.0, 2.0, 3.0]);
        assert_eq!((s.n, s.mean, s.std), (3, Some(2.0), Some(1.0)));
        assert_eq!(summarize(&[4.0]).std, None);
        assert_eq!(summarize(&[]).mean, None);
        let k = |s: &str, v: f64| (s.to_string(), v);
        let base = [k("a", 1.0), k("b", 2.0), k("c", 3.0)];
        let arm = [k("a", 1.5), k("b", 2.0), k("c", 4.0)];
        let d = delta(&base, &arm).unwrap();
        assert!(d.paired && d.n == 3);
        assert!((d.mean - 0.5).abs() < 1e-12);
        // diffs 0.5, 0, 1 → mean 0.5, std 0.5
        assert!((d.std.unwrap() - 0.5).abs() < 1e-12);
        let d = delta(&base, &[k("x", 3.0)]).unwrap();
        assert!(!d.paired && d.std.is_none() && (d.mean - 1.0).abs() < 1e-12);
        assert!(delta(&base, &[]).is_none());
    }

    #[test]
    fn crossings_interpolate_between_evaluations() {
        let v = [0.1, 0.3, 0.5];
        assert_eq!(first_crossing(&v, 0.05), Some(0.0));
        let p = first_crossing(&v, 0.4).unwrap();
        assert!((p - 1.5).abs() < 1e-12);
        assert!((at_position(&[100.0, 200.0, 300.0], p) - 250.0).abs() < 1e-9);
        assert_eq!(first_crossing(&v, 0.6), None);
        // A dip does not count twice: the first crossing wins.
        assert_eq!(first_crossing(&[0.2, 0.6, 0.1, 0.7], 0.6), Some(1.0));
    }

    #[test]
    fn mean_curves_need_shared_steps() {
        let a = vec![(10, 10.0, 0.1), (20, 20.0, 0.3)];
        let b = vec![(10, 12.0, 0.3), (20, 22.0, 0.5)];
        assert_eq!(
            mean_curve(&[a.clone(), b]).unwrap(),
            vec![(11.0, 0.2), (21.0, 0.4)]
        );
        assert!(mean_curve(&[a.clone(), vec![(10, 1.0, 0.1)]]).is_none());
        assert!(mean_curve(&[a]).is_none());
    }

    fn run(id: i64, config: Value, ap: f64, curve: &[(i64, f64)]) -> RunData {
        RunData {
            id,
            name: format!("run {id}"),
            kind: "finetune".into(),
            config,
            batch_size: Some(2),
            train_images: Some(10),
            finals: [("AP".to_string(), ap)].into_iter().collect(),
            final_source: FinalSource::EvalJson,
            per_class: vec![ClassAp {
                category_id: 1,
                name: "cat".into(),
                ap: ap + 0.1,
            }],
            eval_ap: curve
                .iter()
                .map(|&(step, value)| EvalPoint {
                    step,
                    value,
                    wall: step as f64,
                })
                .collect(),
        }
    }

    #[test]
    fn compare_builds_arms_deltas_convergence_and_diff() {
        let im = json!({"from": "imagenet_backbone"});
        let input = vec![
            run(
                1,
                cfg(ckpt(9), 0.015, 1, "5pct_seed1"),
                0.5,
                &[(10, 0.2), (20, 0.5)],
            ),
            run(
                2,
                cfg(im.clone(), 0.01, 1, "5pct_seed1"),
                0.4,
                &[(10, 0.1), (20, 0.4)],
            ),
            run(
                3,
                cfg(ckpt(9), 0.015, 2, "5pct_seed2"),
                0.6,
                &[(10, 0.3), (20, 0.6)],
            ),
            run(
                4,
                cfg(im, 0.01, 2, "5pct_seed2"),
                0.4,
                &[(10, 0.2), (20, 0.4)],
            ),
        ];
        let (c, order) = compare(&input, None, &[0.5, 0.9, 2.0]).unwrap();
        assert_eq!(order, vec![0, 2, 1, 3]);
        assert_eq!(c.baseline, 1, "the arm not started from a checkpoint");
        assert_eq!(c.arms[0].runs, vec![1, 3]);
        let ap = &c.stats[0];
        assert_eq!(ap.stat, "AP");
        assert!((ap.arms[0].summary.mean.unwrap() - 0.55).abs() < 1e-12);
        let d = ap.arms[0].delta.unwrap();
        assert!(d.paired && (d.mean - 0.15).abs() < 1e-12);
        // per-seed diffs 0.1 and 0.2 → std √0.005
        assert!((d.std.unwrap() - 0.005f64.sqrt()).abs() < 1e-12);
        assert!(ap.arms[1].delta.is_none());
        assert!((c.per_class[0].arms[0].delta.unwrap().mean - 0.15).abs() < 1e-12);
        // target 0.5 × 0.4 = 0.2: run 1 at step 10, run 3 at step 10 (0.3 ≥ 0.2),
        // run 2 between 10 (0.1) and 20 (0.4) → 13.33, run 4 at 10.
        let half = &c.convergence[0];
        assert!((half.target - 0.2).abs() < 1e-12);
        let r2 = half.runs.iter().find(|r| r.run_id == 2).unwrap();
        assert!((r2.step.unwrap() - 40.0 / 3.0).abs() < 1e-9);
        assert!((r2.epoch.unwrap() - 40.0 / 3.0 * 2.0 / 10.0).abs() < 1e-9);
        let base = &half.arms[1];
        assert!((base.mean_step.unwrap() - (40.0 / 3.0 + 10.0) / 2.0).abs() < 1e-9);
        assert!((half.arms[0].speedup.unwrap() - (40.0 / 3.0 + 10.0) / 20.0).abs() < 1e-9);
        assert_eq!(
            c.convergence[2].arms[1].reached, 0,
            "2 × final AP is never reached"
        );
        assert_eq!(c.convergence[2].arms[1].n, 2);
        let paths: Vec<&str> = c.config_diff.iter().map(|d| d.path.as_str()).collect();
        assert!(paths.contains(&"lr") && paths.contains(&"seed"));
        assert!(!paths.contains(&"weight_decay"));
        let lr = c.config_diff.iter().find(|d| d.path == "lr").unwrap();
        assert_eq!(lr.values[0].as_deref(), Some("0.015"));
        assert_eq!(lr.values[2].as_deref(), Some("0.01"));
        assert!(
            compare(&input, Some(2), &[0.5])
                .unwrap_err()
                .contains("0 to 1")
        );
    }

    #[test]
    fn finals_prefer_eval_json_and_skip_undefined() {
        let last: BTreeMap<String, f64> =
            [("eval/AP".to_string(), 0.3), ("eval/APs".to_string(), -1.0)]
                .into_iter()
                .collect();
        let (f, src) = final_stats(None, &last);
        assert_eq!(src, FinalSource::LastEvalPoint);
        assert_eq!(f.len(), 1);
        let stats = [
            0.4, 0.8, 0.35, -1.0, 0.4, -1.0, 0.5, 0.6, 0.6, -1.0, 0.6, -1.0,
        ];
        let (f, src) = final_stats(Some(&stats), &last);
        assert_eq!(src, FinalSource::EvalJson);
        assert_eq!(f["AP"], 0.4);
        assert!(!f.contains_key("APs"));
        assert_eq!(final_stats(None, &BTreeMap::new()).1, FinalSource::None);
    }
}
