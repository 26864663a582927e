//! A histogram of values (the dataset page's box sizes).

use super::{ARM_COLORS, Drawn, SvgArea, svg};
use plotters::prelude::*;

/// Histogram of values over `bins` equal-width bins between 0 and the max.
pub fn histogram(title: &str, x_label: &str, values: &[f64], bins: usize) -> String {
    svg((560, 260), title, |root| {
        draw_histogram(root, title, x_label, values, bins.max(1))
    })
}

fn draw_histogram(
    root: &SvgArea,
    title: &str,
    x_label: &str,
    values: &[f64],
    bins: usize,
) -> Drawn {
    let max = values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1.0);
    let width = max / bins as f64;
    let mut counts = vec![0u32; bins];
    for v in values.iter().filter(|v| v.is_finite()) {
        let b = ((v / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..max, 0u32..(top + top / 10 + 1))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("boxes")
        .draw()?;
    chart.draw_series(counts.iter().enumerate().map(|(i, &c)| {
        let x0 = i as f64 * width;
        Rectangle::new([(x0, 0), (x0 + width, c)], ARM_COLORS[0].filled())
    }))?;
    Ok(())
}
