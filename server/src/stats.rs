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
    /// Half-width of the 95% confidence interval of the mean paired difference (Student's t
    /// with n − 1 degrees of freedom); `None` unpaired or below 2 pairs.
    pub ci95: Option<f64>,
}

/// Two-sided 95% quantile of Student's t, t(0.975; df), for df = 1..=30, as scipy prints them
/// (`scipy.stats.t.ppf(0.975, df)`, scipy 1.x, rounded to 6 decimals).
const T975: [f64; 30] = [
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157,
    2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.13145, 2.119905, 2.109816, 2.100922,
    2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831,
    2.048407, 2.04523, 2.042272,
];

/// t(0.975; df): the table to 30 degrees of freedom, above it the Cornish–Fisher expansion
/// around the normal quantile (within 1e-5 of scipy from df 31 on). `None` for df = 0.
pub fn t975(df: usize) -> Option<f64> {
    match df {
        0 => None,
        1..=30 => Some(T975[df - 1]),
        _ => {
            let z: f64 = 1.959963984540054;
            let n = df as f64;
            let g1 = (z.powi(3) + z) / 4.0;
            let g2 = (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / 96.0;
            let g3 = (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / 384.0;
            Some(z + g1 / n + g2 / n.powi(2) + g3 / n.powi(3))
        }
    }
}

/// Half-width of the 95% confidence interval of a mean: t(0.975; n − 1) · sd / √n.
pub fn ci95_half_width(s: &Summary) -> Option<f64> {
    let sd = s.std?;
    Some(t975(s.n.checked_sub(1)?)? * sd / (s.n as f64).sqrt())
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
            ci95: ci95_half_width(&s),
        });
    }
    Some(Delta {
        mean,
        std: None,
        paired: false,
        n: a.n.min(b.n),
        ci95: None,
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
        assert!(!unpaired.paired && unpaired.std.is_none() && unpaired.ci95.is_none());
    }

    /// The CI of two pairs: t(0.975; 1) = 12.706 × 0.0283 / √2 = 0.2541.
    #[test]
    fn paired_delta_has_a_t_interval() {
        let base = [("1".to_string(), 0.30), ("2".to_string(), 0.34)];
        let arm = [("1".to_string(), 0.32), ("2".to_string(), 0.40)];
        let d = delta(&base, &arm).unwrap();
        let want = 12.706205 * 0.028284271247461905 / 2f64.sqrt();
        assert!((d.ci95.unwrap() - want).abs() < 1e-9, "{d:?}");
        // One pair: a mean, no spread, no interval.
        let one = delta(&base[..1], &arm[..1]).unwrap();
        assert!(one.paired && one.n == 1 && one.std.is_none() && one.ci95.is_none());
    }

    /// Against scipy (`scipy.stats.t.ppf(0.975, df)`, run once with scipy installed into the
    /// project's venv): df 1, 2, 5, 10, 30 from the table; 31, 40, 60, 120, 1000 from the
    /// expansion, which scipy puts at 2.039513, 2.021075, 2.000298, 1.979930, 1.962339.
    #[test]
    fn t_quantiles_match_scipy() {
        assert_eq!(t975(0), None);
        for (df, want) in [
            (1, 12.706205),
            (2, 4.302653),
            (5, 2.570582),
            (10, 2.228139),
            (30, 2.042272),
        ] {
            assert_eq!(t975(df), Some(want));
        }
        for (df, want) in [
            (31, 2.039513),
            (40, 2.021075),
            (60, 2.000298),
            (120, 1.97993),
            (1000, 1.962339),
        ] {
            let got = t975(df).unwrap();
            assert!((got - want).abs() < 2e-5, "df {df}: {got} vs scipy {want}");
        }
        let s = summarize(&[1.0, 2.0, 3.0]);
        assert!((ci95_half_width(&s).unwrap() - 4.302653 / 3f64.sqrt()).abs() < 1e-12);
        assert_eq!(ci95_half_width(&summarize(&[1.0])), None);
    }
}
