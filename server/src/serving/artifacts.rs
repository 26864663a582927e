//! Artifact downloads, streamed from the file (found by [`crate::state::AppState::locate_artifact`]): a 150 MB checkpoint fetched by ten clients
//! costs ten small read buffers, not ten copies. `Range` (206 / 416), `HEAD`,
//! `Last-Modified` / `If-Modified-Since` come from tower-http's `ServeFile`; an `ETag` with
//! `If-None-Match` (304) and `If-Range` are added here, so a resumed download never splices
//! two versions of a file.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::path::PathBuf;
use tower_http::services::ServeFile;

/// Stream `path` in answer to `req` (GET or HEAD), as bytes; `attachment` names the download.
pub async fn serve(
    path: PathBuf,
    req: Request,
    attachment: Option<&str>,
) -> anyhow::Result<Response> {
    let meta = match tokio::fs::metadata(&path).await {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((StatusCode::NOT_FOUND, "artifact file is missing").into_response());
        }
        Err(e) => return Err(e.into()),
    };
    serve_with_etag(path, req, attachment, entity_tag(&meta)).await
}

/// [`serve`] with a given strong `etag` (a blob's sha256, say), quoted.
pub async fn serve_with_etag(
    path: PathBuf,
    mut req: Request,
    attachment: Option<&str>,
    etag: String,
) -> anyhow::Result<Response> {
    let etag_value = HeaderValue::from_str(&etag)?;
    if req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| none_match_hits(v, &etag))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    // A validator other than the current ETag means the client holds pieces of another
    // version: send the whole file (dates are not trusted: mtime has one-second resolution).
    if req
        .headers()
        .get(header::IF_RANGE)
        .is_some_and(|v| v.as_bytes() != etag.as_bytes())
    {
        req.headers_mut().remove(header::RANGE);
    }
    let mut res = ServeFile::new(&path).try_call(req).await?.map(Body::new);
    let h = res.headers_mut();
    h.insert(header::ETAG, etag_value);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(a) = attachment {
        h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(a)?);
    }
    Ok(res)
}

/// Strong: size, modification time and inode change whenever an upload replaces the file
/// (uploads are written aside and renamed into place).
fn entity_tag(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "\"{:x}-{:x}-{:x}\"",
        meta.len(),
        meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        meta.ino()
    )
}

/// `If-None-Match` compares weakly: `*`, or any listed tag equal up to a `W/` prefix.
fn none_match_hits(v: &HeaderValue, etag: &str) -> bool {
    let Ok(v) = v.to_str() else { return false };
    v.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists_and_weak_tags() {
        let tag = "\"10-20-30\"";
        let hit = |v: &str| none_match_hits(&HeaderValue::from_str(v).unwrap(), tag);
        assert!(hit("\"10-20-30\""));
        assert!(hit("W/\"10-20-30\""));
        assert!(hit("\"x\", \"10-20-30\""));
        assert!(hit("*"));
        assert!(!hit("\"10-20-31\""));
    }
}
