//! Who is asking, and the role checks: one middleware layer per route group, so no handler
//! checks a role itself.
//!
//! - Pages: [`identify`] (over every page) reads the session cookie once and leaves
//!   [`SignedIn`] in the request; [`require_page_role`] (a `route_layer` per group) sends the
//!   signed-out to `/login?next=…` (GET) or answers 401 (other methods), a too-small role 403,
//!   and hands the handlers a [`CurrentUser`].
//! - User API: [`require_api_role`] takes a personal token (`Authorization: Bearer adt_…`) and
//!   refuses the worker token by name; cookies are never read there, so the API needs no CSRF.

use super::{API_TOKEN_PREFIX, CurrentUser, Role, token_digest};
use crate::db;
use crate::error::{ApiError, PageError};
use crate::secrets::constant_time_eq;
use crate::security::CsrfToken;
use crate::state::AppState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

/// What a page answers someone it needs signed in, at the gate or in [`UserPage`].
const PAGE_SIGNED_OUT: &str =
    "You are not signed in (or your session ended). Sign in at /login and try again.";

pub const SESSION_COOKIE: &str = "aligndet_session";
/// How long a session lasts after login.
pub const SESSION_DAYS: i64 = 14;

/// The session's user, if any: put in every page request by [`identify`].
#[derive(Debug, Clone)]
pub struct SignedIn(pub Option<CurrentUser>);

/// What the layout (`base.html`) shows about the visitor: who is signed in and the CSRF token
/// for the logout button. A task-local rather than a field of each page model: every page
/// template extends the layout, and threading this through ~20 page models would couple every
/// view to accounts.
#[derive(Debug, Clone, Default)]
pub struct Visitor {
    pub user: Option<CurrentUser>,
    pub csrf: String,
}

tokio::task_local! {
    static VISITOR: Visitor;
}

impl Visitor {
    /// Whether the visitor may create, clone, tag, archive and cancel runs (editor or admin):
    /// pages show those buttons only then.
    pub fn can_edit(&self) -> bool {
        self.user.as_ref().is_some_and(|u| u.role >= Role::Editor)
    }
}

/// The visitor of the page being rendered (empty outside a page request).
pub fn visitor() -> Visitor {
    VISITOR.try_with(Visitor::clone).unwrap_or_default()
}

/// What a page handler behind [`require_page_role`] starts from: the app, the user the gate let
/// through and the CSRF token its forms carry, taken as one extractor
/// (`UserPage { s, user, csrf }: UserPage`) so that no handler pulls the three apart itself.
pub struct UserPage {
    pub s: AppState,
    pub user: CurrentUser,
    pub csrf: CsrfToken,
}

impl FromRequestParts<AppState> for UserPage {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, PageError> {
        // Only a route outside every page gate lacks the user: answer as the gate would.
        let user = parts
            .extensions
            .get::<CurrentUser>()
            .cloned()
            .ok_or_else(|| PageError::new(StatusCode::UNAUTHORIZED, PAGE_SIGNED_OUT.to_string()))?;
        let csrf = parts
            .extensions
            .get::<CsrfToken>()
            .cloned()
            .unwrap_or_else(|| CsrfToken(String::new()));
        Ok(UserPage {
            s: s.clone(),
            user,
            csrf,
        })
    }
}

/// The session token in the request's cookies.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    crate::security::token_cookie(headers, SESSION_COOKIE)
}

/// Every page request: look the session up once and make it known to handlers and the layout.
pub async fn identify(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let user = match session_token(req.headers()) {
        Some(token) => match db::users::session_holder(&s.pool, &token_digest(&token)).await {
            Ok(holder) => holder.map(CurrentUser::from_holder),
            Err(e) => return PageError::from(e).into_response(),
        },
        None => None,
    };
    let csrf = req
        .extensions()
        .get::<CsrfToken>()
        .map(|t| t.0.clone())
        .unwrap_or_default();
    req.extensions_mut().insert(SignedIn(user.clone()));
    VISITOR.scope(Visitor { user, csrf }, next.run(req)).await
}

