//! Parallel, ordered, deterministic batch loading.
//!
//! Batch `s` is a pure function of (seed, s): which images (an epoch-wise seeded permutation),
//! their flips and colour factors, and the batch's training scale. Threads build batches ahead of
//! the trainer and the consumer reorders them, so a resumed run sees exactly the batches it would
//! have seen, whatever the thread timing.

use super::augment::{AugmentDraw, augment, decode_image};
use super::detection::DetectionSplit;
use crate::models::detector::Targets;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;
use tch::Tensor;

#[derive(Debug, Clone)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub seed: u64,
    pub hflip: bool,
    pub color_jitter: f64,
    /// One is drawn per batch (multi-scale training).
    pub min_sizes: Vec<u32>,
    pub threads: usize,
    /// Batches built ahead of the one the trainer waits for.
    pub prefetch: usize,
    /// Decode each image's instance masks into its targets (mask detectors).
    pub masks: bool,
}

pub struct Batch {
    pub step: u64,
    pub image_ids: Vec<i64>,
    /// `[3, H, W]` 0..1 at original size, augmented.
    pub images: Vec<Tensor>,
    /// Boxes in the pixels of `images`.
    pub targets: Vec<Targets>,
    /// Shorter-side size to resize this batch to.
    pub min_size: u32,
}

/// SplitMix64: decorrelates nearby (seed, step, index) triples.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A generator for (seed, a, b), e.g. (run seed, step, image index in the batch).
pub fn rng_for(seed: u64, a: u64, b: u64) -> StdRng {
    StdRng::seed_from_u64(mix(seed ^ mix(a ^ mix(b))))
}

/// Sample indices of batch `step`: consecutive slices of per-epoch seeded permutations.
pub fn batch_indices(num_samples: usize, batch_size: usize, seed: u64, step: u64) -> Vec<usize> {
    let mut cached: Option<(u64, Vec<usize>)> = None;
    (0..batch_size)
        .map(|j| {
            let pos = step * batch_size as u64 + j as u64;
            let epoch = pos / num_samples as u64;
            if cached.as_ref().is_none_or(|c| c.0 != epoch) {
                let mut perm: Vec<usize> = (0..num_samples).collect();
                perm.shuffle(&mut rng_for(seed, epoch, u64::MAX));
                cached = Some((epoch, perm));
            }
            let perm = &cached.as_ref().map(|c| &c.1).expect("just filled");
            perm[(pos % num_samples as u64) as usize]
        })
        .collect()
}

/// This rank's share of a global batch: `(position in the global batch, sample index)` of its
/// consecutive slice. Random draws are keyed by the global position, so N ranks with batch B
/// each see exactly the images and augmentations of one process with batch N × B.
pub fn rank_share(global: &[usize]) -> Vec<(usize, usize)> {
    let (rank, world) = (crate::dist::rank(), crate::dist::world_size());
    let per_rank = global.len() / world;
    global
        .iter()
        .copied()
        .enumerate()
        .skip(rank * per_rank)
        .take(per_rank)
        .collect()
}

fn build_batch(split: &DetectionSplit, cfg: &LoaderConfig, step: u64) -> anyhow::Result<Batch> {
    let idx = batch_indices(split.samples.len(), cfg.batch_size, cfg.seed, step);
    let mut scale_rng = rng_for(cfg.seed, step, u64::MAX - 1);
    let min_size = cfg.min_sizes[scale_rng.random_range(0..cfg.min_sizes.len())];
    let (mut images, mut targets, mut ids) = (vec![], vec![], vec![]);
    for (j, i) in rank_share(&idx) {
        let sample = &split.samples[i];
        let mut rng = rng_for(cfg.seed, step, j as u64);
        let draw = AugmentDraw::sample(&mut rng, cfg.hflip, cfg.color_jitter);
        let image = decode_image(&sample.path)?;
        let masks = if cfg.masks {
            let m = super::masks::sample_masks(sample)?;
            let (h, w) = (image.size()[1], image.size()[2]);
            anyhow::ensure!(
                (m.size()[1], m.size()[2]) == (h, w),
                "image {}: the dataset gives its size as {}x{} but the file is {w}x{h}",
                sample.image_id,
                sample.width,
                sample.height
            );
            Some(m)
        } else {
            None
        };
        let (img, t) = augment(image, sample, masks, &draw);
        images.push(img);
        targets.push(t);
        ids.push(sample.image_id);
    }
    Ok(Batch {
        step,
        image_ids: ids,
        images,
        targets,
        min_size,
    })
}

