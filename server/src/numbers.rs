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

/// A chart's tick label: `v` at the precision its tick spacing `step` needs (0.5 → "0.5", 20 →
/// "20", 0.0002 → "2e-4"), never "-0" (a tick at zero computed as −1e-17 is zero).
pub fn tick(v: f64, step: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let step = step.abs();
    let v = if v.abs() < step * 1e-6 { 0.0 } else { v };
    let big = v.abs().max(step);
    let text = if v != 0.0 && !(1e-3..1e6).contains(&big) {
        // Scientific, with as many mantissa digits as the spacing needs.
        let e = v.abs().log10().floor();
        let digits = ((e - step.log10().floor()).max(0.0) as usize).min(6);
        format!("{v:.digits$e}")
    } else {
        let decimals = if step > 0.0 && step < 1.0 {
            ((-step.log10() - 1e-9).ceil() as usize).min(9)
        } else {
            0
        };
        // A step of 0.25 needs two decimals even though log10 says one.
        let decimals = (decimals..=9)
            .find(|&d| {
                ((step * 10f64.powi(d as i32)).round() - step * 10f64.powi(d as i32)).abs() < 1e-6
            })
            .unwrap_or(decimals);
        format!("{v:.decimals$}")
    };
    strip_negative_zero(text)
}

/// "-0", "-0.00", "-0e0" read as zero: drop the sign.
fn strip_negative_zero(s: String) -> String {
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.' || c == 'e') => rest.to_string(),
        _ => s,
    }
}

/// A value under the pointer on a chart (hover text): 4 significant digits, without float
/// noise, never "-0"; integers (steps, counts) in full.
pub fn chart_value(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        return strip_negative_zero(format!("{v:.0}"));
    }
    if !v.is_finite() || v == 0.0 {
        return format!("{v}");
    }
    let e = v.abs().log10().floor() as i32;
    if !(-4..6).contains(&e) {
        return strip_negative_zero(format!("{v:.3e}"));
    }
    let decimals = (3 - e).max(0) as usize;
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    strip_negative_zero(s)
}

/// What the pages print where a number is undefined (a spread of one value, a missing mean).
pub const UNDEFINED: &str = "—";

/// A COCO AP-type statistic (AP, AP50, per-class AP, …) ×100 at one decimal, as detection
/// papers print it: 0.3142 → "31.4".
pub fn ap100(v: f64) -> String {
    format!("{:.1}", v * 100.0)
}

/// A difference of APs ×100, signed: +2.5, −0.3 (ASCII minus).
fn ap100_signed(v: f64) -> String {
    format!("{:+.1}", v * 100.0)
}

/// Mean ± sample std of AP values, ×100; the spread is a dash when undefined (one value), and
/// the whole is a dash without values.
pub fn ap_spread(s: &Summary) -> String {
    match (s.mean, s.std) {
        (Some(m), Some(sd)) => format!("{} ± {}", ap100(m), ap100(sd)),
        (Some(m), None) => format!("{} ± {UNDEFINED}", ap100(m)),
        _ => UNDEFINED.to_string(),
    }
}

/// A difference of APs to the baseline, ×100, signed, with the 95% confidence interval of the
/// mean paired difference (Student's t over the per-seed differences) and how it was paired.
pub fn ap_delta(d: &Delta) -> String {
    let mean = ap100_signed(d.mean);
    match (d.paired, d.ci95) {
        (true, Some(h)) => format!(
            "{mean} (95% CI {} to {}, paired, n={})",
            ap100_signed(d.mean - h),
            ap100_signed(d.mean + h),
            d.n
        ),
        (true, None) => format!("{mean} (95% CI {UNDEFINED}: one seed: no spread)"),
        (false, _) => format!("{mean} (unpaired: seeds differ, no CI)"),
    }
}

/// `1 worker`, `2 workers`, `0 runs`: a count with its noun, singular only for exactly one.
pub fn count(n: impl Into<i64>, singular: &str) -> String {
    let n = n.into();
    format!("{n} {}", noun(n, singular))
}

/// The noun alone, singular for exactly one: for sentences that print the number apart.
/// English plurals of the nouns the pages count: `box` → `boxes`, `run` → `runs`.
pub fn noun(n: impl Into<i64>, singular: &str) -> String {
    if n.into() == 1 {
        singular.to_string()
    } else if ["s", "x", "ch", "sh"].iter().any(|e| singular.ends_with(e)) {
        format!("{singular}es")
    } else {
        format!("{singular}s")
    }
}

