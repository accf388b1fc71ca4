//! The worker's internal live-stream listener. Each running task with a browser registers
//! here; its address is recorded with the task (`live_streams`), and whichever API process a
//! viewer reaches relays the viewer's WebSocket to `ws://{addr}/live/{task_id}`.
//!
//! Protocol (one WebSocket per viewer): the worker sends binary messages (JPEG frames) and
//! text messages `{"type":"meta","url","status","width","height"}` (the page's URL, the
//! agent's latest step, the viewport in CSS pixels) and finally `{"type":"ended"}`. The viewer
//! sends [`ViewerInput`] as JSON text; the connection's `interactive=false` refuses it here
//! too, not only in the API. Every request must carry the task's live token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::json;
use smoothd_browser::{Frame, PageMedia, ViewerInput};
use smoothd_core::ids::same_secret;
use smoothd_tunnel::{Hub, relay};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What a viewer of one task can reach.
#[derive(Clone)]
pub(crate) struct LiveEntry {
    pub token: String,
    pub media: Arc<PageMedia>,
    pub status: watch::Receiver<String>,
    /// Fires when the task ends: viewers are told and disconnected.
    pub ended: CancellationToken,
}

/// The listener and the tasks it serves.
#[derive(Clone)]
pub struct LiveServer {
    addr: String,
    entries: Arc<Mutex<HashMap<String, LiveEntry>>>,
    /// Self-proxy sessions' tunnels, with their live tokens.
    tunnels: Arc<Mutex<HashMap<String, (String, Hub)>>>,
}

#[derive(serde::Deserialize)]
struct LiveQuery {
    token: Option<String>,
    interactive: Option<String>,
}

impl LiveServer {
    /// Serves on `listener` until `shutdown` fires. API processes reach it at `advertise`
    /// (`host:port`), by default the listener's own address.
    pub fn start(
        listener: TcpListener,
        advertise: Option<String>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local: SocketAddr = listener.local_addr()?;
        let addr = advertise.unwrap_or_else(|| local.to_string());
        let server = Self {
            addr: addr.clone(),
            entries: Arc::new(Mutex::new(HashMap::new())),
            tunnels: Arc::new(Mutex::new(HashMap::new())),
        };
        let app = axum::Router::new()
            .route("/live/{task_id}", axum::routing::get(connect))
            .route("/tunnel/{task_id}/{kind}", axum::routing::get(tunnel_relay))
            .with_state(server.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
            {
                tracing::error!(error = %e, "live listener failed");
            }
        });
        tracing::info!(%local, advertised = %addr, "live stream listener");
        Ok(server)
    }

    /// The address API processes connect to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub(crate) fn register(&self, task_id: &str, entry: LiveEntry) {
        if let Ok(mut m) = self.entries.lock() {
            m.insert(task_id.to_string(), entry);
        }
    }

    pub(crate) fn unregister(&self, task_id: &str) {
        if let Ok(mut m) = self.entries.lock()
            && let Some(e) = m.remove(task_id)
        {
            e.ended.cancel();
        }
    }

    /// Makes a session's tunnel reachable by API processes (before its address is published).
    pub(crate) fn register_tunnel(&self, task_id: &str, token: &str, hub: Hub) {
        if let Ok(mut m) = self.tunnels.lock() {
            m.insert(task_id.to_string(), (token.to_string(), hub));
        }
    }

    /// Ends a session's tunnel.
    pub(crate) fn unregister_tunnel(&self, task_id: &str) {
        if let Ok(mut m) = self.tunnels.lock()
            && let Some((_, hub)) = m.remove(task_id)
        {
            hub.close();
        }
    }

    fn lookup(&self, task_id: &str) -> Option<LiveEntry> {
        self.entries.lock().ok().and_then(|m| m.get(task_id).cloned())
    }
}

async fn connect(
    State(server): State<LiveServer>,
    Path(task_id): Path<String>,
    Query(q): Query<LiveQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(entry) = server.lookup(&task_id) else {
        return (StatusCode::NOT_FOUND, "no live stream for this task here").into_response();
    };
    if !q.token.as_deref().is_some_and(|t| same_secret(t, &entry.token)) {
        return (StatusCode::FORBIDDEN, "bad live token").into_response();
    }
    let interactive = matches!(q.interactive.as_deref(), Some("true" | "1"));
    ws.on_upgrade(move |socket| stream(socket, entry, interactive))
}