/// Builds batch `step`; must be a pure function of the step (and what it captured).
pub type BuildFn<B> = Arc<dyn Fn(u64) -> anyhow::Result<B> + Send + Sync>;

/// Threads that build batches ahead of the trainer, delivered in step order. `B` is what one
/// step consumes: a detection [`Batch`], or the two views of pre-training.
pub struct Loader<B: Send + 'static = Batch> {
    rx: Receiver<(u64, anyhow::Result<B>)>,
    pending: BTreeMap<u64, anyhow::Result<B>>,
    next: u64,
    consumer_at: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Loader<Batch> {
    /// Start `cfg.threads` threads building detection batches from `first_step` on.
    pub fn start(
        split: Arc<DetectionSplit>,
        cfg: LoaderConfig,
        first_step: u64,
    ) -> anyhow::Result<Loader> {
        anyhow::ensure!(
            !split.samples.is_empty(),
            "the training split has no images"
        );
        anyhow::ensure!(!cfg.min_sizes.is_empty(), "no training sizes given");
        let (threads, prefetch) = (cfg.threads, cfg.prefetch);
        let build: BuildFn<Batch> = Arc::new(move |step| build_batch(&split, &cfg, step));
        Ok(Loader::with_builder(threads, prefetch, first_step, build))
    }
}

impl<B: Send + 'static> Loader<B> {
    /// Start `threads` threads running `build` for steps `first_step`, `first_step + 1`, …,
    /// at most `prefetch` steps ahead of the consumer.
    pub fn with_builder(
        threads: usize,
        prefetch: usize,
        first_step: u64,
        build: BuildFn<B>,
    ) -> Loader<B> {
        let (tx, rx) = sync_channel(prefetch.max(1) + threads);
        let counter = Arc::new(AtomicU64::new(first_step));
        let consumer_at = Arc::new(AtomicU64::new(first_step));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads.max(1))
            .map(|_| {
                let (build, tx): (_, SyncSender<_>) = (build.clone(), tx.clone());
                let (counter, consumer_at, stop) =
                    (counter.clone(), consumer_at.clone(), stop.clone());
                std::thread::spawn(move || {
                    // one intra-op thread per loader thread: the trainer owns the cores
                    tch::set_num_threads(1);
                    loop {
                        let step = counter.fetch_add(1, Ordering::SeqCst);
                        // do not run further ahead than the prefetch window
                        while step > consumer_at.load(Ordering::SeqCst) + prefetch as u64 {
                            if stop.load(Ordering::SeqCst) {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let batch = build(step);
                        if tx.send((step, batch)).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Loader {
            rx,
            pending: BTreeMap::new(),
            next: first_step,
            consumer_at,
            stop,
            threads,
        }
    }

    /// The next batch in step order (blocks until it is built).
    pub fn next_batch(&mut self) -> anyhow::Result<B> {
        let want = self.next;
        let batch = loop {
            if let Some(b) = self.pending.remove(&want) {
                break b;
            }
            let (step, b) = self
                .rx
                .recv()
                .map_err(|_| anyhow::anyhow!("the data-loading threads stopped"))?;
            self.pending.insert(step, b);
        };
        self.next += 1;
        self.consumer_at.store(self.next, Ordering::SeqCst);
        batch
    }
}

impl<B: Send + 'static> Drop for Loader<B> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // unblock senders waiting on a full channel
        while self.rx.try_recv().is_ok() {}
        for t in self.threads.drain(..) {
            while !t.is_finished() {
                while self.rx.try_recv().is_ok() {}
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_image_once_per_epoch_and_reproducible() {
        let n = 10;
        let mut seen: Vec<usize> = (0..5).flat_map(|s| batch_indices(n, 2, 7, s)).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(batch_indices(n, 3, 7, 4), batch_indices(n, 3, 7, 4));
        assert_ne!(batch_indices(n, 10, 7, 0), batch_indices(n, 10, 8, 0));
    }
}