/// Whatever the templates count (lengths, database counts), as one integer type.
pub trait Countable {
    fn as_count(&self) -> i64;
}

impl Countable for i64 {
    fn as_count(&self) -> i64 {
        *self
    }
}

impl Countable for usize {
    fn as_count(&self) -> i64 {
        i64::try_from(*self).unwrap_or(i64::MAX)
    }
}

impl Countable for u64 {
    fn as_count(&self) -> i64 {
        i64::try_from(*self).unwrap_or(i64::MAX)
    }
}

impl Countable for i32 {
    fn as_count(&self) -> i64 {
        i64::from(*self)
    }
}

impl Countable for u32 {
    fn as_count(&self) -> i64 {
        i64::from(*self)
    }
}

impl<T: Countable + ?Sized> Countable for &T {
    fn as_count(&self) -> i64 {
        (**self).as_count()
    }
}

/// The same rules as askama filters: `{{ x|fixed3 }}`. A template's module brings them in with
/// `use crate::numbers::filters;`.
pub mod filters {
    use super::Countable;
    use askama::Values;

    #[askama::filter_fn]
    pub fn fixed3(v: &f64, _: &dyn Values) -> askama::Result<String> {
        Ok(super::fixed3(*v))
    }

    /// `{{ n|plural("worker") }}` → "1 worker", "3 workers".
    #[askama::filter_fn]
    pub fn plural<T: Countable>(n: T, _: &dyn Values, noun: &str) -> askama::Result<String> {
        Ok(super::count(n.as_count(), noun))
    }

    /// `{{ n|noun("worker") }}` → "worker" for 1, else "workers" (the number printed apart).
    #[askama::filter_fn]
    pub fn noun<T: Countable>(n: T, _: &dyn Values, noun: &str) -> askama::Result<String> {
        Ok(super::noun(n.as_count(), noun))
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
        assert_eq!(ap100(0.3142), "31.4");
        assert_eq!(ap_spread(&summarize(&[0.4, 0.44])), "42.0 ± 2.8");
        assert_eq!(ap_spread(&summarize(&[0.006])), "0.6 ± —");
        assert_eq!(ap_spread(&summarize(&[])), "—");
    }

    #[test]
    fn deltas_print_their_interval_or_say_why_not() {
        let b = [("1".to_string(), 0.30), ("2".to_string(), 0.34)];
        let a = [("1".to_string(), 0.32), ("2".to_string(), 0.40)];
        let d = crate::stats::delta(&b, &a).unwrap();
        // Mean +4.0, half-width 12.706 × 2.83 / √2 = 25.4.
        assert_eq!(ap_delta(&d), "+4.0 (95% CI -21.4 to +29.4, paired, n=2)");
        let one = crate::stats::delta(&b[..1], &a[..1]).unwrap();
        assert_eq!(ap_delta(&one), "+2.0 (95% CI —: one seed: no spread)");
        let unpaired = crate::stats::delta(&b, &a[1..]).unwrap();
        assert_eq!(ap_delta(&unpaired), "+8.0 (unpaired: seeds differ, no CI)");
    }

    #[test]
    fn tick_labels_fit_their_spacing_and_never_read_minus_zero() {
        assert_eq!(tick(-1e-17, 0.5), "0.0");
        assert_eq!(tick(-0.0, 1.0), "0");
        assert_eq!(tick(0.5, 0.5), "0.5");
        assert_eq!(tick(0.25, 0.25), "0.25");
        assert_eq!(tick(20.0, 5.0), "20");
        assert_eq!(tick(2e-4, 1e-4), "2e-4");
        assert_eq!(tick(1.5e-4, 5e-5), "1.5e-4");
        assert_eq!(tick(2_000_000.0, 1_000_000.0), "2e6");
        assert_eq!(chart_value(0.123456), "0.1235");
        assert_eq!(chart_value(20.0), "20");
        assert_eq!(chart_value(-0.0), "0");
        assert_eq!(chart_value(1234.5678), "1235");
        assert_eq!(chart_value(3e-5), "3.000e-5");
    }

    #[test]
    fn counts_take_the_singular_only_for_one() {
        assert_eq!(count(1, "worker"), "1 worker");
        assert_eq!(count(0, "worker"), "0 workers");
        assert_eq!(count(3, "run"), "3 runs");
        assert_eq!(noun(1, "arm"), "arm");
        assert_eq!(noun(2, "arm"), "arms");
        assert_eq!(count(2, "box"), "2 boxes");
        assert_eq!(count(1, "box"), "1 box");
    }
}
