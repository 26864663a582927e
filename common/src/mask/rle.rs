//! Run-length encoded binary masks with the semantics of pycocotools' `maskApi.c`
//! (pycocotools 2.0.11), so that areas, boxes and IoUs agree bit for bit.
//!
//! A mask is read in column-major (Fortran) order; `counts` alternates runs of 0s and 1s and
//! always starts with a (possibly empty) run of 0s. Arithmetic is `u32` and wraps where the C
//! code's `uint` would, so even odd inputs give pycocotools' numbers.

use std::fmt;

/// A run-length encoded `height x width` mask.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rle {
    pub height: u32,
    pub width: u32,
    pub counts: Vec<u32>,
}

/// Why a compressed RLE string or a list of counts is not a valid mask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RleError(pub String);

impl fmt::Display for RleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Rle {
    /// Checks that the runs cover exactly `height * width` pixels, which every RLE that
    /// pycocotools itself produces does; the other functions may assume it.
    pub fn new(height: u32, width: u32, counts: Vec<u32>) -> Result<Rle, RleError> {
        let pixels = u64::from(height) * u64::from(width);
        if pixels > u64::from(u32::MAX) {
            return Err(RleError(format!(
                "size {height}x{width} has more than 2^32 - 1 pixels"
            )));
        }
        let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        if total != pixels {
            return Err(RleError(format!(
                "counts sum to {total} but a {height}x{width} mask has {pixels} pixels"
            )));
        }
        Ok(Rle {
            height,
            width,
            counts,
        })
    }

    /// `rleEncode`: `mask` is column-major, `mask[x * height + y]`.
    pub fn encode(mask: &[bool], height: u32, width: u32) -> Rle {
        debug_assert_eq!(mask.len(), height as usize * width as usize);
        let mut counts = Vec::new();
        let mut previous = false;
        let mut run = 0u32;
        for &pixel in mask {
            if pixel != previous {
                counts.push(run);
                run = 0;
                previous = pixel;
            }
            run += 1;
        }
        counts.push(run);
        Rle {
            height,
            width,
            counts,
        }
    }

    /// `rleDecode`: the column-major mask.
    pub fn decode(&self) -> Vec<bool> {
        let mut mask = Vec::with_capacity(self.height as usize * self.width as usize);
        let mut value = false;
        for &run in &self.counts {
            mask.extend(std::iter::repeat_n(value, run as usize));
            value = !value;
        }
        mask
    }

    /// `rleArea`: the number of foreground pixels.
    pub fn area(&self) -> u32 {
        self.counts
            .iter()
            .skip(1)
            .step_by(2)
            .fold(0u32, |a, &c| a.wrapping_add(c))
    }

    /// `rleToBbox` (pycocotools 2.0.11's version): `[x, y, width, height]` of the foreground;
    /// all zeros when there are fewer than two runs. A foreground run that wraps over a column
    /// makes the box span the full height.
    pub fn to_bbox(&self) -> [f64; 4] {
        let (h, w) = (self.height, self.width);
        let m = self.counts.len() / 2 * 2;
        if m == 0 {
            return [0.0; 4];
        }
        let (mut xs, mut ys, mut xe, mut ye) = (w, h, 0u32, 0u32);
        let mut cc = 0u32;
        for (j, &run) in self.counts[..m].iter().enumerate() {
            let start = cc;
            cc = cc.wrapping_add(run);
            if j % 2 == 0 || run == 0 {
                continue;
            }
            // h > 0 here: a non-empty run implies pixels, and `new` checked the total.
            let (y_start, x_start) = (start % h, start / h);
            let last = cc.wrapping_sub(1);
            let (y_end, x_end) = (last % h, last / h);
            xs = xs.min(x_start);
            xe = xe.max(x_end);
            if x_start < x_end {
                ys = 0;
                ye = h.wrapping_sub(1);
            } else {
                ys = ys.min(y_start);
                ye = ye.max(y_end);
            }
        }
        [
            f64::from(xs),
            f64::from(ys),
            f64::from(xe.wrapping_sub(xs).wrapping_add(1)),
            f64::from(ye.wrapping_sub(ys).wrapping_add(1)),
        ]
    }

