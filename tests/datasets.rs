//! Dataset import through the UI: server paths and zip uploads, success and every kind of bad
//! input, with nothing stored (rows or files) when an import fails.

use aligndet_studio::*;
use serde_json::{Value, json};
use std::path::Path;

struct Fixture {
    db: TestDb,
    data: TempDir,
    imports: TempDir,
    server: Server,
}

fn fixture(upload_limit_mib: u64) -> Fixture {
    let db = TestDb::create();
    let data = TempDir::new("ds-data");
    let imports = TempDir::new("ds-imports");
    let mut opts = ServerOptions::new(&db, data.path());
    opts.import_roots = vec![imports.path().to_path_buf()];
    opts.upload_limit_mib = upload_limit_mib;
    let server = Server::start(&opts);
    Fixture {
        db,
        data,
        imports,
        server,
    }
}

impl Fixture {
    fn dataset_count(&self) -> String {
        self.db.query("SELECT count(*) FROM datasets")
    }
    fn row_counts(&self) -> String {
        self.db.query("SELECT (SELECT count(*) FROM images) + (SELECT count(*) FROM annotations) + (SELECT count(*) FROM categories)")
    }
    /// Nothing half-written: no dataset folders, no upload leftovers.
    fn stored_files(&self) -> Vec<String> {
        let mut v = list_dir(&self.data.path().join("datasets"));
        v.extend(list_dir(&self.data.path().join("uploads")));
        v
    }
    fn import(&self, name: &str, ann: &Path, images: &Path) -> (u16, String) {
        let ui = self.server.browser_session();
        let r = ui.post_form(
            "/datasets/import",
            &[
                ("name", name),
                ("format", "coco"),
                ("annotations", &ann.display().to_string()),
                ("images", &images.display().to_string()),
            ],
        );
        (r.status().as_u16(), r.text().unwrap())
    }
}

/// Write a COCO dataset folder from a JSON value plus the small valid images.
fn coco_case(
    root: &Path,
    tag: &str,
    edit: impl FnOnce(&mut Value, &Path),
) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = root.join(tag);
    let (ann, images) = write_small_coco(&dir, 3);
    let mut v: Value = serde_json::from_slice(&std::fs::read(&ann).unwrap()).unwrap();
    edit(&mut v, &images);
    std::fs::write(&ann, serde_json::to_vec(&v).unwrap()).unwrap();
    (ann, images)
}

#[test]
fn a_valid_coco_dataset_imports_and_its_page_draws_boxes() {
    let f = fixture(64);
    let (ann, images) = write_small_coco(f.imports.path(), 5);
    let (status, body) = f.import("five boxes", &ann, &images);
    assert!(status == 200 || status == 303, "{status}: {body}");
    assert_eq!(f.dataset_count(), "1");
    assert_eq!(
        f.db.query("SELECT num_images || '/' || num_annotations FROM datasets"),
        "5/5"
    );
    let id = f.db.query("SELECT id FROM datasets");
    let page = f.server.get(&format!("/datasets/{id}")).text().unwrap();
    assert_eq!(page.matches("<rect class=\"box").count(), 5);
    assert!(
        page.contains("&#60;b&#62;bold&#60;/b&#62; &#38; co"),
        "category names escaped"
    );
    assert!(!page.contains("<b>bold</b>"));
    let img = f.server.get(&format!("/datasets/{id}/images/1"));
    assert_eq!(img.headers()["content-type"], "image/png");
    let hist = f
        .server
        .get(&format!("/datasets/{id}/histogram.svg"))
        .text()
        .unwrap();
    assert!(hist.contains("<svg"));
    // The same name twice is refused.
    let (status, body) = f.import("five boxes", &ann, &images);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("already exists"));
}

