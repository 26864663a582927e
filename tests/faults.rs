//! The server's runtime under faults: SIGTERM with live run pages open, an outage longer than the
//! lease, kill -9 of the server and its embedded postmaster, and who may use the embedded
//! cluster's socket. Real Postgres clusters, real server and worker processes, real signals.

use aligndet_studio::*;
use serde_json::{Value, json};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn bench(steps: u32) -> Value {
    json!({"kind": "benchmark", "backbone": "resnet18", "batch_size": 2, "resolution": 64, "steps": steps, "warmup_steps": 0})
}

fn status(r: &Value) -> &str {
    r["status"].as_str().unwrap_or("")
}

fn step_points(db: &TestDb, run: i64) -> String {
    db.query(&format!(
        "SELECT count(*) FROM metrics WHERE run_id = {run} AND key = 'step_time_s'"
    ))
}

/// The newest PostgreSQL server binaries, as the server finds them.
fn pg_bin(program: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("ALIGNDET_PG_BIN") {
        return PathBuf::from(dir).join(program);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("/usr/lib/postgresql (apt-get install postgresql)")
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL version")
        .1
        .join("bin")
        .join(program)
}

fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no user {user}"))
}

fn assert_root() {
    assert_eq!(
        uid_of("root"),
        nix_uid(),
        "these checks switch users with runuser and need root"
    );
}

fn nix_uid() -> u32 {
    std::fs::metadata("/proc/self").expect("/proc/self").uid()
}

/// `psql -c 'select 1'` over the socket in `socket_dir` as OS user `os_user` (None: ourselves),
/// with `password` or none; (succeeded, stderr).
fn psql_as(os_user: Option<&str>, socket_dir: &Path, password: Option<&str>) -> (bool, String) {
    let psql = pg_bin("psql");
    let mut cmd = match os_user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(&psql);
            c
        }
        None => Command::new(&psql),
    };
    cmd.arg("-h")
        .arg(socket_dir)
        .args([
            "-U", "postgres", "-d", "postgres", "-w", "-X", "-tAc", "select 1",
        ])
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", "/dev/null/none")
        .current_dir("/");
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    let out = cmd.output().expect("run psql");
    let ok = out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1";
    (ok, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Start a dataset upload, as the page's form would, and stall halfway through its body: a
/// request in flight that would hold a graceful shutdown for as long as the client likes.
fn stall_an_upload(server: &Server) -> std::net::TcpStream {
    use std::io::Write;
    let ui = server.browser_session();
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    let boundary = "stalledboundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nstalled\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.zip\"\r\n\
         Content-Type: application/zip\r\n\r\n"
    );
    let request = format!(
        "POST /datasets/upload?csrf_token={} HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\n\
         Origin: {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: 10000000\r\n\r\n{head}",
        ui.token, ui.cookie, server.url
    );
    conn.write_all(request.as_bytes()).expect("send head");
    conn.write_all(&[0u8; 4096]).expect("send some of the file");
    // No answer: the server is waiting for the rest of the body.
    conn.set_read_timeout(Some(Duration::from_millis(800)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    match conn.read(&mut byte) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("the stalled upload was answered: {other:?}"),
    }
    conn
}

/// Open a run page's live stream; the returned channel says when (and how) it ended.
fn open_event_stream(
    server: &Server,
    run: i64,
) -> mpsc::Receiver<(Instant, Result<usize, String>)> {
    let resp = server
        .http
        .get(format!("{}/runs/{run}/events", server.url))
        .send()
        .expect("open event stream");
    assert_eq!(resp.status(), 200);
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ctype.starts_with("text/event-stream"), "{ctype}");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut resp = resp;
        let mut buf = vec![];
        let read = resp.read_to_end(&mut buf).map_err(|e| e.to_string());
        let _ = tx.send((Instant::now(), read));
    });
    rx
}

