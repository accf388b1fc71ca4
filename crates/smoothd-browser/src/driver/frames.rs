//! Cross-origin iframes. Their documents are out of the page's reach from JavaScript, so the
//! agent reads them through CDP: an out-of-process frame (another site) is a target of its own,
//! reached by a flattened session that the page's auto-attach hands us; an in-process one (same
//! site, other origin) is reached through an isolated world created in that frame.
//!
//! chromiumoxide routes only page targets, so these calls go over a second DevTools connection
//! of our own, opened the first time a page shows a cross-origin frame. Its failures are
//! [`FrameError`]s; none of them is fatal to the task by itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// Why a cross-origin frame could not be read or driven.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FrameError {
    /// The browser's DevTools endpoint did not answer in time.
    #[error("the browser's DevTools endpoint did not answer")]
    ConnectTimeout,
    /// The WebSocket to the DevTools endpoint could not be opened.
    #[error("cannot connect to the browser's DevTools endpoint: {0}")]
    Connect(String),
    /// The connection ended (the browser went away).
    #[error("the browser's DevTools connection closed")]
    Closed,
    /// A command had no answer in time.
    #[error("{method} timed out after {secs} s")]
    Timeout { method: String, secs: u64 },
    /// Chromium answered a command with an error.
    #[error("{0}")]
    Cdp(String),
    /// The frame's JavaScript threw.
    #[error("the frame refused: {0}")]
    Refused(String),
    /// An answer lacked what it must carry (a session, a node's frame, a context).
    #[error("{0}")]
    Missing(&'static str),
    /// The frame of the last view is no longer there.
    #[error("the frame is gone; look at the new view")]
    Gone,
    /// Neither an attached target nor an isolated world reaches the frame.
    #[error("the frame cannot be reached")]
    Unreachable,
    /// Past the number of frames read per view.
    #[error("only the first {0} cross-origin frames are read")]
    TooMany(usize),
    /// The frame's view did not parse.
    #[error("unreadable frame view: {0}")]
    Unreadable(String),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, FrameError>>>>>;

/// A DevTools connection of our own to the browser.
pub(crate) struct RawCdp {
    next: AtomicU64,
    pending: Pending,
    /// Out-of-process frames attached to us: frame (target) id → session id.
    frames: Arc<Mutex<HashMap<String, String>>>,
    out: mpsc::UnboundedSender<String>,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

impl Drop for RawCdp {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl RawCdp {
    /// Connects to the browser's DevTools WebSocket (`ws://…/devtools/browser/…`).
    pub async fn connect(ws_url: &str) -> Result<Self, FrameError> {
        let (ws, _) = tokio::time::timeout(CONNECT_LIMIT, tokio_tungstenite::connect_async(ws_url))
            .await
            .map_err(|_| FrameError::ConnectTimeout)?
            .map_err(|e| FrameError::Connect(e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut rx) = mpsc::unbounded_channel::<String>();
        let writer = tokio::spawn(async move {
            while let Some(text) = rx.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let frames: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let (p, f) = (pending.clone(), frames.clone());
        let reader = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                if let Some(id) = v.get("id").and_then(Value::as_u64) {
                    let reply = match v.get("error") {
                        Some(e) => Err(FrameError::Cdp(
                            e.get("message")
                                .and_then(Value::as_str)
                                .unwrap_or("CDP error")
                                .to_string(),
                        )),
                        None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
                    };
                    if let Some(tx) = lock(&p).remove(&id) {
                        let _ = tx.send(reply);
                    }
                    continue;
                }
                let params = v.get("params").cloned().unwrap_or(Value::Null);
                match v.get("method").and_then(Value::as_str) {
                    Some("Target.attachedToTarget") => {
                        let info = &params["targetInfo"];
                        if info["type"] == "iframe"
                            && let (Some(t), Some(s)) =
                                (info["targetId"].as_str(), params["sessionId"].as_str())
                        {
                            lock(&f).insert(t.to_string(), s.to_string());
                        }
                    }
                    Some("Target.detachedFromTarget") => {
                        if let Some(s) = params["sessionId"].as_str() {
                            lock(&f).retain(|_, v| v != s);
                        }
                    }
                    _ => {}
                }
            }
            // The connection ended: fail whoever still waits.
            for (_, tx) in lock(&p).drain() {
                let _ = tx.send(Err(FrameError::Closed));
            }
        });
        Ok(Self {
            next: AtomicU64::new(1),
            pending,
            frames,
            out,
            reader,
            writer,
        })
    }

    /// Sends one command (on a target's session, or to the browser) and waits for its result.
    pub async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
        limit: Duration,
    ) -> Result<Value, FrameError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        if self.out.send(msg.to_string()).is_err() {
            lock(&self.pending).remove(&id);
            return Err(FrameError::Closed);
        }
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(FrameError::Closed),
            Err(_) => {
                lock(&self.pending).remove(&id);
                Err(FrameError::Timeout {
                    method: method.to_string(),
                    secs: limit.as_secs(),
                })
            }
        }
    }

    /// Attaches to a page target and asks for its out-of-process frames; returns the session.
    pub async fn attach_page(&self, target_id: &str, limit: Duration) -> Result<String, FrameError> {
        let r = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
                limit,
            )
            .await?;
        let session = r["sessionId"]
            .as_str()
            .ok_or(FrameError::Missing("Target.attachToTarget gave no session"))?
            .to_string();
        self.call(
            Some(&session),
            "Target.setAutoAttach",
            json!({"autoAttach": true, "waitForDebuggerOnStart": false, "flatten": true}),
            limit,
        )
        .await?;
        Ok(session)
    }

    /// The session of an attached out-of-process frame.
    pub fn frame_session(&self, frame_id: &str) -> Option<String> {
        lock(&self.frames).get(frame_id).cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where a cross-origin frame's JavaScript runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    /// The main world of an out-of-process frame's own target.
    Session(String),
    /// An isolated world in an in-process frame, on the page's session.
    Context(String, i64),
}

impl Route {
    pub fn session(&self) -> &str {
        match self {
            Route::Session(s) | Route::Context(s, _) => s,
        }
    }
}

/// Evaluates `expr` through `route`; `by_value` false returns the remote object id instead.
pub(crate) async fn evaluate(
    cdp: &RawCdp,
    route: &Route,
    expr: &str,
    by_value: bool,
    limit: Duration,
) -> Result<Value, FrameError> {
    let mut params = json!({
        "expression": expr,
        "returnByValue": by_value,
        "awaitPromise": true,
        "userGesture": true,
    });
    if let Route::Context(_, ctx) = route {
        params["contextId"] = json!(ctx);
    }
    let r = cdp
        .call(Some(route.session()), "Runtime.evaluate", params, limit)
        .await?;
    if let Some(ex) = r.get("exceptionDetails") {
        let msg = ex["exception"]["description"]
            .as_str()
            .or_else(|| ex["text"].as_str())
            .unwrap_or("an exception");
        return Err(FrameError::Refused(msg.to_string()));
    }
    if by_value {
        Ok(r["result"]["value"].clone())
    } else {
        Ok(r["result"]["objectId"].clone())
    }
}
