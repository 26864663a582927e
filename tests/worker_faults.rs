//! The worker when things go wrong: an event the server refuses fails the run with the server's
//! reason; the token stays off the command line; dataset images that are truncated or too large
//! fail the run naming the file (under the server's own limits); a cancel is noticed between the
//! images of a proposals chunk and the finished ones are kept.

use aligndet_studio::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn finished(r: &Value) -> bool {
    matches!(
        r["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

fn error_of(r: &Value) -> String {
    r["error"].as_str().unwrap_or_default().to_string()
}

fn count(db: &TestDb, sql: &str) -> i64 {
    db.query(sql).parse().expect("a count")
}

#[test]
fn an_artifact_over_the_servers_limit_fails_the_run_with_the_servers_reason() {
    let db = TestDb::create();
    let data = TempDir::new("wf-artifact");
    let imports = TempDir::new("wf-artifact-imports");
    let (ann, images) = write_rect_dataset(imports.path(), 8, 96);
    let mut opts = ServerOptions::new(&db, data.path());
    opts.import_roots = vec![imports.path().to_path_buf()];
    // Every checkpoint and model of a detector is far over 1 MiB.
    let server = Server::start_with_args(&opts, &["--artifact-limit-mib", "1"]);
    let dataset = import_dataset(&server, "rects", &ann, &images);
    let run = server.create_run(
        "too-big",
        json!({
            "kind": "finetune", "dataset_id": dataset, "detector": "fcos", "backbone": "resnet18",
            "init": {"from": "scratch"}, "eval_every": 100, "eval_max_images": 2,
            "optim": {
                "steps": 2, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 100,
                "loader_threads": 1, "seed": 1
            },
            "augment": {"min_sizes": [64], "max_size": 64, "hflip": false, "color_jitter": 0.0}
        }),
    );
    let _w = Worker::start(&server, "w");
    let r = server.wait_run(run, Duration::from_secs(600), "finished", finished);
    assert_eq!(r["status"], "failed", "{r}");
    let error = error_of(&r);
    // The job spec carries the server's artifact limit: the worker refuses the artifact before
    // uploading it and the run fails with that reason.
    assert!(
        error.contains(".safetensors\" is ")
            && error.contains("over the server's artifact limit of 1048576 bytes"),
        "the error names the artifact and why: {error:?}"
    );
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM artifacts WHERE run_id = {run} AND bytes > 1048576")
        ),
        0
    );
    // The run page shows that error.
    let page = server
        .get(&format!("/runs/{run}"))
        .text()
        .expect("run page");
    assert!(
        page.contains("id=\"run-error\"") && page.contains("over the server&#39;s artifact limit"),
        "the run page shows the refusal"
    );
}

#[test]
fn the_worker_token_is_not_on_the_command_line_and_its_calls_are_accepted() {
    let db = TestDb::create();
    let data = TempDir::new("wf-token");
    let server = Server::start(&ServerOptions::new(&db, data.path()));
    let run = server.create_run(
        "bench",
        json!({"kind": "benchmark", "backbone": "resnet18", "batch_size": 1, "resolution": 64,
               "steps": 2, "warmup_steps": 0}),
    );
    let w = Worker::start(&server, "quiet");
    // Until exec is done, /proc shows the forked test's argv.
    let deadline = Instant::now() + Duration::from_secs(20);
    let cmdline = loop {
        let raw = std::fs::read(format!("/proc/{}/cmdline", w.child.id())).expect("cmdline");
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(" worker ") {
            break cmdline;
        }
        assert!(
            Instant::now() < deadline,
            "never the worker's argv: {cmdline}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        !cmdline.contains(&server.token),
        "the token is visible in ps: {cmdline}"
    );
    // Every call after registration carries the worker key: the run goes through.
    let r = server.wait_run(run, Duration::from_secs(120), "finished", finished);
    assert_eq!(r["status"], "succeeded", "{r}");
}

fn trainer_worker(args: &[&str], env_token: Option<&str>) -> Output {
    let mut cmd = Command::new(bin("trainer"));
    cmd.arg("worker")
        .args(args)
        .env_remove("ALIGNDET_WORKER_TOKEN");
    if let Some(t) = env_token {
        cmd.env("ALIGNDET_WORKER_TOKEN", t);
    }
    cmd.output().expect("run trainer worker")
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_worker_without_a_usable_token_says_why_and_the_argv_token_is_deprecated() {
    let dir = TempDir::new("wf-token-cli");
    // Nothing listens here; every case below must end before any network call.
    let nowhere = ["--server", "http://127.0.0.1:9"];

    let out = trainer_worker(&nowhere, None);
    let err = stderr_of(&out);
    assert!(!out.status.success());
    for way in ["--token-file", "ALIGNDET_WORKER_TOKEN", "--token"] {
        assert!(err.contains(way), "the error names {way}: {err}");
    }

    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, " \n").expect("write");
    let empty_arg = empty.to_string_lossy().into_owned();
    let out = trainer_worker(&[nowhere[0], nowhere[1], "--token-file", &empty_arg], None);
    let err = stderr_of(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(&empty_arg) && err.contains("empty"),
        "names the empty file: {err}"
    );

    let missing = dir
        .path()
        .join("no-such-token")
        .to_string_lossy()
        .into_owned();
    let out = trainer_worker(&[nowhere[0], nowhere[1], "--token-file", &missing], None);
    let err = stderr_of(&out);
    assert!(!out.status.success());
    assert!(err.contains(&missing), "names the missing file: {err}");

    let out = trainer_worker(&nowhere, Some(""));
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("ALIGNDET_WORKER_TOKEN is empty"));

    // The old option still works, with a warning; the environment variable works silently.
    let db = TestDb::create();
    let data = TempDir::new("wf-token-cli-server");
    let server = Server::start(&ServerOptions::new(&db, data.path()));
    let once = ["--server", &server.url, "--max-jobs", "0"];
    let out = trainer_worker(&[&once[..], &["--token", &server.token]].concat(), None);
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("deprecated") && err.contains("visible to every local user"),
        "{err}"
    );
    let out = trainer_worker(&once, Some(&server.token));
    let err = stderr_of(&out);
    assert!(out.status.success() && !err.contains("deprecated"), "{err}");
}

