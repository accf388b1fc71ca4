//! `apikey` header authentication. The caller becomes an [`Owner`]; every query is scoped to
//! it, so another key's things answer 404.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::AppState;
use crate::error::ApiError;

/// The authenticated key.
#[derive(Debug, Clone)]
pub struct Owner {
    /// The key's id: what tasks and resources are stored under.
    pub id: String,
    /// The key's name, for logs.
    pub name: String,
}

impl FromRequestParts<AppState> for Owner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = parts
            .headers
            .get("apikey")
            .ok_or_else(|| ApiError::unauthorized("missing `apikey` header"))?
            .to_str()
            .map_err(|_| ApiError::unauthorized("`apikey` header is not valid text"))?
            .trim();
        if key.is_empty() {
            return Err(ApiError::unauthorized("empty `apikey` header"));
        }
        match state.store.find_key(key).await? {
            Some(row) => Ok(Owner {
                id: row.id,
                name: row.name,
            }),
            None => Err(ApiError::unauthorized("invalid or revoked API key")),
        }
    }
}
