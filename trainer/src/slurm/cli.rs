//! The one module that speaks to Slurm, through its command-line tools: `sbatch --parsable`,
//! `squeue --json`, `sacct --json` and `scancel`. Everything else in the agent sees only
//! [`SlurmCli`]'s typed calls, so slurmrestd could stand in for the tools here.
//!
//! The JSON of `squeue`/`sacct` changed between Slurm releases (22.05 writes a job state as a
//! string and times as numbers; 23.02 and later as a list of flags and `{set, number}` objects):
//! the readers here take both.

use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// The tool could not be started at all (not installed, not on PATH).
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: &'static str,
        source: std::io::Error,
    },
    /// Slurm did not answer (controller down, timeouts): try again later.
    #[error("{command}: Slurm is not answering: {stderr}")]
    Unavailable {
        command: &'static str,
        stderr: String,
    },
    /// Slurm answered no (bad partition, no such account, …): trying again will not help.
    #[error("{command} refused: {stderr}")]
    Refused {
        command: &'static str,
        stderr: String,
    },
    #[error("{command} printed what this agent cannot read: {why}")]
    Output { command: &'static str, why: String },
}

/// One batch job to submit.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub job_name: String,
    pub comment: String,
    pub partition: String,
    pub gres: Option<String>,
    pub time: Option<String>,
    pub account: Option<String>,
    pub cpus_per_task: Option<u32>,
    /// `--output`: where Slurm writes the job's stdout and stderr.
    pub output: Option<PathBuf>,
    /// The batch script, given to sbatch on its stdin (never in its arguments).
    pub script: String,
    /// Variables set for sbatch only; `--export=ALL` carries them into the job, so a secret
    /// never appears in `ps` or in `squeue`.
    pub env: Vec<(String, String)>,
}

/// What `squeue` or `sacct` says about one job.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobInfo {
    pub job_id: i64,
    pub name: String,
    pub state: String,
    pub reason: Option<String>,
    pub node: Option<String>,
    pub exit_code: Option<String>,
    pub submit_time: Option<i64>,
    pub start_time: Option<i64>,
    /// The submitting user's uid (squeue only).
    pub user_id: Option<u32>,
}

/// The Slurm command-line tools (found on PATH; `SLURM_CONF` picks the cluster as usual).
#[derive(Debug, Clone, Default)]
pub struct SlurmCli;

impl SlurmCli {
    /// `sbatch --parsable`: the new job's id.
    pub fn submit(&self, s: &Submission) -> Result<i64, SlurmError> {
        let mut args: Vec<String> = vec![
            "--parsable".into(),
            "--no-requeue".into(),
            "--export=ALL".into(),
            format!("--job-name={}", s.job_name),
            format!("--comment={}", s.comment),
            format!("--partition={}", s.partition),
        ];
        let optional = [
            ("--gres", s.gres.clone()),
            ("--time", s.time.clone()),
            ("--account", s.account.clone()),
            ("--cpus-per-task", s.cpus_per_task.map(|c| c.to_string())),
            (
                "--output",
                s.output.as_ref().map(|p| p.display().to_string()),
            ),
        ];
        for (flag, value) in optional {
            if let Some(v) = value {
                args.push(format!("{flag}={v}"));
            }
        }
        let mut cmd = Command::new("sbatch");
        cmd.args(&args).envs(s.env.iter().map(|(k, v)| (k, v)));
        let out = run("sbatch", cmd, Some(s.script.as_bytes()))?;
        // "123" or "123;cluster"
        let first = out.split([';', '\n']).next().unwrap_or("").trim();
        first.parse().map_err(|_| SlurmError::Output {
            command: "sbatch",
            why: format!("expected a job id, got {out:?}"),
        })
    }

