//! The batch script of a run's Slurm job: `trainer worker --once --run ID` on the allocated
//! node. The worker token is not in it: sbatch passes it on in the job's environment.

/// What the job's worker is told besides its run.
#[derive(Debug, Clone, Default)]
pub struct WorkerLaunch {
    /// The `trainer` binary as the compute nodes see it.
    pub trainer: String,
    pub server: String,
    /// GPUs per job from `--gres gpu:N` (0: a CPU job).
    pub gpus: u32,
    /// The agent's labels: the worker registers with them, so it meets the runs it was given.
    pub labels: Vec<String>,
}

/// A POSIX `sh` script that execs the worker for `run_id` (the worker's exit status is the
/// job's: 0 only when the run succeeded).
pub fn batch_script(run_id: i64, w: &WorkerLaunch) -> String {
    let mut args = vec![
        quote(&w.trainer),
        "worker".to_string(),
        "--once".to_string(),
        "--run".to_string(),
        run_id.to_string(),
        "--server".to_string(),
        quote(&w.server),
        "--name".to_string(),
        "\"slurm-job-${SLURM_JOB_ID}\"".to_string(),
    ];
    // Slurm numbers a job's GPUs from 0 (CUDA_VISIBLE_DEVICES holds the ones it was given).
    match w.gpus {
        0 => args.extend(["--device".to_string(), "cpu".to_string()]),
        1 => args.extend(["--device".to_string(), "cuda:0".to_string()]),
        n => {
            let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            args.extend(["--gpus".to_string(), ids.join(",")]);
        }
    }
    for label in &w.labels {
        args.extend(["--label".to_string(), quote(label)]);
    }
    format!(
        "#!/bin/sh\n# AlignDet Studio run {run_id}, submitted by trainer slurm-agent\nexec {}\n",
        args.join(" ")
    )
}

/// `text` in single quotes for `sh`.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// GPUs per job in a `--gres` value: `gpu:2`, `gpu:a100:2`, `gpu` (one); 0 without a gpu gres.
pub fn gpus_in_gres(gres: Option<&str>) -> Result<u32, String> {
    let Some(gres) = gres else { return Ok(0) };
    let mut total = 0;
    for item in gres.split(',') {
        let parts: Vec<&str> = item.split(':').collect();
        if parts.first() != Some(&"gpu") {
            continue;
        }
        total += match parts.as_slice() {
            [] | [_] => 1,
            // gpu:2, or gpu:a100 (a type without a count: one)
            [_, last] => last.parse().unwrap_or(1),
            [.., last] => last
                .parse::<u32>()
                .map_err(|_| format!("--gres {gres:?}: cannot read the GPU count of {item:?}"))?,
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_runs_one_worker_for_the_run_without_the_token() {
        let w = WorkerLaunch {
            trainer: "/opt/it's/trainer".into(),
            server: "http://10.0.0.1:8080".into(),
            gpus: 2,
            labels: vec!["a100".into()],
        };
        let s = batch_script(42, &w);
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains(
            "exec '/opt/it'\\''s/trainer' worker --once --run 42 --server 'http://10.0.0.1:8080'"
        ));
        assert!(s.contains("--gpus 0,1 --label 'a100'"));
        assert!(!s.to_lowercase().contains("token"));
    }

    #[test]
    fn counts_gpus_in_gres() {
        assert_eq!(gpus_in_gres(None), Ok(0));
        assert_eq!(gpus_in_gres(Some("gpu:1")), Ok(1));
        assert_eq!(gpus_in_gres(Some("gpu:a100:4")), Ok(4));
        assert_eq!(gpus_in_gres(Some("gpu:a100")), Ok(1));
        assert_eq!(gpus_in_gres(Some("gpu")), Ok(1));
        assert_eq!(gpus_in_gres(Some("shard:2")), Ok(0));
        assert!(gpus_in_gres(Some("gpu:a100:x")).is_err());
    }
}
