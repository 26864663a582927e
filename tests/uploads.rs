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

    /// A piece whose connection dies after `sent` of its `declared` bytes (a flaky link).
    fn cut_piece(&self, offset: u64, declared: usize, sent: &[u8]) {
        let s = self.worker.server;
        let host = s.url.trim_start_matches("http://");
        let mut tcp = std::net::TcpStream::connect(host).expect("connect");
        write!(
            tcp,
            "PUT /api/v1/runs/{}/artifacts/model.bin?{}&offset={offset} HTTP/1.1\r\nHost: {host}\r\n\
             Authorization: Bearer {}\r\n{}: {}\r\nContent-Length: {declared}\r\n\r\n",
            self.run,
            self.query(),
            s.token,
            aligndet_common::api::WORKER_KEY_HEADER,
            self.worker.key
        )
        .expect("headers");
        tcp.write_all(sent).expect("part of the body");
        tcp.flush().expect("flush");
        // Give the server the bytes before the link drops.
        std::thread::sleep(std::time::Duration::from_millis(300));
        tcp.shutdown(std::net::Shutdown::Both).expect("cut");
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest);
    }
}

#[test]
fn a_cut_upload_resumes_where_it_stopped_and_is_stored_only_when_its_hash_matches() {
    let db = TestDb::create();
    let data = TempDir::new("uploads");
    let server = Server::start(&ServerOptions::new(&db, data.path()));
    let run = server.create_run(
        "up",
        json!({"kind": "benchmark", "backbone": "resnet18", "resolution": 64, "steps": 1}),
    );
    let worker = ApiWorker::register(&server, "uploader");
    let spec = worker.claim().expect("a job");
    let attempt = spec["attempt"].as_i64().expect("attempt");
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
