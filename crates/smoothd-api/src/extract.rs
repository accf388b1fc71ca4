//! Extractors that parse into the documented types and reject with our `{"detail": ...}`
//! shape, naming the field: a JSON body ([`ApiJson`]: 413 over the limit, 400 when it is not
//! JSON, 422 when a field has the wrong type), a query string ([`ApiQuery`]: 422) and path
//! segments ([`ApiPath`]: 400 when they are not valid percent-encoded UTF-8).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// A JSON object body parsed into `T`, at most `max_body_bytes` long. The content type is not
/// checked: clients that send JSON without one have always been served.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config.max_body_bytes;
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body: larger than the {limit}-byte limit"),
            )
        })?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "body: expected a JSON object, got an empty body",
            ));
        }
        // Every body is a JSON object; serde would also read a struct from an array.
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {}
            Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "body: must be a JSON object",
                ));
            }
            _ => {
                return Err(ApiError::bad_request("body: not valid JSON"));
            }
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_data() {
                let field = if path == "." { "body".to_string() } else { path };
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{field}: {inner}"))
            } else {
                ApiError::bad_request(format!("body: not valid JSON ({inner})"))
            }
        })?;
        de.end()
            .map_err(|e| ApiError::bad_request(format!("body: not valid JSON ({e})")))?;
        Ok(ApiJson(value))
    }
}

/// A query string parsed into `T`; a missing or malformed parameter answers 422 naming it.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e: QueryRejection| {
                let text = e.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail.to_string())
            })
    }
}

/// Path segments parsed into `T`; segments that are not valid UTF-8 answer 400.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| ApiPath(p))
            .map_err(|e: PathRejection| match e {
                PathRejection::FailedToDeserializePathParams(e) => {
                    ApiError::bad_request(format!("path: {}", e.body_text()))
                }
                e => ApiError::internal(&e.body_text()),
            })
    }
}

/// Responses of the extractors, for `#[utoipa::path(responses(...))]`.
type Responses =
    std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>>;

impl<T> utoipa::IntoResponses for ApiJson<T> {
    fn responses() -> Responses {
        crate::error::error_responses(&[
            ("400", "Malformed request: an empty body, or not JSON"),
            ("413", "The body is larger than `max_body_bytes`"),
            (
                "422",
                "A field is missing or has a bad type or value; the detail names it",
            ),
        ])
    }
}

impl<T> utoipa::IntoResponses for ApiQuery<T> {
    fn responses() -> Responses {
        crate::error::error_responses(&[(
            "422",
            "A query parameter is missing or malformed; the detail names it",
        )])
    }
}

impl<T> utoipa::IntoResponses for ApiPath<T> {
    fn responses() -> Responses {
        crate::error::error_responses(&[(
            "400",
            "Malformed request: a path segment is not valid percent-encoded UTF-8",
        )])
    }
}
