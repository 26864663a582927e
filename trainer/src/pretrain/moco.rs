//! MoCo v2 (He et al. 2020, Chen et al. 2020): image-domain self-supervised pre-training of a
//! backbone body.
//!
//! - Query encoder: the body (named `backbone.body.*`, as every detector names it, so that its
//!   weights load into a fine-tuning run as they are), global average pooling of C5, and the
//!   2-layer MLP projector `projector.fc1` (C5 → hidden), ReLU, `projector.fc2` (hidden →
//!   embedding), L2-normalised.
//! - Key encoder: the same network in its own `VarStore` with the same names, never trained by
//!   gradients: after each step its parameters move to `m·θ_k + (1 − m)·θ_q` with the constant
//!   `key_momentum` m. Its batch-norm statistics are not averaged: it runs in training mode, so
//!   its BN layers normalise with the key batch's own statistics and update their running
//!   buffers from its own forward passes, as in MoCo.
//! - Shuffle-BN (with several data-parallel ranks, [`KeyShuffle`]): each rank computes its
//!   keys' batch-norm statistics over its own sub-batch, so a query and its positive key would
//!   share a sub-batch, and the statistics could tell the model which key is the positive. As
//!   MoCo, the ranks gather the global key batch, each encodes its slice of one permutation of it,
//!   and the keys are gathered back and put in the original order. The permutation is a pure
//!   function of (seed, step), so every rank and a resumed attempt draw the same one. On one
//!   process the whole key batch shares one BN computation and there is nothing to shuffle.
//! - Queue: a FIFO ring of `queue_size` L2-normalised keys, the negatives; the keys of each step
//!   (the whole global batch's, so every rank's queue stays the same) are enqueued after the
//!   step, overwriting the oldest.
//! - Loss: InfoNCE, logits `[q·k⁺, q·queue] / τ`, cross-entropy with the positive at index 0.
//!   Instance-discrimination accuracy is how often the positive has the largest logit.

use crate::data::loader::rng_for;
use crate::dist::ProcessGroup;
use crate::models::backbone::{Body, BodyKind, build_body};
use crate::models::linear::torch_linear;
use crate::models::norm::NormKind;
use crate::pretrain::ema::averaged_variables;
use crate::train::init::BODY_PREFIX;
use rand::seq::SliceRandom;
use std::sync::Arc;
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Tensor};

/// Keeps the key permutations' random stream apart from the loader's (same seed, same steps).
const SHUFFLE_STREAM: u64 = 0x5348_5546_464c_4542;

/// Where the projector lives in both encoders' stores.
pub const PROJECTOR_PREFIX: &str = "projector";
/// Checkpoint names: the key encoder's variables under this prefix, and the queue.
pub const KEY_PREFIX: &str = "key_encoder.";
pub const QUEUE: &str = "moco.queue";

/// Body + pooling + MLP projector.
#[derive(Debug)]
pub struct Encoder {
    pub body: Box<dyn Body>,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Encoder {
    /// Build under the root of `vs`: `backbone.body.*` and `projector.fc{1,2}.*`.
    pub fn new(
        vs: &VarStore,
        kind: BodyKind,
        norm: NormKind,
        hidden_dim: i64,
        embedding_dim: i64,
    ) -> Encoder {
        let root = vs.root();
        let mut body_path = root.clone();
        for part in BODY_PREFIX.split('.') {
            body_path = body_path / part;
        }
        let body = build_body(&body_path, kind, norm);
        let c5 = body.out_channels()[3];
        let proj = &root / PROJECTOR_PREFIX;
        // MoCo v2's projector is two default-initialised `nn.Linear`s
        let fc1 = torch_linear(&proj / "fc1", c5, hidden_dim);
        let fc2 = torch_linear(&proj / "fc2", hidden_dim, embedding_dim);
        Encoder { body, fc1, fc2 }
    }

    /// `[N, 3, H, W]` normalised images → `[N, embedding_dim]` unit vectors.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Tensor {
        let feats = self.body.forward_t(images, train);
        let c5 = feats.last().expect("a body returns 4 levels");
        let pooled = c5.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
        let z = self.fc2.forward(&self.fc1.forward(&pooled).relu());
        l2_normalize(&z)
    }
}

/// Row-wise L2 normalisation (PyTorch's `F.normalize(dim=1)`, eps 1e-12).
pub fn l2_normalize(x: &Tensor) -> Tensor {
    let norm = x
        .norm_scalaropt_dim(2, [1i64].as_slice(), true)
        .clamp_min(1e-12);
    x / norm
}