    /// `rleMerge`: union (or intersection) of masks of one size. Like pycocotools, masks of
    /// different sizes give an empty 0x0 mask, and no masks give one too.
    pub fn merge(rles: &[Rle], intersect: bool) -> Rle {
        let Some(first) = rles.first() else {
            return Rle::default();
        };
        let (h, w) = (first.height, first.width);
        let mut acc = first.counts.clone();
        for b in &rles[1..] {
            if b.height != h || b.width != w {
                return Rle::default();
            }
            acc = merge_two(&acc, &b.counts, intersect);
        }
        Rle {
            height: h,
            width: w,
            counts: acc,
        }
    }

    /// `rleToString`: the compressed form (LEB128-like, 5 data bits per character in
    /// ASCII 48..111, counts after the second stored as the difference to two before).
    pub fn to_compressed(&self) -> String {
        let mut s = String::with_capacity(self.counts.len() * 2);
        for (i, &count) in self.counts.iter().enumerate() {
            let mut x = i64::from(count);
            if i > 2 {
                x -= i64::from(self.counts[i - 2]);
            }
            loop {
                let mut c = (x & 0x1f) as u8;
                x >>= 5;
                let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                s.push(char::from(c + 48));
                if !more {
                    break;
                }
            }
        }
        s
    }

    /// `rleFrString`, rejecting strings that pycocotools would read out of bounds or into
    /// negative or overflowing counts.
    pub fn from_compressed(s: &str, height: u32, width: u32) -> Result<Rle, RleError> {
        let bytes = s.as_bytes();
        let mut counts: Vec<u32> = Vec::with_capacity(bytes.len());
        let mut p = 0;
        while p < bytes.len() {
            let mut x: i64 = 0;
            let mut k = 0u32;
            loop {
                let Some(&byte) = bytes.get(p) else {
                    return Err(RleError(
                        "compressed counts end in the middle of a number".into(),
                    ));
                };
                if !(48..48 + 64).contains(&byte) {
                    return Err(RleError(format!(
                        "compressed counts contain {:?} at byte {p}, outside '0'..='o'",
                        char::from(byte)
                    )));
                }
                if k >= 7 {
                    return Err(RleError(format!(
                        "compressed counts hold a number too large at byte {p}"
                    )));
                }
                let c = i64::from(byte - 48);
                x |= (c & 0x1f) << (5 * k);
                p += 1;
                k += 1;
                if c & 0x20 == 0 {
                    if c & 0x10 != 0 {
                        x |= -1i64 << (5 * k);
                    }
                    break;
                }
            }
            let m = counts.len();
            if m > 2 {
                x += i64::from(counts[m - 2]);
            }
            let count = u32::try_from(x).map_err(|_| {
                RleError(format!(
                    "compressed counts decode to {x} for run {m}, outside 0..2^32"
                ))
            })?;
            counts.push(count);
        }
        Rle::new(height, width, counts)
    }

    /// `rleIou` for one pair, given both masks' [`Rle::to_bbox`] boxes: pycocotools first
    /// takes the box IoU and only counts pixels where it is positive. For a crowd ground
    /// truth the union is the detection's area. Masks of different sizes give -1.
    pub fn iou(dt: &Rle, gt: &Rle, dt_box: &[f64; 4], gt_box: &[f64; 4], crowd: bool) -> f64 {
        if super::box_iou(dt_box, gt_box, crowd) <= 0.0 {
            return 0.0;
        }
        if dt.height != gt.height || dt.width != gt.width {
            return -1.0;
        }
        let (intersection, union) = overlap(&dt.counts, &gt.counts);
        let union = if intersection == 0 {
            1
        } else if crowd {
            dt.area()
        } else {
            union
        };
        f64::from(intersection) / f64::from(union)
    }
}

