//! Mixed precision: autocast around the forward pass, and fp16's dynamic loss scale.
//!
//! Under autocast, libtorch runs convolutions and matrix products in the 16-bit type and keeps
//! precision-sensitive ops in fp32 (PyTorch's autocast policy; the state is per thread). The
//! parameters, their gradients, the optimizer state, momentum copies and checkpoints stay fp32:
//! only activations are 16-bit, so a checkpoint loads at any precision.

use crate::torch_shim;
use aligndet_common::optim_config::Precision;
use tch::{Device, Kind, Tensor};

/// Refuse what the device cannot run: fp16 needs CUDA (CPU autocast is bf16 only).
pub fn check_supported(precision: Precision, device: Device) -> anyhow::Result<()> {
    if precision == Precision::Fp16 && !device.is_cuda() {
        anyhow::bail!(
            "optim.precision fp16 needs a CUDA device (this job runs on {device:?}); use bf16 or fp32 on CPU"
        );
    }
    Ok(())
}

/// Autocast for as long as it lives (nothing for fp32).
pub struct Autocast {
    device: Option<i32>,
}

impl Autocast {
    pub fn enter(precision: Precision, device: Device) -> Autocast {
        let code = if device.is_cuda() { 1 } else { 0 };
        let dtype = match precision {
            Precision::Fp32 => return Autocast { device: None },
            Precision::Bf16 => 0,
            Precision::Fp16 => 1,
        };
        unsafe { torch_shim::adt_autocast_enter(code, dtype) };
        Autocast { device: Some(code) }
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        if let Some(code) = self.device {
            unsafe { torch_shim::adt_autocast_exit(code) };
        }
    }
}

/// fp16's dynamic loss scale (as `torch.amp.GradScaler`): the loss is multiplied by the scale
/// before backward so that small gradients survive fp16; gradients are divided back before
/// clipping and the update. A step whose gradients overflowed is skipped and the scale halves;
/// after `GROWTH_INTERVAL` good steps in a row it doubles.
pub struct LossScaler {
    pub scale: f64,
    good_steps: u32,
    /// Steps skipped because their gradients were not finite (a metric).
    pub skipped: u32,
}

const INITIAL_SCALE: f64 = 65536.0;
const GROWTH_INTERVAL: u32 = 2000;

impl LossScaler {
    /// A scaler for fp16; `None` for the precisions that need none.
    pub fn for_precision(precision: Precision) -> Option<LossScaler> {
        (precision == Precision::Fp16).then_some(LossScaler {
            scale: INITIAL_SCALE,
            good_steps: 0,
            skipped: 0,
        })
    }

    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        loss * self.scale
    }

    /// Divide the gradients by the scale; `true` when all are finite (the step may go on).
    /// Otherwise the step is counted as skipped and the scale halves.
    pub fn unscale(&mut self, grads: &[Tensor]) -> bool {
        let inverse = 1.0 / self.scale;
        let mut finite = true;
        for g in grads.iter().filter(|g| g.defined()) {
            let mut g = g.shallow_clone();
            let _ = g.g_mul_scalar_(inverse);
            finite &= g.isfinite().all().int64_value(&[]) != 0;
        }
        if finite {
            self.good_steps += 1;
            if self.good_steps >= GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.skipped += 1;
            self.scale /= 2.0;
            self.good_steps = 0;
        }
        finite
    }
}

/// A loss term in fp32 whatever precision its graph ran in.
pub fn as_fp32(t: Tensor) -> Tensor {
    if t.kind() == Kind::Float {
        t
    } else {
        t.to_kind(Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_autocast_runs_matrix_products_in_bf16_and_ends_with_its_guard() {
        let a = Tensor::randn([8, 8], (Kind::Float, Device::Cpu));
        {
            let _ac = Autocast::enter(Precision::Bf16, Device::Cpu);
            assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
        }
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
        let _none = Autocast::enter(Precision::Fp32, Device::Cpu);
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
    }

    #[test]
    fn fp16_on_cpu_is_refused_by_name() {
        let e = check_supported(Precision::Fp16, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fp16 needs a CUDA device"), "{e}");
        check_supported(Precision::Bf16, Device::Cpu).unwrap();
    }

    #[test]
    fn the_loss_scale_halves_on_overflow_and_skips_the_step() {
        let mut s = LossScaler::for_precision(Precision::Fp16).unwrap();
        let ok = [Tensor::from_slice(&[65536.0f32, 131072.0])];
        assert!(s.unscale(&ok));
        assert_eq!(Vec::<f32>::try_from(&ok[0]).unwrap(), vec![1.0, 2.0]);
        let bad = [Tensor::from_slice(&[f32::INFINITY, 1.0])];
        assert!(!s.unscale(&bad));
        assert_eq!((s.skipped, s.scale), (1, 32768.0));
        assert!(LossScaler::for_precision(Precision::Bf16).is_none());
    }
}
