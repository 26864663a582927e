//! Signing in and out, and one's own account: personal API tokens and the password.

use crate::accounts::gate::UserPage;
use crate::accounts::gate::{self, SESSION_DAYS};
use crate::accounts::{self, CurrentUser, cli::check_token_label};
use crate::db;
use crate::error::PageForm;
use crate::error::PageResult;
use crate::error::{PageError, PagePath, PageQuery};
use crate::forms::actions::{LoginForm, PasswordForm, TokenForm};
use crate::routes::render;
use crate::security::CsrfToken;
use crate::state::AppState;
use askama::Template;
use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::OnceLock;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    name: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn login_page(
    Extension(csrf): Extension<CsrfToken>,
    PageQuery(q): PageQuery<NextQuery>,
) -> Response {
    render(&LoginPage {
        csrf: csrf.0,
        next: gate::safe_next(q.next.as_deref()),
        name: String::new(),
        error: None,
    })
}

/// Check the password (after the rate limit), then start a session and go to `next`.
pub async fn login(
    State(s): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    extensions: Extensions,
    headers: HeaderMap,
    PageForm(form): PageForm<LoginForm>,
) -> PageResult {
    let address = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string());
    let name = form.name.trim().to_string();
    let refuse = |status: StatusCode, error: String| {
        let page = LoginPage {
            csrf: csrf.0.clone(),
            next: gate::safe_next(Some(&form.next)),
            name: name.clone(),
            error: Some(error),
        };
        (status, render(&page)).into_response()
    };
    if let Err(message) = s.login_limit.check(&name, &address) {
        tracing::warn!("sign-in refused by the rate limit: user {name:?} from {address}");
        return Ok(refuse(StatusCode::TOO_MANY_REQUESTS, message));
    }
    let user = db::users::by_name(&s.pool, &name).await?;
    // An unknown name costs the same hashing as a known one: timing does not tell names apart.
    let stored = user
        .as_ref()
        .map_or_else(|| dummy_hash().to_string(), |u| u.password_hash.clone());
    let password = form.password.clone();
    let matches =
        tokio::task::spawn_blocking(move || accounts::verify_password(&password, &stored)).await?;
    let Some(user) = user.filter(|u| matches && !u.disabled) else {
        s.login_limit.record_failure(&name, &address);
        tracing::warn!("failed sign-in: user {name:?} from {address}");
        return Ok(refuse(
            StatusCode::UNAUTHORIZED,
            "Wrong user name or password (or the account is disabled).".into(),
        ));
    };
    s.login_limit.record_success(&name);
    let token = crate::secrets::random_token();
    let expires = chrono::Utc::now() + chrono::Duration::days(SESSION_DAYS);
    db::users::create_session(&s.pool, user.id, &accounts::token_digest(&token), expires).await?;
    tracing::info!("{} signed in from {address}", user.name);
    let cookie = gate::session_cookie(&token, gate::reached_over_https(&s, &headers));
    // Signed in with the one-time password and bound nowhere in particular: the account page,
    // whose banner asks for a password of one's own.
    let next = match gate::safe_next(Some(&form.next)) {
        n if n == "/" && one_time_password(&s, &user.name) => "/account".to_string(),
        n => n,
    };
    Ok(with_cookie(Redirect::to(&next), &cookie))
}

/// `name` is the first admin, still on the password the server generated.
fn one_time_password(s: &AppState, name: &str) -> bool {
    name == "admin" && accounts::first_admin_password_file(&s.data_dir).exists()
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| accounts::hash_password("no user has this password").unwrap_or_default())
}

fn with_cookie(response: impl IntoResponse, cookie: &str) -> Response {
    let mut response = response.into_response();
    if let Ok(v) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// End this browser's session (the stored one, not only the cookie).
pub async fn logout(State(s): State<AppState>, headers: HeaderMap) -> PageResult {
    if let Some(token) = gate::session_token(&headers) {
        db::users::delete_session(&s.pool, &accounts::token_digest(&token)).await?;
    }
    let cookie = gate::session_cookie("", gate::reached_over_https(&s, &headers));
    Ok(with_cookie(Redirect::to("/login"), &cookie))
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    user: CurrentUser,
    csrf: String,
    tokens: Vec<db::users::TokenRow>,
    /// A token just created: shown this once.
    new_token: Option<(String, String)>,
    message: Option<String>,
    error: Option<String>,
    /// Still on the generated one-time password (ask for one's own).
    one_time: bool,
}

async fn account(
    s: &AppState,
    user: CurrentUser,
    csrf: String,
    new_token: Option<(String, String)>,
    outcome: Result<Option<String>, String>,
) -> PageResult {
    let tokens = db::users::tokens_of(&s.pool, user.id).await?;
    let status = if outcome.is_err() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let (message, error) = match outcome {
        Ok(m) => (m, None),
        Err(e) => (None, Some(e)),
    };
    let page = AccountPage {
        one_time: one_time_password(s, &user.name),
        user,
        csrf,
        tokens,
        new_token,
        message,
        error,
    };
    Ok((status, render(&page)).into_response())
}

pub async fn account_page(UserPage { s, user, csrf }: UserPage) -> PageResult {
    account(&s, user, csrf.0, None, Ok(None)).await
}

pub async fn create_token(
    UserPage { s, user, csrf }: UserPage,
    PageForm(form): PageForm<TokenForm>,
) -> PageResult {
    let label = match check_token_label(&form.name) {
        Ok(l) => l,
        Err(e) => return account(&s, user, csrf.0, None, Err(e)).await,
    };
    let (token, digest) = accounts::new_api_token();
    db::users::create_token(&s.pool, user.id, &label, &digest).await?;
    tracing::info!("{} created the API token {label:?}", user.name);
    account(&s, user, csrf.0, Some((label, token)), Ok(None)).await
}

pub async fn revoke_token(
    UserPage { s, user, csrf }: UserPage,
    PagePath(id): PagePath<i64>,
) -> PageResult {
    let outcome = if db::users::revoke_token(&s.pool, id, Some(user.id)).await? {
        Ok(Some(format!("Token #{id} revoked: it no longer works.")))
    } else {
        Err(format!("You have no live token #{id}."))
    };
    account(&s, user, csrf.0, None, outcome).await
}

/// A new password, once the current one is checked. Changing the first admin's password
/// removes the one-time password file (it no longer opens anything).
pub async fn change_password(
    UserPage { s, user, csrf }: UserPage,
    PageForm(form): PageForm<PasswordForm>,
) -> PageResult {
    let stored = db::users::by_id(&s.pool, user.id)
        .await?
        .ok_or_else(|| PageError::not_found("your account no longer exists"))?;
    let current = form.current.clone();
    let hash = stored.password_hash.clone();
    let matches =
        tokio::task::spawn_blocking(move || accounts::verify_password(&current, &hash)).await?;
    let problem = if !matches {
        Some("The current password is wrong.".to_string())
    } else if form.new != form.again {
        Some("The two new passwords differ.".to_string())
    } else {
        accounts::check_password(&form.new).err()
    };
    if let Some(problem) = problem {
        return account(&s, user, csrf.0, None, Err(problem)).await;
    }
    let new = form.new.clone();
    let hash = tokio::task::spawn_blocking(move || accounts::hash_password(&new)).await??;
    db::users::set_password(&s.pool, user.id, &hash).await?;
    if stored.name == "admin" {
        let _ = std::fs::remove_file(accounts::first_admin_password_file(&s.data_dir));
    }
    tracing::info!("{} changed their password", user.name);
    account(&s, user, csrf.0, None, Ok(Some("Password changed.".into()))).await
}
