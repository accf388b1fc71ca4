//! Signed artifact downloads (recordings, downloads archives): no API key, a signature and an
//! expiry in the URL (see [`crate::links`]). Serves single HTTP byte ranges (206) so videos
//! can seek; other range forms get the whole file, as RFC 9110 allows.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::links::LinkError;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_artifact))
}

/// What a `Range` header asks for, against a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    All,
    Part(u64, u64),
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n`; anything else means the whole file.
fn parse_range(header: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Wanted::All;
    };
    if spec.contains(',') {
        return Wanted::All;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Wanted::All;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => Some((start, end.min(size.saturating_sub(1)))),
        (Ok(start), Err(_)) if b.is_empty() => Some((start, size.saturating_sub(1))),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => Some((size.saturating_sub(n), size.saturating_sub(1))),
        (Err(_), Ok(0)) if a.is_empty() => return Wanted::Unsatisfiable,
        _ => return Wanted::All,
    };
    match range {
        Some((start, end)) if start < size && start <= end => Wanted::Part(start, end),
        _ => Wanted::Unsatisfiable,
    }
}

/// `GET /artifacts/{id}/{name}` query: the link's signature.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SignedQuery {
    /// Epoch seconds after which the link stops working.
    expires: i64,
    /// HMAC of the id and expiry.
    signature: String,
}

/// Download an artifact through a signed link.
#[utoipa::path(get, path = "/artifacts/{id}/{name}", tag = "artifacts", security(()),
    params(
        ("id" = String, Path, description = "Artifact id"),
        ("name" = String, Path, description = "File name (informative)"),
        SignedQuery,
    ),
    responses(
        (status = 200, description = "The file"),
        (status = 206, description = "The requested byte range"),
        (status = 403, description = "Bad signature or expired link", body = crate::models::ErrorBody),
        (status = 404, description = "Deleted (retention passed)", body = crate::models::ErrorBody),
        (status = 416, description = "Range outside the file", body = crate::models::ErrorBody),
        (status = 503, description = "The database is unreachable; retry shortly", body = crate::models::ErrorBody),
        ApiPath<(String, String)>, ApiQuery<SignedQuery>,
    ))]
async fn get_artifact(
    State(state): State<AppState>,
    ApiPath((id, _name)): ApiPath<(String, String)>,
    ApiQuery(SignedQuery { expires, signature }): ApiQuery<SignedQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    match state.links.verify(&id, expires, &signature) {
        Ok(()) => {}
        Err(LinkError::BadSignature) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "signature: does not match this link",
            ));
        }
        Err(LinkError::Expired) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "expires: this link has expired; ask the task for a fresh one",
            ));
        }
    }
    let gone = || ApiError::not_found("artifact", &id);
    let row = state.store.get_artifact(&id).await?.ok_or_else(gone)?;
    let size = match state.blobs.size(&row.storage_key).await {
        Ok(s) => s,
        Err(e) if e.is_blob_not_found() => return Err(gone()),
        Err(e) => return Err(e.into()),
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match parse_range(range, size) {
        Wanted::All => (StatusCode::OK, 0, size),
        Wanted::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b + 1),
        Wanted::Unsatisfiable => {
            let mut resp = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("Range: outside the file ({size} bytes)"),
            )
            .into_response();
            if let Ok(v) = format!("bytes */{size}").parse() {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    let body = if start == end {
        Body::empty()
    } else {
        let stream = state.blobs.stream(&row.storage_key, start..end).await?;
        Body::from_stream(stream.map_err(std::io::Error::other))
    };
    let disposition = if row.content_type.starts_with("video/") {
        "inline"
    } else {
        "attachment"
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(v) = value.parse() {
            h.insert(name, v);
        }
    };
    set(header::CONTENT_TYPE, row.content_type.clone());
    set(header::CONTENT_LENGTH, (end - start).to_string());
    set(header::ACCEPT_RANGES, "bytes".into());
    set(
        header::CONTENT_DISPOSITION,
        format!("{disposition}; filename=\"{}\"", row.name.replace('"', "")),
    );
    set(header::CACHE_CONTROL, "private, max-age=3600".into());
    if status == StatusCode::PARTIAL_CONTENT {
        set(header::CONTENT_RANGE, format!("bytes {start}-{}/{size}", end - 1));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 100), Wanted::All);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Wanted::Part(0, 9));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Wanted::Part(90, 99));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Wanted::Part(90, 99));
        assert_eq!(parse_range(Some("bytes=50-500"), 100), Wanted::Part(50, 99));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Wanted::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Wanted::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Wanted::All);
        assert_eq!(parse_range(Some("items=0-1"), 100), Wanted::All);
        assert_eq!(parse_range(Some("bytes=9-3"), 100), Wanted::All);
    }
}
