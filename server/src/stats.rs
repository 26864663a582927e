//! The statistics the pages report over seeds: mean ± sample standard deviation, and an arm's
//! difference to a baseline, paired per seed when the seeds match. One module, so the comparison
//! and the experiment pages cannot disagree.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_needs_two_values() {
        let s = summarize(&[1.0, 2.0, 3.0]);
        assert_eq!((s.n, s.mean, s.std), (3, Some(2.0), Some(1.0)));
        assert_eq!(summarize(&[4.0]).std, None);
        assert_eq!(summarize(&[]).mean, None);
    }

    #[test]
    fn deltas_pair_by_seed() {
        let base = [("1".to_string(), 0.30), ("2".to_string(), 0.34)];
        let arm = [("2".to_string(), 0.40), ("1".to_string(), 0.32)];
        let d = delta(&base, &arm).unwrap();
        assert!(d.paired && d.n == 2);
        assert!((d.mean - 0.04).abs() < 1e-12);
        // Differences 0.02 and 0.06: std 0.0283.
        assert!((d.std.unwrap() - 0.028284271247461905).abs() < 1e-12);
        let unpaired = delta(&base, &arm[..1]).unwrap();
        assert!(!unpaired.paired && unpaired.std.is_none());
    }
}
