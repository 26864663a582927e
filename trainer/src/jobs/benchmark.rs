//! Worker benchmark: forward + backward of a detection backbone on the worker's device.
//!
//! Reports per-step time and images/s so users can compare workers; the loss is a dummy (mean of
//! the C5 features) because only the compute matters here.

use super::{JobContext, JobOutcome};
use aligndet_common::artifacts;
use aligndet_common::jobs::{BenchmarkBackbone, BenchmarkConfig};
use std::time::Instant;
use tch::nn::{self, ModuleT, OptimizerConfig};

pub fn run(ctx: &mut JobContext<'_>, cfg: &BenchmarkConfig) -> anyhow::Result<JobOutcome> {
    cfg.validate()?;
    tch::manual_seed(0);
    let vs = nn::VarStore::new(ctx.device);
    let net: Box<dyn ModuleT> = match cfg.backbone {
        BenchmarkBackbone::Resnet18 => {
            Box::new(tch::vision::resnet::resnet18_no_final_layer(&vs.root()))
        }
        BenchmarkBackbone::Resnet50 => {
            Box::new(tch::vision::resnet::resnet50_no_final_layer(&vs.root()))
        }
    };
    let mut opt = nn::Sgd {
        momentum: 0.9,
        ..Default::default()
    }
    .build(&vs, 0.01)?;
    let size = cfg.resolution as i64;
    let input = tch::Tensor::randn(
        [cfg.batch_size as i64, 3, size, size],
        (tch::Kind::Float, ctx.device),
    );
    ctx.log(format!(
        "benchmark: {} batch {} at {}x{} on {:?}, {} warm-up + {} timed steps",
        cfg.backbone.as_str(),
        cfg.batch_size,
        size,
        size,
        ctx.device,
        cfg.warmup_steps,
        cfg.steps
    ));

    let mut step_times = Vec::with_capacity(cfg.steps as usize);
    for step in 0..(cfg.warmup_steps + cfg.steps) {
        if ctx.should_stop() {
            ctx.log(format!("stopping at step {step} on request"));
            return Ok(JobOutcome::Stopped);
        }
        let started = Instant::now();
        let loss = net.forward_t(&input, true).mean(tch::Kind::Float);
        opt.zero_grad();
        loss.backward();
        opt.step();
        let loss_value = loss.double_value(&[]);
        if let tch::Device::Cuda(index) = ctx.device {
            tch::Cuda::synchronize(index as i64);
        }
        let seconds = started.elapsed().as_secs_f64();
        if step < cfg.warmup_steps {
            continue;
        }
        let timed_step = (step - cfg.warmup_steps) as i64;
        step_times.push(seconds);
        ctx.sink.metric("step_time_s", timed_step, seconds);
        ctx.sink
            .metric("images_per_s", timed_step, cfg.batch_size as f64 / seconds);
        ctx.sink.metric("loss", timed_step, loss_value);
    }
    let median = median(&mut step_times);
    ctx.sink.metric("median_step_time_s", 0, median);
    ctx.sink
        .metric("median_images_per_s", 0, cfg.batch_size as f64 / median);
    let summary = serde_json::json!({
        "backbone": cfg.backbone.as_str(),
        "batch_size": cfg.batch_size,
        "resolution": cfg.resolution,
        "steps": cfg.steps,
        "device": format!("{:?}", ctx.device),
        "median_step_time_s": median,
        "median_images_per_s": cfg.batch_size as f64 / median,
        "environment": crate::doctor::environment_report(),
    });
    ctx.store_report(artifacts::BENCHMARK, &summary)?;
    ctx.log(format!(
        "median step {:.4} s, {:.2} images/s",
        median,
        cfg.batch_size as f64 / median
    ));
    Ok(JobOutcome::Succeeded)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(super::median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
