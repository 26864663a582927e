//! Import attacks: each case was reproduced against a fresh instance and is replayed here against
//! a real server, Postgres and real image and zip files. Every case must be refused with the
//! problem named, with nothing stored in the database and nothing left in the data dir. The test
//! prints its tally (`import attacks: tried N, handled N`).

use aligndet_studio::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Small, so the zip bomb and the declared-length cases need little traffic.
const UPLOAD_LIMIT_MIB: u64 = 2;
/// Below the default, to show the import applies the server's configured limit.
const MAX_IMAGE_PIXELS: u64 = 50_000_000;

struct Ctx {
    db: TestDb,
    data: TempDir,
    imports: TempDir,
    outside: TempDir,
    server: Server,
}

type Outcome = Result<(), String>;
type Case = (&'static str, fn(&Ctx) -> Outcome);

/// Every file and folder under `dir`, relative, sorted; the server's empty `datasets/` and
/// `uploads/` containers are not leftovers.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.push(
                path.strip_prefix(dir)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            );
        }
    }
    out.retain(|f| f != "datasets" && f != "uploads");
    out.sort();
    out
}

impl Ctx {
    /// What a failed import must not change: dataset rows and the data dir's files.
    fn snapshot(&self) -> (String, Vec<String>) {
        let rows = self.db.query(
            "SELECT (SELECT count(*) FROM datasets) || '/' || (SELECT count(*) FROM images) || '/' \
             || (SELECT count(*) FROM annotations) || '/' || (SELECT count(*) FROM categories)",
        );
        (rows, files_under(self.data.path()))
    }

    /// Runs `attack`, which answers (status, page); it must be refused with 422 (or `status`),
    /// name every one of `needles`, show no database text and change nothing.
    fn refused(
        &self,
        status: u16,
        needles: &[&str],
        attack: impl FnOnce() -> (u16, String),
    ) -> Outcome {
        let before = self.snapshot();
        let (got, body) = attack();
        let body = unescape(&body);
        if got != status {
            return Err(format!("answered {got}, not {status}: {}", excerpt(&body)));
        }
        for needle in needles {
            if !body.contains(needle) {
                return Err(format!(
                    "the answer does not name {needle:?}: {}",
                    excerpt(&body)
                ));
            }
        }
        no_database_text(&body)?;
        let after = self.snapshot();
        if after.0 != before.0 {
            return Err(format!("rows changed: {} -> {}", before.0, after.0));
        }
        if after.1 != before.1 {
            return Err(format!("files left: {:?} -> {:?}", before.1, after.1));
        }
        Ok(())
    }

    fn import_coco(&self, name: &str, ann: &Path, images: &Path) -> (u16, String) {
        let ui = self.server.browser_session();
        answer(ui.post_form(
            "/datasets/import",
            &[
                ("name", name),
                ("format", "coco"),
                ("annotations", &ann.display().to_string()),
                ("images", &images.display().to_string()),
            ],
        ))
    }

    fn upload(&self, name: &str, zip: Vec<u8>) -> (u16, String) {
        answer(
            self.server
                .browser_session()
                .upload_zip(name, "set.zip", zip),
        )
    }
}

fn answer(r: reqwest::blocking::Response) -> (u16, String) {
    let status = r.status().as_u16();
    (status, r.text().unwrap_or_default())
}

/// The error box of a datasets page, or the start of any other answer.
fn excerpt(body: &str) -> String {
    let start = body.find("import-error").unwrap_or(0);
    body[start..].chars().take(700).collect()
}

/// Page text as a person reads it (the templates escape quotes and angle brackets).
fn unescape(html: &str) -> String {
    html.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#60;", "<")
        .replace("&lt;", "<")
        .replace("&#62;", ">")
        .replace("&gt;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// The message of a datasets page's error box.
fn error_message(page: &str) -> String {
    let from = page.find("import-error").unwrap_or(0);
    let rest = &page[from..];
    let start = rest.find("<strong>").map_or(0, |i| i + "<strong>".len());
    let end = rest.find("</strong>").unwrap_or(rest.len());
    rest[start.min(end)..end].to_string()
}

fn no_database_text(body: &str) -> Outcome {
    for leak in [
        "duplicate key",
        "violates",
        "constraint",
        "SQLSTATE",
        "datasets_name_key",
    ] {
        if body.contains(leak) {
            return Err(format!("database text {leak:?} reached the page"));
        }
    }
    Ok(())
}

/// A valid small COCO dataset under `root/tag`, with `edit` applied to its JSON.
fn coco_case(root: &Path, tag: &str, edit: impl FnOnce(&mut Value, &Path)) -> (PathBuf, PathBuf) {
    let dir = root.join(tag);
    let (ann, images) = write_small_coco(&dir, 3);
    let mut v: Value = serde_json::from_slice(&std::fs::read(&ann).expect("read")).expect("json");
    edit(&mut v, &images);
    std::fs::write(&ann, serde_json::to_vec(&v).expect("json")).expect("write");
    (ann, images)
}

/// A 64×48 JPEG of noise (so its scan data is most of the file) cut to 40% of its bytes.
fn write_truncated_jpeg(path: &Path) {
    image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([
            (x * 37 % 256) as u8,
            (y * 91 % 256) as u8,
            ((x ^ y) * 7 % 256) as u8,
        ])
    })
    .save(path)
    .expect("save jpeg");
    let bytes = std::fs::read(path).expect("read jpeg");
    std::fs::write(path, &bytes[..bytes.len() * 2 / 5]).expect("cut jpeg");
}