/// The FIFO ring of negative keys, `[K, D]`.
#[derive(Debug)]
pub struct KeyQueue {
    pub keys: Tensor,
    /// Row the next key is written to.
    pub ptr: usize,
}

impl KeyQueue {
    /// Random unit vectors, as MoCo starts (they are all replaced after K / B steps).
    pub fn random(size: i64, dim: i64, device: tch::Device) -> KeyQueue {
        let keys = l2_normalize(&Tensor::randn([size, dim], (Kind::Float, device)));
        KeyQueue { keys, ptr: 0 }
    }

    pub fn len(&self) -> usize {
        self.keys.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write `keys` (`[B, D]`) at the pointer, wrapping around, oldest first overwritten.
    pub fn enqueue(&mut self, keys: &Tensor) {
        let k = self.len();
        if k == 0 {
            return;
        }
        let b = keys.size()[0] as usize;
        // more keys than the ring holds: only the last K survive
        let (keys, b) = if b > k {
            (keys.narrow(0, (b - k) as i64, k as i64), k)
        } else {
            (keys.shallow_clone(), b)
        };
        let rows: Vec<i64> = (0..b).map(|i| ((self.ptr + i) % k) as i64).collect();
        let index = Tensor::from_slice(&rows).to_device(self.keys.device());
        tch::no_grad(|| {
            let _ = self
                .keys
                .index_copy_(0, &index, &keys.detach().to_kind(self.keys.kind()));
        });
        self.ptr = (self.ptr + b) % k;
    }
}

/// InfoNCE over `[q·k⁺, q·queue] / τ` with the positive at index 0. `q`, `k`: `[B, D]` unit
/// vectors (`k` carries no gradient); `queue`: `[K, D]`. Returns (mean loss, top-1 accuracy).
pub fn info_nce(q: &Tensor, k: &Tensor, queue: &Tensor, temperature: f64) -> (Tensor, f64) {
    let l_pos = (q * k.detach()).sum_dim_intlist([1i64].as_slice(), true, q.kind());
    let l_neg = q.mm(&queue.detach().tr());
    let logits = Tensor::cat(&[l_pos, l_neg], 1) / temperature;
    let labels = Tensor::zeros([q.size()[0]], (Kind::Int64, q.device()));
    let loss = logits.cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Mean, -100, 0.0);
    let accuracy = logits
        .argmax(1, false)
        .eq(0)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    (loss, accuracy)
}

/// θ_k ← m·θ_k + (1 − m)·θ_q for every parameter; BN running buffers are left to the key
/// encoder's own forward passes.
pub fn momentum_update(key: &VarStore, query: &VarStore, momentum: f64) {
    super::ema::ema_update(key, query, momentum);
}

/// Shuffle-BN across data-parallel ranks (see the module doc): this rank's place in the group
/// and the step's permutation of the global key batch.
pub struct KeyShuffle {
    group: Arc<ProcessGroup>,
    /// `perm[j]`: the global-batch position of the view encoded at shuffled position `j`.
    perm: Vec<i64>,
}

impl KeyShuffle {
    /// The shuffle of step `step` of a run seeded `seed`, whose global batch is `batch_size`
    /// views.
    pub fn new(group: Arc<ProcessGroup>, batch_size: usize, seed: u64, step: u64) -> KeyShuffle {
        KeyShuffle {
            group,
            perm: permutation(batch_size, seed, step),
        }
    }

    /// `encode` this rank's share of the shuffled global batch on `device`; returns this rank's
    /// own views' keys (`[B, D]`) and the global batch's (`[N·B, D]`, in global order), identical
    /// on every rank, both on `device`. `views` is this rank's `[B, …]` as the loader made them,
    /// on the CPU: the exchanges go through it (Gloo's tensors), and only the share this rank
    /// encodes goes to the device.
    pub fn keys(
        &self,
        views: &Tensor,
        device: Device,
        encode: impl FnOnce(&Tensor) -> Tensor,
    ) -> anyhow::Result<(Tensor, Tensor)> {
        let b = views.size()[0];
        let all = Tensor::cat(&self.group.all_gather(&views.to_device(Device::Cpu))?, 0);
        anyhow::ensure!(
            all.size()[0] == self.perm.len() as i64,
            "the ranks' key views make a batch of {}, the shuffle expects {}",
            all.size()[0],
            self.perm.len()
        );
        let perm = Tensor::from_slice(&self.perm);
        let first = self.group.rank as i64 * b;
        let mine = all.index_select(0, &perm.narrow(0, first, b));
        // fp32 whatever the autocast: the queue holds fp32 keys
        let keys = encode(&mine.to_device(device))
            .to_device(Device::Cpu)
            .to_kind(Kind::Float);
        let shuffled = Tensor::cat(&self.group.all_gather(&keys)?, 0);
        // shuffled row j is the key of global position perm[j]
        let global = shuffled.zeros_like().index_copy(0, &perm, &shuffled);
        Ok((
            global.narrow(0, first, b).to_device(device),
            global.to_device(device),
        ))
    }
}

