//! Downsampling metric series for plotting.
//!
//! A plot is a few hundred pixels wide; a long run logs far more points. Averaging would hide the
//! spikes a researcher is looking for (a loss blow-up, a NaN-adjacent step), so we keep, in each
//! bucket of consecutive points, the first, the minimum, the maximum and the last point.
//! The server's live curves apply this same rule in SQL (`db::runs::metric_series_downsampled`,
//! tested equal to this function), so a million-point series never leaves the database whole.

/// Reduce `points` (sorted by x) to at most about `max_points` points, keeping each bucket's
/// first, minimum, maximum and last point in x order. Series that already fit are returned as is.
pub fn downsample_keep_extremes(points: &[(f64, f64)], max_points: usize) -> Vec<(f64, f64)> {
    let max_points = max_points.max(4);
    if points.len() <= max_points {
        return points.to_vec();
    }
    let buckets = max_points / 4;
    let per_bucket = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(buckets * 4);
    for chunk in points.chunks(per_bucket) {
        let (mut imin, mut imax) = (0, 0);
        for (i, p) in chunk.iter().enumerate() {
            // NaN never wins a comparison, so it cannot displace a real extreme.
            if p.1 < chunk[imin].1 {
                imin = i;
            }
            if p.1 > chunk[imax].1 {
                imax = i;
            }
        }
        let mut idx = [0, imin, imax, chunk.len() - 1];
        idx.sort_unstable();
        let mut last = usize::MAX;
        for i in idx {
            if i != last {
                out.push(chunk[i]);
                last = i;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_series_are_untouched() {
        let s: Vec<_> = (0..10).map(|i| (i as f64, i as f64)).collect();
        assert_eq!(downsample_keep_extremes(&s, 100), s);
    }

    #[test]
    fn spikes_survive_and_size_is_bounded() {
        let mut s: Vec<_> = (0..100_000).map(|i| (i as f64, (i as f64).sin())).collect();
        s[54_321].1 = 1e6;
        s[77_777].1 = -1e6;
        let d = downsample_keep_extremes(&s, 400);
        assert!(d.len() <= 400, "{}", d.len());
        assert!(d.contains(&(54_321.0, 1e6)));
        assert!(d.contains(&(77_777.0, -1e6)));
        assert_eq!(d.first(), s.first());
        assert_eq!(d.last(), s.last());
        assert!(d.windows(2).all(|w| w[0].0 < w[1].0), "x order kept");
    }
}
