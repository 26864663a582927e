//! Resumable artifact uploads over a link that breaks: the server keeps what arrived of a cut
//! piece, the worker continues from there, and the artifact appears only when the whole file
//! hashes to what was declared. A wrong piece or wrong content is refused by name, and nothing
//! half-written is ever listed or served.

use aligndet_common::content::Blob;
use aligndet_studio::*;
use serde_json::{Value, json};
use std::io::{Read, Write};

struct Upload<'a> {
    worker: &'a ApiWorker<'a>,
    run: i64,
    attempt: i64,
    blob: Blob,
}

impl Upload<'_> {
    fn query(&self) -> String {
        format!(
            "attempt={}&sha256={}&bytes={}",
            self.attempt, self.blob.sha256, self.blob.bytes
        )
    }

    fn held(&self) -> Value {
        let s = self.worker.server;
        let r = s
            .http
            .get(format!(
                "{}/api/v1/runs/{}/uploads/model.bin?{}",
                s.url,
                self.run,
                self.query()
            ))
            .bearer_auth(&s.token)
            .header(aligndet_common::api::WORKER_KEY_HEADER, &self.worker.key)
            .send()
            .expect("ask");
        assert!(r.status().is_success(), "{}", r.status());
        r.json().expect("json")
    }

    fn piece(&self, offset: u64, bytes: &[u8]) -> reqwest::blocking::Response {
        let s = self.worker.server;
        s.http
            .put(format!(
                "{}/api/v1/runs/{}/artifacts/model.bin?{}&offset={offset}",
                s.url,
                self.run,
                self.query()
            ))
            .bearer_auth(&s.token)
            .header(aligndet_common::api::WORKER_KEY_HEADER, &self.worker.key)
            .body(bytes.to_vec())
            .send()
            .expect("piece")
    }

    /// A piece of `declared` bytes sent by hand, its headers written: the caller sends the body.
    fn open_piece(&self, offset: u64, declared: usize) -> std::net::TcpStream {
        self.open_put(&format!("{}&offset={offset}", self.query()), declared)
    }

    /// The whole artifact in one body (no declared hash), sent by hand like `open_piece`.
    fn open_whole(&self, declared: usize) -> std::net::TcpStream {
        self.open_put(&format!("attempt={}", self.attempt), declared)
    }

    fn open_put(&self, query: &str, declared: usize) -> std::net::TcpStream {
        let s = self.worker.server;
        let host = s.url.trim_start_matches("http://");
        let mut tcp = std::net::TcpStream::connect(host).expect("connect");
        write!(
            tcp,
            "PUT /api/v1/runs/{}/artifacts/model.bin?{query} HTTP/1.1\r\nHost: {host}\r\n\
             Authorization: Bearer {}\r\n{}: {}\r\nContent-Length: {declared}\r\n\
             Connection: close\r\n\r\n",
            self.run,
            s.token,
            aligndet_common::api::WORKER_KEY_HEADER,
            self.worker.key
        )
        .expect("headers");
        tcp
    }

    /// A piece whose connection dies after `sent` of its `declared` bytes (a flaky link).
    fn cut_piece(&self, offset: u64, declared: usize, sent: &[u8]) {
        let mut tcp = self.open_piece(offset, declared);
        tcp.write_all(sent).expect("part of the body");
        tcp.flush().expect("flush");
        // Give the server the bytes before the link drops.
        std::thread::sleep(std::time::Duration::from_millis(300));
        tcp.shutdown(std::net::Shutdown::Both).expect("cut");
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest);
    }
}

/// A database, a data folder and a server on them (bound in this order, so the server stops
/// first).
fn start(tag: &str, lease_seconds: f64) -> (TestDb, TempDir, Server) {
    let db = TestDb::create();
    let data = TempDir::new(tag);
    let mut opts = ServerOptions::new(&db, data.path());
    opts.lease_seconds = lease_seconds;
    let server = Server::start(&opts);
    (db, data, server)
}

/// A benchmark run claimed by a new worker: (run id, the worker, the attempt it holds).
fn claimed_run<'a>(server: &'a Server, worker: &str) -> (i64, ApiWorker<'a>, i64) {
    let run = server.create_run(
        "up",
        json!({"kind": "benchmark", "backbone": "resnet18", "resolution": 64, "steps": 1}),
    );
    let (worker, attempt) = claim(server, worker);
    (run, worker, attempt)
}

/// The queued run claimed by a new worker: the worker and the attempt it holds.
fn claim<'a>(server: &'a Server, worker: &str) -> (ApiWorker<'a>, i64) {
    let worker = ApiWorker::register(server, worker);
    let spec = worker.claim().expect("a job");
    let attempt = spec["attempt"].as_i64().expect("attempt");
    (worker, attempt)
}