/// A permutation of `0..n`, a pure function of (seed, step).
pub fn permutation(n: usize, seed: u64, step: u64) -> Vec<i64> {
    let mut perm: Vec<i64> = (0..n as i64).collect();
    perm.shuffle(&mut rng_for(seed ^ SHUFFLE_STREAM, step, 0));
    perm
}

/// Query and key encoders with the queue.
pub struct Moco {
    pub query_vs: VarStore,
    pub key_vs: VarStore,
    pub query: Encoder,
    pub key: Encoder,
    pub queue: KeyQueue,
    pub temperature: f64,
    pub key_momentum: f64,
}

/// What one forward pass gives.
pub struct MocoOutput {
    pub loss: Tensor,
    pub accuracy: f64,
    /// The keys to enqueue once the step is done: the global batch's, in global order.
    pub keys: Tensor,
}

impl Moco {
    /// Build both encoders with live batch norm. Call [`Moco::sync_key`] once the query
    /// encoder holds its initial weights.
    pub fn new(
        device: tch::Device,
        kind: BodyKind,
        hidden_dim: i64,
        embedding_dim: i64,
        queue_size: i64,
        temperature: f64,
        key_momentum: f64,
    ) -> Moco {
        let query_vs = VarStore::new(device);
        let query = Encoder::new(&query_vs, kind, NormKind::Bn, hidden_dim, embedding_dim);
        let mut key_vs = VarStore::new(device);
        let key = Encoder::new(&key_vs, kind, NormKind::Bn, hidden_dim, embedding_dim);
        key_vs.freeze();
        let queue = KeyQueue::random(queue_size, embedding_dim, device);
        Moco {
            query_vs,
            key_vs,
            query,
            key,
            queue,
            temperature,
            key_momentum,
        }
    }

    /// Make the key encoder an exact copy of the query encoder (parameters and buffers).
    pub fn sync_key(&mut self) -> anyhow::Result<()> {
        super::ema::copy_all(&mut self.key_vs, &self.query_vs)?;
        self.key_vs.freeze();
        Ok(())
    }

    /// One MoCo forward: queries with gradient, momentum update of the key encoder, keys in
    /// training mode without gradient (with `shuffle`, computed across the ranks), InfoNCE
    /// against the queue. The views may be on the CPU; each goes to the encoders' device where it
    /// is encoded. The caller back-propagates, steps the optimizer, then calls
    /// [`KeyQueue::enqueue`] with `keys`.
    pub fn forward(
        &self,
        view_q: &Tensor,
        view_k: &Tensor,
        shuffle: Option<&KeyShuffle>,
    ) -> anyhow::Result<MocoOutput> {
        let device = self.query_vs.device();
        let q = self.query.forward_t(&view_q.to_device(device), true);
        let (k, keys) = tch::no_grad(|| {
            momentum_update(&self.key_vs, &self.query_vs, self.key_momentum);
            let encode = |x: &Tensor| self.key.forward_t(x, true);
            match shuffle {
                Some(s) => s.keys(view_k, device, encode),
                None => {
                    let k = encode(&view_k.to_device(device));
                    Ok((k.shallow_clone(), k))
                }
            }
        })?;
        let (loss, accuracy) = info_nce(&q, &k, &self.queue.keys, self.temperature);
        Ok(MocoOutput {
            loss,
            accuracy,
            keys,
        })
    }

