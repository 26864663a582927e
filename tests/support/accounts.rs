//! Signing in as a browser would (the login form, with its CSRF cookie and token) and making
//! personal API tokens on the account page: what `Server::start` does for every test, and what
//! the accounts tests do for other users.

use anyhow::{Context, bail};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// A client that does not follow redirects: the login's `Set-Cookie` is on the 303 itself.
pub fn no_redirect_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// The `name=value` of cookie `name` set by a response.
pub fn set_cookie(r: &reqwest::blocking::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|kv| kv.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// A fresh CSRF cookie (`aligndet_csrf=…`) and its token, from the login page.
pub fn csrf_from_login_page(url: &str) -> anyhow::Result<(String, String)> {
    let r = no_redirect_client().get(format!("{url}/login")).send()?;
    let cookie = set_cookie(&r, "aligndet_csrf").context("the login page set no CSRF cookie")?;
    let token = cookie.trim_start_matches("aligndet_csrf=").to_string();
    Ok((cookie, token))
}

/// A signed-in browser: its cookies (`aligndet_csrf=…; aligndet_session=…`) and CSRF token.
#[derive(Debug, Clone)]
pub struct Login {
    pub cookies: String,
    pub csrf: String,
    pub session: String,
}

/// The raw answer to posting the login form (status, headers; no redirect followed).
pub fn post_login(
    url: &str,
    name: &str,
    password: &str,
) -> anyhow::Result<(reqwest::blocking::Response, String, String)> {
    let (csrf_cookie, csrf) = csrf_from_login_page(url)?;
    let r = no_redirect_client()
        .post(format!("{url}/login"))
        .header("cookie", &csrf_cookie)
        .header("origin", url)
        .form(&[
            ("name", name),
            ("password", password),
            ("next", "/"),
            ("csrf_token", &csrf),
        ])
        .send()?;
    Ok((r, csrf_cookie, csrf))
}

/// Sign in through the login form.
pub fn login(url: &str, name: &str, password: &str) -> anyhow::Result<Login> {
    let (r, csrf_cookie, csrf) = post_login(url, name, password)?;
    let Some(session) = set_cookie(&r, "aligndet_session") else {
        bail!(
            "signing in as {name} failed: {} {}",
            r.status(),
            r.text().unwrap_or_default()
        );
    };
    Ok(Login {
        cookies: format!("{csrf_cookie}; {session}"),
        csrf,
        session,
    })
}

/// Create a personal API token on the account page; the token shown once.
pub fn create_api_token(url: &str, login: &Login, label: &str) -> anyhow::Result<String> {
    let r = no_redirect_client()
        .post(format!("{url}/account/tokens"))
        .header("cookie", &login.cookies)
        .header("origin", url)
        .form(&[("name", label), ("csrf_token", &login.csrf)])
        .send()?;
    let status = r.status();
    let page = r.text()?;
    let token = page
        .split("<pre id=\"new-token\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .map(|t| t.trim().to_string());
    match token {
        Some(t) if status.is_success() && t.starts_with("adt_") => Ok(t),
        _ => bail!("no token on the account page ({status}): {page}"),
    }
}

/// The first admin's one-time password, written by the server at its first start.
pub fn first_admin_password(data_dir: &Path) -> anyhow::Result<String> {
    let file = data_dir.join("first-admin-password");
    Ok(std::fs::read_to_string(&file)
        .with_context(|| format!("reading {}", file.display()))?
        .trim()
        .to_string())
}

/// Create a user through the admin page as `admin` (signed in as `login`).
pub fn add_user(
    url: &str,
    admin: &Login,
    name: &str,
    role: &str,
    password: &str,
) -> anyhow::Result<()> {
    let r = no_redirect_client()
        .post(format!("{url}/admin/users"))
        .header("cookie", &admin.cookies)
        .header("origin", url)
        .form(&[
            ("name", name),
            ("role", role),
            ("password", password),
            ("csrf_token", &admin.csrf),
        ])
        .send()?;
    let status = r.status();
    let page = r.text()?;
    if !status.is_success() || !page.contains(&format!("Created {name}")) {
        bail!("creating {name} failed ({status}): {page}");
    }
    Ok(())
}

/// Sign Chromium in through the login form; panics (with the page) when it does not leave the
/// login page.
pub async fn browser_sign_in(c: &fantoccini::Client, url: &str, name: &str, password: &str) {
    use fantoccini::Locator;
    c.goto(&format!("{url}/login"))
        .await
        .expect("open the login page");
    let field = |css: &'static str| c.find(Locator::Css(css));
    field("#login-name")
        .await
        .expect("name field")
        .send_keys(name)
        .await
        .expect("type");
    field("#login-password")
        .await
        .expect("password field")
        .send_keys(password)
        .await
        .expect("type");
    field("#login-submit")
        .await
        .expect("sign-in button")
        .click()
        .await
        .expect("click");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let here = c.current_url().await.expect("url");
        if here.path() != "/login" {
            return;
        }
        if std::time::Instant::now() > deadline {
            let page = c.source().await.unwrap_or_default();
            panic!("signing in as {name} in Chromium failed: {page}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub const VIEWER_PASSWORD: &str = "viewer-password-42";

/// A viewer `vera`, created on the admin page, signed in.
pub fn viewer(server: &crate::Server) -> Login {
    add_user(
        &server.url,
        &server.login,
        "vera",
        "viewer",
        VIEWER_PASSWORD,
    )
    .expect("add viewer");
    login(&server.url, "vera", VIEWER_PASSWORD).expect("viewer signs in")
}

/// A user-API or worker-API call with an optional bearer token: (status, body).
pub fn api_call(
    server: &crate::Server,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut r = no_redirect_client().request(method, format!("{}/api/v1/{path}", server.url));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.json(&json!({})).send().expect("api call");
    (r.status().as_u16(), r.text().unwrap_or_default())
}
