//! Batch normalisation for backbones: trainable `BatchNorm2d` or torchvision's
//! `FrozenBatchNorm2d` (fixed affine and statistics, what detection fine-tuning uses).

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// Statistics and affine parameters fixed (torchvision `FrozenBatchNorm2d`, eps 1e-5).
    #[default]
    FrozenBn,
    /// Ordinary batch norm: batch statistics in training mode.
    Bn,
}

#[derive(Debug)]
pub enum Norm2d {
    Frozen {
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
    },
    Bn(nn::BatchNorm),
}

pub fn norm2d(vs: nn::Path, channels: i64, kind: NormKind) -> Norm2d {
    match kind {
        NormKind::FrozenBn => frozen(vs, channels),
        NormKind::Bn => Norm2d::Bn(nn::batch_norm2d(vs, channels, Default::default())),
    }
}

fn frozen(vs: nn::Path, channels: i64) -> Norm2d {
    Norm2d::Frozen {
        weight: vs.ones_no_train("weight", &[channels]),
        bias: vs.zeros_no_train("bias", &[channels]),
        running_mean: vs.zeros_no_train("running_mean", &[channels]),
        running_var: vs.ones_no_train("running_var", &[channels]),
    }
}

impl nn::ModuleT for Norm2d {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Norm2d::Frozen {
                weight,
                bias,
                running_mean,
                running_var,
            } => {
                // Same arithmetic as torchvision: scale = w / sqrt(var + eps), shift = b − mean·scale.
                let scale = weight * (running_var + 1e-5).rsqrt();
                let shift = bias - running_mean * &scale;
                xs * scale.reshape([1, -1, 1, 1]) + shift.reshape([1, -1, 1, 1])
            }
            Norm2d::Bn(bn) => bn.forward_t(xs, train),
        }
    }
}