/// A page route group's gate: signed in, with at least `needed`.
pub async fn require_page_role(State(needed): State<Role>, req: Request, next: Next) -> Response {
    let user = req.extensions().get::<SignedIn>().and_then(|s| s.0.clone());
    if user.is_none() && matches!(*req.method(), Method::GET | Method::HEAD) {
        let here = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let next_param = serde_urlencoded::to_string([("next", here)]).unwrap_or_default();
        return Redirect::to(&format!("/login?{next_param}")).into_response();
    }
    admit(user, needed, PAGE_SIGNED_OUT, req, next, |status, e| {
        PageError::new(status, e).into_response()
    })
    .await
}

/// Past either gate's reading of who calls: `user` goes on to the handler (as a request
/// extension, which [`UserPage`] reads) when there is one (else a 401 saying `signed_out`)
/// and their role is at least `needed` (else a 403); `refuse` words a refusal as the page's or
/// the API's error.
async fn admit(
    user: Option<CurrentUser>,
    needed: Role,
    signed_out: &str,
    mut req: Request,
    next: Next,
    refuse: fn(StatusCode, String) -> Response,
) -> Response {
    let Some(user) = user else {
        return refuse(StatusCode::UNAUTHORIZED, signed_out.to_string());
    };
    if user.role < needed {
        return refuse(StatusCode::FORBIDDEN, refusal(&user, needed));
    }
    req.extensions_mut().insert(user);
    next.run(req).await
}

/// Why a role is not enough, naming the role needed and who to ask.
pub fn refusal(user: &CurrentUser, needed: Role) -> String {
    format!(
        "This needs the {needed} role; you are signed in as {} with the {} role. An admin can change roles on the users page (/admin/users).",
        user.name, user.role
    )
}

/// A user-API route group's gate: a personal API token of a user with at least `needed`.
pub async fn require_api_role(
    State((s, needed)): State<(AppState, Role)>,
    req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = presented else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this API needs a personal API token (Authorization: Bearer adt_…); create one on /account or with `aligndet-server tokens create USER --name LABEL`",
        )
        .into_response();
    };
    if constant_time_eq(token.as_bytes(), s.worker_token.as_bytes()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "the worker token authorises only worker calls; this call needs a personal API token (Authorization: Bearer adt_…, from /account)",
        )
        .into_response();
    }
    let holder = if token.starts_with(API_TOKEN_PREFIX) {
        match db::users::token_holder(&s.pool, &token_digest(token)).await {
            Ok(h) => h,
            Err(e) => return ApiError::from(e).into_response(),
        }
    } else {
        None
    };
    let signed_out = "invalid or revoked API token (or its user is disabled)";
    admit(
        holder.map(CurrentUser::from_holder),
        needed,
        signed_out,
        req,
        next,
        |status, e| ApiError::new(status, e).into_response(),
    )
    .await
}

/// `next` after login: only a path on this site (`/…`, not `//host` or `/\host`, which
/// browsers read as another site).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.chars().any(|c| c.is_control() || c == '\\') =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

/// The session cookie (`value` empty: one that deletes it).
///
/// HttpOnly: no script (and so no injected script) reads it. SameSite=Lax rather than Strict: a
/// link to a run pasted into chat opens signed in, while cross-site POSTs (every state change)
/// never carry it; the CSRF token guards those as well. Secure when the request reached us under
/// an https `--public-url` (a TLS proxy in front): the cookie then never travels in clear. Not
/// always: on plain http (the default, 127.0.0.1) a Secure cookie would not be sent back.
pub fn session_cookie(value: &str, secure: bool) -> String {
    let lifetime = if value.is_empty() {
        "Max-Age=0".to_string()
    } else {
        format!("Max-Age={}", SESSION_DAYS * 24 * 3600)
    };
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; {lifetime}{secure}")
}

/// The request came in under one of the https public URLs.
pub fn reached_over_https(s: &AppState, headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(crate::security::host_name)
        .unwrap_or_default();
    s.cfg.public_urls.iter().any(|u| {
        u.strip_prefix("https://").is_some_and(|rest| {
            crate::security::host_name(rest.split('/').next().unwrap_or("")) == host
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/runs/3?x=1")), "/runs/3?x=1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/a\r\nSet-Cookie: x")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn session_cookie_attributes() {
        let c = session_cookie(&"a".repeat(48), false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && !c.contains("Secure"));
        assert!(session_cookie("x", true).ends_with("; Secure"));
        assert!(session_cookie("", false).contains("Max-Age=0"));
    }
}