#[test]
fn every_kind_of_bad_coco_input_is_refused_and_nothing_is_stored() {
    let f = fixture(64);
    let root = f.imports.path();
    type Edit = Box<dyn FnOnce(&mut Value, &Path)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "unknown-image",
            Box::new(|v, _| v["annotations"][0]["image_id"] = json!(999)),
            "999",
        ),
        (
            "unknown-category",
            Box::new(|v, _| v["annotations"][1]["category_id"] = json!(42)),
            "42",
        ),
        (
            "missing-file",
            Box::new(|v, _| v["images"][2]["file_name"] = json!("missing.png")),
            "missing.png",
        ),
        (
            "unreadable-file",
            Box::new(|_, images| std::fs::write(images.join("img_1.png"), b"not a png").unwrap()),
            "img_1.png",
        ),
        (
            "box-outside",
            Box::new(|v, _| v["annotations"][0]["bbox"] = json!([50, 10, 40, 20])),
            "outside",
        ),
        (
            "box-nonpositive",
            Box::new(|v, _| v["annotations"][2]["bbox"] = json!([5, 5, 0, -3])),
            "size",
        ),
        (
            "duplicate-image-id",
            Box::new(|v, _| v["images"][1]["id"] = json!(1)),
            "duplicate",
        ),
        (
            "duplicate-annotation-id",
            Box::new(|v, _| v["annotations"][1]["id"] = json!(1)),
            "duplicate",
        ),
        (
            "traversal-name",
            Box::new(|v, _| v["images"][0]["file_name"] = json!("../../../etc/passwd")),
            "passwd",
        ),
        (
            "wrong-size",
            Box::new(|v, _| v["images"][0]["width"] = json!(640)),
            "640",
        ),
    ];
    for (tag, edit, needle) in cases {
        let (ann, images) = coco_case(root, tag, edit);
        let (status, body) = f.import(tag, &ann, &images);
        assert_eq!(status, 422, "{tag}: {body}");
        assert!(
            body.to_lowercase().contains(&needle.to_lowercase()),
            "{tag}: message does not name {needle:?}:\n{body}"
        );
        assert_eq!(f.dataset_count(), "0", "{tag} stored a dataset");
        assert_eq!(f.row_counts(), "0", "{tag} stored rows");
        assert!(
            f.stored_files().is_empty(),
            "{tag} left files: {:?}",
            f.stored_files()
        );
    }
    // Malformed JSON.
    let dir = root.join("broken");
    let (ann, images) = write_small_coco(&dir, 1);
    std::fs::write(&ann, b"{\"images\": [ {\"id\": 1,").unwrap();
    let (status, body) = f.import("broken", &ann, &images);
    assert_eq!(status, 422, "{body}");
    assert!(body.to_lowercase().contains("json"), "{body}");
    // Paths outside the allowed roots, and paths that do not exist.
    let (status, body) = f.import("escape", Path::new("/etc/passwd"), Path::new("/etc"));
    assert_eq!(status, 422);
    assert!(body.contains("not allowed or not there"), "{body}");
    let (status, body) = f.import("nowhere", &root.join("nope.json"), &images);
    assert_eq!(status, 422);
    assert!(body.contains("nope.json"), "{body}");
    assert_eq!(f.dataset_count(), "0");
    assert!(f.stored_files().is_empty());
}

#[test]
fn a_pascal_voc_folder_imports() {
    let f = fixture(64);
    let voc = f.imports.path().join("voc");
    std::fs::create_dir_all(voc.join("Annotations")).unwrap();
    std::fs::create_dir_all(voc.join("JPEGImages")).unwrap();
    for i in 0..3 {
        image::RgbImage::from_pixel(80, 60, image::Rgb([10, 100, 10]))
            .save(voc.join(format!("JPEGImages/im{i}.jpg")))
            .unwrap();
        let xml = format!(
            "<annotation><filename>im{i}.jpg</filename><size><width>80</width><height>60</height><depth>3</depth></size>\
             <object><name>{}</name><difficult>0</difficult><bndbox><xmin>10</xmin><ymin>5</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object>\
             <object><name>tree</name><difficult>0</difficult><bndbox><xmin>50</xmin><ymin>20</ymin><xmax>70</xmax><ymax>50</ymax></bndbox></object></annotation>",
            if i == 0 { "dog" } else { "tree" }
        );
        std::fs::write(voc.join(format!("Annotations/im{i}.xml")), xml).unwrap();
    }
    let ui = f.server.browser_session();
    let r = ui.post_form(
        "/datasets/import",
        &[
            ("name", "voc set"),
            ("format", "voc"),
            ("annotations", &voc.display().to_string()),
            ("images", ""),
        ],
    );
    let status = r.status().as_u16();
    let body = r.text().unwrap();
    assert!(status == 200 || status == 303, "{status}: {body}");
    assert_eq!(
        f.db.query("SELECT num_images || '/' || num_annotations FROM datasets"),
        "3/6"
    );
    assert_eq!(
        f.db.query("SELECT string_agg(name, ',' ORDER BY name) FROM categories"),
        "dog,tree"
    );
}

