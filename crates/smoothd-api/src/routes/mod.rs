//! Route handlers, a module per resource.

pub mod artifacts;
pub mod live;
pub mod resources;
pub mod system;
pub mod task;
pub mod tunnel;

use std::collections::HashMap;

use crate::error::ApiError;

/// Query parameters as text, parsed by the helpers below so errors name the parameter.
pub type RawQuery = HashMap<String, String>;

/// An optional integer query parameter.
pub fn query_i64(q: &RawQuery, name: &str) -> Result<Option<i64>, ApiError> {
    match q.get(name).map(|s| s.trim()) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .or_else(|_| v.parse::<f64>().map(|f| f as i64))
            .map(Some)
            .map_err(|_| {
                ApiError::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    format!("{name}: must be an integer, got {v:?}"),
                )
            }),
    }
}

/// An optional boolean query parameter (`true`/`false`/`1`/`0`).
pub fn query_bool(q: &RawQuery, name: &str) -> Result<Option<bool>, ApiError> {
    match q.get(name).map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => match v.as_str() {
            "true" | "1" | "yes" => Ok(Some(true)),
            "false" | "0" | "no" => Ok(Some(false)),
            _ => Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                format!("{name}: must be true or false, got {v:?}"),
            )),
        },
    }
}