#[test]
fn sigterm_with_open_run_pages_exits_promptly_and_loses_no_metric() {
    let db = TestDb::create();
    let dir = TempDir::new("sigterm");
    let mut opts = ServerOptions::new(&db, dir.path());
    opts.bind = format!("127.0.0.1:{}", free_port());
    opts.heartbeat_seconds = 0.5;
    let server = Server::start(&opts);
    let steps = 40;
    let run = server.create_run("through a restart", bench(steps));
    let _w = Worker::start(&server, "steady");
    server.wait_run(run, Duration::from_secs(120), "running", |r| {
        status(r) == "running" && r["metric_points"].as_i64().unwrap_or(0) > 3
    });
    let streams: Vec<_> = (0..5).map(|_| open_event_stream(&server, run)).collect();
    // The streams stay open while the server runs.
    std::thread::sleep(Duration::from_millis(500));
    for s in &streams {
        assert!(s.try_recv().is_err(), "a stream ended before SIGTERM");
    }

    let _stalled = stall_an_upload(&server);

    let t0 = Instant::now();
    server.stop();
    let shutdown = t0.elapsed();
    eprintln!(
        "server exited {:.2} s after SIGTERM with 5 run pages and a stalled upload open",
        shutdown.as_secs_f64()
    );
    assert!(
        shutdown < Duration::from_secs(5),
        "server took {shutdown:?} to exit after SIGTERM with open run pages"
    );
    for s in &streams {
        let (ended, read) = s
            .recv_timeout(Duration::from_secs(2))
            .expect("the stream ended with the server");
        // On the signal, not when the server gave up waiting for open requests (3 s).
        let after = ended.duration_since(t0);
        assert!(
            after < Duration::from_secs(2),
            "a stream ended {after:?} after SIGTERM"
        );
        assert!(read.is_ok(), "the stream was cut, not ended: {read:?}");
    }

    // The worker kept going through the outage; the restarted server gets every point.
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let server = Server::start(&opts);
    eprintln!("server restarted in {:.2} s", t0.elapsed().as_secs_f64());
    let r = server.wait_run(run, Duration::from_secs(240), "finished", |r| {
        matches!(status(r), "succeeded" | "failed" | "cancelled")
    });
    assert_eq!(status(&r), "succeeded", "{r}");
    assert_eq!(r["attempts"], 1, "the restart cost an attempt: {r}");
    assert_eq!(
        step_points(&db, run),
        steps.to_string(),
        "every step's point stored"
    );
    server.stop();
}

#[test]
fn an_outage_of_twice_the_lease_costs_no_attempt() {
    let db = TestDb::create();
    let dir = TempDir::new("long-outage");
    let mut opts = ServerOptions::new(&db, dir.path());
    opts.bind = format!("127.0.0.1:{}", free_port());
    opts.lease_seconds = 3.0;
    opts.heartbeat_seconds = 0.5;
    let server = Server::start(&opts);
    let steps = 40;
    let run = server.create_run("outlasts the lease", bench(steps));
    let _w = Worker::start(&server, "patient");
    server.wait_run(run, Duration::from_secs(120), "running", |r| {
        status(r) == "running" && r["metric_points"].as_i64().unwrap_or(0) > 3
    });
    // A crash, not a goodbye: SIGKILL (Server's drop), then down for twice the lease.
    drop(server);
    std::thread::sleep(Duration::from_secs(6));
    let server = Server::start(&opts);
    let r = server.wait_run(run, Duration::from_secs(240), "finished", |r| {
        matches!(status(r), "succeeded" | "failed" | "cancelled")
    });
    assert_eq!(status(&r), "succeeded", "{r}");
    assert_eq!(
        r["attempts"], 1,
        "the server's outage cost the worker its lease: {r}"
    );
    assert_eq!(
        db.query(&format!(
            "SELECT count(*) FROM run_attempts WHERE run_id = {run}"
        )),
        "1",
        "no second attempt recomputed the job"
    );
    assert_eq!(step_points(&db, run), steps.to_string());
    // Leases still expire after the restart: a worker that really dies loses its run.
    drop(_w);
    let doomed_run = server.create_run("abandoned", bench(100_000));
    let mut doomed = Worker::start(&server, "doomed");
    server.wait_run(doomed_run, Duration::from_secs(120), "running", |r| {
        status(r) == "running" && r["metric_points"].as_i64().unwrap_or(0) > 0
    });
    doomed.kill_hard();
    let r = server.wait_run(doomed_run, Duration::from_secs(30), "re-queued", |r| {
        status(r) == "queued"
    });
    assert_eq!(r["attempt_history"][0]["outcome"], "lease_expired");
    server.stop();
}

/// SIGKILL the embedded postmaster and the server; restart at once. The restart's seconds.
fn kill_9_both_and_restart(server: Server, opts: &ServerOptions) -> (Server, f64) {
    let pid_file = opts.data_dir.join("postgres/postmaster.pid");
    let postmaster = std::fs::read_to_string(&pid_file)
        .expect("postmaster.pid")
        .lines()
        .next()
        .expect("pid line")
        .trim()
        .to_string();
    let killed = Command::new("kill")
        .args(["-9", &postmaster])
        .status()
        .expect("kill");
    assert!(killed.success());
    drop(server); // SIGKILL, and waits for it
    let t0 = Instant::now();
    let server = Server::start(opts);
    (server, t0.elapsed().as_secs_f64())
}

