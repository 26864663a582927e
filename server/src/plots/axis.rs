//! An axis of a line chart: the range drawn (padded, so a marker at an end is whole), where its
//! ticks go (1–2–5 steps, decades on a log axis) and what they read. plotters gets the ticks as
//! given key points: its own choice squeezes a flat series into a sliver whose ticks read
//! "0.0 … −0.0".

use crate::numbers;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use std::ops::Range;

/// Ticks an axis aims for (a 1–2–5 step gives between about 4 and 10).
const TARGET_TICKS: f64 = 6.0;

/// One axis, in drawn coordinates: the values, or their log10 on a log axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub log: bool,
    pub range: Range<f64>,
    /// (position, label).
    pub ticks: Vec<(f64, String)>,
}

/// Where a value is drawn on an axis; `None` for a value a log axis cannot show (≤ 0).
pub fn drawn(v: f64, log: bool) -> Option<f64> {
    match (log, v.is_finite()) {
        (_, false) => None,
        (false, true) => Some(v),
        (true, true) => (v > 0.0).then(|| v.log10()),
    }
}

impl Axis {
    /// The axis holding every drawn coordinate of `values` with `margin` (a share of the span)
    /// of room at both ends. No values: a unit axis.
    pub fn fit(values: impl Iterator<Item = f64>, log: bool, margin: f64) -> Axis {
        let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let range = padded_range(lo, hi, margin);
        let ticks = if log {
            log_ticks(&range)
        } else {
            linear_ticks(&range)
        };
        Axis { log, range, ticks }
    }

    /// A tick's label (plotters asks with the positions it was given).
    pub fn label(&self, t: f64) -> String {
        self.ticks
            .iter()
            .find(|(p, _)| (p - t).abs() <= 1e-9 * p.abs().max(1.0))
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
    }

    /// The axis as plotters' coordinate, with exactly these ticks.
    pub fn coord(&self) -> Ticked {
        Ticked {
            inner: RangedCoordf64::from(self.range.clone()),
            ticks: self.ticks.iter().map(|t| t.0).collect(),
        }
    }
}

/// A linear coordinate whose ticks are ours (plotters' `WithKeyPoints` over `f64` takes no
/// label formatter).
pub struct Ticked {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(v, limit)
    }

    fn key_points<H: KeyPointHint>(&self, _: H) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> Range<f64> {
        self.inner.range()
    }
}

/// An axis range holding `lo..=hi` with room at both ends, so a marker at the edge is whole. A
/// single value (one point, a flat series) is centred in a range of its own size (or ±1 at 0),
/// never squeezed into a sliver.
pub fn padded_range(lo: f64, hi: f64, margin: f64) -> Range<f64> {
    if lo > hi || !lo.is_finite() || !hi.is_finite() {
        return 0.0..1.0;
    }
    let span = hi - lo;
    if span < 1e-12 * lo.abs().max(1.0) {
        let half = if lo.abs() > 1e-12 {
            lo.abs() * 0.1
        } else {
            1.0
        };
        return (lo - half)..(hi + half);
    }
    (lo - span * margin)..(hi + span * margin)
}

/// 1, 2 or 5 × a power of ten: the tick spacing nearest `rough` from above.
fn nice_step(rough: f64) -> f64 {
    let p = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= rough * 0.999)
        .unwrap_or(10.0 * p)
}

/// Multiples of a 1–2–5 step inside `range`, labelled at the step's precision.
fn linear_ticks(range: &Range<f64>) -> Vec<(f64, String)> {
    let step = nice_step((range.end - range.start) / TARGET_TICKS);
    let first = (range.start / step).ceil() as i64;
    let last = (range.end / step).floor() as i64;
    (first..=last)
        .map(|k| {
            let v = k as f64 * step;
            (v, numbers::tick(v, step))
        })
        .collect()
}

/// Ticks of a log axis (`range` in log10): decades over a wide range, 1–2–5 within each decade
/// over a few, and plain 1–2–5 steps of the values inside less than a decade.
fn log_ticks(range: &Range<f64>) -> Vec<(f64, String)> {
    let decades = range.end - range.start;
    if decades < 1.0 {
        let values = 10f64.powf(range.start)..10f64.powf(range.end);
        let step = nice_step((values.end - values.start) / TARGET_TICKS);
        let first = (values.start / step).ceil() as i64;
        let last = (values.end / step).floor() as i64;
        return (first.max(1)..=last)
            .map(|k| {
                let v = k as f64 * step;
                (v.log10(), numbers::tick(v, step))
            })
            .collect();
    }
    let mantissas: &[f64] = if decades < 3.0 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let every = ((decades / TARGET_TICKS).ceil() as i64).max(1);
    let mut ticks = Vec::new();
    for e in (range.start.floor() as i64)..=(range.end.ceil() as i64) {
        if e.rem_euclid(every) != 0 {
            continue;
        }
        for m in mantissas {
            let v = m * 10f64.powi(e as i32);
            let t = v.log10();
            if t >= range.start - 1e-9 && t <= range.end + 1e-9 {
                ticks.push((t, numbers::tick(v, 10f64.powi(e as i32))));
            }
        }
    }
    ticks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_point_and_flat_series_get_a_range_around_them() {
        // One evaluation at step 20: the point sits inside the axis, not on its edge.
        let x = padded_range(20.0, 20.0, 0.02);
        assert!(x.start < 20.0 && x.end > 20.0 && (x.start + x.end) / 2.0 == 20.0);
        // A flat series at 0 gets ±1, one at 0.5 gets ±0.05.
        assert_eq!(padded_range(0.0, 0.0, 0.05), -1.0..1.0);
        let y = padded_range(0.5, 0.5, 0.05);
        assert!((y.start - 0.45).abs() < 1e-12 && (y.end - 0.55).abs() < 1e-12);
        // No data: a unit frame.
        assert_eq!(padded_range(f64::MAX, f64::MIN, 0.05), 0.0..1.0);
    }

    #[test]
    fn a_flat_series_at_zero_reads_clean_ticks() {
        let a = Axis::fit([0.0, 0.0, 0.0].into_iter(), false, 0.05);
        let labels: Vec<&str> = a.ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["-1.0", "-0.5", "0.0", "0.5", "1.0"]);
        let step = Axis::fit([20.0].into_iter(), false, 0.02);
        assert!(step.ticks.iter().any(|t| t.1 == "20"), "{:?}", step.ticks);
    }

    #[test]
    fn log_axes_tick_decades_or_mantissas() {
        let wide = Axis::fit([-4.0, 0.0].into_iter(), true, 0.0);
        let labels: Vec<&str> = wide.ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["1e-4", "0.001", "0.01", "0.1", "1"]);
        let few = Axis::fit([0.0, 2.0].into_iter(), true, 0.0);
        assert!(few.ticks.iter().any(|t| t.1 == "50"), "{:?}", few.ticks);
        let narrow = Axis::fit([0.3f64.log10(), 0.6f64.log10()].into_iter(), true, 0.0);
        assert!(
            narrow.ticks.iter().any(|t| t.1 == "0.40"),
            "{:?}",
            narrow.ticks
        );
        assert_eq!(drawn(-1.0, true), None);
        assert_eq!(drawn(0.0, true), None);
        assert_eq!(drawn(100.0, true), Some(2.0));
        assert_eq!(drawn(-1.0, false), Some(-1.0));
    }
}
