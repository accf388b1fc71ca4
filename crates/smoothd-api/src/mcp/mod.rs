//! The MCP server: the Streamable HTTP transport of the official Rust SDK (`rmcp`) at `/mcp`,
//! stateless (every request stands alone, so any API process answers any request), behind the
//! same `apikey` header as the REST API (`Authorization: Bearer <key>` works too, for clients
//! that only send that). Tools run through the same code as the REST handlers: requests are
//! validated and submitted as by `POST /v1/task`, and session commands are posted as client
//! events and answered as the SDK's are (see [`tools`]). Tool input schemas are cut from the
//! OpenAPI schema of `POST /v1/task`'s body, so the two cannot drift.

mod tools;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::Owner;
use crate::error::ApiError;

/// The `/mcp` route, authenticated.
pub fn router(state: AppState) -> Router<AppState> {
    let tools = Arc::new(tools::definitions());
    let handler_state = state.clone();
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        // Requests carry an API key, so DNS rebinding gains nothing; a deployment's host
        // names are not known here.
        .disable_allowed_hosts()
        .with_max_request_body_bytes(state.config.max_body_bytes)
        .with_cancellation_token(state.shutdown.child_token());
    let service = StreamableHttpService::new(
        move || {
            Ok(Mcp {
                state: handler_state.clone(),
                tools: tools.clone(),
            })
        },
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .route_service("/mcp", service)
        .route_layer(axum::middleware::from_fn_with_state(state, authenticate))
}

/// Resolves the key (`apikey`, or `Authorization: Bearer`) to an [`Owner`] the tools read.
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let key = headers
        .get("apikey")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::trim)
        .unwrap_or("")
        .to_string();
    if key.is_empty() {
        return ApiError::unauthorized("missing `apikey` header").into_response();
    }
    match state.store.find_key(&key).await {
        Ok(Some(row)) => {
            // Each MCP request counts against the key's rate limit, like a REST request.
            if let Err(wait) = state.rate.take(&row.id) {
                let secs = wait.as_secs_f64().ceil() as u64;
                return ApiError::too_many_requests(
                    format!(
                        "rate_limit_per_minute: this API key may make {} requests a minute; retry in {secs} s",
                        state.rate.per_minute()
                    ),
                    secs,
                )
                .into_response();
            }
            req.extensions_mut().insert(Owner {
                id: row.id,
                name: row.name,
            });
            next.run(req).await
        }
        Ok(None) => ApiError::unauthorized("invalid or revoked API key").into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// One MCP request's handler.
#[derive(Clone)]
struct Mcp {
    state: AppState,
    tools: Arc<Vec<Tool>>,
}

impl Mcp {
    fn owner(context: &RequestContext<RoleServer>) -> Result<Owner, ErrorData> {
        context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Owner>())
            .cloned()
            .ok_or_else(|| ErrorData::invalid_request("not authenticated", None))
    }
}

impl ServerHandler for Mcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("smoothd", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "A browser agent. run_task runs a task to its end; open_session gives a browser you drive \
                 with goto, evaluate_js, extract and run_session_task, then close_session.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.as_ref().clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let owner = Self::owner(&context)?;
        let args = request.arguments.unwrap_or_default();
        let result = tools::call(&self.state, &owner, &request.name, args, &context).await;
        Ok(CallToolResponse::from(tools::into_result(result)))
    }
}

/// The OpenAPI schema of a component with every `$ref` to another component inlined.
pub(crate) fn component_schema(name: &str) -> Map<String, Value> {
    let doc = serde_json::to_value(crate::openapi()).unwrap_or(Value::Null);
    let components = doc
        .pointer("/components/schemas")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut schema = components.get(name).cloned().unwrap_or_else(|| json!({}));
    inline_refs(&mut schema, &components, 0);
    match schema {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn inline_refs(v: &mut Value, components: &Value, depth: usize) {
    if depth > 16 {
        return;
    }
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref")
                && let Some(name) = r.strip_prefix("#/components/schemas/")
                && let Some(target) = components.get(name)
            {
                let mut t = target.clone();
                inline_refs(&mut t, components, depth + 1);
                *v = t;
                return;
            }
            for child in m.values_mut() {
                inline_refs(child, components, depth + 1);
            }
        }
        Value::Array(a) => {
            for child in a {
                inline_refs(child, components, depth + 1);
            }
        }
        _ => {}
    }
}
