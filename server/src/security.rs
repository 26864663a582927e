//! Worker token (worker calls only; people use `accounts`), CSRF protection, HTML escaping and safe paths.

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::secrets::{constant_time_eq, random_token};
use crate::state::AppState;
use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::path::{Component, Path, PathBuf};

/// The worker token: given on the command line / environment, or kept in `<data>/worker-token`.
pub fn load_or_create_worker_token(cfg: &ServerConfig, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(file) = &cfg.worker_token_file {
        let t = std::fs::read_to_string(file)
            .with_context(|| format!("reading the worker token file {}", file.display()))?;
        let t = t.trim();
        if t.len() < 8 {
            anyhow::bail!(
                "the worker token in {} must be at least 8 characters",
                file.display()
            );
        }
        return Ok(t.to_string());
    }
    if let Some(t) = &cfg.worker_token {
        if t.len() < 8 {
            anyhow::bail!("the worker token must be at least 8 characters");
        }
        return Ok(t.clone());
    }
    let path = data_dir.join("worker-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if t.len() >= 8 {
            return Ok(t);
        }
    }
    let t = random_token();
    std::fs::write(&path, &t).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(t)
}

/// A header's value as text (`None` when absent or not visible ASCII).
fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `/api/v1/` requires `Authorization: Bearer <worker token>`.
pub async fn require_worker_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let presented =
        header_text(req.headers(), header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if constant_time_eq(t.as_bytes(), state.worker_token.as_bytes()) => {
            next.run(req).await
        }
        Some(t) if t.starts_with(crate::accounts::API_TOKEN_PREFIX) => ApiError::new(
            StatusCode::FORBIDDEN,
            "a personal API token cannot make worker calls: workers present the worker token",
        )
        .into_response(),
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "invalid worker token").into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing worker token (Authorization: Bearer <token>)",
        )
        .into_response(),
    }
}

/// The host part of a `Host` header or URL authority, lower-cased, without port or brackets.
pub fn host_name(authority: &str) -> String {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Host names the pages answer to: loopback names, the bind address (unless it is a wildcard)
/// and every `--public-url`'s host.
pub fn allowed_hosts(cfg: &ServerConfig) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|h| h.to_string())
        .collect();
    let bind = host_name(&cfg.bind);
    if !bind.is_empty() && bind != "0.0.0.0" && bind != "::" {
        hosts.push(bind);
    }
    for url in &cfg.public_urls {
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let host = host_name(rest.split('/').next().unwrap_or(""));
        if !host.is_empty() {
            hosts.push(host);
        }
    }
    hosts
}

/// DNS rebinding defence for the pages: a page on another site whose name an attacker points
/// at 127.0.0.1 reaches us with its own name in `Host`; refuse every request whose `Host` is not
/// ours before anything runs or any cookie is set. (The worker API needs the worker token, which
/// such a page cannot have, and remote workers reach it under any name.)
pub async fn require_allowed_host(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let host = header_text(req.headers(), header::HOST)
        .map(host_name)
        .unwrap_or_default();
    if allowed_hosts(&state.cfg).contains(&host) {
        return next.run(req).await;
    }
    crate::error::PageError::new(
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "this server does not answer to the host name {host:?}; if that is how people reach it, start it with --public-url http://{host}:PORT"
        ),
    )
    .into_response()
}

pub const CSRF_COOKIE: &str = "aligndet_csrf";
pub const CSRF_FIELD: &str = "csrf_token";

/// The CSRF token of this browser, for templates to put in forms.
#[derive(Debug, Clone)]
pub struct CsrfToken(pub String);

/// The random token (as [`random_token`] makes them) in the request's cookie `name`.
pub fn token_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() == 48 && v.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The request comes from our own pages: Origin (or, failing that, Referer) names our host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = header_text(headers, header::HOST) else {
        return false;
    };
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    match source {
        Some(s) => {
            let rest = s
                .strip_prefix("http://")
                .or_else(|| s.strip_prefix("https://"))
                .unwrap_or("");
            rest.split('/').next() == Some(host)
        }
        None => false,
    }
}

