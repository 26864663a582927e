//! A chart's legend, drawn in a strip below the plot so it never covers data (plotters' own
//! legend box sits inside the plotting area).

use super::marks::{css, escape};
use plotters::style::RGBColor;

/// Height of one legend row, pixels.
const ROW: i32 = 18;
/// Rough width of one character of the 12 px legend font (no text metrics in an SVG string).
const CHAR_W: f64 = 6.6;

/// The legend's entries placed in rows; `height` is what the strip needs, a note included.
pub struct Legend {
    pub height: i32,
    items: Vec<(i32, i32, String, RGBColor)>,
    note: Option<(i32, String)>,
}

impl Legend {
    /// `entries` laid out in as many equal columns as fit `width`, then the note (if any) on a
    /// line of its own.
    pub fn layout(entries: &[(String, RGBColor)], note: Option<&str>, width: i32) -> Legend {
        let longest = entries
            .iter()
            .map(|e| e.0.chars().count())
            .max()
            .unwrap_or(0);
        let col = (longest as f64 * CHAR_W) as i32 + 34;
        let cols = ((width - 16) / col.max(1)).clamp(1, entries.len().max(1) as i32);
        let mut items = Vec::new();
        for (i, (name, color)) in entries.iter().enumerate() {
            let (r, c) = (i as i32 / cols, i as i32 % cols);
            items.push((12 + c * col, 4 + r * ROW, name.clone(), *color));
        }
        let rows = if entries.is_empty() {
            0
        } else {
            (entries.len() as i32 + cols - 1) / cols
        };
        let note = note.map(|n| (4 + rows * ROW, n.to_string()));
        let lines = rows + i32::from(note.is_some());
        Legend {
            height: if lines == 0 { 0 } else { lines * ROW + 6 },
            items,
            note,
        }
    }

    /// The strip as SVG, its top at `top`.
    pub fn svg(&self, top: i32) -> String {
        let mut out = String::new();
        if !self.items.is_empty() {
            out.push_str("<g class=\"legend\">");
            for (x, y, name, color) in &self.items {
                let y = top + y + ROW / 2;
                out.push_str(&format!(
                    "<line x1=\"{x}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{}\" stroke-width=\"3\"/>\
                     <text x=\"{}\" y=\"{}\" font-family=\"sans-serif\" font-size=\"12\">{}</text>",
                    x + 18,
                    css(*color),
                    x + 24,
                    y + 4,
                    escape(name)
                ));
            }
            out.push_str("</g>");
        }
        if let Some((y, note)) = &self.note {
            out.push_str(&format!(
                "<text class=\"chart-note\" x=\"12\" y=\"{}\" font-family=\"sans-serif\" font-size=\"12\" fill=\"#a33\">{}</text>",
                top + y + ROW / 2 + 4,
                escape(note)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fill_columns_then_rows() {
        let e = |n: &str| (n.to_string(), RGBColor(0, 0, 0));
        let l = Legend::layout(&[e("a"), e("b"), e("c")], None, 560);
        assert_eq!(l.height, ROW + 6, "three short names share a row");
        let long = "pretrain/contrastive_chance";
        let l = Legend::layout(&[e(long), e(long), e(long), e(long)], Some("why"), 560);
        assert_eq!(l.height, 3 * ROW + 6, "two per row, and the note");
        assert!(l.svg(0).contains("chart-note"));
        assert_eq!(Legend::layout(&[], None, 560).height, 0);
        assert!(
            Legend::layout(&[e("<b>")], None, 560)
                .svg(0)
                .contains("&lt;b&gt;")
        );
    }
}
