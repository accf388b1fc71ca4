//! Request body reading with our error shape: size limits answer 413 and malformed JSON 400,
//! both as `{"detail": ...}`.

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::Value;

use crate::error::ApiError;

/// Reads the whole body as JSON, refusing more than `limit` bytes.
pub async fn json_body(body: Body, limit: usize) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
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
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("body: not valid JSON ({e})")))
}
