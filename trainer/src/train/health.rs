//! Training health: what the loop can tell from its own numbers that a run is not learning, told
//! to the user as warnings (run page, runs list) rather than left for them to find in the charts.
//!
//! Each warning has a stable code; it is sent once per attempt, and the server shows the latest
//! line of each code. The checks, and why each threshold:
//! - `flat_loss/<term>`: a loss term equal to its first value for [`FLAT_STEPS`] steps. Batches
//!   differ from step to step, so a live term moves; one that does not is computed from outputs
//!   that no longer reach it (FCOS's GIoU loss is exactly 1.0 while every predicted box is a point).
//! - `stalled`: after warm-up, the weights move by less than [`STALL_RATIO`] of their norm per
//!   step. Healthy detector training moves them by about 1e-4 to 1e-3 per step.
//! - `lr_warmup`: the warm-up lasts the whole run, so the learning rate never reaches its value.
//! - `non_finite/<key>`: a reported value was NaN or infinite (the point is left out: JSON cannot
//!   carry it). A non-finite *loss* ends the run instead (the loop's divergence bail).
//! - `loader_bound`: the median wait for a batch exceeds the median compute of a step.
//! - `dead_regression_head` (from evaluation, [`zero_size_warning`]): nearly every predicted box
//!   has zero width or height.

use aligndet_common::optim_config::OptimConfig;
use std::collections::HashSet;

/// Steps a term must keep its first value to count as flat.
pub const FLAT_STEPS: u32 = 10;
/// Relative difference under which a term "keeps" its first value.
const FLAT_TOLERANCE: f64 = 1e-7;
/// Weight update per step, relative to the weights' norm, below which training has stalled.
pub const STALL_RATIO: f64 = 1e-7;
/// Post-warm-up samples of the update ratio, all under [`STALL_RATIO`], that make a stall.
const STALL_SAMPLES: usize = 2;
/// Steps of loader and compute timing needed before judging the loader.
const LOADER_MIN_STEPS: usize = 10;
/// Share of a split's predicted boxes with zero size that marks the regression head dead.
const DEAD_HEAD_SHARE: f64 = 0.99;

/// One warning: its stable code and what to tell the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    pub code: String,
    pub message: String,
}

impl Warning {
    fn new(code: impl Into<String>, message: String) -> Warning {
        Warning {
            code: code.into(),
            message,
        }
    }
}

/// The loop's health checks over one attempt.
pub struct Health {
    optim: OptimConfig,
    /// Each loss term's first value, and the steps it has kept it (`None` once it moved).
    first: Vec<(String, f64, Option<u32>)>,
    low_updates: usize,
    waits_ms: Vec<f64>,
    computes_ms: Vec<f64>,
    sent: HashSet<String>,
}

impl Health {
    pub fn new(optim: &OptimConfig) -> Health {
        Health {
            optim: optim.clone(),
            first: Vec::new(),
            low_updates: 0,
            waits_ms: Vec::new(),
            computes_ms: Vec::new(),
            sent: HashSet::new(),
        }
    }

    /// What is wrong before the first step: the schedule.
    pub fn at_start(&mut self) -> Vec<Warning> {
        let mut out = Vec::new();
        if self.optim.warmup_steps >= self.optim.steps {
            out.push(Warning::new(
                "lr_warmup",
                format!(
                    "the learning rate never leaves warm-up: warmup_steps ({}) covers all {} steps, so it never reaches the configured lr",
                    self.optim.warmup_steps, self.optim.steps
                ),
            ));
        }
        self.keep_new(out)
    }

    /// Whether the update of `step` should be measured (the engine's `update_ratio`): after
    /// warm-up, at its first step and every 10th after, while the schedule's rate is at least a
    /// tenth of `lr` (a decayed rate moves the weights little by design).
    pub fn measures_update(&self, step: u32) -> bool {
        step >= self.optim.warmup_steps
            && (step - self.optim.warmup_steps).is_multiple_of(10)
            && self.optim.lr_at(step) >= 0.1 * self.optim.lr
    }