fn truncated_jpeg(c: &Ctx) -> Outcome {
    let swap_in_cut_jpeg = |v: &mut Value, images: &Path| {
        write_truncated_jpeg(&images.join("cut.jpg"));
        v["images"][1]["file_name"] = "cut.jpg".into();
    };
    let (ann, images) = coco_case(c.imports.path(), "truncated", swap_in_cut_jpeg);
    c.refused(422, &["cut.jpg", "truncated"], || {
        c.import_coco("cut", &ann, &images)
    })?;
    // The same dataset as an upload.
    let zip = zip_dir(ann.parent().expect("folder"));
    c.refused(422, &["cut.jpg", "truncated"], || {
        c.upload("cut upload", zip)
    })
}

fn png_bomb(c: &Ctx) -> Outcome {
    let (ann, images) = coco_case(c.imports.path(), "bomb", |v, images| {
        // A real 20000×20000 PNG: all one grey, it compresses to a few hundred KB. The zeroed
        // buffer is never written, so it costs no memory until the encoder reads it.
        let pixels = vec![0u8; 20_000 * 20_000];
        let file = std::fs::File::create(images.join("bomb.png")).expect("create");
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(std::io::BufWriter::new(file)),
            &pixels,
            20_000,
            20_000,
            image::ExtendedColorType::L8,
        )
        .expect("encode png");
        v["images"][0]["file_name"] = "bomb.png".into();
        v["images"][0]["width"] = 20_000.into();
        v["images"][0]["height"] = 20_000.into();
    });
    let size = std::fs::metadata(images.join("bomb.png"))
        .map(|m| m.len())
        .unwrap_or(0);
    if size > 2 << 20 {
        return Err(format!("the bomb is {size} bytes: not a bomb"));
    }
    let limit = MAX_IMAGE_PIXELS.to_string();
    c.refused(422, &["bomb.png", "400000000 pixels", &limit], || {
        c.import_coco("bomb", &ann, &images)
    })
}

/// A dataset zip with one more entry: `size` zero bytes, which deflate to almost nothing.
fn zip_with_padding(dataset: &Path, size: usize) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = zip::read::ZipArchive::new(std::io::Cursor::new(zip_dir(dataset))).expect("zip");
    zip.merge_archive(stored).expect("merge");
    zip.start_file(
        "images/padding.bin",
        zip::write::SimpleFileOptions::default(),
    )
    .expect("entry");
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..size / chunk.len() {
        zip.write_all(&chunk).expect("write");
    }
    zip.finish().expect("finish").into_inner()
}

/// Overwrites the uncompressed size recorded for `name` in its local and central headers.
fn lie_about_size(zip: &mut [u8], name: &str, claimed: u32) -> Outcome {
    let mut patched = 0;
    for i in 0..zip.len().saturating_sub(46) {
        // Local file header: size at 22, name at 30; central directory header: 24 and 46.
        let (size_at, name_at) = match &zip[i..i + 4] {
            [0x50, 0x4b, 0x03, 0x04] => (22, 30),
            [0x50, 0x4b, 0x01, 0x02] => (24, 46),
            _ => continue,
        };
        if zip[i + name_at..].starts_with(name.as_bytes()) {
            zip[i + size_at..i + size_at + 4].copy_from_slice(&claimed.to_le_bytes());
            patched += 1;
        }
    }
    if patched == 2 {
        Ok(())
    } else {
        Err(format!("patched {patched} headers of {name}, not 2"))
    }
}

