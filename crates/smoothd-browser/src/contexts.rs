//! The same identity in every JavaScript context of a page. chromiumoxide routes only page
//! targets, so iframes in other processes and workers never see the page's user agent override.
//! [`watch`] opens a DevTools connection of its own, attaches to the page and asks Chromium to
//! attach every new child target (out-of-process iframes, dedicated and service workers)
//! paused before its first script runs; each gets the page's overrides, and then runs.
//! Resuming service workers matters on its own: chromiumoxide detaches from a service worker
//! that waits for its debugger without resuming it, which leaves it waiting, and the site's
//! `navigator.serviceWorker.register` never settles.
//!
//! Shared workers belong to no page, and a service worker's `navigator.userAgent` is fixed when
//! the browser starts it, before any override: both take that string from the browser's
//! `--user-agent` flag alone, so a phone's tasks run in a browser launched with the phone's
//! user agent (the emulation module puts it in the launch arguments). Their client hints follow an
//! override, which [`watch_browser`] gives every shared and service worker of such a browser
//! before it runs.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::error::BrowserError;

const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// Overrides every new child target of one page. Dropping it ends the connection, and with it
/// the overrides of the page's children (the page's own stay, on chromiumoxide's session).
pub struct ChildOverrides {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ChildOverrides {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What each child gets, before it runs.
#[derive(Debug, Clone)]
pub struct Overrides {
    /// `setUserAgentOverride` parameters (userAgent, userAgentMetadata, ...).
    pub user_agent: Option<Value>,
    /// `navigator.webdriver` reads true (stealth off: an honest automated browser).
    pub automation: bool,
}

fn auto_attach() -> Value {
    json!({"autoAttach": true, "waitForDebuggerOnStart": true, "flatten": true})
}

type Sink = futures::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;
type Stream = futures::stream::SplitStream<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
>;

/// Our own DevTools connection to the browser at `ws_url`.
async fn connect(ws_url: &str) -> Result<(Sink, Stream), BrowserError> {
    let (ws, _) = tokio::time::timeout(CONNECT_LIMIT, tokio_tungstenite::connect_async(ws_url))
        .await
        .map_err(|_| BrowserError::Cdp("the browser's DevTools endpoint did not answer".into()))?
        .map_err(|e| BrowserError::Cdp(format!("cannot connect to the browser's DevTools endpoint: {e}")))?;
    Ok(ws.split())
}

/// Numbers the commands of one connection.
fn commands() -> impl FnMut(Option<&str>, &str, Value) -> Message {
    let mut next = 1u64;
    move |session: Option<&str>, method: &str, params: Value| {
        let mut msg = json!({"id": next, "method": method, "params": params});
        next += 1;
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        Message::text(msg.to_string())
    }
}

/// The next `Target.attachedToTarget` on the connection: its session and target type.
async fn next_attached(stream: &mut Stream) -> Option<(String, String)> {
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        if v["method"] != "Target.attachedToTarget" {
            continue;
        }
        let params = &v["params"];
        let Some(child) = params["sessionId"].as_str() else {
            continue;
        };
        let kind = params["targetInfo"]["type"].as_str().unwrap_or("");
        return Some((child.to_string(), kind.to_string()));
    }
    None
}

/// Overrides the client hints of every shared and service worker the browser at `ws_url`
/// starts from now on, in any of its contexts: each is attached paused, gets
/// `Network.setUserAgentOverride` with `user_agent` (the parameters of
/// `Emulation.setUserAgentOverride`), and runs. For a browser whose tasks all present one
/// device; dropping the result ends it.
pub async fn watch_browser(ws_url: &str, user_agent: Value) -> Result<ChildOverrides, BrowserError> {
    let (mut sink, mut stream) = connect(ws_url).await?;
    let mut send = commands();
    let only_workers = json!({
        "autoAttach": true,
        "waitForDebuggerOnStart": true,
        "flatten": true,
        "filter": [{"type": "shared_worker"}, {"type": "service_worker"}],
    });
    sink.send(send(None, "Target.setAutoAttach", only_workers))
        .await
        .map_err(|e| BrowserError::Cdp(format!("DevTools connection: {e}")))?;
    let task = tokio::spawn(async move {
        'attached: while let Some((child, kind)) = next_attached(&mut stream).await {
            let mut out = Vec::new();
            if kind == "shared_worker" || kind == "service_worker" {
                out.push(send(
                    Some(&child),
                    "Network.setUserAgentOverride",
                    user_agent.clone(),
                ));
            }
            out.push(send(Some(&child), "Runtime.runIfWaitingForDebugger", json!({})));
            for m in out {
                if sink.send(m).await.is_err() {
                    break 'attached;
                }
            }
        }
        tracing::debug!("the connection watching the browser's shared and service workers ended");
    });
    Ok(ChildOverrides { task })
}

/// The page's session: the first answer with id 1 (the attach) carries it.
async fn page_session(stream: &mut Stream) -> Result<String, BrowserError> {
    tokio::time::timeout(CONNECT_LIMIT, async {
        while let Some(Ok(msg)) = stream.next().await {
            let Message::Text(text) = msg else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            if v["id"] == 1 {
                return v["result"]["sessionId"].as_str().map(str::to_string);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| BrowserError::Cdp("cannot attach to the page for its workers and frames".into()))
}

/// Attaches to page `target_id` over `ws_url` and overrides its children from now on.
pub async fn watch(
    ws_url: &str,
    target_id: &str,
    overrides: Overrides,
) -> Result<ChildOverrides, BrowserError> {
    let (mut sink, mut stream) = connect(ws_url).await?;
    let mut send = commands();
    let attach = send(
        None,
        "Target.attachToTarget",
        json!({"targetId": target_id, "flatten": true}),
    );
    sink.send(attach)
        .await
        .map_err(|e| BrowserError::Cdp(format!("DevTools connection: {e}")))?;
    let session = page_session(&mut stream).await?;
    let mut first = Vec::new();
    if overrides.automation {
        first.push(send(
            Some(&session),
            "Emulation.setAutomationOverride",
            json!({"enabled": true}),
        ));
    }
    first.push(send(Some(&session), "Target.setAutoAttach", auto_attach()));
    for m in first {
        sink.send(m)
            .await
            .map_err(|e| BrowserError::Cdp(format!("DevTools connection: {e}")))?;
    }
    let task = tokio::spawn(async move {
        while let Some((child, kind)) = next_attached(&mut stream).await {
            let child = child.as_str();
            let mut out = Vec::new();
            match (kind.as_str(), &overrides.user_agent) {
                ("iframe", ua) => {
                    if let Some(ua) = ua {
                        out.push(send(Some(child), "Emulation.setUserAgentOverride", ua.clone()));
                    }
                    if overrides.automation {
                        out.push(send(
                            Some(child),
                            "Emulation.setAutomationOverride",
                            json!({"enabled": true}),
                        ));
                    }
                    // The frame's own workers and frames, too.
                    out.push(send(Some(child), "Target.setAutoAttach", auto_attach()));
                }
                ("worker" | "service_worker", Some(ua)) => {
                    out.push(send(Some(child), "Network.setUserAgentOverride", ua.clone()));
                }
                _ => {}
            }
            // Commands on one session run in order: the child starts after its overrides.
            out.push(send(Some(child), "Runtime.runIfWaitingForDebugger", json!({})));
            for m in out {
                if sink.send(m).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(ChildOverrides { task })
}
