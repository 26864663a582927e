//! What plotters cannot write into its SVG: a marker per point with its value on hover (an SVG
//! `<title>`, which browsers show as a tooltip: no script), and the plotting area's rectangle,
//! so a reader (or a test) can tell where the data area is.

use plotters::style::RGBColor;

/// Most hover targets per line: each costs ~100 bytes, and a run page carries many charts.
pub const HOVER_POINTS_PER_LINE: usize = 120;

/// Lines with at most this many points show every point as a visible marker (evaluations every
/// N steps, a single point); longer ones get invisible hover targets on the line.
pub const MARKED_POINTS: usize = 30;

/// A point of a line in pixels, with its hover text.
pub struct Mark {
    pub x: i32,
    pub y: i32,
    pub title: String,
}

/// `<g class="series">` of one line's points: visible markers (radius `r`) or, with
/// `visible == false`, transparent hover targets.
pub fn series(name: &str, color: RGBColor, r: u32, visible: bool, marks: &[Mark]) -> String {
    let mut out = format!("<g class=\"series\" data-series=\"{}\">", escape(name));
    let fill = if visible {
        format!("fill=\"{}\"", css(color))
    } else {
        "fill=\"#fff\" fill-opacity=\"0\" pointer-events=\"all\"".to_string()
    };
    let class = if visible { "pt marker" } else { "pt" };
    for m in marks {
        out.push_str(&format!(
            "<circle class=\"{class}\" cx=\"{}\" cy=\"{}\" r=\"{r}\" {fill}><title>{}</title></circle>",
            m.x,
            m.y,
            escape(&m.title)
        ));
    }
    out.push_str("</g>");
    out
}

/// The plotting area (where data may be drawn), invisible.
pub fn plot_area(x: std::ops::Range<i32>, y: std::ops::Range<i32>) -> String {
    format!(
        "<rect class=\"plot-area\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"none\"/>",
        x.start,
        y.start,
        x.end - x.start,
        y.end - y.start
    )
}

/// Every `k`-th of `n` indices so that at most `max` remain, the last always kept.
pub fn decimate(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    let k = n.div_ceil(max.max(2) - 1);
    let mut idx: Vec<usize> = (0..n).step_by(k).collect();
    if idx.last() != Some(&(n - 1)) {
        idx.push(n - 1);
    }
    idx
}

/// `#1f77b4`.
pub fn css(c: RGBColor) -> String {
    let RGBColor(r, g, b) = c;
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// Text for SVG/XML content and attributes.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimation_keeps_ends_and_bounds_the_count() {
        assert_eq!(decimate(3, 10), [0, 1, 2]);
        let d = decimate(1000, 120);
        assert!(
            d.len() <= 120 && d[0] == 0 && *d.last().unwrap() == 999,
            "{}",
            d.len()
        );
    }

    #[test]
    fn marks_carry_escaped_titles() {
        let m = [Mark {
            x: 3,
            y: 4,
            title: "a<b · step 1: 2".into(),
        }];
        let s = series("x\"y", RGBColor(1, 2, 3), 3, true, &m);
        assert!(s.contains("<title>a&lt;b · step 1: 2</title>"), "{s}");
        assert!(s.contains("data-series=\"x&quot;y\"") && s.contains("fill=\"#010203\""));
    }
}
