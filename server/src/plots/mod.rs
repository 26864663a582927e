//! Charts drawn with plotters into SVG strings (the browser shows them inline).
//!
//! Every line chart goes through [`draw_lines`]: axes fitted by [`axis`] (padded, clean ticks,
//! log scale on request), optional smoothing ([`smooth`]) with the raw curve faint behind, a
//! legend below the plot ([`legend`]) and a marker or hover target per point ([`marks`]).

pub mod axis;
mod histogram;
mod legend;
mod marks;
pub mod smooth;

pub use histogram::histogram;

use aligndet_common::series::downsample_keep_extremes;
use axis::{Axis, Ticked, drawn};
use plotters::prelude::*;

/// Most points one line keeps; extremes of each bucket survive downsampling.
pub const MAX_POINTS_PER_LINE: usize = 800;

/// How the reader asked to see a chart (the run page's `?logx=1&logy=1&smooth=0.6`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct View {
    pub log_x: bool,
    pub log_y: bool,
    /// EMA weight in [0, 1); 0 draws the raw curve only.
    pub smooth: f64,
}

impl View {
    /// Names the view in a drawing's cache key.
    pub fn key(&self) -> String {
        format!("lx{}ly{}s{}", self.log_x, self.log_y, self.smooth)
    }
}

/// A chart's texts: its title and the titles of its axes.
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    pub title: &'a str,
    pub x: &'a str,
    pub y: &'a str,
}

/// A line chart of one or more named series (x, y). Empty input gives an empty frame.
pub fn line_chart(title: &str, x_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let labels = Labels {
        title,
        x: x_label,
        y: "",
    };
    line_chart_with(&labels, series, View::default())
}

/// [`line_chart`] with a y-axis title and the reader's [`View`]: series get distinct colours
/// (up to [`ARM_COLORS`]' ten); with smoothing each is drawn faint and raw, and smoothed on top.
pub fn line_chart_with(
    labels: &Labels,
    series: &[(String, Vec<(f64, f64)>)],
    view: View,
) -> String {
    let mut lines = Vec::new();
    for (i, (name, pts)) in series.iter().enumerate() {
        let line = Line {
            name: name.clone(),
            legend: true,
            color: ARM_COLORS[i % ARM_COLORS.len()],
            width: 2,
            opacity: 1.0,
            raw: None,
            hover: true,
            points: drawable(pts),
        };
        push_smoothed(&mut lines, line, view);
    }
    chart((560, 300), labels, &lines, view)
}

/// `line` as the view draws it: as it is, or (with smoothing) faint and raw behind its EMA.
fn push_smoothed(lines: &mut Vec<Line>, mut line: Line, view: View) {
    if view.smooth > 0.0 && line.points.len() > 2 {
        let ys: Vec<f64> = line.points.iter().map(|p| p.1).collect();
        let smoothed = smooth::debiased_ema(&ys, view.smooth);
        lines.push(Line {
            legend: false,
            hover: false,
            opacity: 0.25,
            width: 1,
            ..line.clone()
        });
        line.points = line
            .points
            .iter()
            .zip(&smoothed)
            .map(|(p, s)| (p.0, *s))
            .collect();
        line.raw = Some(ys);
    }
    lines.push(line);
}

/// Colours of series and of the arms of a comparison: one palette (matplotlib's tab10).
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
    marks::css(ARM_COLORS[arm % ARM_COLORS.len()])
}

/// One line of an overlay chart: a run (thin) or an arm's mean (thick), coloured by arm.
pub struct OverlayLine {
    pub arm: usize,
    pub points: Vec<(f64, f64)>,
    /// Thick line (an arm's mean); thin lines are single runs.
    pub thick: bool,
    /// Legend text; lines with `None` stay out of the legend.
    pub legend: Option<String>,
    /// What the hover text calls the line (`run #3`, `AlignDet mean of 3`).
    pub name: String,
}