    /// The jobs of this process's user that `squeue` lists (pending, running, and ended ones
    /// within `MinJobAge`). `squeue --json` of 22.05 ignores its filter options: filtered here.
    pub fn jobs(&self) -> Result<Vec<JobInfo>, SlurmError> {
        let mut cmd = Command::new("squeue");
        cmd.args(["--json", "--all"]);
        let out = run("squeue", cmd, None)?;
        let me = own_uid();
        Ok(parse_jobs("squeue", &out)?
            .into_iter()
            .filter(|j| me.is_none() || j.user_id.is_none() || j.user_id == me)
            .collect())
    }

    /// What accounting knows of a job that `squeue` no longer lists; `None` when accounting
    /// is not kept (no slurmdbd) or has no such job.
    pub fn accounting(&self, job_id: i64) -> Result<Option<JobInfo>, SlurmError> {
        let mut cmd = Command::new("sacct");
        cmd.args(["--json", "-j", &job_id.to_string()]);
        let out = match run("sacct", cmd, None) {
            Ok(out) => out,
            // "Slurm accounting storage is disabled" (no slurmdbd), exit status 1.
            Err(SlurmError::Refused { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Some releases print that sentence on stdout with status 0: not JSON, no record.
        Ok(parse_jobs("sacct", &out)
            .unwrap_or_default()
            .into_iter()
            .find(|j| j.job_id == job_id))
    }

    /// `scancel`: Slurm ends the job (SIGTERM, then SIGKILL after its KillWait).
    pub fn cancel(&self, job_id: i64) -> Result<(), SlurmError> {
        let mut cmd = Command::new("scancel");
        cmd.arg(job_id.to_string());
        run("scancel", cmd, None).map(|_| ())
    }
}

/// This process's uid: the owner of `/proc/self`.
fn own_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Run a tool; its stdout, or why not.
fn run(
    command: &'static str,
    mut cmd: Command,
    stdin: Option<&[u8]>,
) -> Result<String, SlurmError> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|source| SlurmError::Spawn { command, source })?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(bytes)
            .map_err(|source| SlurmError::Spawn { command, source })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| SlurmError::Spawn { command, source })?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        let stderr = if stderr.is_empty() {
            format!("exited with {}", out.status)
        } else {
            stderr
        };
        return Err(if is_unavailable(&stderr) {
            SlurmError::Unavailable { command, stderr }
        } else {
            SlurmError::Refused { command, stderr }
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Slurm's words for "ask again later" (the controller is down or busy).
fn is_unavailable(stderr: &str) -> bool {
    [
        "Unable to contact slurm controller",
        "Socket timed out",
        "temporarily unable",
        "Slurm backup controller in standby mode",
        "Connection refused",
        "Zero Bytes were transmitted or received",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

/// The `jobs` of `squeue --json` or `sacct --json`.
pub fn parse_jobs(command: &'static str, text: &str) -> Result<Vec<JobInfo>, SlurmError> {
    let v: Value = serde_json::from_str(text).map_err(|e| SlurmError::Output {
        command,
        why: e.to_string(),
    })?;
    let jobs = v["jobs"].as_array().ok_or_else(|| SlurmError::Output {
        command,
        why: "no \"jobs\" list".into(),
    })?;
    Ok(jobs.iter().filter_map(job_info).collect())
}

fn job_info(j: &Value) -> Option<JobInfo> {
    // squeue: job_state, state_reason; sacct: state {current, reason}.
    let state = first_string(&j["job_state"]).or_else(|| first_string(&j["state"]["current"]))?;
    let reason = j["state_reason"]
        .as_str()
        .or_else(|| j["state"]["reason"].as_str())
        .filter(|r| !r.is_empty() && *r != "None")
        .map(str::to_string);
    let time = |squeue: &str, sacct: &str| number(&j[squeue]).or_else(|| number(&j["time"][sacct]));
    Some(JobInfo {
        job_id: number(&j["job_id"])?,
        name: j["name"].as_str().unwrap_or_default().to_string(),
        state,
        reason,
        node: j["nodes"]
            .as_str()
            .filter(|n| !n.is_empty() && *n != "None assigned")
            .map(str::to_string),
        exit_code: exit_code(&j["exit_code"]),
        submit_time: time("submit_time", "submission").filter(|t| *t > 0),
        start_time: time("start_time", "start").filter(|t| *t > 0),
        user_id: number(&j["user_id"]).and_then(|u| u32::try_from(u).ok()),
    })
}

/// A string, or the first of a list of strings (23.02+ writes states as flag lists).
fn first_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// A number, or `{set, number}` (23.02+; unset counts as absent).
fn number(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::Object(o) if o.get("set").and_then(Value::as_bool) != Some(false) => {
            o.get("number").and_then(Value::as_i64)
        }
        _ => None,
    }
}

/// "return code:signal" from a plain number or the `{return_code, signal}` object.
fn exit_code(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => n.as_i64().map(|c| format!("{}:{}", c >> 8, c & 0x7f)),
        Value::Object(o) => {
            let code = o.get("return_code").and_then(number)?;
            let signal = o
                .get("signal")
                .and_then(|s| s.get("signal_id").or_else(|| s.get("id")))
                .and_then(number)
                .unwrap_or(0);
            Some(format!("{code}:{signal}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_squeue_json_of_22_05_and_of_later_releases() {
        let old = r#"{"jobs": [{"job_id": 12, "name": "aligndet-run-3", "job_state": "RUNNING",
            "state_reason": "None", "nodes": "n1", "exit_code": 256, "submit_time": 100,
            "start_time": 104, "user_name": "root", "user_id": 0}]}"#;
        let j = &parse_jobs("squeue", old).unwrap()[0];
        assert_eq!((j.job_id, j.state.as_str()), (12, "RUNNING"));
        assert_eq!((j.reason.as_deref(), j.node.as_deref()), (None, Some("n1")));
        assert_eq!(j.exit_code.as_deref(), Some("1:0"));
        assert_eq!((j.submit_time, j.start_time), (Some(100), Some(104)));
        assert_eq!(j.user_id, Some(0));
        let new = r#"{"jobs": [{"job_id": 13, "name": "x", "job_state": ["PENDING"],
            "state_reason": "Resources", "nodes": "", "submit_time": {"set": true, "number": 5},
            "start_time": {"set": false, "number": 0},
            "exit_code": {"status": ["PENDING"], "return_code": {"set": true, "number": 0}}}]}"#;
        let j = &parse_jobs("squeue", new).unwrap()[0];
        assert_eq!(j.state, "PENDING");
        assert_eq!(
            (j.reason.as_deref(), j.node.as_deref()),
            (Some("Resources"), None)
        );
        assert_eq!((j.submit_time, j.start_time), (Some(5), None));
        assert_eq!(j.exit_code.as_deref(), Some("0:0"));
    }

    #[test]
    fn reads_sacct_json() {
        let text = r#"{"jobs": [{"job_id": 7, "name": "aligndet-run-1",
            "state": {"current": "TIMEOUT", "reason": "None"}, "nodes": "n2",
            "exit_code": {"status": "SIGNALED", "return_code": 0, "signal": {"signal_id": 15}},
            "time": {"submission": 10, "start": 12}}]}"#;
        let j = &parse_jobs("sacct", text).unwrap()[0];
        assert_eq!(
            (j.state.as_str(), j.node.as_deref()),
            ("TIMEOUT", Some("n2"))
        );
        assert_eq!(j.exit_code.as_deref(), Some("0:15"));
        assert_eq!(j.start_time, Some(12));
        assert!(parse_jobs("sacct", "not json").is_err());
    }

    #[test]
    fn tells_a_controller_that_is_down_from_a_refusal() {
        assert!(is_unavailable(
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"
        ));
        assert!(!is_unavailable(
            "sbatch: error: Batch job submission failed: Invalid partition name specified"
        ));
    }
}
