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
            "optim.precision fp16 needs a CUDA device (this job runs on the CPU); use bf16 or fp32 on CPU"
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

    /// The losses of one FCOS fine-tune step at each of `precisions`, on one model and batch
    /// (built once: other tests draw from torch's global generator meanwhile).
    fn fcos_step_losses(precisions: &[Precision]) -> Vec<Vec<(String, f64)>> {
        use crate::models::build::build_detector;
        use crate::models::detector::Targets;
        use aligndet_common::train_config::{BackboneKind, DetectorKind};
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let model = build_detector(
            &vs.root(),
            DetectorKind::Fcos,
            BackboneKind::Resnet18,
            crate::models::norm::NormKind::FrozenBn,
            4,
        )
        .unwrap();
        let images: Vec<Tensor> = (0..2)
            .map(|_| Tensor::rand([3, 96, 96], (Kind::Float, Device::Cpu)))
            .collect();
        let targets: Vec<Targets> = (0..2)
            .map(|i| Targets {
                boxes: Tensor::from_slice(&[
                    10.0f32,
                    12.0,
                    60.0,
                    70.0,
                    30.0 + i as f32,
                    5.0,
                    90.0,
                    40.0,
                ])
                .view([2, 4]),
                labels: Tensor::from_slice(&[1i64, 3]),
                masks: None,
            })
            .collect();
        let (batch, targets) = model.transform().batch_with_targets(&images, &targets);
        precisions
            .iter()
            .map(|&precision| {
                let _autocast = Autocast::enter(precision, Device::Cpu);
                model
                    .losses(&batch, &targets, true)
                    .into_iter()
                    .map(|(k, t)| {
                        let t = as_fp32(t);
                        assert_eq!(t.kind(), Kind::Float, "{k} is fp32");
                        (k, t.double_value(&[]))
                    })
                    .collect()
            })
            .collect()
    }

    /// bf16 keeps 8 bits of mantissa (relative step 2⁻⁸ ≈ 0.4%); through a ResNet-18 FPN the
    /// losses stay within 2% of fp32's on the same batch and weights.
    #[test]
    fn a_bf16_fcos_step_stays_within_two_percent_of_fp32() {
        let both = fcos_step_losses(&[Precision::Fp32, Precision::Bf16]);
        let (fp32, bf16) = (&both[0], &both[1]);
        assert_eq!(fp32.len(), 3);
        let mut differs = false;
        for ((k, a), (_, b)) in fp32.iter().zip(bf16) {
            assert!(a.is_finite() && b.is_finite(), "{k}: {a} {b}");
            let rel = (a - b).abs() / a.abs().max(1e-6);
            assert!(rel < 0.02, "{k}: fp32 {a}, bf16 {b} ({rel:.4} relative)");
            differs |= a != b;
        }
        assert!(differs, "autocast changed nothing: {fp32:?}");
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
