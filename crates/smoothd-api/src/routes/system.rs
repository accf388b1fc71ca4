//! Health, readiness, telemetry and the deprecated browser-session routes.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use smoothd_core::ids;
use smoothd_store::StoreError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Owner, Unmetered};
use crate::body::json_body;
use crate::error::{ApiError, ApiResult};
use crate::models::{BrowserSessionRequest, BrowserSessionResponse, Envelope, ErrorBody};

/// Routes under `/v1`.
pub fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(telemetry))
        .routes(routes!(open_browser_session))
        .routes(routes!(close_browser_session))
}

/// Routes at the root.
pub fn root_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "system", security(()), responses((status = 200, description = "Up")))]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers.
#[utoipa::path(get, path = "/readyz", tag = "system", security(()),
    responses((status = 200, description = "Ready"), (status = 503, body = ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    match state.store.ping().await {
        Ok(()) => Ok(Json(
            json!({"status": "ready", "database": state.store.backend_name()}),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database unreachable",
            ))
        }
    }
}

/// SDK usage telemetry: accepted and dropped (nothing leaves this server).
#[utoipa::path(post, path = "/telemetry", tag = "system", security(()),
    request_body(content = Object, description = "`{\"events\": [...]}`"),
    responses((status = 200, body = Envelope<bool>)))]
async fn telemetry(body: Body) -> Json<Value> {
    // Drain (bounded) so the client sees a clean response; the content is not kept.
    let _ = axum::body::to_bytes(body, 1024 * 1024).await;
    Json(json!({"r": true}))
}

/// Deprecated: open an interactive browser session. Prefer `POST /v1/task` with `task: null`.
#[utoipa::path(post, path = "/browser/session", tag = "deprecated", request_body = BrowserSessionRequest,
    responses((status = 200, body = Envelope<BrowserSessionResponse>), (status = 422, body = ErrorBody)))]
async fn open_browser_session(
    State(state): State<AppState>,
    owner: Owner,
    body: Body,
) -> ApiResult<Json<Value>> {
    let body = json_body(body, state.config.max_body_bytes).await?;
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "body: must be a JSON object"))?;
    // The profile below would outlive a refused submit.
    super::task::check_capacity(&state, &owner).await?;
    // The old API created a profile when none was given.
    let profile_id = match obj.get("profile_id").or_else(|| obj.get("session_id")) {
        Some(Value::String(p)) => p.clone(),
        _ => {
            let id = ids::profile_id();
            match state.store.create_profile(&owner.id, &id).await {
                Ok(_) | Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
            id
        }
    };
    let mut request = serde_json::Map::new();
    request.insert("task".into(), Value::Null);
    request.insert("profile_id".into(), json!(profile_id));
    for k in [
        "device",
        "url",
        "proxy_server",
        "proxy_username",
        "proxy_password",
        "extensions",
        "use_stealth",
    ] {
        if let Some(v) = obj.get(k) {
            request.insert(k.into(), v.clone());
        }
    }
    let spec = super::task::validate_request(&state, &owner, &Value::Object(request)).await?;
    let row = super::task::submit(&state, &owner, spec).await?;
    let resp = BrowserSessionResponse {
        profile_id,
        live_url: Some(state.links.live_url(&row)),
        live_id: row.id,
    };
    Ok(Json(json!({"r": resp})))
}

/// Deprecated: close a session opened with `POST /v1/browser/session`.
#[utoipa::path(delete, path = "/browser/session/{live_id}", tag = "deprecated",
    params(("live_id" = String, Path, description = "The session's live_id")),
    responses((status = 200, body = Envelope<bool>), (status = 404, body = ErrorBody)))]
async fn close_browser_session(
    State(state): State<AppState>,
    Unmetered(owner): Unmetered,
    Path(live_id): Path<String>,
) -> ApiResult<Json<Value>> {
    use smoothd_store::CancelOutcome;
    match state.store.request_cancel(&owner.id, &live_id).await? {
        CancelOutcome::NotFound => Err(ApiError::not_found("session", &live_id)),
        CancelOutcome::AlreadyFinal(_) => Ok(Json(json!({"r": false}))),
        _ => Ok(Json(json!({"r": true}))),
    }
}
