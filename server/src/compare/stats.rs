//! Curves of a comparison: where a curve first crosses a target, mean curves. (Means, spreads
//! and deltas are [`crate::stats`]'s, shared with the experiment page.)

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