    /// One step's numbers: the loss terms, every point reported, the loader's wait and the
    /// step's compute (ms), and the measured update ratio where [`Health::measures_update`].
    pub fn observe(
        &mut self,
        step: u32,
        terms: &[(String, f64)],
        wait_ms: f64,
        compute_ms: f64,
        update_ratio: Option<f64>,
    ) -> Vec<Warning> {
        let mut out = Vec::new();
        if self.first.is_empty() {
            self.first = terms
                .iter()
                .map(|(k, v)| (k.clone(), *v, Some(0)))
                .collect();
        }
        for ((name, first, kept), (_, value)) in self.first.iter_mut().zip(terms) {
            let Some(n) = kept else { continue };
            if (value - *first).abs() <= FLAT_TOLERANCE * first.abs().max(1.0) {
                *n += 1;
                if *n == FLAT_STEPS {
                    out.push(Warning::new(
                        format!("flat_loss/{name}"),
                        format!(
                            "loss/{name} has stayed at its first value {first} for {FLAT_STEPS} steps (to step {}): the outputs it is computed from no longer change it",
                            step + 1
                        ),
                    ));
                }
            } else {
                *kept = None;
            }
        }
        if let Some(ratio) = update_ratio {
            self.low_updates = if ratio < STALL_RATIO {
                self.low_updates + 1
            } else {
                0
            };
            if self.low_updates == STALL_SAMPLES {
                out.push(Warning::new(
                    "stalled",
                    format!(
                        "training has stalled: at step {} a step moved the weights by {ratio:.1e} of their norm (healthy runs move them by about 1e-4 to 1e-3); the learning rate is too low or the gradients vanish",
                        step + 1
                    ),
                ));
            }
        }
        // the first step of an attempt builds and warms everything: not typical of either
        if step > 0 || !self.computes_ms.is_empty() || !self.waits_ms.is_empty() {
            self.waits_ms.push(wait_ms);
            self.computes_ms.push(compute_ms);
        }
        out.extend(self.loader_check());
        self.keep_new(out)
    }

    /// A reported value that is NaN or infinite (left out of the points by the caller).
    pub fn non_finite(&mut self, key: &str, step: u32) -> Vec<Warning> {
        let w = Warning::new(
            format!("non_finite/{key}"),
            format!(
                "{key} was not a finite number at step {}; such values are left out of the charts",
                step + 1
            ),
        );
        self.keep_new(vec![w])
    }

    fn loader_check(&self) -> Option<Warning> {
        if self.waits_ms.len() < LOADER_MIN_STEPS {
            return None;
        }
        let wait = median(&self.waits_ms);
        let compute = median(&self.computes_ms);
        (wait > compute).then(|| {
            Warning::new(
                "loader_bound",
                format!(
                    "the data loader is the bottleneck: a step waits {wait:.0} ms for its batch (median) and computes for {compute:.0} ms; raise loader_threads (now {}) or lower the image size",
                    self.optim.loader_threads
                ),
            )
        })
    }

    /// Warnings not yet sent in this attempt (each code once).
    fn keep_new(&mut self, warnings: Vec<Warning>) -> Vec<Warning> {
        warnings
            .into_iter()
            .filter(|w| self.sent.insert(w.code.clone()))
            .collect()
    }
}