/// Many runs in one chart, coloured per arm: thin lines for runs, thick ones for arm means
/// (drawn last, on top). Same frame, legend, hover and [`View`] (log axes, smoothing) as
/// [`line_chart_with`].
pub fn overlay_chart(labels: &Labels, lines: &[OverlayLine], view: View) -> String {
    let mut idx: Vec<usize> = (0..lines.len()).collect();
    idx.sort_by_key(|&i| lines[i].thick);
    let mut drawn: Vec<Line> = Vec::new();
    for i in idx {
        let l = &lines[i];
        let line = Line {
            name: l.legend.clone().unwrap_or_else(|| l.name.clone()),
            legend: l.legend.is_some(),
            color: ARM_COLORS[l.arm % ARM_COLORS.len()],
            width: if l.thick { 3 } else { 1 },
            opacity: if l.thick { 1.0 } else { 0.55 },
            raw: None,
            hover: true,
            points: drawable(&l.points),
        };
        push_smoothed(&mut drawn, line, view);
    }
    chart((720, 360), labels, &drawn, view)
}

/// A line as drawn: its points in value space (finite, downsampled).
#[derive(Clone)]
struct Line {
    name: String,
    legend: bool,
    color: RGBColor,
    width: u32,
    opacity: f64,
    /// The raw values under smoothed `points`, for the hover text.
    raw: Option<Vec<f64>>,
    /// Markers or hover targets; off for the faint raw curve behind a smoothed one.
    hover: bool,
    points: Vec<(f64, f64)>,
}

type SvgArea<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// What drawing a chart gives: nothing, or the error that stopped it.
type Drawn = Result<(), Box<dyn std::error::Error>>;

/// An SVG document of `size` on white, drawn by `draw`, with `extra` markup (what plotters
/// cannot write) appended; a drawing that fails is logged under `title` and leaves what was
/// drawn so far.
fn svg(size: (u32, u32), title: &str, draw: impl FnOnce(&SvgArea) -> Drawn) -> String {
    svg_with(size, title, |root| draw(root).map(|()| String::new()))
}

fn svg_with(
    size: (u32, u32),
    title: &str,
    draw: impl FnOnce(&SvgArea) -> Result<String, Box<dyn std::error::Error>>,
) -> String {
    let mut svg = String::new();
    let mut extra = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(Into::into)
            .and_then(|()| draw(&root));
        match drawn {
            Ok(e) => extra = e,
            Err(e) => tracing::warn!("plot {title}: {e}"),
        }
        let _ = root.present();
    }
    if let Some(end) = svg.rfind("</svg>") {
        svg.insert_str(end, &extra);
    }
    svg
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

/// A line's points where the view's axes can draw them: (index into the line, drawn x, drawn
/// y); points a log axis cannot show (≤ 0) are left out.
fn placed(line: &Line, view: View) -> Vec<(usize, f64, f64)> {
    line.points
        .iter()
        .enumerate()
        .filter_map(|(i, &(x, y))| Some((i, drawn(x, view.log_x)?, drawn(y, view.log_y)?)))
        .collect()
}

/// What the caption says about points a log axis left out, if any.
fn dropped_note(lines: &[Line], placed: &[Vec<(usize, f64, f64)>], view: View) -> Option<String> {
    // Counted on the raw curves (a smoothed one may stay above zero where its raw one dips).
    let dropped: usize = lines
        .iter()
        .zip(placed)
        .filter(|(l, _)| l.raw.is_none())
        .map(|(l, p)| l.points.len() - p.len())
        .sum();
    (dropped > 0).then(|| {
        let axes = match (view.log_x, view.log_y) {
            (true, true) => "log x and y axes",
            (true, false) => "log x axis",
            _ => "log y axis",
        };
        format!(
            "{} at or below zero not drawn on the {axes}",
            crate::numbers::count(dropped as i64, "point")
        )
    })
}

type Frame<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<Ticked, Ticked>>;