/// The pieces two same-size masks cut each other's runs into, in order: each piece's length and
/// whether it lies inside `a` and inside `b`. The walk shared by maskApi's `rleIou` and
/// `rleMerge`, step for step (a first piece of length 0 where both masks are empty, and the end
/// where both are exhausted), so both stay bit-exact with it.
struct Pieces<'a> {
    a: &'a [u32],
    b: &'a [u32],
    /// What is left of the current run of each, and the index of the next run.
    left: (u32, u32),
    next: (usize, usize),
    inside: (bool, bool),
    done: bool,
}

impl<'a> Pieces<'a> {
    fn new(a: &'a [u32], b: &'a [u32]) -> Self {
        let first = |counts: &[u32]| counts.first().copied().unwrap_or(0);
        Pieces {
            a,
            b,
            left: (first(a), first(b)),
            next: (1, 1),
            inside: (false, false),
            done: false,
        }
    }
}

impl Iterator for Pieces<'_> {
    type Item = (u32, bool, bool);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let c = self.left.0.min(self.left.1);
        let piece = (c, self.inside.0, self.inside.1);
        self.left.0 -= c;
        if self.left.0 == 0 && self.next.0 < self.a.len() {
            self.left.0 = self.a[self.next.0];
            self.next.0 += 1;
            self.inside.0 = !self.inside.0;
        }
        self.left.1 -= c;
        if self.left.1 == 0 && self.next.1 < self.b.len() {
            self.left.1 = self.b[self.next.1];
            self.next.1 += 1;
            self.inside.1 = !self.inside.1;
        }
        // maskApi's `ct == 0`: both masks are exhausted.
        self.done = u64::from(self.left.0) + u64::from(self.left.1) == 0;
        Some(piece)
    }
}

/// Intersection and union pixel counts of two same-size masks (`rleIou`).
fn overlap(a: &[u32], b: &[u32]) -> (u32, u32) {
    let (mut intersection, mut union) = (0u32, 0u32);
    for (c, in_a, in_b) in Pieces::new(a, b) {
        if in_a || in_b {
            union = union.wrapping_add(c);
        }
        if in_a && in_b {
            intersection = intersection.wrapping_add(c);
        }
    }
    (intersection, union)
}

