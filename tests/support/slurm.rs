//! A real single-node Slurm cluster for the Slurm tests (Debian's `slurm-wlm` and `munge`, which
//! `scripts/setup.sh` installs): munged with its own key and socket, slurmctld and slurmd on
//! loopback ports, all started in the foreground from a generated `slurm.conf` in a temporary
//! folder and stopped on drop. No system service is used or touched.
//!
//! The node is `localhost` with this machine's CPUs; jobs run as the calling user (root in CI
//! containers), without cgroups (`proctrack/linuxproc`, `task/none`). Without slurmdbd there is
//! no accounting: `squeue` keeps ended jobs for `MinJobAge` (600 s).

use crate::{TempDir, free_port};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SlurmCluster {
    /// Stopped in reverse order on drop: slurmd, slurmctld, munged.
    daemons: Vec<(&'static str, Child)>,
    pub conf: PathBuf,
    pub dir: TempDir,
}

impl SlurmCluster {
    /// Start munged, slurmctld and slurmd; wait until the node is idle in partition `test`.
    pub fn start() -> SlurmCluster {
        let dir = TempDir::new("slurm");
        let d = dir.path().to_path_buf();
        for sub in ["munge", "state", "spool", "jobs"] {
            std::fs::create_dir_all(d.join(sub)).expect("slurm folders");
        }
        let key = d.join("munge/munge.key");
        std::fs::write(&key, random_bytes(1024)).expect("munge key");
        set_mode(&key, 0o400);
        let socket = d.join("munge/munge.sock");
        let munged = Command::new("munged")
            .arg("--foreground")
            .arg("--force")
            .arg(format!("--key-file={}", key.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!(
                "--pid-file={}",
                d.join("munge/munged.pid").display()
            ))
            .arg(format!(
                "--seed-file={}",
                d.join("munge/munged.seed").display()
            ))
            .arg(format!(
                "--log-file={}",
                d.join("munge/munged.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(log_file(&d, "munged.out"))
            .spawn()
            .expect("munged (apt-get install munge)");
        let mut cluster = SlurmCluster {
            daemons: vec![("munged", munged)],
            conf: d.join("slurm.conf"),
            dir,
        };
        wait_for(Duration::from_secs(20), "munged's socket", || {
            socket.exists()
        });
        std::fs::write(&cluster.conf, slurm_conf(&d, &socket)).expect("slurm.conf");
        let ctld = cluster.daemon("slurmctld", &[]);
        cluster.daemons.push(("slurmctld", ctld));
        let slurmd = cluster.daemon("slurmd", &["-N", "localhost"]);
        cluster.daemons.push(("slurmd", slurmd));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = cluster.tool("sinfo", &["-h", "-n", "localhost", "-o", "%t"]);
            if state.trim() == "idle" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the Slurm node did not come up (sinfo says {state:?}); logs:\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        cluster
    }

    fn daemon(&self, name: &'static str, extra: &[&str]) -> Child {
        let d = self.dir.path();
        Command::new(name)
            .arg("-D")
            .arg("-f")
            .arg(&self.conf)
            .args(extra)
            .env("SLURM_CONF", &self.conf)
            .stdout(log_file(d, &format!("{name}.out")))
            .stderr(log_file(d, &format!("{name}.err")))
            .spawn()
            .unwrap_or_else(|e| panic!("{name} (apt-get install slurm-wlm): {e}"))
    }

    /// Folder for job output files.
    pub fn jobs_dir(&self) -> PathBuf {
        self.dir.path().join("jobs")
    }

    /// Run a Slurm client tool against this cluster; its stdout (stderr on failure).
    pub fn tool(&self, tool: &str, args: &[&str]) -> String {
        let out = Command::new(tool)
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        let text = if out.status.success() {
            &out.stdout
        } else {
            &out.stderr
        };
        String::from_utf8_lossy(text).into_owned()
    }

    /// `squeue --json`'s jobs (pending, running, and ended ones within MinJobAge).
    pub fn jobs(&self) -> Vec<Value> {
        let text = self.tool("squeue", &["--json", "--all"]);
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        v["jobs"].as_array().cloned().unwrap_or_default()
    }

    /// The jobs named `name`.
    pub fn jobs_named(&self, name: &str) -> Vec<Value> {
        self.jobs()
            .into_iter()
            .filter(|j| j["name"] == name)
            .collect()
    }

    pub fn scancel(&self, job_id: i64) {
        let out = self.tool("scancel", &[&job_id.to_string()]);
        assert!(out.trim().is_empty(), "scancel {job_id}: {out}");
    }

    /// The daemons' logs, for a failure message.
    pub fn logs(&self) -> String {
        let d = self.dir.path();
        let mut all = String::new();
        for f in [
            "munged.out",
            "slurmctld.err",
            "slurmctld.log",
            "slurmd.err",
            "slurmd.log",
        ] {
            let text = std::fs::read_to_string(d.join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            all.push_str(&format!("--- {f}\n"));
            for line in tail.into_iter().rev() {
                all.push_str(line);
                all.push('\n');
            }
        }
        all
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        while let Some((_, mut child)) = self.daemons.pop() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn slurm_conf(d: &Path, munge_socket: &Path) -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let p = |name: &str| d.join(name).display().to_string();
    format!(
        "ClusterName=aligndettest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={ctld_pid}
SlurmdPidFile={slurmd_pid}
SlurmctldLogFile={ctld_log}
SlurmdLogFile={slurmd_log}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
MinJobAge=600
# sbatch refuses a job its partition could never run (an account AllowAccounts does not list)
# instead of accepting it to pend forever (reason AccountNotAllowed).
EnforcePartLimits=ALL
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=lab Nodes=localhost MaxTime=INFINITE State=UP AllowAccounts=physics
",
        ctld_port = free_port(),
        slurmd_port = free_port(),
        socket = munge_socket.display(),
        state = p("state"),
        spool = p("spool"),
        ctld_pid = p("slurmctld.pid"),
        slurmd_pid = p("slurmd.pid"),
        ctld_log = p("slurmctld.log"),
        slurmd_log = p("slurmd.log"),
    )
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(dir.join(name)).expect("daemon log file")
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf
}

fn wait_for(timeout: Duration, what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `trainer slurm-agent` against `cluster`, killed on drop.
pub struct Agent {
    pub child: Child,
    /// Holds the 0600 token file: the token never goes on a command line.
    _token_dir: TempDir,
}

impl Agent {
    /// An agent named `name` placing runs on `partition`, polling every 0.5 s, with more
    /// `trainer slurm-agent` arguments in `extra`.
    pub fn start(
        server: &crate::Server,
        cluster: &SlurmCluster,
        name: &str,
        partition: &str,
        extra: &[&str],
    ) -> Agent {
        let token_dir = TempDir::new("agent-token");
        let token_file = token_dir.path().join("worker-token");
        std::fs::write(&token_file, &server.token).expect("token file");
        set_mode(&token_file, 0o600);
        let child = Command::new(crate::bin("trainer"))
            .args(["slurm-agent", "--server", &server.url, "--name", name])
            .args(["--partition", partition, "--poll-seconds", "0.5"])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--log-dir")
            .arg(cluster.jobs_dir())
            .args(extra)
            .env("SLURM_CONF", &cluster.conf)
            .env_remove("ALIGNDET_WORKER_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start trainer slurm-agent");
        Agent {
            child,
            _token_dir: token_dir,
        }
    }

    /// SIGKILL: the agent dies without a word (a crash, a reboot of its machine).
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill_hard();
    }
}
