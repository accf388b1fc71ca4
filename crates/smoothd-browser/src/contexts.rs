//! The same identity in every JavaScript context of a page. chromiumoxide routes only page
//! targets, so iframes in other processes and workers never see the page's user agent override.
//! This opens a DevTools connection of its own, attaches to the page and asks Chromium to
//! attach every new child target (out-of-process iframes, dedicated, shared and service
//! workers) paused before its first script runs; each gets the page's overrides, and then runs.
//! Service workers do not take a user agent override (Chromium answers, and never starts the
//! worker); they are resumed untouched and keep the browser-wide identity. Resuming them matters
//! on its own: chromiumoxide detaches from a service worker that waits for its debugger without
//! resuming it, which leaves it waiting, and the site's `navigator.serviceWorker.register`
//! never settles.

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

/// Attaches to page `target_id` over `ws_url` and overrides its children from now on.
pub async fn watch(
    ws_url: &str,
    target_id: &str,
    overrides: Overrides,
) -> Result<ChildOverrides, BrowserError> {
    let (ws, _) = tokio::time::timeout(CONNECT_LIMIT, tokio_tungstenite::connect_async(ws_url))
        .await
        .map_err(|_| BrowserError::Cdp("the browser's DevTools endpoint did not answer".into()))?
        .map_err(|e| BrowserError::Cdp(format!("cannot connect to the browser's DevTools endpoint: {e}")))?;
    let (mut sink, mut stream) = ws.split();
    let mut next = 1u64;
    let mut send = move |session: Option<&str>, method: &str, params: Value| {
        let mut msg = json!({"id": next, "method": method, "params": params});
        next += 1;
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        Message::text(msg.to_string())
    };
    let attach = send(
        None,
        "Target.attachToTarget",
        json!({"targetId": target_id, "flatten": true}),
    );
    sink.send(attach)
        .await
        .map_err(|e| BrowserError::Cdp(format!("DevTools connection: {e}")))?;
    // The first answer with id 1 carries the page's session.
    let session = tokio::time::timeout(CONNECT_LIMIT, async {
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
    .ok_or_else(|| BrowserError::Cdp("cannot attach to the page for its workers and frames".into()))?;
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
            let mut out = Vec::new();
            match (kind, &overrides.user_agent) {
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
                ("worker" | "shared_worker", Some(ua)) => {
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