/// `dead_regression_head` when nearly all `sizes` (predicted boxes' width and height) are zero.
pub fn zero_size_warning(sizes: impl Iterator<Item = (f64, f64)>, step: u32) -> Option<Warning> {
    let (mut total, mut zero) = (0usize, 0usize);
    for (w, h) in sizes {
        total += 1;
        if w < 1e-3 || h < 1e-3 {
            zero += 1;
        }
    }
    (total > 0 && zero as f64 >= DEAD_HEAD_SHARE * total as f64).then(|| {
        Warning::new(
            "dead_regression_head",
            format!(
                "the box regression head is dead: {zero} of {total} boxes predicted at step {step} have zero width or height"
            ),
        )
    })
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use aligndet_common::optim_config::{LrSchedule, OptimizerKind, Precision};

    fn optim(steps: u32, warmup_steps: u32) -> OptimConfig {
        OptimConfig {
            batch_size: 2,
            steps,
            optimizer: OptimizerKind::Sgd,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0,
            warmup_steps,
            schedule: LrSchedule::Cosine { min_factor: 0.0 },
            grad_clip_norm: None,
            checkpoint_every: 100,
            seed: 0,
            loader_threads: 2,
            precision: Precision::Fp32,
            world_size: 1,
        }
    }

    fn codes(w: &[Warning]) -> Vec<&str> {
        w.iter().map(|w| w.code.as_str()).collect()
    }

    #[test]
    fn a_term_stuck_at_its_first_value_is_flagged_once_and_a_moving_one_never() {
        let mut h = Health::new(&optim(40, 0));
        let mut all = Vec::new();
        for step in 0..30 {
            let terms = [
                ("bbox_regression".to_string(), 1.0),
                ("classification".to_string(), 1.0 / (step as f64 + 1.0)),
            ];
            all.extend(h.observe(step, &terms, 0.0, 10.0, None));
        }
        assert_eq!(codes(&all), vec!["flat_loss/bbox_regression"]);
        assert!(all[0].message.contains("step 10"), "{}", all[0].message);
    }

    #[test]
    fn tiny_updates_after_warm_up_are_a_stall_and_healthy_ones_are_not() {
        let mut h = Health::new(&optim(40, 5));
        let measured: Vec<u32> = (0..40).filter(|&s| h.measures_update(s)).collect();
        // cosine to 0 over the 35 steps after warm-up: below a tenth of lr by step 35
        assert_eq!(measured, vec![5, 15, 25]);
        let run = |h: &mut Health, ratio: f64| -> Vec<Warning> {
            (0..40)
                .flat_map(|s| {
                    let r = h.measures_update(s).then_some(ratio);
                    h.observe(s, &[("x".into(), s as f64)], 0.0, 10.0, r)
                })
                .collect()
        };
        assert_eq!(codes(&run(&mut h, 1e-12)), vec!["stalled"]);
        let mut h = Health::new(&optim(40, 5));
        assert!(run(&mut h, 3e-4).is_empty());
    }

    #[test]
    fn a_warm_up_as_long_as_the_run_is_flagged_at_the_start() {
        assert_eq!(
            codes(&Health::new(&optim(20, 20)).at_start()),
            vec!["lr_warmup"]
        );
        assert!(Health::new(&optim(20, 5)).at_start().is_empty());
    }

    #[test]
    fn a_loader_slower_than_compute_is_flagged_after_enough_steps() {
        let mut h = Health::new(&optim(40, 0));
        let mut all = Vec::new();
        for s in 0..12 {
            all.extend(h.observe(s, &[("x".into(), s as f64)], 30.0, 10.0, None));
        }
        assert_eq!(codes(&all), vec!["loader_bound"]);
        let mut h = Health::new(&optim(40, 0));
        assert!(
            (0..12)
                .flat_map(|s| h.observe(s, &[("x".into(), s as f64)], 1.0, 10.0, None))
                .next()
                .is_none()
        );
    }

    #[test]
    fn zero_size_boxes_mark_a_dead_head_and_a_non_finite_value_is_named_once() {
        let dead = zero_size_warning((0..100).map(|_| (0.0, 0.0)), 20).unwrap();
        assert!(dead.message.contains("100 of 100"), "{}", dead.message);
        assert!(zero_size_warning((0..100).map(|i| (i as f64, 5.0)), 20).is_none());
        assert!(zero_size_warning(std::iter::empty(), 20).is_none());
        let mut h = Health::new(&optim(40, 0));
        assert_eq!(
            codes(&h.non_finite("train/grad_norm", 3)),
            vec!["non_finite/train/grad_norm"]
        );
        assert!(h.non_finite("train/grad_norm", 4).is_empty());
    }
}
