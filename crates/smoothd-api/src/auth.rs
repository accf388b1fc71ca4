//! `apikey` header authentication. The caller becomes an [`Owner`]; every query is scoped to
//! it, so another key's things answer 404. Extracting an [`Owner`] also takes a token from
//! the key's rate limit ([`crate::limits`]); [`Unmetered`] authenticates without one, for the
//! requests the SDK must be able to make whatever the rate: reading a task (its poller stops
//! for good on a 429, and `result()` then waits forever) and cancelling or closing one (which
//! frees the key's concurrency slots).

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

/// The authenticated key, for a request the rate limit does not count.
#[derive(Debug, Clone)]
pub struct Unmetered(pub Owner);

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Owner, ApiError> {
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

impl FromRequestParts<AppState> for Owner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let owner = authenticate(parts, state).await?;
        if let Err(wait) = state.rate.take(&owner.id) {
            let secs = wait.as_secs_f64().ceil() as u64;
            tracing::info!(owner = %owner.name, retry_after = secs, "rate limit reached");
            return Err(ApiError::too_many_requests(
                format!(
                    "rate_limit_per_minute: this API key may make {} requests a minute; retry in {secs} s",
                    state.rate.per_minute()
                ),
                secs,
            ));
        }
        Ok(owner)
    }
}

impl FromRequestParts<AppState> for Unmetered {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await.map(Unmetered)
    }
}

/// What extracting an [`Owner`] may answer instead of running the handler.
impl utoipa::IntoResponses for Owner {
    fn responses()
    -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>> {
        let mut r = crate::error::error_responses(&[
            ("401", "Missing, invalid or revoked `apikey`"),
            ("503", "The database is unreachable; retry shortly"),
        ]);
        r.extend(rate_limited());
        r
    }
}

/// What extracting an [`Unmetered`] owner may answer instead of running the handler.
impl utoipa::IntoResponses for Unmetered {
    fn responses()
    -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>> {
        crate::error::error_responses(&[
            ("401", "Missing, invalid or revoked `apikey`"),
            ("503", "The database is unreachable; retry shortly"),
        ])
    }
}

/// The 429 of the rate limit, with its `Retry-After` header.
fn rate_limited()
-> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>> {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::header::HeaderBuilder;
    let mut r = crate::error::error_responses(&[(
        "429",
        "This key's request rate limit (`rate_limit_per_minute`) is reached; see `Retry-After`",
    )]);
    if let Some(RefOr::T(resp)) = r.get_mut("429") {
        let header = HeaderBuilder::new()
            .schema(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::Integer))
            .description(Some("Seconds to wait"))
            .build();
        resp.headers.insert("Retry-After".to_string(), header);
    }
    r
}