/// A dataset of `n` rectangle images imported into a fresh server started with `extra_args`.
struct Imported {
    db: TestDb,
    _data: TempDir,
    _imports: TempDir,
    server: Server,
    dataset: i64,
    images: PathBuf,
}

fn imported(tag: &str, n: u32, size: u32, extra_args: &[&str]) -> Imported {
    let db = TestDb::create();
    let data = TempDir::new(tag);
    let imports = TempDir::new(&format!("{tag}-imports"));
    let (ann, images) = write_rect_dataset(imports.path(), n, size);
    let mut opts = ServerOptions::new(&db, data.path());
    opts.import_roots = vec![imports.path().to_path_buf()];
    let server = Server::start_with_args(&opts, extra_args);
    let dataset = import_dataset(&server, "rects", &ann, &images);
    Imported {
        db,
        _data: data,
        _imports: imports,
        server,
        dataset,
        images,
    }
}

/// The file is replaced after the import (a dataset on shared storage can change under the
/// server) and before the first job hashes it: the worker must check what it opens itself. The
/// error names the file as the dataset does (the worker reads it from its own cache).
#[test]
fn a_proposals_run_on_a_truncated_image_fails_naming_it_and_keeps_the_finished_ones() {
    let t = imported("wf-trunc", 6, 96, &[]);
    let victim = t.images.join("r3.png");
    let bytes = std::fs::read(&victim).expect("read");
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).expect("truncate");
    let run = t.server.create_run(
        "trunc",
        json!({"kind": "proposals", "dataset_id": t.dataset, "strategy": "fast", "chunk_size": 2}),
    );
    let _w = Worker::start(&t.server, "w");
    let r = t
        .server
        .wait_run(run, Duration::from_secs(120), "finished", finished);
    assert_eq!(r["status"], "failed", "{r}");
    let error = error_of(&r);
    assert!(
        error.contains("/r3.png") && error.contains("does not decode"),
        "{error:?}"
    );
    // The chunk before r3's (r0 r1 | r2 r3 | r4 r5) was kept; r2 too when it finished first.
    let stored = count(
        &t.db,
        &format!("SELECT count(*) FROM proposal_images WHERE run_id = {run}"),
    );
    assert!((2..6).contains(&stored), "{stored} images stored");
}

#[test]
fn the_worker_applies_the_servers_image_limits() {
    let t = imported("wf-limits", 4, 96, &["--max-image-pixels", "10000"]);
    let victim = t.images.join("r1.png");
    image::RgbImage::from_pixel(200, 100, image::Rgb([9, 9, 9]))
        .save(&victim)
        .expect("save");
    let run = t.server.create_run(
        "limits",
        json!({"kind": "proposals", "dataset_id": t.dataset, "strategy": "fast"}),
    );
    let _w = Worker::start(&t.server, "w");
    let r = t
        .server
        .wait_run(run, Duration::from_secs(120), "finished", finished);
    assert_eq!(r["status"], "failed", "{r}");
    let error = error_of(&r);
    assert!(
        error.contains("/r1.png") && error.contains("20000 pixels, over the limit of 10000 pixels"),
        "{error:?}"
    );
}

/// Seeded noise: selective search takes a while on it.
fn write_noise_dataset(dir: &Path, n: u32, size: u32) -> (PathBuf, PathBuf) {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).expect("mkdir");
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut imgs = vec![];
    for i in 0..n {
        let img = image::RgbImage::from_fn(size, size, |_, _| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let [a, b, c, ..] = state.to_le_bytes();
            image::Rgb([a, b, c])
        });
        let name = format!("n{i}.png");
        img.save(images.join(&name)).expect("save");
        imgs.push(json!({"id": i + 1, "file_name": name, "width": size, "height": size}));
    }
    let ann = dir.join("annotations.json");
    let coco = json!({"images": imgs, "annotations": [], "categories": [{"id": 1, "name": "x"}]});
    std::fs::write(&ann, coco.to_string()).expect("write");
    (ann, images)
}

