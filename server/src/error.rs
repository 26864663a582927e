//! Error types at the HTTP edge: HTML error pages for the UI, JSON for `/api/v1/`.

use aligndet_common::api::ApiError as ApiErrorBody;
use askama::Template;
use axum::Json;
use axum::extract::{Form, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Response};

/// An error shown to a person: a status and a message (HTML-escaped when rendered).
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
        }
    }
    pub fn not_found(what: impl Into<String>) -> PageError {
        PageError::new(StatusCode::NOT_FOUND, what)
    }
    pub fn bad_request(what: impl Into<String>) -> PageError {
        PageError::new(StatusCode::BAD_REQUEST, what)
    }
}

/// The server's own failures are logged in full under an incident number; the person sees only
/// the number (internal error chains name paths, SQL and constraints).
fn log_incident(e: &dyn std::fmt::Display) -> String {
    let incident = incident(e);
    format!("the server failed to handle this request (incident {incident}, in the server log)")
}

/// Log a failure of the server's own under a new incident number, and return the number for
/// the message a person sees.
pub fn incident(e: &dyn std::fmt::Display) -> String {
    let incident = crate::secrets::random_token()[..8].to_string();
    tracing::error!("incident {incident}: {e:#}");
    incident
}

impl<E: Into<anyhow::Error>> From<E> for PageError {
    fn from(e: E) -> Self {
        let e = e.into();
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            log_incident(&format_args!("{e:#}")),
        )
    }
}

/// The error page, inside the site's layout (the template escapes the message).
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    code: u16,
    reason: &'a str,
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            code: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or(""),
            message: &self.message,
        };
        match page.render() {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!("rendering the error page: {e}");
                (self.status, self.message).into_response()
            }
        }
    }
}

/// What a page handler answers: a page, a redirect, or the error page.
pub type PageResult = Result<Response, PageError>;

/// A row looked up by its id, or the 404 page saying it does not exist:
/// `db::runs::get(&s.pool, id).await?.or_not_found("run", id)?`.
pub trait OrNotFound<T> {
    fn or_not_found(self, what: &str, id: i64) -> Result<T, PageError>;
}

impl<T> OrNotFound<T> for Option<T> {
    fn or_not_found(self, what: &str, id: i64) -> Result<T, PageError> {
        self.ok_or_else(|| PageError::not_found(format!("{what} {id} not found")))
    }
}

/// `Path<T>` for the pages: a path that does not parse (`/datasets/abc`) is a page that does
/// not exist, answered as a 404 page inside the layout (axum's own rejection is plain text).
pub struct PagePath<T>(pub T);

impl<S, T> FromRequestParts<S> for PagePath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PagePath(value)),
            Err(rejection) => {
                tracing::debug!("path {}: {}", parts.uri.path(), rejection.body_text());
                Err(PageError::not_found(format!(
                    "There is no page at {}: ids in addresses are whole numbers, as in /runs/12.",
                    parts.uri.path()
                )))
            }
        }
    }
}

/// `Form<T>` for the pages: a post that does not fit its form (a field missing, a switch that
/// is not 1 or 0) is an error page inside the layout naming the problem, with the status
/// axum chose (422: a field does not fit; 413; 415…); axum's own rejection is plain text.
pub struct PageForm<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for PageForm<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, PageError> {
        let Form(value) = Form::<T>::from_request(req, state)
            .await
            .map_err(|rejection| {
                let why = rejection.body_text();
                let why = why.trim_start_matches("Failed to deserialize form body: ");
                let message = format!("The form's fields do not fit this page: {why}");
                PageError::new(rejection.status(), message)
            })?;
        Ok(PageForm(value))
    }
}

/// `Query<T>` for the pages: a query string that does not fit (`?page=abc`) is a 400 page
/// inside the layout naming the problem (axum's own rejection is plain text).
pub struct PageQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for PageQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(PageQuery(value)),
            Err(rejection) => Err(PageError::bad_request(format!(
                "The address's query does not fit this page: {}",
                rejection
                    .body_text()
                    .trim_start_matches("Failed to deserialize query string: ")
            ))),
        }
    }
}

/// The answer to an address no route takes: a 404 page inside the layout, or
/// `{"error": …}` under `/api/`.
pub async fn no_such_page(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return ApiError::not_found(format!("no API at {}", uri.path())).into_response();
    }
    PageError::not_found(format!(
        "There is no page at {}. The navigation above leads to every part of the studio.",
        uri.path()
    ))
    .into_response()
}

/// The answer to a method a route does not take (a GET of a form's action): a 405 page.
pub async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not accepted at {}", uri.path()),
        )
        .into_response();
    }
    PageError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not answer {method}: it is the target of a form on another page.",
            uri.path()
        ),
    )
    .into_response()
}

/// An error answered to a worker or script as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl ApiError {
    /// The caller's mistake, named: 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// A failure of the server's own, logged; the caller gets only the incident number.
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, log_incident(&e))
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // Constraint violations are the caller's (a reference to nothing, a duplicate); say so
        // without the constraint's text.
        let code = e
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.to_string());
        match code.as_deref() {
            Some("23503") => ApiError::bad_request(
                "the request refers to a run, dataset or worker that does not exist",
            ),
            Some("23505") => ApiError::new(StatusCode::CONFLICT, "that already exists"),
            _ => ApiError::internal(format_args!("database: {e}")),
        }
    }
}

impl From<crate::queue::QueueError> for ApiError {
    fn from(e: crate::queue::QueueError) -> Self {
        use crate::queue::QueueError;
        match e {
            QueueError::NotFound(_) => ApiError::not_found(e.to_string()),
            QueueError::NotCurrent { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            QueueError::Db(db) => db.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ApiErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// `Json<T>` for the worker API whose refusals are `{"error": …}` like every other API error,
/// 400 for a body that does not fit the type (the serde message names the field).
pub struct ApiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    Json<T>: axum::extract::FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => {
                let status = match rejection.status() {
                    StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
                    other => other,
                };
                Err(ApiError::new(status, rejection.body_text()))
            }
        }
    }
}
