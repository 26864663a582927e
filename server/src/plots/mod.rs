//! Charts drawn with plotters into SVG strings (the browser shows them inline).

use aligndet_common::series::downsample_keep_extremes;
use plotters::prelude::*;

/// Line charts cycle through the first this many of [`ARM_COLORS`].
const LINE_COLORS: usize = 6;

/// Most points one line keeps; extremes of each bucket survive downsampling.
pub const MAX_POINTS_PER_LINE: usize = 800;

/// A line chart of one or more named series (x, y). Empty input gives a chart saying so.
pub fn line_chart(title: &str, x_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    svg((560, 300), title, |root| {
        draw_lines(root, title, x_label, series)
    })
}

type SvgArea<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// What drawing a chart gives: nothing, or the error that stopped it.
type Drawn = Result<(), Box<dyn std::error::Error>>;

/// An SVG document of `size` on white, drawn by `draw`; a drawing that fails is logged under
/// `title` and leaves what was drawn so far.
fn svg(size: (u32, u32), title: &str, draw: impl FnOnce(&SvgArea) -> Drawn) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(Into::into)
            .and_then(|()| draw(&root));
        if let Err(e) = drawn {
            tracing::warn!("plot {title}: {e}");
        }
        let _ = root.present();
    }
    svg
}

fn draw_lines(
    root: &SvgArea,
    title: &str,
    x_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Drawn {
    let reduced: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(n, pts)| (n.clone(), drawable(pts)))
        .collect();
    let mut chart = frame(root, title, x_label, reduced.iter().flat_map(|(_, p)| p))?;
    for (i, (name, pts)) in reduced.iter().enumerate() {
        let color = ARM_COLORS[i % LINE_COLORS];
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
        draw_legend(&mut chart)?;
    }
    Ok(())
}

/// The legend box of the labelled series, in the chart's corner.
fn draw_legend<'a, 'b: 'a>(chart: &mut Frame<'a, 'b>) -> Drawn {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The finite points of a series, downsampled to what a line can show.
fn drawable(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let finite: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    downsample_keep_extremes(&finite, MAX_POINTS_PER_LINE)
}

/// An axis range holding `lo..=hi` with room at both ends, so a marker at the edge is whole. A
/// single value (one point, a flat series) is centred in a range of its own size (or ±1 at 0),
/// never squeezed into a sliver whose ticks read "0.0 … −0.0".
fn padded_range(lo: f64, hi: f64, margin: f64) -> std::ops::Range<f64> {
    if lo > hi {
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

type Frame<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The frame every line chart shares: title, axes spanning `points` (padded), x label, light
/// grid.
fn frame<'a, 'b, 'p>(
    root: &'a SvgArea<'b>,
    title: &str,
    x_label: &str,
    points: impl Iterator<Item = &'p (f64, f64)>,
) -> Result<Frame<'a, 'b>, Box<dyn std::error::Error>> {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(56)
        .build_cartesian_2d(padded_range(x0, x1, 0.02), padded_range(y0, y1, 0.05))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    Ok(chart)
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
    svg((720, 360), title, |root| {
        draw_overlay(root, title, x_label, lines)
    })
}

fn draw_overlay(root: &SvgArea, title: &str, x_label: &str, lines: &[OverlayLine]) -> Drawn {
    let reduced: Vec<Vec<(f64, f64)>> = lines.iter().map(|l| drawable(&l.points)).collect();
    let mut chart = frame(root, title, x_label, reduced.iter().flatten())?;
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
        draw_legend(&mut chart)?;
    }
    Ok(())
}

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

    #[test]
    fn one_point_and_flat_series_get_a_range_around_them() {
        // One evaluation at step 20: the point sits inside the axis, not on its edge.
        let x = super::padded_range(20.0, 20.0, 0.02);
        assert!(x.start < 20.0 && x.end > 20.0 && (x.start + x.end) / 2.0 == 20.0);
        // A flat series at 0 gets ±1, one at 0.5 gets ±0.05.
        assert_eq!(super::padded_range(0.0, 0.0, 0.05), -1.0..1.0);
        let y = super::padded_range(0.5, 0.5, 0.05);
        assert!((y.start - 0.45).abs() < 1e-12 && (y.end - 0.55).abs() < 1e-12);
        // No data: a unit frame.
        assert_eq!(super::padded_range(f64::MAX, f64::MIN, 0.05), 0.0..1.0);
        // A single point is drawn as a marker.
        let s = super::line_chart("AP", "step", &[("AP".into(), vec![(20.0, 0.3)])]);
        assert!(s.contains("<circle"), "{s}");
    }
}
