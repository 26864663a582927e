//! The momentum (target) detector: an exponential moving average of the online detector's
//! parameters, with BYOL's cosine momentum schedule from m₀ to 1.

use tch::Tensor;
use tch::nn::VarStore;

/// m_k = 1 − (1 − m₀)·(cos(π·k/K) + 1)/2 for the 0-based iteration k of K.
pub fn momentum_at(k: u64, total: u64, m0: f64) -> f64 {
    let x = std::f64::consts::PI * k as f64 / total.max(1) as f64;
    1.0 - (1.0 - m0) * (x.cos() + 1.0) / 2.0
}

/// Batch-norm statistics are buffers, not parameters: AlignDet does not average them.
fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked")
}

/// θ_target ← m·θ_target + (1 − m)·θ_online for every parameter both stores hold.
pub fn ema_update(target: &VarStore, online: &VarStore, momentum: f64) {
    let online_vars = online.variables();
    tch::no_grad(|| {
        for (name, mut t) in target.variables() {
            if is_buffer(&name) {
                continue;
            }
            if let Some(o) = online_vars.get(&name) {
                let _ = t.g_mul_scalar_(momentum);
                let _ = t.g_add_(&(o * (1.0 - momentum)));
            }
        }
    });
}

/// The variables an EMA update moves (every one but the batch-norm buffers), as
/// `{prefix}{name}`, sorted by name: what every data-parallel rank holds the same.
pub fn averaged_variables(vs: &VarStore, prefix: &str) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(name, _)| !is_buffer(name))
        .map(|(name, t)| (format!("{prefix}{name}"), t))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Make the target an exact copy of the online detector (at construction).
pub fn copy_all(target: &mut VarStore, online: &VarStore) -> anyhow::Result<()> {
    target
        .copy(online)
        .map_err(|e| anyhow::anyhow!("copying the online detector: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_at_start_middle_and_end() {
        let k = 1000;
        assert!((momentum_at(0, k, 0.996) - 0.996).abs() < 1e-15);
        assert!((momentum_at(k / 2, k, 0.996) - 0.998).abs() < 1e-12);
        let last = momentum_at(k - 1, k, 0.996);
        let expected = 1.0 - 0.004 * ((std::f64::consts::PI * 999.0 / 1000.0).cos() + 1.0) / 2.0;
        assert!((last - expected).abs() < 1e-15 && last > 0.99999);
    }

    #[test]
    fn update_moves_parameters_not_buffers() {
        let online = VarStore::new(tch::Device::Cpu);
        let target = VarStore::new(tch::Device::Cpu);
        let _w = online.root().ones("w", &[3]);
        let _b = online.root().ones_no_train("running_mean", &[3]);
        let _tw = target.root().zeros("w", &[3]);
        let _tb = target.root().zeros_no_train("running_mean", &[3]);
        ema_update(&target, &online, 0.9);
        let vars = target.variables();
        let w: Vec<f32> = Vec::try_from(&vars["w"]).unwrap();
        let b: Vec<f32> = Vec::try_from(&vars["running_mean"]).unwrap();
        assert!(w.iter().all(|v| (v - 0.1).abs() < 1e-6), "{w:?}");
        assert_eq!(b, vec![0.0; 3]);
    }
}
