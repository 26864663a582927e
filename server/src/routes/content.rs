//! `/api/v1/blobs/`: job inputs by content, for workers that share no folder with the server.
//! One blob streams with `Range` and its sha256 as a strong `ETag` (a cut download resumes); a
//! pack streams many small ones in one response (per-image requests cost a round trip each).

use crate::content::{BlobFile, blob_file};
use crate::error::{ApiError, ApiJson};
use crate::state::AppState;
use aligndet_common::content::{
    Blob, PACK_MAX_BLOBS, PackRequest, check_sha256, pack_frame_header,
};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

pub async fn blob(
    State(s): State<AppState>,
    Path(sha256): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let path = located(&s, &sha256).await?.path;
    let etag = format!("\"{sha256}\"");
    crate::serving::artifacts::serve_with_etag(path, req, None, etag)
        .await
        .map_err(ApiError::internal)
}

pub async fn pack(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<PackRequest>,
) -> Result<Response, ApiError> {
    if req.sha256.len() > PACK_MAX_BLOBS {
        return Err(ApiError::bad_request(format!(
            "a pack may name at most {PACK_MAX_BLOBS} blobs, not {}",
            req.sha256.len()
        )));
    }
    let mut files = Vec::with_capacity(req.sha256.len());
    for sha256 in req.sha256 {
        let found = located(&s, &sha256).await?;
        let blob = Blob {
            sha256,
            bytes: found.bytes,
        };
        files.push((found.path, blob));
    }
    let frames = futures_util::stream::iter(files)
        .then(|(path, blob)| async move {
            let header = Bytes::copy_from_slice(&pack_frame_header(&blob));
            let head = futures_util::stream::once(async move { Ok(header) });
            match tokio::fs::File::open(&path).await {
                Ok(file) => head
                    .chain(ReaderStream::new(file.take(blob.bytes)))
                    .left_stream(),
                Err(e) => futures_util::stream::once(async move { Err(e) }).right_stream(),
            }
        })
        .flatten();
    let mut res = Response::new(Body::from_stream(frames));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(res)
}

/// The file of a blob this server holds, checked to still have the size it was hashed at (a file
/// changed behind the server's back is refused here rather than sent under a wrong hash).
async fn located(s: &AppState, sha256: &str) -> Result<BlobFile, ApiError> {
    check_sha256(sha256).map_err(ApiError::bad_request)?;
    let Some(found) = blob_file(s, sha256).await.map_err(ApiError::internal)? else {
        return Err(ApiError::not_found(format!(
            "this server holds no dataset file or artifact with sha256 {sha256}"
        )));
    };
    let on_disk = tokio::fs::metadata(&found.path).await.map(|m| m.len());
    let what = &found.what;
    match on_disk {
        Ok(len) if len == found.bytes => Ok(found),
        Ok(len) => Err(ApiError::new(
            StatusCode::GONE,
            format!(
                "{what} changed on the server since it was hashed ({} bytes then, {len} now)",
                found.bytes
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::new(
            StatusCode::GONE,
            format!("{what} is gone from the server"),
        )),
        Err(e) => Err(ApiError::internal(format!("{what}: {e}"))),
    }
}