fn zip_bomb(c: &Ctx) -> Outcome {
    let dir = c.imports.path().join("zip-bomb");
    write_small_coco(&dir, 2);
    let honest = zip_with_padding(&dir, 256 << 20);
    if honest.len() > 1 << 20 {
        return Err(format!("the zip is {} bytes: not a bomb", honest.len()));
    }
    let cap = format!("more than {UPLOAD_LIMIT_MIB} MiB");
    c.refused(422, &[&cap], || c.upload("zip bomb", honest.clone()))?;
    // The same bomb declaring 1 KB: only the bytes actually unpacked can tell.
    let mut lying = honest;
    lie_about_size(&mut lying, "images/padding.bin", 1000)?;
    c.refused(422, &[&cap], || c.upload("lying zip bomb", lying))
}

fn negative_area(c: &Ctx) -> Outcome {
    let (ann, images) = coco_case(c.imports.path(), "negative-area", |v, _| {
        v["annotations"][1]["area"] = (-5).into();
    });
    c.refused(422, &["annotation id 2", "area -5"], || {
        c.import_coco("negative area", &ann, &images)
    })
}

fn zero_images(c: &Ctx) -> Outcome {
    let (ann, images) = coco_case(c.imports.path(), "zero-images", |v, _| {
        v["images"] = Value::Array(vec![]);
        v["annotations"] = Value::Array(vec![]);
    });
    c.refused(422, &["\"images\" is empty", "at least one image"], || {
        c.import_coco("no images", &ann, &images)
    })
}

fn bidi_name(c: &Ctx) -> Outcome {
    let (ann, images) = coco_case(c.imports.path(), "bidi", |_, _| {});
    c.refused(422, &["U+202E"], || {
        c.import_coco("invoice\u{202E}gpj.exe", &ann, &images)
    })?;
    let zip = zip_dir(ann.parent().expect("folder"));
    c.refused(422, &["U+202E"], || c.upload("invoice\u{202E}gpj.exe", zip))
}

/// An existing file and a missing one outside the import roots get the same answer.
fn existence_oracle(c: &Ctx) -> Outcome {
    let secret = c.outside.path().join("secret.json");
    std::fs::write(&secret, b"{}").map_err(|e| e.to_string())?;
    let missing = c.outside.path().join("nope.json");
    let images = c.outside.path().to_path_buf();
    let roots = c.imports.path().display().to_string();
    let mut answers = Vec::new();
    for path in [
        &secret,
        &missing,
        Path::new("/etc/passwd"),
        Path::new("/etc/no-such-file"),
    ] {
        let shown = format!("{:?}", path.display().to_string());
        let mut page = String::new();
        c.refused(422, &["not allowed or not there", &roots], || {
            let (status, body) = c.import_coco("oracle", path, &images);
            page = unescape(&body);
            (status, body)
        })?;
        // The message names the path the user typed; the rest must be the same.
        answers.push(error_message(&page).replace(&shown, "PATH"));
    }
    if answers[0] != answers[1] || answers[2] != answers[3] {
        return Err(format!(
            "existing and missing files are told apart: {answers:#?}"
        ));
    }
    Ok(())
}

/// A request declaring 5 GB is answered 413 from its headers: no body byte is sent.
fn declared_oversize(c: &Ctx) -> Outcome {
    let ui = c.server.browser_session();
    let authority = c.server.url.trim_start_matches("http://").to_string();
    for path in ["/datasets/upload", "/runs/evaluate"] {
        let before = c.snapshot();
        let started = Instant::now();
        let mut stream =
            std::net::TcpStream::connect(&authority).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let request = format!(
            "POST {path}?csrf_token={} HTTP/1.1\r\nHost: {authority}\r\nOrigin: {}\r\nCookie: {}\r\n\
             Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 5000000000\r\n\r\n",
            ui.token, c.server.url, ui.cookie
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("send headers: {e}"))?;
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        let reply = String::from_utf8_lossy(&reply);
        let elapsed = started.elapsed();
        if !reply.starts_with("HTTP/1.1 413") {
            return Err(format!("{path}: answered {:?}", excerpt(&reply)));
        }
        let limit = format!("limit of {UPLOAD_LIMIT_MIB} MiB");
        if !reply.contains(&limit) {
            return Err(format!("{path}: the answer does not name the {limit}"));
        }
        if elapsed > Duration::from_secs(5) {
            return Err(format!("{path}: answered after {elapsed:?}"));
        }
        if c.snapshot() != before {
            return Err(format!("{path}: something was stored"));
        }
    }
    Ok(())
}

