//! SGD with momentum and AdamW with PyTorch's update rules, written on tensors so that their
//! state can be saved in our checkpoints and a resumed run continues exactly (libtorch's C++
//! optimizers do not expose their state through tch).

use aligndet_common::optim_config::{OptimConfig, OptimizerKind};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// One trainable tensor and whether weight decay applies to it.
pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    pub decay: bool,
}

/// Norm parameters and biases are excluded from weight decay when asked (a common recipe for
/// detectors); every other tensor decays.
/// Every variable of `vs` that requires a gradient, as an optimizer parameter; with
/// `exclude_norm_and_bias`, norm parameters and biases are not decayed (see [`decays`]).
pub fn trainable_params(vs: &tch::nn::VarStore, exclude_norm_and_bias: bool) -> Vec<Param> {
    let mut params: Vec<Param> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(name, tensor)| Param {
            decay: decays(&name, &tensor, exclude_norm_and_bias),
            name,
            tensor,
        })
        .collect();
    // a fixed order, so that optimizer state and gradient clipping do not depend on hashing
    params.sort_by(|a, b| a.name.cmp(&b.name));
    params
}

pub fn decays(name: &str, tensor: &Tensor, exclude_norm_and_bias: bool) -> bool {
    if !exclude_norm_and_bias {
        return true;
    }
    let is_bias = name.ends_with(".bias");
    let is_norm = tensor.dim() <= 1;
    !(is_bias || is_norm)
}

pub struct Optimizer {
    pub kind: OptimizerKind,
    pub params: Vec<Param>,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Steps taken (AdamW's bias correction).
    pub step: i64,
    /// Per-parameter state by name: SGD `momentum_buffer`; AdamW `exp_avg`, `exp_avg_sq`.
    pub state: BTreeMap<String, Tensor>,
}

impl Optimizer {
    pub fn new(
        kind: OptimizerKind,
        params: Vec<Param>,
        momentum: f64,
        weight_decay: f64,
    ) -> Optimizer {
        Optimizer {
            kind,
            params,
            momentum,
            weight_decay,
            step: 0,
            state: BTreeMap::new(),
        }
    }

    /// The optimizer a training config asks for (kind, momentum, weight decay) over `params`.
    pub fn for_config(optim: &OptimConfig, params: Vec<Param>) -> Optimizer {
        Optimizer::new(optim.optimizer, params, optim.momentum, optim.weight_decay)
    }

    /// "N trainable tensors (M parameters)", as the jobs log it.
    pub fn describe_params(&self) -> String {
        let numel: i64 = self.params.iter().map(|p| p.tensor.numel() as i64).sum();
        format!(
            "{} trainable tensors ({numel} parameters)",
            self.params.len()
        )
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.tensor.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
    }

    /// Scale gradients so that their global L2 norm is at most `max_norm`; returns the norm
    /// before clipping (PyTorch's `clip_grad_norm_`).
    pub fn clip_grad_norm(&self, max_norm: f64) -> f64 {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.tensor.grad())
            .filter(|g| g.defined())
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        let norms: Vec<Tensor> = grads
            .iter()
            .map(|g| g.norm().to_kind(Kind::Float))
            .collect();
        let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
        let coef = max_norm / (total + 1e-6);
        if coef < 1.0 {
            for mut g in grads {
                let _ = g.g_mul_scalar_(coef);
            }
        }
        total
    }

