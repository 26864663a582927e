//! Accounts and access end to end: signing in (Chromium, through the form), roles refused with a
//! clear page, sessions ended by logout, tokens revoked, the worker token and personal tokens
//! kept to their own API, the failed-login rate limit, passwords kept out of the log, the
//! refusal to serve a public address with no user, and the CLI. Every state-changing route is
//! tried in `route_access.rs`.

use aligndet_studio::accounts::*;
use aligndet_studio::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bench() -> Value {
    json!({"kind": "benchmark", "resolution": 128})
}

fn start(tag: &str) -> (Server, TestDb, TempDir) {
    let db = TestDb::create();
    let data = TempDir::new(tag);
    let server = Server::start(&ServerOptions::new(&db, data.path()));
    (server, db, data)
}

/// Wait (up to 20 s) for the browser to arrive at `path` (a click's navigation is asynchronous).
async fn wait_path(c: &fantoccini::Client, path: &str) {
    wait_for_url(c, |u| u.path() == path).await;
}

#[test]
fn browser_sign_in_viewer_refused_and_logout_ends_the_session() {
    let (server, db, _data) = start("acc-browser");
    viewer(&server);
    let run = server.create_run("queued run", bench());
    let driver = ChromeDriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let old_session = runtime.block_on(async {
        use fantoccini::Locator;
        let c = driver.client().await;
        // Signed out, a page sends to the login form, which brings the person back.
        c.goto(&format!("{}/runs/{run}", server.url)).await.unwrap();
        let here = c.current_url().await.unwrap();
        assert_eq!(here.path(), "/login", "{here}");
        assert_eq!(here.query(), Some(format!("next=%2Fruns%2F{run}").as_str()));
        c.find(Locator::Id("login-name"))
            .await
            .unwrap()
            .send_keys("vera")
            .await
            .unwrap();
        c.find(Locator::Id("login-password"))
            .await
            .unwrap()
            .send_keys(VIEWER_PASSWORD)
            .await
            .unwrap();
        click(&c, Locator::Id("login-submit")).await;
        wait_path(&c, &format!("/runs/{run}")).await;
        let who = c
            .find(Locator::Id("nav-user"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(who.contains("vera") && who.contains("viewer"), "{who}");
        assert!(
            c.find(Locator::Id("nav-admin")).await.is_err(),
            "no users link for a viewer"
        );

        // A viewer sees no cancel button; cancelling anyway (the form a page of an editor
        // would post, with the viewer's own CSRF token): 403, inside the layout, naming the
        // role needed.
        assert!(
            c.find(Locator::Css("#cancel-form button")).await.is_err(),
            "no cancel button for a viewer"
        );
        c.execute(
            "const f = document.createElement('form'); f.method = 'post';
             f.action = '/runs/' + arguments[0] + '/cancel';
             const i = document.createElement('input'); i.name = 'csrf_token';
             i.value = document.querySelector('input[name=csrf_token]').value;
             f.appendChild(i); document.body.appendChild(f); f.submit();",
            vec![serde_json::json!(run)],
        )
        .await
        .unwrap();
        wait_path(&c, &format!("/runs/{run}/cancel")).await;
        let heading = c
            .find(Locator::Css("main h1"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(heading, "403 Forbidden");
        let message = c
            .find(Locator::Css("pre.error"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            message.contains("needs the editor role") && message.contains("vera"),
            "{message}"
        );
        assert!(c.find(Locator::Css("nav.top")).await.is_ok());

        // Logout ends the stored session, not only the browser's cookie.
        let session = c.get_named_cookie("aligndet_session").await.unwrap();
        let old = session.value().to_string();
        click(&c, Locator::Id("logout")).await;
        wait_path(&c, "/login").await;
        old
    });
    assert_eq!(
        db.query(&format!(
            "SELECT cancel_requested FROM runs WHERE id = {run}"
        )),
        "f"
    );
    let r = no_redirect_client()
        .get(format!("{}/runs", server.url))
        .header("cookie", format!("aligndet_session={old_session}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 303, "the old session cookie still opens pages");
    assert_eq!(r.headers()["location"], "/login?next=%2Fruns");
}

#[test]
fn tokens_are_scoped_revocable_and_apart_from_the_worker_token() {
    let (server, db, _data) = start("acc-tokens");
    let vera = viewer(&server);
    let viewer_token = create_api_token(&server.url, &vera, "vera's script").unwrap();
    let run = server.create_run("by admin", bench());

    // Who created it: recorded, in the API and on the pages.
    assert_eq!(server.run(run)["created_by"], "admin");
    let page = server.get(&format!("/runs/{run}")).text().unwrap();
    assert!(
        page.contains("by <span id=\"run-creator\">admin</span>"),
        "{page}"
    );
    let list = server.get("/runs").text().unwrap();
    assert!(
        list.contains("<td class=\"run-creator\">admin</td>"),
        "{list}"
    );
    let stored = db.query("SELECT t.token_sha256 IS NOT NULL, u.password_hash LIKE '$argon2id$%' FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE u.name = 'vera'");
    assert_eq!(stored, "t|t");
    assert!(
        !db.query("SELECT string_agg(encode(token_sha256, 'escape'), '') FROM api_tokens")
            .contains(&viewer_token)
    );

    // A viewer's token reads, and is refused a change with the role named.
    let (status, body) = api_call(
        &server,
        reqwest::Method::GET,
        &format!("runs/{run}"),
        Some(&viewer_token),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = api_call(
        &server,
        reqwest::Method::POST,
        &format!("runs/{run}/cancel"),
        Some(&viewer_token),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("needs the editor role"), "{body}");

    // The worker token is refused on the user API, a personal token on worker calls.
    let (status, body) = api_call(
        &server,
        reqwest::Method::GET,
        &format!("runs/{run}"),
        Some(&server.token),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("worker token authorises only worker calls"),
        "{body}"
    );
    let (status, body) = api_call(
        &server,
        reqwest::Method::POST,
        "jobs/claim",
        Some(&server.user_token),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("personal API token cannot make worker calls"),
        "{body}"
    );
    let (status, body) = api_call(&server, reqwest::Method::GET, &format!("runs/{run}"), None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("personal API token"), "{body}");

    // Revoked on the account page: refused from then on.
    let account = server.get("/account").text().unwrap();
    let id = account
        .split("<tr id=\"token-")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("token row")
        .to_string();
    let ui = server.browser_session();
    let r = ui.post_form(&format!("/account/tokens/{id}/revoke"), &[]);
    assert!(r.text().unwrap().contains("revoked: it no longer works"));
    let (status, body) = api_call(
        &server,
        reqwest::Method::GET,
        &format!("runs/{run}"),
        Some(&server.user_token),
    );
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("invalid or revoked"), "{body}");
    // The viewer's own token is untouched by the admin's revocation.
    let (status, _) = api_call(
        &server,
        reqwest::Method::GET,
        &format!("runs/{run}"),
        Some(&viewer_token),
    );
    assert_eq!(status, 200);
}

/// A server whose stdout and stderr both go to `log` (to search it for secrets afterwards).
struct LoggedServer {
    child: std::process::Child,
    url: String,
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_logged(db: &TestDb, data: &Path, log: &Path, extra: &[&str]) -> std::process::Child {
    let file = std::fs::File::create(log).unwrap();
    Command::new(bin("aligndet-server"))
        .args(["--database-url", &db.url, "--data-dir"])
        .arg(data)
        .arg("--cache-dir")
        .arg(data.join("no-cache"))
        .args(extra)
        .env("ALIGNDET_WORKER_TOKEN", "test-token-0123456789")
        .env("RUST_LOG", "debug,sqlx=warn")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("start server")
}

fn wait_listening(mut child: std::process::Child, log: &Path) -> LoggedServer {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with("listening on ")) {
            let url = line.trim_start_matches("listening on ").trim().to_string();
            return LoggedServer { child, url };
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited ({status}): {text}");
        }
        assert!(Instant::now() < deadline, "server did not start: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn wrong_passwords_are_rate_limited_and_no_password_is_logged() {
    let db = TestDb::create();
    let data = TempDir::new("acc-limit");
    let log = data.path().join("server.log");
    let server = wait_listening(
        start_logged(&db, data.path(), &log, &["--bind", "127.0.0.1:0"]),
        &log,
    );
    let password = first_admin_password(data.path()).unwrap();
    let printed = std::fs::read_to_string(&log).unwrap();
    assert!(
        printed.contains("first-admin-password"),
        "the path is printed: {printed}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.path().join("first-admin-password"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let wrong: Vec<String> = (0..5).map(|i| format!("guess-number-{i}-xyzzy")).collect();
    for guess in &wrong {
        let (r, _, _) = post_login(&server.url, "admin", guess).unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.text().unwrap().contains("Wrong user name or password"));
    }
    // The sixth try is refused before the password is looked at, even the right one.
    let (r, _, _) = post_login(&server.url, "admin", &password).unwrap();
    assert_eq!(r.status(), 429);
    assert!(set_cookie(&r, "aligndet_session").is_none());
    let page = r.text().unwrap();
    assert!(
        page.contains("Too many failed sign-ins for this user name"),
        "{page}"
    );
    assert!(page.contains("try again in"), "{page}");

    // Another user from the same address is not locked (5 < the per-address limit).
    let (r, _, _) = post_login(&server.url, "someone-else", "also-wrong-password").unwrap();
    assert_eq!(r.status(), 401);

    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("failed sign-in: user \"admin\" from 127.0.0.1"),
        "failures are logged: {text}"
    );
    for secret in wrong
        .iter()
        .chain([&password, &"also-wrong-password".to_string()])
    {
        assert!(
            !text.contains(secret.as_str()),
            "a password reached the server log"
        );
    }
}

#[test]
fn a_public_address_with_no_user_is_refused_with_how_to_create_one() {
    let db = TestDb::create();
    let data = TempDir::new("acc-public");
    let log = data.path().join("server.log");
    let mut child = start_logged(&db, data.path(), &log, &["--bind", "0.0.0.0:0"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the server kept running");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("refusing to serve on 0.0.0.0:0 with no user account"),
        "{text}"
    );
    assert!(text.contains("users add NAME --role admin"), "{text}");
    assert!(!text.contains("listening on"));
    assert!(!data.path().join("first-admin-password").exists());
    assert_eq!(db.query("SELECT count(*) FROM users"), "0");

    // With a user made by the CLI, the same command serves.
    let add = Command::new(bin("aligndet-server"))
        .args(["--database-url", &db.url, "--data-dir"])
        .arg(data.path())
        .args(["users", "add", "ops", "--role", "admin", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"ops-password-123\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let server = wait_listening(
        start_logged(&db, data.path(), &log, &["--bind", "0.0.0.0:0"]),
        &log,
    );
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let local = format!("http://127.0.0.1:{port}");
    let ops = login(&local, "ops", "ops-password-123").unwrap();
    let token = Command::new(bin("aligndet-server"))
        .args(["--database-url", &db.url, "--data-dir"])
        .arg(data.path())
        .args(["tokens", "create", "ops", "--name", "cli"])
        .output()
        .unwrap();
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("adt_"), "{token}");
    let r = no_redirect_client()
        .post(format!("{local}/api/v1/runs"))
        .bearer_auth(&token)
        .json(&json!({"name": "from the cli token", "config": bench()}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    assert!(ops.session.starts_with("aligndet_session="));
    let list = Command::new(bin("aligndet-server"))
        .args(["--database-url", &db.url, "--data-dir"])
        .arg(data.path())
        .args(["users", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.lines()
            .any(|l| l.starts_with("ops") && l.contains("admin") && l.contains("active")),
        "{list}"
    );
}

#[test]
fn the_first_admin_replaces_the_one_time_password() {
    let (server, _db, data) = start("acc-password");
    let file = data.path().join("first-admin-password");
    let (r, _, _) = post_login(&server.url, "admin", &server.admin_password).unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/account",
        "sent to set a password"
    );
    let page = server.get("/account").text().unwrap();
    assert!(page.contains("id=\"one-time-banner\""), "{page}");

    let ui = server.browser_session();
    let change = |current: &str, new: &str, again: &str| {
        ui.post_form(
            "/account/password",
            &[("current", current), ("new", new), ("again", again)],
        )
    };
    let r = change("not-the-password", "my-own-password-1", "my-own-password-1");
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("The current password is wrong."));
    let r = change(&server.admin_password, "short", "short");
    assert!(r.text().unwrap().contains("at least 10 characters"));
    assert!(file.exists());
    let r = change(
        &server.admin_password,
        "my-own-password-1",
        "my-own-password-1",
    );
    let page = r.text().unwrap();
    assert!(
        page.contains("Password changed.") && !page.contains("one-time-banner"),
        "{page}"
    );
    assert!(!file.exists(), "the one-time password file is removed");

    let (r, _, _) = post_login(&server.url, "admin", &server.admin_password).unwrap();
    assert_eq!(r.status(), 401, "the one-time password no longer works");
    let (r, _, _) = post_login(&server.url, "admin", "my-own-password-1").unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain http on 127.0.0.1: {cookie}"
    );
}
