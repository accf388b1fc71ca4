//! The HTTP API: every route of the Smooth wire protocol under both `/v1` and `/api/v1`, the
//! `{"r": ...}` envelope, `{"detail": ...}` errors, `apikey` auth, health checks and the
//! OpenAPI document. It talks only to the store; it never runs a browser.

mod auth;
mod dashboard;
mod error;
mod extract;
pub mod limits;
pub mod links;
mod mcp;
mod metrics;
mod models;
mod routes;
pub mod webhooks;

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Request, StatusCode};
use smoothd_store::{Blobs, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use error::ApiError;
pub use limits::RateLimiter;
pub use links::Links;
pub use routes::tunnel::StoreSessions;

/// API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Base of the URLs we hand out (live view, recordings, downloads).
    pub public_url: String,
    /// Longest hold of a `GET /v1/task/{id}?event_t=T` poll with nothing new (0 = never hold).
    pub long_poll: Duration,
    /// Largest JSON body.
    pub max_body_bytes: usize,
    /// Largest upload (files, extensions).
    pub max_upload_bytes: usize,
    /// Attempts a task gets before a lost worker fails it.
    pub max_attempts: i64,
    /// Whether `GET /metrics` on the API port answers without an API key.
    pub metrics_public: bool,
    /// Tasks and sessions one key may have waiting or running at once (0 = no limit),
    /// counted in the database so it holds across API processes.
    pub max_running_per_key: i64,
    /// Webhook URL checks and delivery.
    pub webhooks: webhooks::WebhookConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            long_poll: Duration::from_secs(10),
            max_body_bytes: 2 * 1024 * 1024,
            max_upload_bytes: 50 * 1024 * 1024,
            max_attempts: 3,
            metrics_public: false,
            max_running_per_key: 0,
            webhooks: webhooks::WebhookConfig::default(),
        }
    }
}

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    pub blobs: Blobs,
    pub config: ApiConfig,
    /// Live view and signed artifact URLs.
    pub links: std::sync::Arc<links::Links>,
    /// Fires at shutdown: held long-polls answer at once so the server can drain.
    pub shutdown: CancellationToken,
    /// Per-key request rate limit of this process.
    pub rate: std::sync::Arc<limits::RateLimiter>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "smoothd",
        description = "A self-hosted server for the Smooth browser-agent task API. Every `/v1` route is also \
                       served under `/api/v1`. Authenticate with the `apikey` header. Success bodies are \
                       `{\"r\": ...}`; errors are `{\"detail\": ...}`."
    ),
    components(schemas(models::ErrorBody)),
    modifiers(&ApiKeyScheme)
)]
struct ApiDoc;

struct ApiKeyScheme;

impl utoipa::Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apikey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("apikey"))),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "apikey",
            Vec::<String>::new(),
        )]);
    }
}

/// The routes of one API version, with their OpenAPI description.
fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(routes::task::routes())
        .merge(routes::resources::routes())
        .merge(routes::system::v1_routes())
        .merge(routes::replay::routes())
        .merge(webhooks::routes())
}

/// Routes outside `/v1`: health, the live view, signed artifact links and the FRP tunnel (no API key).
fn root_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(routes::system::root_routes())
        .merge(routes::live::routes())
        .merge(routes::artifacts::routes())
        .merge(routes::tunnel::routes())
}

/// The OpenAPI document (paths under `/v1`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, doc) = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .nest("/v1", v1_routes())
        .merge(root_routes())
        .split_for_parts();
    doc
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let (v1, _) = v1_routes().split_for_parts();
    let (root, _) = root_routes().split_for_parts();
    let doc = openapi();
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .nest("/v1", v1.clone())
        .merge(dashboard::router(state.clone(), v1.clone()))
        .nest("/api/v1", v1)
        .merge(root)
        .merge(mcp::router(state.clone()))
        .route(
            "/openapi.json",
            axum::routing::get(move || async move { axum::Json(doc.clone()) }),
        )
        .route("/metrics", axum::routing::get(metrics::metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
        })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(metrics::track_http))
        .with_state(state)
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req
                .extensions()
                .get::<RequestId>()
                .and_then(|id| id.header_value().to_str().ok())
                .unwrap_or("-")
                .to_string();
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request.id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, RandomRequestId))
}

#[derive(Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        smoothd_core::ids::random_token(16)
            .parse()
            .ok()
            .map(RequestId::new)
    }
}

/// Serves only `/metrics` and `/healthz` (no key) on `listener` until `shutdown` fires: the
/// `metrics_listen` address, for worker processes and internal scraping.
pub async fn serve_metrics(
    listener: TcpListener,
    store: Store,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, metrics::metrics_only_router(store))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Serves the API on `listener` until `shutdown` fires, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
