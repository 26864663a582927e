//! The Slurm agent ⇄ server protocol (`/api/v1/slurm/…`, worker token and worker key) and the
//! one rule for Slurm job states both sides use.
//!
//! The agent (`trainer slurm-agent`) registers like a worker, with the profile of the Slurm jobs
//! it submits as its capabilities; its registered name identifies its placements, so an agent
//! restarted under the same name finds them again. A placement is one Slurm job for one run:
//! reserved first ([`Reserved`], at most one live per run, enforced by the server), then submitted
//! with `sbatch` and recorded ([`Submitted`]) or refused ([`Rejected`]), then followed
//! ([`StateReport`]) until Slurm says it ended.

use serde::{Deserialize, Serialize};

/// `POST /api/v1/slurm/placeable`: queued runs this agent may place now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceableRequest {
    /// At most this many runs (the agent's free job slots).
    pub limit: u32,
}

/// One run the agent may place: queued, no live placement, dependencies done, requirements met
/// by the agent's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaceableRun {
    pub run_id: i64,
    pub name: String,
}

/// `POST /api/v1/slurm/placements` body: reserve the placement of a run before `sbatch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReserveRequest {
    pub run_id: i64,
}

/// The reserved placement (409 when the run already has a live one or is no longer queued).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reserved {
    pub placement_id: i64,
}

/// `POST /api/v1/slurm/placements/{id}/submitted`: `sbatch` accepted the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submitted {
    pub slurm_job_id: i64,
}

/// `POST /api/v1/slurm/placements/{id}/rejected`: `sbatch` refused the job (its stderr); the run
/// fails with it instead of being submitted again and again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rejected {
    pub error: String,
}

/// `GET /api/v1/slurm/placements`: this agent's live placements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LivePlacement {
    pub placement_id: i64,
    pub run_id: i64,
    /// `None` while reserved and not yet recorded as submitted (an agent that died in between
    /// looks for the job by name before submitting again).
    pub slurm_job_id: Option<i64>,
    /// The last state reported (`SUBMITTING` before the first).
    pub state: String,
    pub node: Option<String>,
    pub reason: Option<String>,
    /// The job is no longer wanted (the run's cancel was asked, or the run went elsewhere
    /// before this job's worker claimed it): `scancel` it.
    pub cancel: bool,
}

/// `POST /api/v1/slurm/placements/{id}/state`: what `squeue`/`sacct` say about the job.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StateReport {
    /// Slurm's job state, e.g. `PENDING`, `RUNNING`, `TIMEOUT` (see [`is_terminal`]).
    pub state: String,
    /// Slurm's reason (`Resources`, `Priority`, `NonZeroExitCode`, …); "None" is sent as absent.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub node: Option<String>,
    /// "exit code:signal" of the batch script, once ended.
    #[serde(default)]
    pub exit_code: Option<String>,
    /// Seconds since the epoch when Slurm accepted the job.
    #[serde(default)]
    pub submitted_at: Option<i64>,
    /// Seconds since the epoch when it started running (absent while pending).
    #[serde(default)]
    pub started_at: Option<i64>,
}

/// The job name that identifies a run's Slurm job (`squeue` finds it again by it).
pub fn job_name(run_id: i64) -> String {
    format!("{JOB_NAME_PREFIX}{run_id}")
}

pub const JOB_NAME_PREFIX: &str = "aligndet-run-";

/// The run a job name of ours belongs to.
pub fn run_of_job_name(name: &str) -> Option<i64> {
    name.strip_prefix(JOB_NAME_PREFIX)?.parse().ok()
}

/// States after which Slurm runs nothing more for the job.
pub const TERMINAL_STATES: &[&str] = &[
    "COMPLETED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
    "CANCELLED",
    "BOOT_FAIL",
    "DEADLINE",
    // Ours: the job is known to neither squeue nor sacct any more.
    "VANISHED",
];

pub fn is_terminal(state: &str) -> bool {
    TERMINAL_STATES.contains(&state)
}

/// A state as the server stores it: 1 to 32 of A-Z and `_`.
pub fn check_state(state: &str) -> Result<(), String> {
    let ok = !state.is_empty()
        && state.len() <= 32
        && state.chars().all(|c| c.is_ascii_uppercase() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("Slurm state {state:?}: use 1 to 32 of A-Z and _"))
    }
}

/// "Slurm job 123 ended TIMEOUT on node n1 (TimeLimit, exit code 0:15)": what a run's attempt
/// and error say when its Slurm job ended.
pub fn ended_message(job: Option<i64>, report: &StateReport) -> String {
    let mut s = match job {
        Some(id) => format!("Slurm job {id} ended {}", report.state),
        None => format!("its Slurm job ended {}", report.state),
    };
    if let Some(node) = report.node.as_deref().filter(|n| !n.is_empty()) {
        s.push_str(&format!(" on node {node}"));
    }
    let details: Vec<String> = [
        report.reason.clone(),
        report.exit_code.as_ref().map(|c| format!("exit code {c}")),
    ]
    .into_iter()
    .flatten()
    .filter(|d| !d.is_empty() && d != "None")
    .collect();
    if !details.is_empty() {
        s.push_str(&format!(" ({})", details.join(", ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_round_trip_and_states_classify() {
        assert_eq!(run_of_job_name(&job_name(42)), Some(42));
        assert_eq!(run_of_job_name("other-job"), None);
        assert!(is_terminal("TIMEOUT") && is_terminal("PREEMPTED"));
        assert!(!is_terminal("PENDING") && !is_terminal("COMPLETING"));
        assert!(check_state("OUT_OF_MEMORY").is_ok());
        assert!(check_state("running; drop table").is_err());
    }

    #[test]
    fn the_ended_message_names_job_state_node_and_cause() {
        let r = StateReport {
            state: "TIMEOUT".into(),
            node: Some("n1".into()),
            reason: Some("TimeLimit".into()),
            exit_code: Some("0:15".into()),
            ..StateReport::default()
        };
        assert_eq!(
            ended_message(Some(123), &r),
            "Slurm job 123 ended TIMEOUT on node n1 (TimeLimit, exit code 0:15)"
        );
        let bare = StateReport {
            state: "FAILED".into(),
            reason: Some("None".into()),
            ..StateReport::default()
        };
        assert_eq!(ended_message(Some(7), &bare), "Slurm job 7 ended FAILED");
    }
}