#[test]
fn a_cancel_is_noticed_between_the_images_of_a_chunk() {
    let db = TestDb::create();
    let data = TempDir::new("wf-cancel");
    let imports = TempDir::new("wf-cancel-imports");
    let n = 24;
    let (ann, images) = write_noise_dataset(imports.path(), n, 320);
    let mut opts = ServerOptions::new(&db, data.path());
    opts.import_roots = vec![imports.path().to_path_buf()];
    opts.heartbeat_seconds = 0.3;
    let server = Server::start(&opts);
    let dataset = import_dataset(&server, "noise", &ann, &images);
    // One chunk holds every image: before, a cancel waited for all of them.
    let run = server.create_run(
        "slow",
        json!({"kind": "proposals", "dataset_id": dataset, "strategy": "quality",
               "chunk_size": n}),
    );
    let _w = Worker::start(&server, "w");
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(
        &db,
        &format!(
            "SELECT count(*) FROM run_logs WHERE run_id = {run} AND text LIKE '% images (0 already done)%'"
        ),
    ) == 0
    {
        assert!(Instant::now() < deadline, "the job did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the first images get under way, then cancel.
    std::thread::sleep(Duration::from_millis(800));
    let r = server.api_post(&format!("runs/{run}/cancel"), &json!({}));
    assert!(r.status().is_success(), "{}", r.status());
    let r = server.wait_run(run, Duration::from_secs(120), "finished", finished);
    assert_eq!(r["status"], "cancelled", "{r}");
    let stored = count(
        &db,
        &format!("SELECT count(*) FROM proposal_images WHERE run_id = {run}"),
    );
    assert!(
        stored >= 1 && stored < i64::from(n),
        "the images finished before the cancel are kept, the rest were not started: {stored} of {n}"
    );
}

/// PNG bytes whose header claims `width`×`height` (the data stream is never reached).
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    out
}

/// `trainer run` on a local spec whose dataset has one bad image; returns the run's error.
fn local_proposals_error(dir: &Path, bad_name: &str, bad_bytes: &[u8]) -> String {
    let (ann, images) = write_rect_dataset(dir, 5, 96);
    // Point image 2 at the bad file.
    std::fs::write(images.join(bad_name), bad_bytes).expect("write bad image");
    let mut coco: Value =
        serde_json::from_slice(&std::fs::read(&ann).expect("read")).expect("coco json");
    coco["images"][1]["file_name"] = json!(bad_name);
    std::fs::write(&ann, coco.to_string()).expect("write");
    let spec = json!({
        "run_id": 1, "attempt": 1, "name": "local", "lease_seconds": 0.0,
        "config": {"kind": "proposals", "dataset_id": 1, "strategy": "fast", "chunk_size": 1},
        "dataset": {"dataset_id": 1, "name": "rects", "annotations_path": ann,
                    "image_root": images}
    });
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).expect("write spec");
    let out_dir = dir.join("out");
    let out = Command::new(bin("trainer"))
        .arg("run")
        .arg(&spec_path)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("trainer run");
    assert!(!out.status.success(), "the run must fail");
    let events = std::fs::read_to_string(out_dir.join("events.jsonl")).expect("events");
    let status: Value = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "status")
        .expect("a status event");
    assert_eq!(status["status"], "failed", "{status}");
    // The first image (chunk size 1) was finished and reported before the bad one.
    assert!(
        events
            .lines()
            .any(|l| l.contains("\"event\":\"proposals\"")),
        "the image before the bad one was reported"
    );
    let error = status["error"].as_str().unwrap_or_default().to_string();
    let path = images.join(bad_name).display().to_string();
    assert!(error.contains(&path), "the error names {path}: {error:?}");
    error
}

#[test]
fn trainer_run_refuses_a_decompression_bomb_and_a_truncated_jpeg_naming_them() {
    let dir = TempDir::new("wf-local-bomb");
    let error = local_proposals_error(dir.path(), "bomb.png", &png_header_only(20000, 20000));
    assert!(
        error.contains("20000×20000 = 400000000 pixels, over the limit"),
        "{error:?}"
    );

    let dir = TempDir::new("wf-local-jpeg");
    let mut jpeg = Vec::new();
    image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, 90])
    })
    .write_to(
        &mut std::io::Cursor::new(&mut jpeg),
        image::ImageFormat::Jpeg,
    )
    .expect("encode jpeg");
    jpeg.truncate(jpeg.len() / 2);
    let error = local_proposals_error(dir.path(), "cut.jpg", &jpeg);
    assert!(error.contains("does not decode"), "{error:?}");
}