#[test]
fn kill_9_of_server_and_postmaster_then_an_immediate_restart_comes_up() {
    let data = TempDir::new("kill9");
    let opts = ServerOptions::embedded(data.path());
    let server = Server::start(&opts);
    let kept = server.create_run("kept", bench(1));

    // Only the server dies: its postmaster is found running and reused.
    drop(server);
    let t0 = Instant::now();
    let server = Server::start(&opts);
    eprintln!(
        "restart after kill -9 of the server alone: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(status(&server.run(kept)), "queued");

    // Both die, twice in a row (the second time over the first time's zombie, if unreaped).
    let mut server = server;
    for round in 1..=2 {
        let (restarted, secs) = kill_9_both_and_restart(server, &opts);
        eprintln!("restart after kill -9 of server and postmaster (round {round}): {secs:.2} s");
        assert_eq!(status(&restarted.run(kept)), "queued", "data survived");
        let written = restarted.create_run(&format!("after kill {round}"), bench(1));
        assert_eq!(status(&restarted.run(written)), "queued");
        server = restarted;
    }
    // A graceful stop takes the cluster down with the server.
    server.stop();
    assert!(
        !data.path().join("postgres/postmaster.pid").exists(),
        "postmaster.pid left after a graceful stop"
    );
}

#[test]
fn the_embedded_socket_is_closed_to_other_local_users() {
    assert_root();
    let data = TempDir::new("socket");
    let server = Server::start(&ServerOptions::embedded(data.path()));
    let socket = data.path().join("postgres-socket");
    let meta = std::fs::metadata(&socket).expect("socket dir");
    assert_eq!(meta.permissions().mode() & 0o777, 0o700, "socket dir mode");
    assert_eq!(
        meta.uid(),
        uid_of("postgres"),
        "socket dir owned by the cluster's user"
    );
    let pw_file = data.path().join("postgres-password");
    let pw_meta = std::fs::metadata(&pw_file).expect("password file");
    assert_eq!(pw_meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        pw_meta.uid(),
        nix_uid(),
        "password file owned by the server's user"
    );
    let password = std::fs::read_to_string(&pw_file).expect("password");

    let (ok, err) = psql_as(Some("nobody"), &socket, None);
    assert!(!ok, "nobody connected to the embedded cluster");
    assert!(err.contains("Permission denied"), "{err}");
    // Even the cluster's own OS user needs the password: no trust, no peer.
    let (ok, err) = psql_as(Some("postgres"), &socket, None);
    assert!(!ok, "passwordless connection accepted");
    assert!(err.contains("password"), "{err}");
    let (ok, err) = psql_as(Some("postgres"), &socket, Some("wrong"));
    assert!(
        !ok && err.contains("password authentication failed"),
        "{err}"
    );
    let (ok, err) = psql_as(None, &socket, Some(password.trim()));
    assert!(ok, "the password file's password works: {err}");
    server.stop();
}

#[test]
fn a_trusting_cluster_from_an_older_version_is_locked_at_start() {
    assert_root();
    let data = TempDir::new("trusting");
    let (pgdata, socket) = (
        data.path().join("postgres"),
        data.path().join("postgres-socket"),
    );
    std::fs::create_dir_all(&pgdata).expect("mkdir");
    std::fs::create_dir_all(&socket).expect("mkdir");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let chown = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(&pgdata)
        .status()
        .expect("chown");
    assert!(chown.success());
    // The cluster as older versions made it: trust auth, a world-writable socket folder, running.
    let as_postgres = |program: &str, args: &[&str]| {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin(program))
            .args(args)
            .current_dir("/")
            .output()
            .expect("run as postgres");
        assert!(
            out.status.success(),
            "{program}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let pgdata_s = pgdata.to_str().expect("utf-8");
    as_postgres(
        "initdb",
        &[
            "-D",
            pgdata_s,
            "-U",
            "postgres",
            "--auth=trust",
            "--no-instructions",
        ],
    );
    let opts = format!(
        "-c listen_addresses='' -c unix_socket_directories='{}'",
        socket.display()
    );
    let log = pgdata.join("server.log");
    as_postgres(
        "pg_ctl",
        &[
            "-D",
            pgdata_s,
            "-l",
            log.to_str().expect("utf-8"),
            "-o",
            &opts,
            "-w",
            "start",
        ],
    );
    let (ok, err) = psql_as(Some("nobody"), &socket, None);
    assert!(
        ok,
        "the old layout lets anyone in (what this test guards against): {err}"
    );

    let server = Server::start(&ServerOptions::embedded(data.path()));
    let (ok, _) = psql_as(Some("nobody"), &socket, None);
    assert!(
        !ok,
        "nobody still connects after the server took the cluster over"
    );
    let (ok, err) = psql_as(Some("postgres"), &socket, None);
    assert!(
        !ok && err.contains("password"),
        "trust auth survived: {err}"
    );
    let hba = std::fs::read_to_string(pgdata.join("pg_hba.conf")).expect("pg_hba.conf");
    let rules: Vec<&str> = hba
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(
        !rules.is_empty() && rules.iter().all(|r| r.ends_with("scram-sha-256")),
        "{rules:?}"
    );
    let password = std::fs::read_to_string(data.path().join("postgres-password")).expect("pw");
    let (ok, err) = psql_as(None, &socket, Some(password.trim()));
    assert!(ok, "{err}");
    // The server works on the converted cluster, and it survives a restart.
    let run = server.create_run("on the converted cluster", bench(1));
    server.stop();
    let server = Server::start(&ServerOptions::embedded(data.path()));
    assert_eq!(status(&server.run(run)), "queued");
    server.stop();
}
