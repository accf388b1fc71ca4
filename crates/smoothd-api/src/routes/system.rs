//! Health, readiness, telemetry and the deprecated browser-session routes.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use smoothd_core::ids;
use smoothd_store::StoreError;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Owner, Unmetered};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::models::{BrowserSessionRequest, BrowserSessionResponse, Envelope, ErrorBody, TaskRequest};

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

/// `GET /healthz` and `GET /readyz` answers.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// `ok` (up) or `ready` (the database answers).
    status: &'static str,
    /// `sqlite` or `postgres`, when ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<&'static str>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "system", security(()), responses((status = 200, description = "Up", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        database: None,
    })
}

/// The database answers.
#[utoipa::path(get, path = "/readyz", tag = "system", security(()),
    responses((status = 200, description = "Ready", body = Health), (status = 503, body = ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    match state.store.ping().await {
        Ok(()) => Ok(Json(Health {
            status: "ready",
            database: Some(state.store.backend_name()),
        })),
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
    request_body(content = Option<serde_json::Value>, content_type = "application/json",
        description = "`{\"events\": [...]}` from the SDK; any body (or none) is accepted and dropped"),
    responses((status = 200, body = Envelope<bool>)))]
async fn telemetry(body: Body) -> Json<Envelope<bool>> {
    // Drain (bounded) so the client sees a clean response; the content is not kept.
    let _ = axum::body::to_bytes(body, 1024 * 1024).await;
    Json(Envelope { r: true })
}

/// Deprecated: open an interactive browser session. Prefer `POST /v1/task` with `task: null`.
#[utoipa::path(post, path = "/browser/session", tag = "deprecated", request_body = BrowserSessionRequest,
    responses(
        (status = 200, body = Envelope<BrowserSessionResponse>),
        ApiJson<BrowserSessionRequest>, Owner,
        (status = 400, description = "Malformed JSON, or an unknown extension id", body = ErrorBody),
        (status = 429, description = "Rate limit or per-key concurrency limit (`max_running_per_key`) reached; see `Retry-After`",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
async fn open_browser_session(
    State(state): State<AppState>,
    owner: Owner,
    ApiJson(body): ApiJson<BrowserSessionRequest>,
) -> ApiResult<Json<Envelope<BrowserSessionResponse>>> {
    let BrowserSessionRequest {
        profile_id,
        session_id,
        live_view,
        device,
        url,
        proxy_server,
        proxy_username,
        proxy_password,
        extensions,
        use_stealth,
    } = body;
    if live_view == Some(false) {
        tracing::debug!("live_view=false is ignored: every session has a live view");
    }
    // The profile below would outlive a refused submit.
    super::task::check_capacity(&state, &owner).await?;
    // The old API created a profile when none was given.
    let profile_id = match profile_id.or(session_id) {
        Some(p) => p,
        None => {
            let id = ids::profile_id();
            match state.store.create_profile(&owner.id, &id).await {
                Ok(_) | Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
            id
        }
    };
    let request = TaskRequest {
        profile_id: Some(profile_id.clone()),
        device,
        url,
        proxy_server,
        proxy_username,
        proxy_password,
        extensions,
        use_stealth,
        ..TaskRequest::default()
    };
    let spec = super::task::validate_request(&state, &owner, &request).await?;
    let row = super::task::submit(&state, &owner, spec).await?;
    let r = BrowserSessionResponse {
        profile_id,
        live_url: Some(state.links.live_url(&row)),
        live_id: row.id,
    };
    Ok(Json(Envelope { r }))
}

/// Deprecated: close a session opened with `POST /v1/browser/session`.
#[utoipa::path(delete, path = "/browser/session/{live_id}", tag = "deprecated",
    params(("live_id" = String, Path, description = "The session's live_id")),
    responses((status = 200, body = Envelope<bool>), (status = 404, body = ErrorBody), ApiPath<String>, Unmetered))]
async fn close_browser_session(
    State(state): State<AppState>,
    Unmetered(owner): Unmetered,
    ApiPath(live_id): ApiPath<String>,
) -> ApiResult<Json<Envelope<bool>>> {
    use smoothd_store::CancelOutcome;
    match state.store.request_cancel(&owner.id, &live_id).await? {
        CancelOutcome::NotFound => Err(ApiError::not_found("session", &live_id)),
        CancelOutcome::AlreadyFinal(_) => Ok(Json(Envelope { r: false })),
        _ => Ok(Json(Envelope { r: true })),
    }
}