#[test]
fn a_cut_upload_resumes_where_it_stopped_and_is_stored_only_when_its_hash_matches() {
    let (db, data, server) = start("uploads", 30.0);
    let (run, worker, attempt) = claimed_run(&server, "uploader");
    let model: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let up = Upload {
        worker: &worker,
        run,
        attempt,
        blob: Blob::of_bytes(&model),
    };
    assert_eq!(up.held(), json!({"received": 0, "complete": false}));

    // The first piece's link dies after 1 MB of 2 MB: what arrived is kept.
    up.cut_piece(0, 2_000_000, &model[..1_000_000]);
    assert_eq!(up.held(), json!({"received": 1_000_000, "complete": false}));
    let listed = || {
        db.query(&format!(
            "SELECT count(*) FROM artifacts WHERE run_id = {run}"
        ))
    };
    assert_eq!(listed(), "0", "a partial upload is not an artifact");

    // A piece at the wrong offset is refused, saying what the server holds.
    let r = up.piece(0, &model[..10]);
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("the server holds 1000000 bytes"));

    // The rest, from where it stopped, completes it.
    let r = up.piece(1_000_000, &model[1_000_000..]);
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(up.held()["complete"], true);
    let stored = std::fs::read(data.path().join(format!("artifacts/{run}/model.bin")))
        .expect("stored artifact");
    assert_eq!(stored, model);
    assert_eq!(
        db.query(&format!(
            "SELECT sha256 FROM artifacts WHERE run_id = {run} AND name = 'model.bin'"
        )),
        up.blob.sha256
    );

    // Content that does not hash to the declared sha256 is refused and discarded.
    let mut wrong = model.clone();
    wrong[5] ^= 1;
    let liar = Upload {
        blob: Blob {
            sha256: Blob::of_bytes(b"something else").sha256,
            bytes: model.len() as u64,
        },
        ..up
    };
    let r = liar.piece(0, &wrong);
    assert_eq!(r.status(), 422);
    assert!(r.text().unwrap().contains("not the declared"));
    assert_eq!(liar.held()["received"], 0, "the bad upload was discarded");

    // Bigger than declared, or than the server's limit: refused before storing anything.
    let small = Upload {
        blob: Blob {
            sha256: up.blob.sha256.clone(),
            bytes: 5,
        },
        ..up
    };
    let r = small.piece(0, &[0u8; 10]);
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("more than the 5 bytes left"));
    let huge = Upload {
        blob: Blob {
            sha256: up.blob.sha256.clone(),
            bytes: 1 << 40,
        },
        ..liar
    };
    let r = huge.piece(0, b"x");
    assert_eq!(r.status(), 413);

    // Once the attempt reports its end, the pieces it left are removed.
    let unfinished = Blob::of_bytes(&wrong);
    let left = Upload {
        blob: unfinished,
        ..huge
    };
    left.cut_piece(0, wrong.len(), &wrong[..500_000]);
    let r = worker.post(
        &format!("runs/{run}/status"),
        &json!({"attempt": attempt, "status": "succeeded"}),
    );
    assert!(r.status().is_success());
    assert_eq!(
        list_dir(&data.path().join(format!("artifacts/{run}"))),
        vec!["model.bin".to_string()]
    );
}

/// A large upload can still be arriving when its attempt ends (a worker killed by `scancel` or
/// lost after sending its last checkpoint): the run is re-queued and claimed again with the
/// checkpoint it had. The late upload must not replace that file under the next attempt.
#[test]
fn an_upload_that_outlives_its_attempt_is_not_stored() {
    let (db, data, server) = start("uploads-late", 2.0);
    let (run, worker, attempt) = claimed_run(&server, "lost");
    let model: Vec<u8> = (0..1_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let up = Upload {
        worker: &worker,
        run,
        attempt,
        blob: Blob::of_bytes(&model),
    };
    let stored = || {
        db.query(&format!(
            "SELECT count(*) FROM artifacts WHERE run_id = {run}"
        ))
    };
    let dir = data.path().join(format!("artifacts/{run}"));
    let answer_to = |mut tcp: std::net::TcpStream, rest: &[u8]| {
        tcp.write_all(rest).expect("the rest");
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).expect("answer");
        answer
    };

    // One body: it starts while attempt 1 is current, the worker stops heartbeating, its lease
    // expires, and attempt 2 is claimed before the rest of the body arrives.
    let mut tcp = up.open_whole(model.len());
    tcp.write_all(&model[..400_000]).expect("first part");
    server.wait_run(run, std::time::Duration::from_secs(30), "re-queued", |r| {
        r["status"] == "queued"
    });
    let (next, next_attempt) = claim(&server, "next");
    assert_eq!(next_attempt, attempt + 1);
    let answer = answer_to(tcp, &model[400_000..]);
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    assert!(answer.contains("attempt"), "{answer}");
    assert_eq!(stored(), "0");
    assert!(list_dir(&dir).is_empty(), "{:?}", list_dir(&dir));

    // In pieces: attempt 2 ends while its piece arrives (it reports a retryable failure, unless
    // its own short lease ran out first: either way the piece is refused).
    let up = Upload {
        worker: &next,
        attempt: next_attempt,
        ..up
    };
    let mut tcp = up.open_piece(0, model.len());
    tcp.write_all(&model[..400_000]).expect("first part");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = next.post(
        &format!("runs/{run}/status"),
        &json!({"attempt": next_attempt, "status": "failed", "error": "rank died", "retryable": true}),
    );
    assert!(
        r.status().is_success() || r.status() == 409,
        "{}",
        r.status()
    );
    assert_ne!(server.run(run)["status"], "running");
    let answer = answer_to(tcp, &model[400_000..]);
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    assert_eq!(stored(), "0");
    assert!(list_dir(&dir).is_empty(), "{:?}", list_dir(&dir));
}
