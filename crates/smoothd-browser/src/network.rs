//! Request interception for one page, through the CDP Fetch domain: requests outside
//! `allowed_urls` and requests the ad blocker matches are failed as blocked-by-client, and
//! proxy authentication challenges are answered with the task's credentials (once: a
//! second challenge means the credentials are wrong, and the request fails). A page whose
//! policy has nothing to enforce has its requests go unpaused, with the HTTP cache on: each
//! pause is a round trip to us (10 to 20 ms of a local page's first load).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::fetch::{
    ContinueRequestParams, DisableParams, EnableParams, EventAuthRequired, EventRequestPaused,
    FailRequestParams, RequestPattern, RequestStage,
};
use chromiumoxide::cdp::browser_protocol::network::{ErrorReason, ResourceType, SetCacheDisabledParams};
use futures::StreamExt;
use smoothd_core::urlpattern::{UrlPattern, allowed};

use crate::adblock::Blocker;
use crate::error::BrowserError;

/// What the interceptor enforces.
#[derive(Clone, Default)]
pub struct Policy {
    pub blocker: Option<Arc<Blocker>>,
    pub allowed_urls: Vec<UrlPattern>,
    pub proxy_credentials: Option<(String, String)>,
}

impl Policy {
    /// Whether requests must be paused: there is an ad blocker, `allowed_urls` or proxy
    /// credentials.
    pub fn intercepts(&self) -> bool {
        self.blocker.is_some() || !self.allowed_urls.is_empty() || self.proxy_credentials.is_some()
    }
}

/// Pauses `page`'s requests for its interceptor when `policy` needs it (with the HTTP cache
/// off, so that none skips the pause), else lets them through unpaused with the cache on.
pub(crate) async fn apply(page: &Page, policy: &Policy) -> Result<(), BrowserError> {
    if policy.intercepts() {
        page.execute(EnableParams {
            patterns: Some(vec![RequestPattern {
                url_pattern: Some("*".into()),
                resource_type: None,
                request_stage: Some(RequestStage::Request),
            }]),
            handle_auth_requests: Some(policy.proxy_credentials.is_some()),
        })
        .await?;
        page.execute(SetCacheDisabledParams::new(true)).await?;
    } else {
        page.execute(DisableParams::default()).await?;
        page.execute(SetCacheDisabledParams::new(false)).await?;
    }
    Ok(())
}

/// What interception saw; read by the session to explain failures.
#[derive(Debug, Default)]
pub struct Seen {
    /// URLs refused, with why.
    pub blocked: Vec<(String, &'static str)>,
    /// Proxy authentication was refused (wrong credentials).
    pub proxy_auth_failed: bool,
}

fn adblock_type(t: &ResourceType) -> &'static str {
    match t {
        ResourceType::Document => "document",
        ResourceType::Stylesheet => "stylesheet",
        ResourceType::Image => "image",
        ResourceType::Media => "media",
        ResourceType::Font => "font",
        ResourceType::Script => "script",
        ResourceType::Xhr => "xmlhttprequest",
        ResourceType::Fetch => "xmlhttprequest",
        ResourceType::WebSocket => "websocket",
        ResourceType::Ping => "ping",
        _ => "other",
    }
}

/// The policy an interceptor enforces, which its session may replace before its first request
/// (a spare session given to a task, see [`crate::pool`]). The proxy credentials are fixed when
/// interception starts.
pub type SharedPolicy = Arc<RwLock<Policy>>;

/// Whether `policy` refuses `url` (a request of type `kind` from the document at `source`).
fn verdict(policy: &SharedPolicy, url: &str, source: &str, kind: &ResourceType) -> Option<&'static str> {
    let policy = match policy.read() {
        Ok(p) => p,
        Err(poisoned) => poisoned.into_inner(),
    };
    match url::Url::parse(url) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https" | "ws" | "wss")
                && !allowed(&policy.allowed_urls, &u) =>
        {
            Some("outside allowed_urls")
        }
        _ if !matches!(kind, ResourceType::Document)
            && policy
                .blocker
                .as_ref()
                .is_some_and(|b| b.blocks(url, source, adblock_type(kind))) =>
        {
            Some("ad blocker")
        }
        _ => None,
    }
}

/// Starts intercepting `page`'s requests; the returned task stops when aborted.
pub async fn intercept(
    page: &Page,
    shared: SharedPolicy,
) -> Result<(tokio::task::JoinHandle<()>, Arc<Mutex<Seen>>), BrowserError> {
    let mut paused = page.event_listener::<EventRequestPaused>().await?;
    let mut auth = page.event_listener::<EventAuthRequired>().await?;
    let policy = match shared.read() {
        Ok(p) => p.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let credentials = policy.proxy_credentials.clone();
    if let Some((user, pass)) = &credentials {
        page.authenticate(chromiumoxide::auth::Credentials {
            username: user.clone(),
            password: pass.clone(),
        })
        .await?;
    }
    apply(page, &policy).await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    let page = page.clone();
    let task = tokio::spawn(async move {
        let mut source = String::from("about:blank");
        let mut challenges: HashMap<String, u32> = HashMap::new();
        loop {
            tokio::select! {
                ev = paused.next() => {
                    let Some(ev) = ev else { break };
                    let url = ev.request.url.clone();
                    let is_document = matches!(ev.resource_type, ResourceType::Document);
                    let result = match verdict(&shared, &url, &source, &ev.resource_type) {
                        Some(why) => {
                            tracing::debug!(%url, why, "request blocked");
                            if let Ok(mut s) = record.lock() {
                                s.blocked.push((url, why));
                            }
                            page.execute(FailRequestParams::new(ev.request_id.clone(), ErrorReason::BlockedByClient)).await.map(|_| ())
                        }
                        None => {
                            if is_document {
                                source = url;
                            }
                            page.execute(ContinueRequestParams::new(ev.request_id.clone())).await.map(|_| ())
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "interception reply failed");
                    }
                }
                ev = auth.next() => {
                    // chromiumoxide answers the challenge with the page's credentials (and
                    // cancels a repeat for the same request); we only note failures.
                    let Some(ev) = ev else { break };
                    let n = challenges.entry(ev.request.url.clone()).or_insert(0);
                    *n += 1;
                    if (*n > 1 || credentials.is_none())
                        && let Ok(mut s) = record.lock() {
                            s.proxy_auth_failed = true;
                        }
                }
            }
        }
    });
    Ok((task, seen))
}
