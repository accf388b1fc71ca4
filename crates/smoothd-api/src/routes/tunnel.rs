//! `/~!frp`: where the smooth SDK's frpc (`transport.protocol: wss`) reaches the tunnel of a
//! `proxy_server: "self"` session when smoothd sits behind a TLS ingress on port 443. The
//! request is a WebSocket upgrade; the FRP protocol itself is `smoothd_tunnel::server`. No API
//! key applies: frpc's login carries the session's `proxy_password`. [`StoreSessions`] is what the tunnel reads from the store,
//! also used by the tunnel's own TLS listener.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use smoothd_store::Store;
use smoothd_tunnel::{Candidate, Sessions, WorkerLookup, ws};
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::error::ApiError;

/// The self-proxy sessions in the store.
#[derive(Clone)]
pub struct StoreSessions {
    pub store: Store,
}

impl Sessions for StoreSessions {
    fn candidates(&self) -> BoxFuture<'_, Result<Vec<Candidate>, String>> {
        async move {
            let rows = self
                .store
                .active_self_sessions()
                .await
                .map_err(|e| e.to_string())?;
            Ok(rows
                .into_iter()
                .filter_map(|(id, request)| {
                    let spec: smoothd_core::TaskSpec = serde_json::from_str(&request).ok()?;
                    let proxy = spec.proxy.filter(|p| p.is_self())?;
                    Some(Candidate {
                        task_id: id,
                        password: proxy.password?,
                    })
                })
                .collect())
        }
        .boxed()
    }

    fn worker(&self, task_id: &str) -> BoxFuture<'_, WorkerLookup> {
        let task_id = task_id.to_string();
        async move {
            let task = match self.store.get_task_unscoped(&task_id).await {
                Ok(Some(t)) => t,
                Ok(None) => return WorkerLookup::Ended,
                Err(_) => return WorkerLookup::Pending,
            };
            if task.status().is_final() {
                return WorkerLookup::Ended;
            }
            match self.store.live_stream(&task_id).await {
                Ok(Some(addr)) => WorkerLookup::At {
                    addr,
                    token: task.live_token,
                },
                _ => WorkerLookup::Pending,
            }
        }
        .boxed()
    }
}

/// Served but left out of the OpenAPI document, which cannot describe a WebSocket protocol:
/// its one client is frpc, and a plain GET is refused with 400.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().route("/~!frp", axum::routing::get(frp_socket))
}

/// The FRP tunnel of `proxy_server: "self"` sessions: a WebSocket carrying frpc's multiplexed
/// connection (frpc logs in with the session's `proxy_password`).
pub async fn frp_socket(State(state): State<AppState>, mut req: Request) -> Response {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = key.filter(|_| upgrade) else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "upgrade: /~!frp is the FRP tunnel's WebSocket (the smooth SDK's frpc); send a WebSocket upgrade",
        )
        .into_response();
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let on = hyper::upgrade::on(&mut req);
    let sessions: Arc<dyn Sessions> = Arc::new(StoreSessions {
        store: state.store.clone(),
    });
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        match on.await {
            Ok(u) => {
                smoothd_tunnel::server::serve(ws::into_stream(TokioIo::new(u)), sessions, peer, shutdown)
                    .await
            }
            Err(e) => tracing::debug!(error = %e, "tunnel upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header("sec-websocket-accept", ws::accept_key(&key))
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