/// A relay of a session's tunnel from an API process: checked, then upgraded to raw bytes.
async fn tunnel_relay(
    State(server): State<LiveServer>,
    Path((task_id, kind)): Path<(String, String)>,
    Query(q): Query<LiveQuery>,
    mut req: Request,
) -> Response {
    let found = server.tunnels.lock().ok().and_then(|m| m.get(&task_id).cloned());
    let Some((token, hub)) = found else {
        return (StatusCode::NOT_FOUND, "no tunnel for this task here").into_response();
    };
    if !q.token.as_deref().is_some_and(|t| same_secret(t, &token)) {
        return (StatusCode::FORBIDDEN, "bad live token").into_response();
    }
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(relay::UPGRADE));
    if !wants || !matches!(kind.as_str(), "control" | "work") {
        return (StatusCode::BAD_REQUEST, "expected a tunnel relay upgrade").into_response();
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io: Box<dyn smoothd_tunnel::hub::Relay> = match upgrade.await {
            Ok(u) => Box::new(TokioIo::new(u)),
            Err(e) => {
                tracing::debug!(error = %e, "tunnel relay upgrade failed");
                return;
            }
        };
        if kind == "control" {
            hub.attach_control(io).await;
        } else {
            hub.attach_work(io).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, relay::UPGRADE)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn meta(url: &str, status: &str, frame: Option<&Frame>) -> Message {
    let (w, h) = frame.map_or((0.0, 0.0), |f| (f.css_width, f.css_height));
    Message::Text(
        json!({"type": "meta", "url": url, "status": status, "width": w, "height": h})
            .to_string()
            .into(),
    )
}

/// One viewer: frames and page state out, input in.
async fn stream(socket: WebSocket, entry: LiveEntry, interactive: bool) {
    let (mut tx, mut rx) = socket.split();
    let mut frames = entry.media.frames();
    let mut url = entry.media.url();
    let mut status = entry.status.clone();
    let mut last_size = (0.0, 0.0);
    let mut status_open = true;
    // Send what there is now, then every change.
    frames.mark_changed();
    url.mark_changed();
    loop {
        tokio::select! {
            _ = entry.ended.cancelled() => {
                let _ = tx.send(Message::Text(json!({"type": "ended"}).to_string().into())).await;
                let _ = tx.close().await;
                return;
            }
            r = frames.changed() => {
                if r.is_err() { return; }
                let frame = frames.borrow_and_update().clone();
                if let Some(f) = frame {
                    if (f.css_width, f.css_height) != last_size {
                        last_size = (f.css_width, f.css_height);
                        let m = meta(&url.borrow(), &status.borrow(), Some(&f));
                        if tx.send(m).await.is_err() { return; }
                    }
                    if tx.send(Message::Binary(f.jpeg.clone())).await.is_err() { return; }
                }
            }
            r = url.changed() => {
                if r.is_err() { return; }
                let m = meta(&url.borrow_and_update(), &status.borrow(), frames.borrow().as_deref());
                if tx.send(m).await.is_err() { return; }
            }
            r = status.changed(), if status_open => {
                if r.is_err() { status_open = false; continue; }
                let m = meta(&url.borrow(), &status.borrow_and_update(), frames.borrow().as_deref());
                if tx.send(m).await.is_err() { return; }
            }
            msg = rx.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let reply = if !interactive {
                    Some("view-only: this live view does not accept input (open it with interactive=true)".to_string())
                } else {
                    match serde_json::from_str::<ViewerInput>(&text) {
                        Ok(input) => entry.media.input(&input).await.err().map(|e| format!("input failed: {e}")),
                        Err(e) => Some(format!("bad input message: {e}")),
                    }
                };
                if let Some(detail) = reply {
                    let m = Message::Text(json!({"type": "error", "detail": detail}).to_string().into());
                    if tx.send(m).await.is_err() { return; }
                }
            }
        }
    }
}
