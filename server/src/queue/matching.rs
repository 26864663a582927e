//! Why a queued run waits for a worker: its requirements against the capabilities of the
//! workers connected now (the claim statement in `queue::claim` applies the same rules).

use crate::db;
use aligndet_common::capabilities::{Capabilities, DeviceKind, Requirements};
use sqlx::PgPool;

/// "waits for a worker with cuda, ≥ 40 GB; connected: 2 cpu workers" when no connected,
/// non-draining worker satisfies the run; `None` when one does (or the run is not found).
pub async fn waiting_reason(pool: &PgPool, run_id: i64) -> sqlx::Result<Option<String>> {
    let Some((requirements, _)) = db::runs::requirements(pool, run_id).await? else {
        return Ok(None);
    };
    let requirements: Requirements = serde_json::from_value(requirements).unwrap_or_default();
    let workers: Vec<(Capabilities, bool)> = db::workers::connected_capabilities(pool)
        .await?
        .into_iter()
        .map(|(c, draining)| (serde_json::from_value(c).unwrap_or_default(), draining))
        .collect();
    Ok(reason(&requirements, &workers))
}

/// The rule of [`waiting_reason`], on values.
pub fn reason(requirements: &Requirements, workers: &[(Capabilities, bool)]) -> Option<String> {
    if workers
        .iter()
        .any(|(c, draining)| !draining && requirements.unmet_by(c).is_none())
    {
        return None;
    }
    let count = |kind: DeviceKind| workers.iter().filter(|(c, _)| c.device == kind).count();
    let connected = match (count(DeviceKind::Cpu), count(DeviceKind::Cuda)) {
        (0, 0) => "none".to_string(),
        (cpu, 0) => plural(cpu, "cpu worker"),
        (0, gpu) => plural(gpu, "cuda worker"),
        (cpu, gpu) => format!(
            "{}, {}",
            plural(cpu, "cpu worker"),
            plural(gpu, "cuda worker")
        ),
    };
    let draining = workers.iter().filter(|(_, d)| *d).count();
    let draining = if draining > 0 {
        format!(" ({draining} draining)")
    } else {
        String::new()
    };
    Some(format!(
        "waits for a worker with {}; connected: {connected}{draining}",
        requirements.summary()
    ))
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aligndet_common::capabilities::DeviceRequirement;

    #[test]
    fn a_cuda_run_among_cpu_workers_says_what_it_waits_for() {
        let cuda = Requirements {
            device: DeviceRequirement::Cuda,
            min_gpu_memory_mb: 40 * 1024,
            devices: 1,
            labels: vec![],
        };
        let cpu = Capabilities {
            cpu_threads: 4,
            ..Capabilities::default()
        };
        assert_eq!(
            reason(&cuda, &[(cpu.clone(), false), (cpu.clone(), false)]).unwrap(),
            "waits for a worker with cuda, ≥ 40 GB; connected: 2 cpu workers"
        );
        assert_eq!(
            reason(&Requirements::default(), &[]).unwrap(),
            "waits for a worker with any device; connected: none"
        );
        assert!(reason(&Requirements::default(), &[(cpu.clone(), false)]).is_none());
        assert!(
            reason(&Requirements::default(), &[(cpu, true)])
                .unwrap()
                .ends_with("1 cpu worker (1 draining)")
        );
    }
}
