//! Smoothing of a noisy curve: TensorBoard's debiased exponential moving average.

/// The debiased EMA of `values` with weight `w` in [0, 1) (TensorBoard's scalar dashboard):
/// `last = last·w + (1−w)·v`, then `last / (1 − w^(i+1))`, so the first points are not pulled
/// towards 0 as a plain EMA started at 0 would be. `w = 0` returns the values; non-finite
/// values keep the previous smoothed value (TensorBoard skips them too), and so do they in the
/// output. It is the weighted mean Σ wᵏ·v₍ᵢ₋ₖ₎ / Σ wᵏ (pandas' `ewm(alpha=1−w, adjust=True)`).
///
/// The run page smooths the points it draws, which past [`super::MAX_POINTS_PER_LINE`] are a
/// downsampling of the stored series (as TensorBoard smooths its sampled points).
pub fn debiased_ema(values: &[f64], w: f64) -> Vec<f64> {
    let w = if w.is_finite() {
        w.clamp(0.0, 0.999)
    } else {
        0.0
    };
    let mut last = 0.0;
    let mut seen = 0i32;
    let mut out = Vec::with_capacity(values.len());
    for &v in values {
        if !v.is_finite() {
            out.push(if seen == 0 {
                v
            } else {
                last / (1.0 - w.powi(seen))
            });
            continue;
        }
        last = last * w + (1.0 - w) * v;
        seen += 1;
        out.push(last / (1.0 - w.powi(seen)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::debiased_ema;

    /// The closed form, computed apart from the recurrence: the mean of the values so far,
    /// weighted wᵏ by age k (pandas documents `adjust=True` this way).
    fn weighted_mean(values: &[f64], w: f64) -> Vec<f64> {
        (0..values.len())
            .map(|i| {
                let (mut num, mut den) = (0.0, 0.0);
                for k in 0..=i {
                    num += w.powi(k as i32) * values[i - k];
                    den += w.powi(k as i32);
                }
                num / den
            })
            .collect()
    }

    #[test]
    fn matches_the_weighted_mean_and_a_hand_computation() {
        // By hand, w = 0.6 on 1, 2, 3: 1, (0.6·1 + 2)/1.6 = 1.625, (0.36 + 1.2 + 3)/1.96.
        let s = debiased_ema(&[1.0, 2.0, 3.0], 0.6);
        assert_eq!(s[0], 1.0);
        assert!((s[1] - 1.625).abs() < 1e-12);
        assert!((s[2] - 4.56 / 1.96).abs() < 1e-12);
        let noisy: Vec<f64> = (0..300)
            .map(|i| ((i * 7919) % 101) as f64 / 10.0 - 3.0)
            .collect();
        for w in [0.0, 0.3, 0.6, 0.9, 0.99] {
            let a = debiased_ema(&noisy, w);
            let b = weighted_mean(&noisy, w);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-9 * y.abs().max(1.0), "w={w}: {x} vs {y}");
            }
        }
        assert_eq!(debiased_ema(&noisy, 0.0), noisy);
        // A flat series stays flat (the debiasing is what keeps its start from sagging).
        assert!(
            debiased_ema(&[5.0; 10], 0.9)
                .iter()
                .all(|v| (v - 5.0).abs() < 1e-12)
        );
    }

    #[test]
    fn skips_non_finite_values() {
        let s = debiased_ema(&[1.0, f64::NAN, 3.0], 0.5);
        assert_eq!(s[1], 1.0);
        assert!((s[2] - (0.5 * 1.0 + 3.0) / 1.5).abs() < 1e-12);
    }

    /// Against pandas itself where this machine has it (`python3 -c 'import pandas'`); the test
    /// says so and passes without it, the two checks above still holding.
    #[test]
    fn matches_pandas_ewm_adjust_where_available() {
        let values: Vec<f64> = (0..50)
            .map(|i| ((i * 37) % 11) as f64 * 0.1 + i as f64 * 0.01)
            .collect();
        let list: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
        let script = format!(
            "import pandas as pd\nfor v in pd.Series([{}]).ewm(alpha=1-0.6, adjust=True).mean(): print(repr(float(v)))",
            list.join(",")
        );
        let out = match std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
        {
            Ok(o) if o.status.success() => o,
            _ => {
                eprintln!("python3 with pandas not available: pandas check skipped");
                return;
            }
        };
        let theirs: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().parse().expect("a float from pandas"))
            .collect();
        let ours = debiased_ema(&values, 0.6);
        assert_eq!(theirs.len(), ours.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-12, "{a} vs pandas {b}");
        }
    }
}
