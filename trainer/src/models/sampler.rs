//! torchvision's `BalancedPositiveNegativeSampler`: per image, draw up to
//! `batch_size_per_image · positive_fraction` positives and fill the rest with negatives.
//!
//! The random draw is a replaceable function so that tests can make it deterministic (and the
//! same as a patched torchvision reference); the default is `torch.randperm`, as in torchvision.

use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// `(candidates, n, device)` → `n` distinct indices in `0..candidates` (`Kind::Int64`).
pub type DrawFn = dyn Fn(i64, i64, Device) -> Tensor + Send + Sync;

#[derive(Clone)]
pub struct BalancedSampler {
    pub batch_size_per_image: i64,
    pub positive_fraction: f64,
    draw: Arc<DrawFn>,
}

impl std::fmt::Debug for BalancedSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancedSampler")
            .field("batch_size_per_image", &self.batch_size_per_image)
            .field("positive_fraction", &self.positive_fraction)
            .finish_non_exhaustive()
    }
}

/// torchvision's draw: the first `n` entries of a random permutation.
pub fn randperm_draw(candidates: i64, n: i64, device: Device) -> Tensor {
    Tensor::randperm(candidates, (Kind::Int64, device)).narrow(0, 0, n)
}

impl BalancedSampler {
    pub fn new(batch_size_per_image: i64, positive_fraction: f64) -> BalancedSampler {
        BalancedSampler {
            batch_size_per_image,
            positive_fraction,
            draw: Arc::new(randperm_draw),
        }
    }

    /// Replace the random draw (e.g. by a deterministic rule in parity tests).
    pub fn with_draw(mut self, draw: Arc<DrawFn>) -> BalancedSampler {
        self.draw = draw;
        self
    }

    /// `labels` `[N]` of one image (−1 ignored, 0 negative, ≥ 1 positive) → the sampled
    /// positive and negative indices, each in increasing order (torchvision builds masks, so the
    /// order of the draw does not survive).
    pub fn sample(&self, labels: &Tensor) -> (Tensor, Tensor) {
        let positive = labels.ge(1).nonzero().squeeze_dim(1);
        let negative = labels.eq(0).nonzero().squeeze_dim(1);
        // int() in Python truncates, as `as` does here
        let wanted_pos = (self.batch_size_per_image as f64 * self.positive_fraction) as i64;
        let num_pos = positive.size()[0].min(wanted_pos);
        let num_neg = negative.size()[0].min(self.batch_size_per_image - num_pos);
        let pick = |candidates: &Tensor, n: i64| {
            let drawn = (self.draw)(candidates.size()[0], n, candidates.device());
            let (sorted, _) = candidates.index_select(0, &drawn).sort(0, false);
            sorted
        };
        (pick(&positive, num_pos), pick(&negative, num_neg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respects_the_positive_fraction_and_fills_with_negatives() {
        // 10 positives, 20 negatives, 5 ignored
        let mut v = vec![1i64; 10];
        v.extend(vec![0; 20]);
        v.extend(vec![-1; 5]);
        let labels = Tensor::from_slice(&v);
        let s = BalancedSampler::new(16, 0.25);
        let (pos, neg) = s.sample(&labels);
        assert_eq!(pos.size(), vec![4]);
        assert_eq!(neg.size(), vec![12]);
        assert_eq!(pos.lt(10).all().int64_value(&[]), 1);
        let n: Vec<i64> = Vec::try_from(&neg).unwrap();
        assert!(n.iter().all(|&i| (10..30).contains(&i)));
        assert!(n.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
    }

    #[test]
    fn few_positives_leave_room_for_negatives_and_the_draw_is_injectable() {
        let labels = Tensor::from_slice(&[0i64, 2, 0, 0, -1, 0]);
        let first =
            BalancedSampler::new(4, 0.5).with_draw(Arc::new(|_: i64, n: i64, d: Device| {
                Tensor::arange(n, (Kind::Int64, d))
            }));
        let (pos, neg) = first.sample(&labels);
        assert_eq!(Vec::<i64>::try_from(&pos).unwrap(), vec![1]);
        assert_eq!(Vec::<i64>::try_from(&neg).unwrap(), vec![0, 2, 3]);
    }
}
