//! Box labels placed so that no two overlap: each label tries a few spots around its box (above,
//! inside the top, below, inside the bottom, then the same on the right), takes the first that
//! stays in the image and clears every label placed before it, and is left to the box's hover
//! text (`<title>`) when none does. Labels are placed in the order given (most important first).
//!
//! Sizes are in image pixels; text is drawn in a monospace font, so a label's width is its
//! character count times [`CHAR_WIDTH`] of the font size.

/// Width of one monospace character as a fraction of the font size (DejaVu Sans Mono: 0.602),
/// rounded up.
pub const CHAR_WIDTH: f64 = 0.62;
/// Height of a label's line as a fraction of the font size.
pub const LINE_HEIGHT: f64 = 1.25;

/// A rectangle `(x, y, w, h)` in image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    fn intersects(&self, o: &Rect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
}

/// Where a label goes: its background rectangle and the text's baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub rect: Rect,
    pub text_x: f64,
    pub baseline: f64,
}

/// The label size of `chars` characters at `font` (image pixels).
pub fn label_size(chars: usize, font: f64) -> (f64, f64) {
    (
        chars as f64 * CHAR_WIDTH * font + 0.4 * font,
        LINE_HEIGHT * font,
    )
}

/// Places one label per `(box, characters)` inside an image of `size`; `None` where no spot
/// is free.
pub fn place(items: &[(Rect, usize)], font: f64, size: (f64, f64)) -> Vec<Option<Placed>> {
    let mut taken: Vec<Rect> = Vec::new();
    items
        .iter()
        .map(|(b, chars)| {
            let (w, h) = label_size(*chars, font);
            let spot = candidates(b, w, h, size)
                .into_iter()
                .find(|r| !taken.iter().any(|t| t.intersects(r)))?;
            taken.push(spot);
            Some(Placed {
                rect: spot,
                text_x: spot.x + 0.2 * font,
                // The baseline sits a descender's height above the rectangle's bottom.
                baseline: spot.y + spot.h - 0.3 * font,
            })
        })
        .collect()
}

/// The spots tried for a label of `w`×`h` on box `b`, those inside the image only.
fn candidates(b: &Rect, w: f64, h: f64, size: (f64, f64)) -> Vec<Rect> {
    let left = b.x.clamp(0.0, (size.0 - w).max(0.0));
    let right = (b.x + b.w - w).clamp(0.0, (size.0 - w).max(0.0));
    let ys = [b.y - h, b.y, b.y + b.h, b.y + b.h - h];
    let mut out = Vec::new();
    for x in [left, right] {
        for y in ys {
            let r = Rect { x, y, w, h };
            if r.y >= 0.0 && r.y + r.h <= size.1 && r.x + r.w <= size.0 + 1e-9 && !out.contains(&r)
            {
                out.push(r);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(x: f64, y: f64, w: f64, h: f64) -> Rect {
        Rect { x, y, w, h }
    }

    #[test]
    fn a_lone_label_sits_above_its_box() {
        let p = place(&[(rect(50.0, 50.0, 40.0, 40.0), 8)], 10.0, (200.0, 200.0));
        let r = p[0].unwrap().rect;
        assert_eq!((r.x, r.y + r.h), (50.0, 50.0));
    }

    #[test]
    fn labels_of_stacked_boxes_never_overlap_and_the_rest_hover() {
        // Twenty boxes on the same spot: a handful of spots exist, the rest get none.
        let items: Vec<(Rect, usize)> = (0..20)
            .map(|i| (rect(60.0 + i as f64 * 0.5, 60.0, 40.0, 40.0), 12))
            .collect();
        let placed = place(&items, 8.0, (200.0, 200.0));
        let shown: Vec<Rect> = placed.iter().flatten().map(|p| p.rect).collect();
        assert!(shown.len() >= 3 && shown.len() < 20, "{}", shown.len());
        for (i, a) in shown.iter().enumerate() {
            assert!(a.x >= 0.0 && a.y >= 0.0 && a.x + a.w <= 200.0 && a.y + a.h <= 200.0);
            for b in &shown[i + 1..] {
                assert!(!a.intersects(b), "{a:?} overlaps {b:?}");
            }
        }
        assert!(
            placed[0].is_some(),
            "the first (most important) label is placed"
        );
    }

    #[test]
    fn labels_at_the_image_edge_stay_inside() {
        let p = place(&[(rect(190.0, 0.0, 10.0, 10.0), 10)], 10.0, (200.0, 200.0));
        let r = p[0].unwrap().rect;
        assert!(r.x + r.w <= 200.0 && r.y >= 0.0, "{r:?}");
        // A label wider than the image fits nowhere.
        assert_eq!(
            place(&[(rect(0.0, 0.0, 5.0, 5.0), 100)], 10.0, (50.0, 50.0))[0],
            None
        );
    }
}