/// A chart of `lines` in an SVG of `size` plus the legend strip below it.
fn chart(size: (u32, u32), labels: &Labels, lines: &[Line], view: View) -> String {
    let placed: Vec<Vec<(usize, f64, f64)>> = lines.iter().map(|l| placed(l, view)).collect();
    let note = dropped_note(lines, &placed, view);
    let entries: Vec<(String, RGBColor)> = lines
        .iter()
        .filter(|l| l.legend)
        .map(|l| (l.name.clone(), l.color))
        .collect();
    // One series is named by the chart's title: a legend only tells lines apart.
    let entries = if entries.len() < 2 {
        Vec::new()
    } else {
        entries
    };
    let legend = legend::Legend::layout(&entries, note.as_deref(), size.0 as i32);
    let total = (size.0, size.1 + legend.height as u32);
    svg_with(total, labels.title, |root| {
        let (plot, _) = root.split_vertically(size.1 as i32);
        let mut extra = draw_lines(&plot, labels, lines, &placed, view)?;
        extra.push_str(&legend.svg(size.1 as i32));
        Ok(extra)
    })
}

/// The frame, the lines, and (returned) the plot-area rectangle and the markers as SVG.
fn draw_lines(
    root: &SvgArea,
    labels: &Labels,
    lines: &[Line],
    placed: &[Vec<(usize, f64, f64)>],
    view: View,
) -> Result<String, Box<dyn std::error::Error>> {
    let all = || placed.iter().flatten();
    let x = Axis::fit(all().map(|p| p.1), view.log_x, 0.02);
    let y = Axis::fit(all().map(|p| p.2), view.log_y, 0.05);
    let mut chart: Frame = ChartBuilder::on(root)
        .caption(labels.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(if labels.y.is_empty() { 56 } else { 70 })
        .build_cartesian_2d(x.coord(), y.coord())?;
    let (fx, fy) = (|v: &f64| x.label(*v), |v: &f64| y.label(*v));
    chart
        .configure_mesh()
        .x_desc(labels.x)
        .y_desc(labels.y)
        .x_label_formatter(&fx)
        .y_label_formatter(&fy)
        .bold_line_style(RGBColor(232, 232, 232))
        .draw()?;
    let mut extra = {
        let (px, py) = chart.plotting_area().get_pixel_range();
        marks::plot_area(px, py)
    };
    for (line, pts) in lines.iter().zip(placed) {
        let style = line.color.mix(line.opacity).stroke_width(line.width);
        chart.draw_series(LineSeries::new(pts.iter().map(|p| (p.1, p.2)), style))?;
    }
    // Markers after every line, so no line covers a point.
    for (line, pts) in lines.iter().zip(placed).filter(|(l, _)| l.hover) {
        let visible = pts.len() <= marks::MARKED_POINTS;
        let keep = marks::decimate(pts.len(), marks::HOVER_POINTS_PER_LINE);
        let m: Vec<marks::Mark> = keep
            .into_iter()
            .map(|k| {
                let (i, dx, dy) = pts[k];
                let (px, py) = chart.backend_coord(&(dx, dy));
                marks::Mark {
                    x: px,
                    y: py,
                    title: hover_text(line, i, labels.x),
                }
            })
            .collect();
        let r = if line.width >= 2 { 3 } else { 2 };
        extra.push_str(&marks::series(&line.name, line.color, r, visible, &m));
    }
    Ok(extra)
}

/// "eval/AP · optimizer step 20: 0.3", with the raw value when smoothed; numbers as the pages
/// print chart values.
fn hover_text(line: &Line, i: usize, x_label: &str) -> String {
    use crate::numbers::chart_value;
    let (x, y) = line.points[i];
    let x_name = if x_label.is_empty() { "x" } else { x_label };
    let mut t = format!(
        "{} · {x_name} {}: {}",
        line.name,
        chart_value(x),
        chart_value(y)
    );
    if let Some(raw) = &line.raw {
        t.push_str(&format!(" (smoothed; raw {})", chart_value(raw[i])));
    }
    t
}

#[cfg(test)]
mod tests;