#[test]
fn zip_uploads_import_and_hostile_or_huge_zips_are_refused() {
    let f = fixture(1);
    let ui = f.server.browser_session();
    let src = TempDir::new("zip-src");
    write_small_coco(src.path(), 4);
    let r = ui.upload_zip("uploaded", "set.zip", zip_dir(src.path()));
    let status = r.status().as_u16();
    let body = r.text().unwrap();
    assert!(status == 200 || status == 303, "{status}: {body}");
    assert_eq!(
        f.db.query("SELECT num_images FROM datasets WHERE name = 'uploaded'"),
        "4"
    );
    let before = f.stored_files();

    // A zip whose entry climbs out of the extraction folder.
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        use std::io::Write;
        let mut z = zip::ZipWriter::new(&mut buf);
        z.start_file("../../evil.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(b"pwned").unwrap();
        z.finish().unwrap();
    }
    let r = ui.upload_zip("evil", "evil.zip", buf.into_inner());
    assert_eq!(r.status(), 422);
    assert!(r.text().unwrap().contains("unsafe path"));
    assert!(
        !f.data.path().join("evil.txt").exists()
            && !f.data.path().parent().unwrap().join("evil.txt").exists()
    );

    // Not a zip at all.
    let r = ui.upload_zip("junk", "junk.zip", b"hello".to_vec());
    assert_eq!(r.status(), 422);
    assert!(r.text().unwrap().contains("not a valid zip"));

    // Over the 1 MiB limit: refused with 413/422, or the connection is closed mid-upload.
    match ui.try_upload_zip("huge", "huge.zip", vec![0u8; 3 * 1024 * 1024]) {
        Ok(r) => assert!(r.status() == 413 || r.status() == 422, "{}", r.status()),
        Err(e) => assert!(e.is_body() || e.is_request(), "{e}"),
    }
    assert_eq!(f.dataset_count(), "1");
    assert_eq!(f.stored_files(), before, "failed uploads left files behind");
}

#[test]
fn state_changing_requests_need_the_csrf_token_and_our_origin() {
    let f = fixture(64);
    let (ann, images) = write_small_coco(f.imports.path(), 1);
    let fields = [
        ("name", "x"),
        ("format", "coco"),
        ("annotations", ann.to_str().unwrap()),
        ("images", images.to_str().unwrap()),
    ];
    // No cookie, no token.
    let r = f
        .server
        .http
        .post(format!("{}/datasets/import", f.server.url))
        .form(&fields)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // Cookie and token, but posted from another site.
    let ui = f.server.browser_session();
    let mut with_token: Vec<(&str, &str)> = fields.to_vec();
    with_token.push(("csrf_token", &ui.token));
    let r = f
        .server
        .http
        .post(format!("{}/datasets/import", f.server.url))
        .header("cookie", &ui.cookie)
        .header("origin", "http://evil.example")
        .form(&with_token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // Right origin, wrong token.
    let mut wrong: Vec<(&str, &str)> = fields.to_vec();
    wrong.push(("csrf_token", "0000"));
    let r = f
        .server
        .http
        .post(format!("{}/datasets/import", f.server.url))
        .header("cookie", &ui.cookie)
        .header("origin", &f.server.url)
        .form(&wrong)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(f.dataset_count(), "0");
    // Cancel through the UI needs it too.
    let run = f
        .server
        .create_run("r", json!({"kind": "benchmark", "steps": 1}));
    let r = f
        .server
        .http
        .post(format!("{}/runs/{run}/cancel", f.server.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = ui.post_form(&format!("/runs/{run}/cancel"), &[]);
    assert!(r.status().is_success() || r.status().is_redirection());
    assert_eq!(f.server.run(run)["status"], "cancelled");
}
