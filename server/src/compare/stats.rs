//! Statistics of a comparison: mean ± sample std, deltas against the baseline (paired per seed
//! when possible), where a curve first crosses a target, mean curves.

use serde::Serialize;
use std::collections::BTreeMap;

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
