//! torchvision's `Matcher`: assign each prediction (anchor or proposal) the ground-truth box it
//! overlaps most, or mark it below the low threshold (−1) or between the thresholds (−2).

use tch::{Kind, Tensor};

pub const BELOW_LOW_THRESHOLD: i64 = -1;
pub const BETWEEN_THRESHOLDS: i64 = -2;

#[derive(Debug, Clone, Copy)]
pub struct Matcher {
    pub high_threshold: f64,
    pub low_threshold: f64,
    /// Also keep, for every ground-truth box, the predictions that overlap it best even when
    /// below the thresholds (so that no box goes unlearned).
    pub allow_low_quality_matches: bool,
}

impl Matcher {
    /// `quality` `[M gt, N predictions]` (IoU) → `[N]` matched gt index, −1 or −2.
    /// `quality` must not be empty (callers handle images without boxes).
    pub fn assign(&self, quality: &Tensor) -> Tensor {
        let (vals, matches) = quality.max_dim(0, false);
        let all_matches = matches.copy();
        let below = vals.lt(self.low_threshold);
        let between = vals
            .ge(self.low_threshold)
            .logical_and(&vals.lt(self.high_threshold));
        let mut matches = matches
            .masked_fill(&below, BELOW_LOW_THRESHOLD)
            .masked_fill(&between, BETWEEN_THRESHOLDS);
        if !self.allow_low_quality_matches {
            return matches;
        }
        // predictions that tie for the best overlap of some gt box get their original match back
        let (best_per_gt, _) = quality.max_dim(1, false);
        let is_best = quality.eq_tensor(&best_per_gt.unsqueeze(1));
        let pred_idx = is_best.nonzero().select(1, 1);
        matches.index_put_(
            &[Some(&pred_idx)],
            &all_matches.index_select(0, &pred_idx),
            false,
        )
    }
}

/// Matched indices clamped to valid rows (for gathering targets), as `Kind::Int64`.
pub fn clamp_matches(matches: &Tensor) -> Tensor {
    matches.clamp_min(0).to_kind(Kind::Int64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_low_quality_matches() {
        // 2 gt × 4 predictions
        let q = Tensor::from_slice(&[0.9f32, 0.45, 0.2, 0.1, 0.1, 0.3, 0.35, 0.05]).view([2, 4]);
        let m = Matcher {
            high_threshold: 0.5,
            low_threshold: 0.4,
            allow_low_quality_matches: false,
        };
        let got: Vec<i64> = Vec::try_from(m.assign(&q)).unwrap();
        assert_eq!(got, vec![0, -2, -1, -1]);
        let m = Matcher {
            allow_low_quality_matches: true,
            ..m
        };
        let got: Vec<i64> = Vec::try_from(m.assign(&q)).unwrap();
        // gt 1's best prediction (index 2, IoU 0.35) is kept
        assert_eq!(got, vec![0, -2, 1, -1]);
    }
}
