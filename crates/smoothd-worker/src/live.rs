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
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use smoothd_browser::{Frame, PageMedia, ViewerInput};
use smoothd_core::ids::same_secret;
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
        };
        let app = axum::Router::new()
            .route("/live/{task_id}", axum::routing::get(connect))
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