/// Six uploads of one name at once: one dataset, five "already exists", no leftovers.
fn concurrent_same_name(c: &Ctx) -> Outcome {
    let src = TempDir::new("same-name");
    write_small_coco(src.path(), 12);
    let zip = zip_dir(src.path());
    let before = c.snapshot();
    let answers: Vec<(u16, String, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let zip = zip.clone();
                scope.spawn(move || {
                    let ui = c.server.browser_session();
                    match ui.try_upload_zip("same name", "same.zip", zip) {
                        Ok(r) => {
                            let path = r.url().path().to_string();
                            let (status, body) = answer(r);
                            (status, path, body)
                        }
                        Err(e) => (0, String::new(), e.to_string()),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((0, String::new(), "panicked".into())))
            .collect()
    });
    let succeeded = answers
        .iter()
        .filter(|(status, path, _)| *status == 200 && path.starts_with("/datasets/"))
        .count();
    let refused: Vec<&String> = answers
        .iter()
        .filter(|(status, _, _)| *status == 422)
        .map(|(_, _, body)| body)
        .collect();
    if succeeded != 1 || refused.len() != 5 {
        let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
        return Err(format!("answers {statuses:?}"));
    }
    for body in &refused {
        no_database_text(body)?;
        if !unescape(body).contains("a dataset named \"same name\" already exists") {
            return Err(format!(
                "refused without naming the name: {}",
                excerpt(body)
            ));
        }
    }
    if c.db
        .query("SELECT count(*) FROM datasets WHERE name = 'same name'")
        != "1"
        || c.db
            .query("SELECT num_images FROM datasets WHERE name = 'same name'")
            != "12"
    {
        return Err("not exactly one dataset of 12 images stored".into());
    }
    // Exactly the winner's files are new: its unpacked upload and its annotations folder.
    let after = files_under(c.data.path());
    let new: Vec<&String> = after.iter().filter(|f| !before.1.contains(f)).collect();
    let top: Vec<&String> = new
        .iter()
        .copied()
        .filter(|f| f.matches('/').count() == 1)
        .collect();
    let uploads = top
        .iter()
        .filter(|f| f.starts_with("datasets/upload-"))
        .count();
    let annotations = top
        .iter()
        .filter(|f| f.starts_with("datasets/ann-"))
        .count();
    if top.len() != 2 || uploads != 1 || annotations != 1 {
        return Err(format!("files left by the failed imports: {top:?}"));
    }
    if !list_dir(&c.data.path().join("uploads")).is_empty() {
        return Err("uploaded zips left behind".into());
    }
    Ok(())
}

#[test]
fn import_attacks_are_refused_and_leave_nothing() {
    let db = TestDb::create();
    let data = TempDir::new("import-attacks");
    let imports = TempDir::new("import-attacks-roots");
    let outside = TempDir::new("import-attacks-outside");
    let mut opts = ServerOptions::new(&db, data.path());
    opts.import_roots = vec![imports.path().to_path_buf()];
    opts.upload_limit_mib = UPLOAD_LIMIT_MIB;
    let pixels = MAX_IMAGE_PIXELS.to_string();
    let server = Server::start_with_args(&opts, &["--max-image-pixels", &pixels]);
    let c = Ctx {
        db,
        data,
        imports,
        outside,
        server,
    };
    // A valid import first: the cases below must fail for their attack, not for the setup.
    let (ann, images) = coco_case(c.imports.path(), "valid", |_, _| {});
    let (status, body) = c.import_coco("valid", &ann, &images);
    assert!(
        status == 200,
        "the valid dataset failed: {status} {}",
        excerpt(&body)
    );

    let cases: &[Case] = &[
        ("truncated JPEG", truncated_jpeg),
        ("20000×20000 PNG bomb", png_bomb),
        ("zip bomb (honest and lying sizes)", zip_bomb),
        ("negative area", negative_area),
        ("zero images", zero_images),
        ("U+202E in the name", bidi_name),
        ("file-existence oracle", existence_oracle),
        ("declared 5 GB Content-Length", declared_oversize),
        ("six concurrent uploads of one name", concurrent_same_name),
    ];
    let mut failures = Vec::new();
    for (name, case) in cases {
        let started = Instant::now();
        match case(&c) {
            Ok(()) => println!("handled: {name} ({:.1} s)", started.elapsed().as_secs_f64()),
            Err(why) => {
                println!("NOT handled: {name}: {why}");
                failures.push(format!("{name}: {why}"));
            }
        }
    }
    println!(
        "import attacks: tried {}, handled {}",
        cases.len(),
        cases.len() - failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
