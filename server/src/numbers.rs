//! How the pages write numbers: one function per kind of number, so a value reads the same on
//! every page (and the askama filters in [`filters`] call the same functions).

use crate::stats::{Delta, Summary};

/// A number as Python would print it (`0.015`, `5e-05`, `1000`): what researchers read in configs.
pub fn python_style(v: f64) -> String {
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

/// A number at 6 significant digits, without float noise (0.015, not 0.015000000000000001).
pub fn six_significant(x: f64) -> String {
    format!("{:.6e}", x)
        .parse::<f64>()
        .map(|v| v.to_string())
        .unwrap_or_else(|_| x.to_string())
}

/// A COCO statistic (AP, AR) at 3 decimals; pycocotools' −1 (undefined) as a dash.
pub fn coco_stat(v: f64) -> String {
    if v < 0.0 {
        "–".to_string()
    } else {
        fixed3(v)
    }
}

/// 3 decimals.
pub fn fixed3(v: f64) -> String {
    format!("{v:.3}")
}

/// Mean ± sample std at 3 decimals; the spread is a dash when undefined (one value), and the
/// whole is a dash without values.
pub fn mean_spread(s: &Summary) -> String {
    match (s.mean, s.std) {
        (Some(m), Some(sd)) => format!("{} ± {}", fixed3(m), fixed3(sd)),
        (Some(m), None) => format!("{} ± –", fixed3(m)),
        _ => "–".to_string(),
    }
}

/// A difference to the baseline, signed, with its spread and how it was paired.
pub fn delta_text(d: &Delta) -> String {
    match (d.paired, d.std) {
        (true, Some(sd)) => format!("{:+.3} ± {} (paired, n={})", d.mean, fixed3(sd), d.n),
        (true, None) => format!("{:+.3} ± – (paired, n={})", d.mean, d.n),
        (false, _) => format!("{:+.3} (unpaired)", d.mean),
    }
}

/// The same rules as askama filters: `{{ x|fixed3 }}`. A template's module brings them in with
/// `use crate::numbers::filters;`.
pub mod filters {
    #[askama::filter_fn]
    pub fn fixed3(v: &f64, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(super::fixed3(*v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summarize;

    #[test]
    fn numbers_read_the_same_everywhere() {
        assert_eq!(python_style(0.015), "0.015");
        assert_eq!(python_style(5e-5), "5e-05");
        assert_eq!(six_significant(0.1 + 0.2), "0.3");
        assert_eq!(coco_stat(-1.0), "–");
        assert_eq!(coco_stat(0.25), "0.250");
        assert_eq!(mean_spread(&summarize(&[0.4, 0.44])), "0.420 ± 0.028");
        assert_eq!(mean_spread(&summarize(&[0.006])), "0.006 ± –");
        assert_eq!(mean_spread(&summarize(&[])), "–");
    }
}