/// One step of `rleMerge`: the runs of `a op b` (consecutive pieces on the same side of the
/// result join; the first run is outside, as every RLE's).
fn merge_two(a: &[u32], b: &[u32], intersect: bool) -> Vec<u32> {
    let inside = |(_, in_a, in_b): (u32, bool, bool)| {
        if intersect {
            in_a && in_b
        } else {
            in_a || in_b
        }
    };
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut pieces = Pieces::new(a, b).peekable();
    let (mut run, mut state) = (0u32, false);
    while let Some((c, _, _)) = pieces.next() {
        run = run.wrapping_add(c);
        match pieces.peek() {
            Some(&next) if inside(next) == state => {}
            Some(&next) => {
                out.push(run);
                run = 0;
                state = inside(next);
            }
            None => out.push(run),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Column-major digits -> mask.
    fn mask(digits: &str) -> Vec<bool> {
        digits.bytes().map(|b| b == b'1').collect()
    }

    /// The 4x5 mask used below: rows 1-2 x columns 1-3, plus pixel (row 0, column 4).
    fn small() -> Rle {
        Rle::encode(&mask("00000110011001101000"), 4, 5)
    }

    // Expected values from pycocotools 2.0.11 (`mask.encode`, `area`, `toBbox`, `iou`,
    // `merge`, `frPyObjects`) in a one-off run.

    #[test]
    fn small_mask_matches_pycocotools() {
        let rle = small();
        assert_eq!(rle.to_compressed(), "522000OO2");
        assert_eq!(rle.area(), 7);
        assert_eq!(rle.to_bbox(), [1.0, 0.0, 4.0, 3.0]);
    }

    #[test]
    fn encode_decode_and_string_round_trip() {
        let digits = "00000110011001101000";
        let rle = small();
        assert_eq!(rle.decode(), mask(digits));
        assert_eq!(Rle::from_compressed(&rle.to_compressed(), 4, 5), Ok(rle));
        // Large counts and the delta coding past the second count.
        let big = Rle::new(300, 400, vec![0, 5, 100_000, 19_995]).unwrap();
        assert_eq!(big.to_compressed(), "05PeQ3f`c0");
        assert_eq!(Rle::from_compressed("05PeQ3f`c0", 300, 400), Ok(big));
        // An all-zero mask starting with a 1 and an empty one.
        let ones = Rle::encode(&[true, true, true], 3, 1);
        assert_eq!(ones.counts, vec![0, 3]);
        assert_eq!(Rle::encode(&[], 0, 0).counts, vec![0]);
    }

    #[test]
    fn to_bbox_follows_pycocotools_on_odd_runs() {
        // A foreground run wrapping from column 0 into column 1 spans the full height.
        let wrap = Rle::new(4, 5, vec![3, 2, 15]).unwrap();
        assert_eq!(wrap.to_compressed(), "32?");
        assert_eq!(wrap.to_bbox(), [0.0, 0.0, 2.0, 4.0]);
        // A trailing zero-length foreground run: pycocotools' uint arithmetic wraps.
        let empty = Rle::new(4, 5, vec![20, 0]).unwrap();
        assert_eq!(empty.to_bbox(), [5.0, 4.0, 4294967292.0, 4294967293.0]);
        assert_eq!(Rle::new(4, 5, vec![20]).unwrap().to_bbox(), [0.0; 4]);
    }

    #[test]
    fn iou_with_and_without_crowd() {
        let dt = small();
        let gt = Rle::encode(&mask("00000000111111111111"), 4, 5);
        let (db, gb) = (dt.to_bbox(), gt.to_bbox());
        // Intersection 5, union 7 + 12 - 5 = 14; crowd: union is the detection's 7.
        assert_eq!(Rle::iou(&dt, &gt, &db, &gb, false), 5.0 / 14.0);
        assert_eq!(Rle::iou(&dt, &gt, &db, &gb, true), 5.0 / 7.0);
        assert_eq!(Rle::iou(&dt, &dt, &db, &db, false), 1.0);
        let other_size = Rle::new(5, 4, dt.counts.clone()).unwrap();
        assert_eq!(Rle::iou(&dt, &other_size, &db, &db, false), -1.0);
    }

    #[test]
    fn merge_union_and_intersection() {
        let a = small();
        let b = Rle::encode(&mask("00000000111111111111"), 4, 5);
        let both = [a.clone(), b.clone()];
        assert_eq!(Rle::merge(&both, true).to_compressed(), "9220OO2");
        assert_eq!(Rle::merge(&both, false).to_compressed(), "521:");
        assert_eq!(Rle::merge(std::slice::from_ref(&a), false), a);
        assert_eq!(Rle::merge(&[], false), Rle::default());
        let other = Rle::new(5, 4, vec![20]).unwrap();
        assert_eq!(Rle::merge(&[a, other], false), Rle::default());
    }

    #[test]
    fn malformed_counts_are_errors() {
        assert!(
            Rle::new(4, 5, vec![3, 4])
                .unwrap_err()
                .0
                .contains("20 pixels")
        );
        let bad = |s: &str| Rle::from_compressed(s, 4, 5).unwrap_err().0;
        assert!(bad("52 ").contains("outside"), "{}", bad("52 "));
        assert!(bad("5P").contains("middle of a number"));
        assert!(bad("ooooooo0").contains("too large"));
        // "1" then "O" (-1 after the first two counts would be fine, but here it is the
        // second count itself): negative.
        assert!(bad("1O").contains("outside 0..2^32"));
    }
}
