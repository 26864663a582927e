//! The GPU data path: batches reach the device without stalling it, cuDNN picks its fastest
//! kernels, and running out of GPU memory says what to lower.

use aligndet_common::optim_config::OptimConfig;
use tch::{Device, Tensor};

/// Set up the device for a training loop (cuDNN's autotuner: input sizes repeat across steps).
pub fn prepare(device: Device) {
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
}

/// `t` on `device`. To CUDA through pinned host memory with a non-blocking copy, so the copy
/// overlaps the work already queued on the GPU.
pub fn to_device(t: &Tensor, device: Device) -> Tensor {
    if device.is_cuda() && t.device() == Device::Cpu {
        t.pin_memory(device)
            .to_device_(device, t.kind(), true, false)
    } else {
        t.to_device(device)
    }
}

/// The message of a step that ran out of GPU memory (libtorch's error text in `what`), naming
/// the sizes to lower; `None` when `what` is another error.
pub fn out_of_memory_hint(what: &str, step: u32, optim: &OptimConfig) -> Option<String> {
    if !what.contains("out of memory") {
        return None;
    }
    let per_rank = optim.batch_size / optim.world_size.max(1);
    Some(format!(
        "the GPU ran out of memory at step {step} with {per_rank} images per device (optim.batch_size {} over {} ranks): lower optim.batch_size or the image size (augment.max_size / views.max_size), or use optim.precision bf16",
        optim.batch_size, optim.world_size
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_names_the_sizes_to_lower() {
        let optim: OptimConfig = aligndet_common::train_config::TrainConfig::default().optim;
        let m = out_of_memory_hint("CUDA out of memory. Tried to allocate 2.00 GiB", 7, &optim)
            .unwrap();
        assert!(m.contains("step 7") && m.contains("optim.batch_size") && m.contains("max_size"));
        assert!(out_of_memory_hint("shape mismatch", 7, &optim).is_none());
        let t = Tensor::from_slice(&[1.0f32, 2.0]);
        assert_eq!(
            Vec::<f32>::try_from(&to_device(&t, Device::Cpu)).unwrap(),
            vec![1.0, 2.0]
        );
    }
}
