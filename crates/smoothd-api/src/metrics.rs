//! `GET /metrics` (Prometheus text format) and the middleware that times every request by its
//! matched route. The scrape reads three cheap aggregates from the database; everything else
//! is counted in process by `smoothd_metrics`.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use smoothd_store::Store;

use crate::AppState;
use crate::auth::Unmetered;
use crate::error::{ApiError, ApiResult};

/// Times a request and records it under its route pattern (`/v1/task/{id}`), or `unmatched`,
/// so paths carrying ids never become label values.
pub async fn track_http(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let resp = next.run(req).await;
    smoothd_metrics::record_http(method.as_str(), &route, resp.status().as_u16(), started.elapsed());
    resp
}

/// The scrape on the API port: needs an API key unless `metrics_public` is set.
pub async fn metrics(State(state): State<AppState>, req: Request<Body>) -> ApiResult<Response> {
    if !state.config.metrics_public {
        let (mut parts, _) = req.into_parts();
        <Unmetered as axum::extract::FromRequestParts<AppState>>::from_request_parts(&mut parts, &state)
            .await?;
    }
    render(&state.store).await
}

/// The metrics text for a process on `store`.
pub async fn render(store: &Store) -> ApiResult<Response> {
    let tasks_by_status = store.task_counts().await.map_err(ApiError::from)?;
    let (queue_depth, oldest_ms) = store.queue_depth().await.map_err(ApiError::from)?;
    let artifact_bytes = store.artifact_bytes().await.map_err(ApiError::from)?;
    let snapshot = smoothd_metrics::DbSnapshot {
        tasks_by_status,
        queue_depth,
        oldest_waiting: std::time::Duration::from_millis(u64::try_from(oldest_ms).unwrap_or(0)),
        artifact_bytes,
    };
    let text = smoothd_metrics::render(Some(&snapshot));
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(smoothd_metrics::CONTENT_TYPE),
    );
    Ok(resp)
}

/// A router with only `/metrics` and `/healthz`, without a key, for a process's dedicated
/// metrics address (`metrics_listen`): worker processes have no API port, and an operator
/// binds this to an internal interface for Prometheus.
pub fn metrics_only_router(store: Store) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|State(store): State<Store>| async move { render(&store).await }),
        )
        .route(
            "/healthz",
            axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .with_state(store)
}