    /// One update at learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let t = self.step as f64;
        tch::no_grad(|| {
            for p in &self.params {
                let grad = p.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                let wd = if p.decay { self.weight_decay } else { 0.0 };
                let mut w = p.tensor.shallow_clone();
                match self.kind {
                    OptimizerKind::Sgd => {
                        // d = g + wd·w; buf = μ·buf + d; w -= lr·buf
                        let d = if wd != 0.0 {
                            &grad + &w * wd
                        } else {
                            grad.shallow_clone()
                        };
                        let key = format!("{}.momentum_buffer", p.name);
                        let buf = match self.state.get(&key) {
                            Some(b) if self.momentum != 0.0 => {
                                let mut b = b.shallow_clone();
                                let _ = b.g_mul_scalar_(self.momentum).g_add_(&d);
                                b
                            }
                            _ => d.copy(),
                        };
                        let _ = w.g_sub_(&(&buf * lr));
                        if self.momentum != 0.0 {
                            self.state.insert(key, buf);
                        }
                    }
                    OptimizerKind::Adamw => {
                        let (b1, b2, eps) = (0.9, 0.999, 1e-8);
                        if wd != 0.0 {
                            let _ = w.g_mul_scalar_(1.0 - lr * wd);
                        }
                        let m_key = format!("{}.exp_avg", p.name);
                        let v_key = format!("{}.exp_avg_sq", p.name);
                        let m = self.state.entry(m_key).or_insert_with(|| grad.zeros_like());
                        let _ = m.g_mul_scalar_(b1).g_add_(&(&grad * (1.0 - b1)));
                        let m = m.shallow_clone();
                        let v = self.state.entry(v_key).or_insert_with(|| grad.zeros_like());
                        let _ = v.g_mul_scalar_(b2).g_add_(&(&grad * &grad * (1.0 - b2)));
                        let v = v.shallow_clone();
                        let bc1 = 1.0 - b1.powf(t);
                        let bc2 = 1.0 - b2.powf(t);
                        let denom = (v / bc2).sqrt() + eps;
                        let _ = w.g_sub_(&(m / denom * (lr / bc1)));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimise ½‖w − c‖² and compare with the closed-form SGD trajectory.
    #[test]
    fn sgd_momentum_follows_pytorch_rule() {
        let w = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let c = Tensor::from_slice(&[0.5f32, 0.5]);
        let mut opt = Optimizer::new(
            OptimizerKind::Sgd,
            vec![Param {
                name: "w".into(),
                tensor: w.shallow_clone(),
                decay: true,
            }],
            0.9,
            0.0,
        );
        let (mut x, mut buf) = (vec![1.0f64, -2.0], vec![0.0f64, 0.0]);
        for step in 0..3 {
            opt.zero_grad();
            ((&w - &c).square().sum(Kind::Float) * 0.5).backward();
            opt.step(0.1);
            for i in 0..2 {
                let g = x[i] - 0.5;
                buf[i] = if step == 0 { g } else { 0.9 * buf[i] + g };
                x[i] -= 0.1 * buf[i];
            }
        }
        let got: Vec<f32> = Vec::try_from(w.detach()).unwrap();
        for i in 0..2 {
            assert!((got[i] as f64 - x[i]).abs() < 1e-6, "{got:?} vs {x:?}");
        }
    }

    #[test]
    fn adamw_first_step_moves_each_weight_by_lr() {
        let w = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut opt = Optimizer::new(
            OptimizerKind::Adamw,
            vec![Param {
                name: "w".into(),
                tensor: w.shallow_clone(),
                decay: false,
            }],
            0.0,
            0.0,
        );
        (&w * Tensor::from_slice(&[3.0f32, -0.5]))
            .sum(Kind::Float)
            .backward();
        opt.step(0.01);
        let got: Vec<f32> = Vec::try_from(w.detach()).unwrap();
        // the first Adam step is lr · sign(g) (up to eps)
        assert!(
            (got[0] - 0.99).abs() < 1e-5 && (got[1] + 1.99).abs() < 1e-5,
            "{got:?}"
        );
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let w = Tensor::from_slice(&[0.0f32, 0.0]).set_requires_grad(true);
        let opt = Optimizer::new(
            OptimizerKind::Sgd,
            vec![Param {
                name: "w".into(),
                tensor: w.shallow_clone(),
                decay: true,
            }],
            0.0,
            0.0,
        );
        (&w * Tensor::from_slice(&[3.0f32, 4.0]))
            .sum(Kind::Float)
            .backward();
        let before = opt.clip_grad_norm(1.0);
        assert!((before - 5.0).abs() < 1e-5);
        let g: Vec<f32> = Vec::try_from(w.grad()).unwrap();
        assert!((g[0] - 0.6).abs() < 1e-4 && (g[1] - 0.8).abs() < 1e-4);
    }
}
