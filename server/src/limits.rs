//! Request-size refusals made before a body is read.
//!
//! The upload routes stream their bodies under `DefaultBodyLimit`, which only fails once the
//! limit has been read: a request declaring 5 GB would cost 2 GiB of transfer and disk before
//! its refusal. A `Content-Length` over the limit is answered here, from the headers alone.

use crate::error::PageError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

const MIB: u64 = 1024 * 1024;

/// What a multipart form may add around the uploaded file (the routes' body limits allow the
/// same in `routes/mod.rs`).
pub const FORM_OVERHEAD_BYTES: u64 = MIB;

/// Middleware for the pages: refuses with 413 any request whose declared `Content-Length` is
/// over the largest body a page accepts (an upload of `--upload-limit-mib` plus its form).
/// Bodies without a length (chunked) are still cut off by the routes' own streaming limits.
pub async fn refuse_declared_oversize(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    match refusal(req.headers(), state.cfg.upload_limit_mib) {
        Some(refused) => refused,
        None => next.run(req).await,
    }
}

/// The 413 answer for these headers, if their declared length is over the limit.
fn refusal(headers: &HeaderMap, upload_limit_mib: u64) -> Option<Response> {
    let declared: u64 = headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let allowed = upload_limit_mib
        .saturating_mul(MIB)
        .saturating_add(FORM_OVERHEAD_BYTES);
    if declared <= allowed {
        return None;
    }
    let mut response = PageError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the upload declares {declared} bytes ({} MiB), over the limit of {upload_limit_mib} MiB per upload; nothing was read or stored",
            declared.div_ceil(MIB)
        ),
    )
    .into_response();
    // The unread body must not be taken for the next request on this connection.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_length(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from_str(value).expect("header"),
        );
        headers
    }

    #[test]
    fn declared_lengths_over_the_limit_are_refused() {
        let refused = refusal(&with_length("5000000000"), 2048).expect("refused");
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(refused.headers()[header::CONNECTION], "close");
        let just_over = (2048 * MIB + FORM_OVERHEAD_BYTES + 1).to_string();
        assert!(refusal(&with_length(&just_over), 2048).is_some());
        let at_limit = (2048 * MIB + FORM_OVERHEAD_BYTES).to_string();
        assert!(refusal(&with_length(&at_limit), 2048).is_none());
        assert!(refusal(&HeaderMap::new(), 2048).is_none(), "no length");
    }
}