/// CSRF protection for the UI (double-submit token + same-origin check):
/// - every response gets the token cookie if the browser has none, and handlers see the token;
/// - every state-changing request must come from our origin and carry the cookie's token, in the
///   form field `csrf_token` (url-encoded forms) or the `csrf_token` query parameter (uploads).
pub async fn csrf_protect(req: Request, next: Next) -> Response {
    let existing = token_cookie(req.headers(), CSRF_COOKIE);
    let token = existing.clone().unwrap_or_else(random_token);
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(CsrfToken(token.clone()));

    let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let body = if unsafe_method {
        let reject = |why: &str| {
            crate::error::PageError::new(
                StatusCode::FORBIDDEN,
                format!("cross-site request refused: {why}"),
            )
            .into_response()
        };
        if !same_origin(&parts.headers) {
            return reject("the request does not come from this site (Origin/Referer)");
        }
        let Some(cookie) = existing.as_deref() else {
            return reject("no CSRF cookie; reload the page and try again");
        };
        let from_query = parts.uri.query().and_then(|q| {
            serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                .ok()?
                .into_iter()
                .find(|(k, _)| k == CSRF_FIELD)
                .map(|(_, v)| v)
        });
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let (presented, body) = if is_form && from_query.is_none() {
            let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
                return reject("form too large");
            };
            let field = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
                .ok()
                .and_then(|kv| {
                    kv.into_iter()
                        .find(|(k, _)| k == CSRF_FIELD)
                        .map(|(_, v)| v)
                });
            (field, Body::from(bytes))
        } else {
            (from_query, body)
        };
        match presented {
            Some(t) if constant_time_eq(t.as_bytes(), cookie.as_bytes()) => body,
            _ => return reject("missing or wrong CSRF token; reload the page and try again"),
        }
    } else {
        body
    };

    let mut resp = next.run(Request::from_parts(parts, body)).await;
    if existing.is_none()
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{CSRF_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
        ))
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// Join a user-supplied relative path under `root`, refusing absolute paths, `..` and anything
/// that resolves (through symlinks) outside `root`. `root` must be canonical.
pub fn safe_join(root: &Path, relative: &str) -> Option<PathBuf> {
    let rel = Path::new(relative);
    if relative.contains('\0')
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    let joined = root.join(rel).canonicalize().ok()?;
    joined.starts_with(root).then_some(joined)
}

/// Canonicalise a server-side path and check it lies under one of the allowed roots.
///
/// A path outside the roots and a path that does not exist get the same answer: telling them
/// apart would let anyone with the form probe which files exist anywhere on the server.
pub fn allowed_server_path(state: &AppState, raw: &str) -> Result<PathBuf, String> {
    if raw.trim().is_empty() {
        return Err("no path given".into());
    }
    if raw.contains('\0') {
        return Err("the path contains a NUL byte".into());
    }
    let p = Path::new(raw.trim());
    if !p.is_absolute() {
        return Err(format!("{raw:?} is not an absolute path"));
    }
    let roots = import_roots(state);
    match p.canonicalize() {
        Ok(canonical) if roots.iter().any(|r| canonical.starts_with(r)) => Ok(canonical),
        _ => Err(format!(
            "{raw:?} is not allowed or not there: imports read only existing paths inside {}; start the server with --import-root to allow another folder",
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

pub fn import_roots(state: &AppState) -> Vec<PathBuf> {
    let mut roots = vec![
        state.data_dir.join("imports"),
        state.cfg.cache_dir.join("demo"),
    ];
    roots.extend(state.cfg.import_roots.iter().cloned());
    roots
        .into_iter()
        .filter_map(|r| r.canonicalize().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn safe_join_refuses_traversal() {
        let root = std::env::temp_dir().canonicalize().unwrap();
        assert!(safe_join(&root, "../etc/passwd").is_none());
        assert!(safe_join(&root, "/etc/passwd").is_none());
        assert!(safe_join(&root, "a/../../b").is_none());
        assert!(safe_join(&root, "x\0y").is_none());
    }

    #[test]
    fn host_names_compare_without_port_or_case() {
        assert_eq!(host_name("LocalHost:8080"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("rebind.evil.example:8091"), "rebind.evil.example");
        let cfg = ServerConfig::parse_from([
            "aligndet-server",
            "--bind",
            "0.0.0.0:8080",
            "--public-url",
            "https://AlignDet.lab.example/studio",
        ]);
        let hosts = allowed_hosts(&cfg);
        assert!(hosts.contains(&"aligndet.lab.example".to_string()));
        assert!(hosts.contains(&"127.0.0.1".to_string()));
        assert!(!hosts.contains(&"0.0.0.0".to_string()));
        assert!(!hosts.contains(&"rebind.evil.example".to_string()));
    }

    #[test]
    fn same_origin_checks_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
    }
}
