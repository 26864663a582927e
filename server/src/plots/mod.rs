//! Charts drawn with plotters into SVG strings (the browser shows them inline).

use aligndet_common::series::downsample_keep_extremes;
use plotters::prelude::*;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Most points one line keeps; extremes of each bucket survive downsampling.
pub const MAX_POINTS_PER_LINE: usize = 800;

/// A line chart of one or more named series (x, y). Empty input gives a chart saying so.
pub fn line_chart(title: &str, x_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (560, 300)).into_drawing_area();
        if let Err(e) = draw_lines(&root, title, x_label, series) {
            tracing::warn!("plot {title}: {e}");
        }
        let _ = root.present();
    }
    svg
}

fn draw_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let reduced: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(n, pts)| {
            let finite: Vec<(f64, f64)> = pts
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            (
                n.clone(),
                downsample_keep_extremes(&finite, MAX_POINTS_PER_LINE),
            )
        })
        .collect();
    let all = reduced.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (i, (name, pts)) in reduced.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        // sparse series (evaluations every N steps) get markers, so one point is visible too
        if pts.len() <= 30 {
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
    }
    if reduced.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

/// Colours of the arms of a comparison (the first six are the line charts' colours).
pub const ARM_COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// An arm's colour as CSS (`#1f77b4`), for legends drawn in HTML beside the chart.
pub fn arm_color_css(arm: usize) -> String {
    let RGBColor(r, g, b) = ARM_COLORS[arm % ARM_COLORS.len()];
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// One line of an overlay chart: a run (thin) or an arm's mean (thick), coloured by arm.
pub struct OverlayLine {
    pub arm: usize,
    pub points: Vec<(f64, f64)>,
    /// Thick line (an arm's mean); thin lines are single runs.
    pub thick: bool,
    /// Legend text; lines with `None` stay out of the legend.
    pub legend: Option<String>,
}

/// Many runs in one chart, coloured per arm: thin lines for runs, thick ones for arm means.
/// Same frame and style as [`line_chart`]; empty input gives a chart saying nothing.
pub fn overlay_chart(title: &str, x_label: &str, lines: &[OverlayLine]) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 360)).into_drawing_area();
        if let Err(e) = draw_overlay(&root, title, x_label, lines) {
            tracing::warn!("plot {title}: {e}");
        }
        let _ = root.present();
    }
    svg
}

fn draw_overlay<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_label: &str,
    lines: &[OverlayLine],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let reduced: Vec<Vec<(f64, f64)>> = lines
        .iter()
        .map(|l| {
            let finite: Vec<(f64, f64)> = l
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            downsample_keep_extremes(&finite, MAX_POINTS_PER_LINE)
        })
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in reduced.iter().flatten() {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    // Runs first, means on top.
    let mut idx: Vec<usize> = (0..lines.len()).collect();
    idx.sort_by_key(|&i| lines[i].thick);
    let mut legend = false;
    for i in idx {
        let (line, pts) = (&lines[i], &reduced[i]);
        let color = ARM_COLORS[line.arm % ARM_COLORS.len()];
        let style = if line.thick {
            color.stroke_width(3)
        } else {
            color.mix(0.55).stroke_width(1)
        };
        let drawn = chart.draw_series(LineSeries::new(pts.iter().copied(), style))?;
        if let Some(name) = &line.legend {
            legend = true;
            drawn.label(name.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(3))
            });
        }
        if pts.len() <= 30 {
            let r = if line.thick { 3 } else { 2 };
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, r, style.filled())))?;
        }
    }
    if legend {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

/// Histogram of values over `bins` equal-width bins between 0 and the max.
pub fn histogram(title: &str, x_label: &str, values: &[f64], bins: usize) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (560, 260)).into_drawing_area();
        if let Err(e) = draw_histogram(&root, title, x_label, values, bins.max(1)) {
            tracing::warn!("histogram {title}: {e}");
        }
        let _ = root.present();
    }
    svg
}

fn draw_histogram<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_label: &str,
    values: &[f64],
    bins: usize,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
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
        Rectangle::new([(x0, 0), (x0 + width, c)], COLORS[0].filled())
    }))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn charts_render_svg_with_data() {
        let s = super::line_chart(
            "loss",
            "step",
            &[(
                "loss".into(),
                (0..5000)
                    .map(|i| (i as f64, 1.0 / (1.0 + i as f64)))
                    .collect(),
            )],
        );
        assert!(
            s.starts_with("<svg") && s.contains("polyline"),
            "{}",
            &s[..200.min(s.len())]
        );
        let h = super::histogram("sizes", "px", &[1.0, 2.0, 30.0], 10);
        assert!(h.contains("<rect"));
    }

    #[test]
    fn overlay_draws_thin_runs_and_thick_means() {
        let line = |arm, thick, legend: Option<&str>| super::OverlayLine {
            arm,
            points: vec![(0.0, 0.1), (10.0, 0.3)],
            thick,
            legend: legend.map(String::from),
        };
        let s = super::overlay_chart(
            "AP",
            "step",
            &[
                line(0, false, None),
                line(1, false, None),
                line(0, true, Some("#0 mean")),
            ],
        );
        assert!(s.contains("polyline") && s.contains("#0 mean"));
        assert!(s.contains("stroke-width=\"3\""));
        assert_eq!(super::arm_color_css(1), "#ff7f0e");
    }
}