    /// What every rank must hold the same besides the query encoder (which the optimizer
    /// keeps): the key encoder's parameters and the queue, under their checkpoint names.
    pub fn replicated(&self) -> Vec<(String, Tensor)> {
        let mut named = averaged_variables(&self.key_vs, KEY_PREFIX);
        named.push((QUEUE.to_string(), self.queue.keys.shallow_clone()));
        named
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(t: &Tensor) -> Vec<f32> {
        Vec::try_from(t.select(1, 0).contiguous()).unwrap()
    }

    #[test]
    fn queue_wraps_around_oldest_first() {
        let mut q = KeyQueue {
            keys: Tensor::zeros([5, 2], (Kind::Float, tch::Device::Cpu)),
            ptr: 0,
        };
        let batch = |a: f64, n: i64| {
            Tensor::arange(n, (Kind::Float, tch::Device::Cpu))
                .g_add_scalar(a)
                .unsqueeze(1)
                .repeat([1, 2])
        };
        q.enqueue(&batch(1.0, 3)); // 1 2 3 _ _
        assert_eq!(rows(&q.keys), vec![1.0, 2.0, 3.0, 0.0, 0.0]);
        assert_eq!(q.ptr, 3);
        q.enqueue(&batch(10.0, 3)); // 11 2 3 10 … wraps: rows 3, 4, 0
        assert_eq!(rows(&q.keys), vec![12.0, 2.0, 3.0, 10.0, 11.0]);
        assert_eq!(q.ptr, 1);
        q.enqueue(&batch(20.0, 4)); // rows 1, 2, 3, 4
        assert_eq!(rows(&q.keys), vec![12.0, 20.0, 21.0, 22.0, 23.0]);
        assert_eq!(q.ptr, 0);
        // more keys than the ring: the last 5 survive in order
        q.enqueue(&batch(30.0, 7));
        assert_eq!(rows(&q.keys), vec![32.0, 33.0, 34.0, 35.0, 36.0]);
        assert_eq!(q.ptr, 0);
    }

    #[test]
    fn info_nce_matches_a_naive_per_sample_computation() {
        tch::manual_seed(3);
        let opts = (Kind::Double, tch::Device::Cpu);
        let q = l2_normalize(&Tensor::randn([4, 8], opts));
        let k = l2_normalize(&Tensor::randn([4, 8], opts));
        let queue = l2_normalize(&Tensor::randn([6, 8], opts));
        let tau = 0.2;
        let (loss, acc) = info_nce(&q, &k, &queue, tau);
        let dot = |a: &Tensor, b: &Tensor| (a * b).sum(Kind::Double).double_value(&[]);
        let (mut total, mut hits) = (0.0, 0.0);
        for i in 0..4 {
            let qi = q.get(i);
            let mut logits = vec![dot(&qi, &k.get(i)) / tau];
            for j in 0..6 {
                logits.push(dot(&qi, &queue.get(j)) / tau);
            }
            let max = logits.iter().cloned().fold(f64::MIN, f64::max);
            let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
            total += lse - logits[0];
            if logits[1..].iter().all(|&l| l < logits[0]) {
                hits += 1.0;
            }
        }
        let got = loss.double_value(&[]);
        assert!((got - total / 4.0).abs() < 1e-9, "{got} vs {}", total / 4.0);
        assert!((acc - hits / 4.0).abs() < 1e-12, "{acc} vs {}", hits / 4.0);
        // an exact positive with orthogonal negatives is classified right
        let e = Tensor::eye(8, opts);
        let (_, acc) = info_nce(
            &e.narrow(0, 0, 2),
            &e.narrow(0, 0, 2),
            &e.narrow(0, 2, 6),
            tau,
        );
        assert_eq!(acc, 1.0);
    }

    #[test]
    fn key_encoder_is_an_ema_of_the_query_parameters_not_buffers() {
        tch::manual_seed(0);
        let mut m = Moco::new(tch::Device::Cpu, BodyKind::Resnet18, 16, 8, 8, 0.2, 0.9);
        m.sync_key().unwrap();
        let name = "projector.fc1.weight";
        let bn = "backbone.body.bn1.running_mean";
        let (q0, k0) = (
            m.query_vs.variables()[name].copy(),
            m.key_vs.variables()[name].copy(),
        );
        assert_eq!((&q0 - &k0).abs().max().double_value(&[]), 0.0);
        // move the query encoder, then update the key encoder
        tch::no_grad(|| {
            for mut t in m.query_vs.trainable_variables() {
                let _ = t.g_add_scalar_(1.0);
            }
            let _ = m.query_vs.variables()[bn].shallow_clone().fill_(5.0);
        });
        momentum_update(&m.key_vs, &m.query_vs, 0.9);
        let k1 = m.key_vs.variables()[name].copy();
        let expected = &k0 * 0.9 + (&q0 + 1.0) * 0.1;
        assert!((&k1 - expected).abs().max().double_value(&[]) < 1e-6);
        let kbn = m.key_vs.variables()[bn].copy();
        assert_eq!(
            kbn.abs().max().double_value(&[]),
            0.0,
            "buffers are not averaged"
        );
        // the key encoder takes no gradient
        assert!(m.key_vs.variables().values().all(|t| !t.requires_grad()));
        // a forward pass gives a finite loss and unit keys, and the key BN buffers move
        let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, tch::Device::Cpu));
        let out = m.forward(&x, &x.flip([3]), None).unwrap();
        assert!(out.loss.double_value(&[]).is_finite());
        let norms = out.keys.norm_scalaropt_dim(2, [1i64].as_slice(), false);
        assert!((norms - 1.0).abs().max().double_value(&[]) < 1e-5);
        assert!(m.key_vs.variables()[bn].abs().max().double_value(&[]) > 0.0);
    }

    #[test]
    fn the_key_permutation_is_a_pure_function_of_seed_and_step() {
        let p = permutation(8, 3, 5);
        let mut sorted = p.clone();
        sorted.sort();
        assert_eq!(sorted, (0..8).collect::<Vec<i64>>());
        assert_eq!(p, permutation(8, 3, 5));
        assert_ne!(p, permutation(8, 3, 6));
        assert_ne!(p, permutation(8, 4, 5));
    }

    /// Two ranks in two threads over a real Gloo group; each key is `encode` of its own view
    /// whoever encoded it, and each rank encoded a slice of the shuffled global batch.
    #[test]
    fn shuffled_keys_are_each_views_own_and_come_back_in_global_order() {
        use crate::dist::{ProcessGroup, Store};
        use std::time::Duration;
        const B: i64 = 3;
        let timeout = Duration::from_secs(20);
        // global position g: a view of constant value g
        let views = |rank: i64| {
            Tensor::arange_start(rank * B, (rank + 1) * B, (Kind::Float, Device::Cpu))
                .view([B, 1, 1, 1])
                .repeat([1, 2, 2, 2])
        };
        // per-sample: the key of view g is [g, 2g] (no statistics across the batch)
        let encode = |x: &Tensor| {
            let v = x.mean_dim([1i64, 2, 3].as_slice(), false, Kind::Float);
            Tensor::stack(&[v.shallow_clone(), &v * 2.0], 1)
        };
        let rank_run = move |rank: usize, store: Store| {
            let group =
                ProcessGroup::join(store, "127.0.0.1", rank, 2, Device::Cpu, timeout, timeout)
                    .unwrap();
            let shuffle = KeyShuffle::new(Arc::new(group), 2 * B as usize, 9, 4);
            let mut encoded = Vec::new();
            let (mine, global) = shuffle
                .keys(&views(rank as i64), Device::Cpu, |x| {
                    encoded = Vec::<f32>::try_from(x.mean_dim(
                        [1i64, 2, 3].as_slice(),
                        false,
                        Kind::Float,
                    ))
                    .unwrap();
                    encode(x)
                })
                .unwrap();
            (
                Vec::<f32>::try_from(mine.select(1, 0)).unwrap(),
                Vec::<f32>::try_from(global.reshape([-1])).unwrap(),
                encoded,
            )
        };
        let store = Store::serve("127.0.0.1", 2, timeout).unwrap();
        let port = store.port();
        let other = std::thread::spawn(move || {
            rank_run(1, Store::connect("127.0.0.1", port, 2, timeout).unwrap())
        });
        let zero = rank_run(0, store);
        let one = other.join().unwrap();

        let perm = permutation(2 * B as usize, 9, 4);
        let global: Vec<f32> = (0..2 * B)
            .flat_map(|g| [g as f32, 2.0 * g as f32])
            .collect();
        for (rank, (mine, all, encoded)) in [zero, one].into_iter().enumerate() {
            let first = rank as i64 * B;
            let own: Vec<f32> = (first..first + B).map(|g| g as f32).collect();
            assert_eq!(mine, own, "rank {rank}: its own views' keys");
            assert_eq!(all, global, "rank {rank}: the global batch in order");
            let slice: Vec<f32> = perm[first as usize..(first + B) as usize]
                .iter()
                .map(|&g| g as f32)
                .collect();
            assert_eq!(
                encoded, slice,
                "rank {rank} encoded its slice of the permutation"
            );
        }
        // the permutation moved views across ranks, so the sub-batches' statistics mix them
        assert!(perm[..B as usize].iter().any(|&g| g >= B), "{perm:?}");
    }
}
