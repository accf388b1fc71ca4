//! One task's browser: an isolated browser context in a shared Chromium with one page,
//! emulating the task's device. Navigation honours `allowed_urls`; JavaScript evaluation
//! accepts the three forms the Smooth docs describe.

use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::network::{EventResponseReceived, ResourceType};
use chromiumoxide::cdp::browser_protocol::page::{EventLoadEventFired, NavigateParams, SetBypassCspParams};
use chromiumoxide::cdp::browser_protocol::target::{CreateBrowserContextParams, CreateTargetParams};
use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use futures::{FutureExt, StreamExt};
use serde_json::Value;
use smoothd_core::Device;
use smoothd_core::urlpattern::{UrlPattern, allowed};

use std::sync::Mutex;

use crate::adblock::Blocker;
use crate::contexts;
use crate::emulation;
use crate::error::BrowserError;
use crate::launch::BrowserProcess;
use crate::network::{self, Policy, Seen, SharedPolicy};

/// How a task wants its browser.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    pub device: Device,
    pub stealth: bool,
    pub allowed_urls: Vec<UrlPattern>,
    /// `scheme://host:port`, applied to the whole browser context.
    pub proxy_server: Option<String>,
    /// Draw a cursor that follows the mouse.
    pub show_cursor: bool,
    /// Use the process's default context (a dedicated process with a profile or extensions)
    /// instead of a fresh isolated one.
    pub default_context: bool,
    /// Username and password for the proxy's authentication challenge.
    pub proxy_credentials: Option<(String, String)>,
    /// The ad and tracker blocker, when the task keeps `use_adblock` on.
    pub blocker: Option<Arc<Blocker>>,
}

/// What a spare session was prepared with (see [`BrowserSession::spare_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpareKey {
    pub device: Device,
    pub stealth: bool,
    pub show_cursor: bool,
}

impl SpareKey {
    /// Whether a spare prepared with this key can serve a task that asks for `want`: the same
    /// stealth and cursor, and a device of the same identity (the two desktop sizes differ only
    /// in viewport, screen and window, which the task's are given when it takes the spare).
    pub fn serves(self, want: SpareKey) -> bool {
        self.stealth == want.stealth
            && self.show_cursor == want.show_cursor
            && emulation::identity(self.device) == emulation::identity(want.device)
    }

    /// Options that open a session with this key (no `allowed_urls`, no blocker yet).
    pub(crate) fn options(self) -> SessionOptions {
        SessionOptions {
            device: self.device,
            stealth: self.stealth,
            show_cursor: self.show_cursor,
            ..SessionOptions::default()
        }
    }
}

/// One tab of a session.
#[derive(Debug, Clone)]
pub struct Tab {
    /// The tab's DevTools target id.
    pub target_id: String,
    pub title: String,
    pub url: String,
    /// The session's own first tab.
    pub main: bool,
}

/// A task's browser context and page.
pub struct BrowserSession {
    process: Arc<BrowserProcess>,
    context: Option<BrowserContextId>,
    page: Page,
    opts: SessionOptions,
    interceptor: Option<tokio::task::JoinHandle<()>>,
    /// What the interceptor enforces (replaced when a spare session is given to a task).
    policy: SharedPolicy,
    seen: Arc<Mutex<Seen>>,
    /// Overrides the page's iframes and workers, and starts them.
    _children: Option<contexts::ChildOverrides>,
}

impl Drop for BrowserSession {
    fn drop(&mut self) {
        if let Some(t) = self.interceptor.take() {
            t.abort();
        }
    }
}

const NAVIGATION_TIMEOUT: Duration = Duration::from_secs(30);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the user's script as an expression, a function called with `args`, or a function body.
/// Compiling with `new AsyncFunction` decides which without running anything twice.
const EVAL_WRAPPER: &str = r#"(async (src, args) => {
  const AsyncFunction = (async () => {}).constructor;
  let asExpression = null;
  try { asExpression = new AsyncFunction('return (' + src + '\n);'); } catch (e) {}
  if (asExpression) {
    const value = await asExpression();
    return typeof value === 'function' ? await value(args) : value;
  }
  return await new AsyncFunction('args', src)(args);
})"#;

impl BrowserSession {
    /// Opens a fresh context and page in `process`.
    pub async fn open(process: Arc<BrowserProcess>, opts: SessionOptions) -> Result<Self, BrowserError> {
        let context = new_context(&process, &opts).await?;
        let mut target = CreateTargetParams::builder().url("about:blank");
        if let Some(c) = &context {
            target = target.browser_context_id(c.clone());
        }
        let page = process
            .browser
            .new_page(target.build().map_err(BrowserError::Cdp)?)
            .await
            .map_err(|e| crashed(&process, e))?;
        let version = process
            .browser
            .version()
            .await
            .map_err(|e| crashed(&process, e))?;
        let chrome_version = version
            .product
            .rsplit('/')
            .next()
            .unwrap_or("130.0.0.0")
            .to_string();
        page.execute(SetBypassCspParams::new(true))
            .await
            .map_err(|e| crashed(&process, e))?;
        let overrides = emulation::apply(
            &page,
            opts.device,
            opts.stealth,
            &chrome_version,
            &version.user_agent,
        )
        .await?;
        let children = watch_children(&process, &page, overrides).await;
        if opts.show_cursor {
            emulation::show_cursor(&page).await?;
        }
        let policy = Arc::new(std::sync::RwLock::new(Policy {
            blocker: opts.blocker.clone(),
            allowed_urls: opts.allowed_urls.clone(),
            proxy_credentials: opts.proxy_credentials.clone(),
        }));
        // Always intercept: the CDP handler runs with request interception on.
        let (interceptor, seen) = network::intercept(&page, policy.clone()).await?;
        let interceptor = Some(interceptor);
        Ok(Self {
            process,
            context,
            page,
            opts,
            interceptor,
            policy,
            seen,
            _children: children,
        })
    }

    /// The options a spare session must have been opened with to serve a task that asks for
    /// `opts`: what is fixed when the page is made (device, stealth, cursor, proxy). None when
    /// the task cannot take a spare (a proxy, or the process's default context).
    pub fn spare_key(opts: &SessionOptions) -> Option<SpareKey> {
        (opts.proxy_server.is_none() && opts.proxy_credentials.is_none() && !opts.default_context).then_some(
            SpareKey {
                device: opts.device,
                stealth: opts.stealth,
                show_cursor: opts.show_cursor,
            },
        )
    }

    /// Gives this never-used session to a task that asked for `opts` (same [`Self::spare_key`]):
    /// its `allowed_urls` and ad blocker apply from the next request on.
    pub(crate) async fn adopt(&mut self, opts: SessionOptions) -> Result<(), BrowserError> {
        let now = {
            let mut policy = match self.policy.write() {
                Ok(p) => p,
                Err(poisoned) => poisoned.into_inner(),
            };
            policy.allowed_urls = opts.allowed_urls.clone();
            policy.blocker = opts.blocker.clone();
            policy.clone()
        };
        if opts.device != self.opts.device {
            emulation::size(&self.page, opts.device).await?;
        }
        self.opts = opts;
        if now.intercepts() {
            network::apply(&self.page, &now).await?;
        }
        Ok(())
    }

    /// Navigates and waits for the page to load. A refused URL, a network error or a URL outside
    /// `allowed_urls` is a user error that says why.
    pub async fn goto(&self, raw: &str) -> Result<(), BrowserError> {
        self.goto_in(&self.page, raw).await
    }

    /// [`BrowserSession::goto`] in one of this session's tabs.
    pub(crate) async fn goto_in(&self, page: &Page, raw: &str) -> Result<(), BrowserError> {
        let url = self.check_url(raw)?;
        let mut loads = page
            .event_listener::<EventLoadEventFired>()
            .await
            .map_err(|e| self.fail(e))?;
        let mut responses = page
            .event_listener::<EventResponseReceived>()
            .await
            .map_err(|e| self.fail(e))?;
        self.reset_refusals();
        let nav = self
            .guard(NAVIGATION_TIMEOUT, page.execute(NavigateParams::new(url.clone())))
            .await
            .map_err(|e| match e {
                BrowserError::Timeout(_) => {
                    BrowserError::Navigation(format!("navigation to {url} timed out"))
                }
                e => e,
            })?
            .map_err(|e| self.fail(e))?;
        if let Some(err) = nav.result.error_text {
            return Err(self.refused(&url, &err));
        }
        // Same-document navigations have no loader and fire no load event.
        if nav.result.loader_id.is_some() {
            let _ = self.guard(NAVIGATION_TIMEOUT, loads.next()).await?;
        }
        // A proxy that refuses the credentials may send a page with its 407 (squid, tinyproxy
        // do); Chromium shows that page as if the navigation had worked. It did not.
        let mut got_407 = false;
        while let Some(Some(ev)) = responses.next().now_or_never() {
            if matches!(ev.r#type, ResourceType::Document)
                && ev.response.status == 407
                && nav.result.loader_id.as_ref() == Some(&ev.loader_id)
            {
                got_407 = true;
            }
        }
        if got_407 || self.proxy_refused_now() {
            return Err(BrowserError::Navigation(proxy_refused(&url)));
        }
        Ok(())
    }

    /// `raw` as the URL to open, or why it cannot be opened (`allowed_urls`).
    pub(crate) fn check_url(&self, raw: &str) -> Result<String, BrowserError> {
        let url = smoothd_core::request::normalize_url(raw).map_err(BrowserError::Navigation)?;
        if let Ok(parsed) = url::Url::parse(&url)
            && !allowed(&self.opts.allowed_urls, &parsed)
        {
            return Err(BrowserError::Navigation(format!(
                "{url} is not allowed: it matches none of allowed_urls ({})",
                self.opts
                    .allowed_urls
                    .iter()
                    .map(UrlPattern::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(url)
    }

    /// Refusals are counted per navigation: call before one starts.
    pub(crate) fn reset_refusals(&self) {
        if let Ok(mut s) = self.seen.lock() {
            s.proxy_auth_failed = false;
        }
    }

    /// Whether the proxy refused our credentials since [`Self::reset_refusals`].
    pub(crate) fn proxy_refused_now(&self) -> bool {
        self.seen.lock().map(|s| s.proxy_auth_failed).unwrap_or(false)
    }

    /// Why the navigation to `url` failed with Chromium's `err`, in words.
    pub(crate) fn refused(&self, url: &str, err: &str) -> BrowserError {
        let seen = self
            .seen
            .lock()
            .map(|s| {
                (
                    s.proxy_auth_failed,
                    s.blocked.iter().find(|(u, _)| *u == url).map(|(_, w)| *w),
                )
            })
            .unwrap_or((false, None));
        BrowserError::Navigation(match seen {
            (true, _) => proxy_refused(url),
            (_, Some(why)) => format!("cannot open {url}: blocked ({why})"),
            _ if err.contains("ERR_PROXY") || err.contains("ERR_TUNNEL") => {
                format!("cannot open {url} through the proxy: {err}")
            }
            _ => format!("cannot open {url}: {err}"),
        })
    }

    /// Evaluates `js` (expression, function of `args`, or body with `return`) and returns its
    /// JSON value; a thrown exception is a user error with its message.
    pub async fn evaluate(&self, js: &str, args: Option<&Value>) -> Result<Value, BrowserError> {
        let src = serde_json::to_string(js).map_err(|e| BrowserError::Script(e.to_string()))?;
        let args = serde_json::to_string(args.unwrap_or(&Value::Null))
            .map_err(|e| BrowserError::Script(e.to_string()))?;
        let mut params = EvaluateParams::new(format!("{EVAL_WRAPPER}({src}, {args})"));
        params.return_by_value = Some(true);
        params.await_promise = Some(true);
        params.user_gesture = Some(true);
        let resp = self.guard(SCRIPT_TIMEOUT, self.page.execute(params)).await?;
        let resp = match resp {
            Ok(r) => r,
            // Values that cannot travel as JSON (DOM nodes, cycles) fail here: the user's to fix.
            Err(e) if self.process.is_alive() => {
                return Err(BrowserError::Script(format!("cannot return the value: {e}")));
            }
            Err(e) => return Err(self.fail(e)),
        };
        if let Some(ex) = &resp.result.exception_details {
            let message = ex
                .exception
                .as_ref()
                .and_then(|o| {
                    o.description
                        .clone()
                        .or_else(|| o.value.as_ref().map(|v| v.to_string()))
                })
                .unwrap_or_else(|| ex.text.clone());
            return Err(BrowserError::Script(message));
        }
        Ok(resp.result.result.value.clone().unwrap_or(Value::Null))
    }

    /// Attaches local files to the `<input type=file>` matching `selector`, as if the user had
    /// picked them.
    pub async fn set_input_files(
        &self,
        selector: &str,
        paths: &[std::path::PathBuf],
    ) -> Result<(), BrowserError> {
        use chromiumoxide::cdp::browser_protocol::dom::SetFileInputFilesParams;
        let sel = serde_json::to_string(selector).map_err(|e| BrowserError::Script(e.to_string()))?;
        let found = self
            .guard(
                SCRIPT_TIMEOUT,
                self.page
                    .execute(EvaluateParams::new(format!("document.querySelector({sel})"))),
            )
            .await?
            .map_err(|e| self.fail(e))?;
        let object_id = found
            .result
            .result
            .object_id
            .clone()
            .ok_or_else(|| BrowserError::Script(format!("no element matches {selector:?}")))?;
        let files = paths.iter().map(|p| p.display().to_string()).collect();
        let params = SetFileInputFilesParams {
            files,
            node_id: None,
            backend_node_id: None,
            object_id: Some(object_id),
        };
        self.guard(SCRIPT_TIMEOUT, self.page.execute(params))
            .await?
            .map_err(|e| BrowserError::Script(format!("cannot attach files to {selector:?}: {e}")))?;
        Ok(())
    }

    /// Closes the page and disposes the context (cookies, storage, cache go with it).
    pub async fn close(self) {
        if !self.process.is_alive() {
            return;
        }
        let dispose = async {
            let _ = self.page.clone().close().await;
            if let Some(c) = &self.context {
                let _ = self.process.browser.dispose_browser_context(c.clone()).await;
            }
        };
        if self.guard(Duration::from_secs(5), dispose).await.is_err() {
            tracing::warn!("closing a browser context timed out");
        }
    }

    /// The session's first tab.
    pub(crate) fn page(&self) -> &Page {
        &self.page
    }

    /// This session's tabs (pages of its browser context), oldest first.
    pub async fn tabs(&self) -> Result<Vec<Tab>, BrowserError> {
        use chromiumoxide::cdp::browser_protocol::target::GetTargetsParams;
        let targets = self
            .guard(
                SCRIPT_TIMEOUT,
                self.process.browser.execute(GetTargetsParams::default()),
            )
            .await?
            .map_err(|e| self.fail(e))?
            .result
            .target_infos;
        let main = self.page.target_id();
        let ctx = targets
            .iter()
            .find(|t| &t.target_id == main)
            .and_then(|t| t.browser_context_id.clone());
        let mut tabs: Vec<Tab> = targets
            .into_iter()
            .filter(|t| t.r#type == "page" && t.browser_context_id == ctx)
            .map(|t| Tab {
                main: &t.target_id == main,
                target_id: t.target_id.as_ref().to_string(),
                title: t.title,
                url: t.url,
            })
            .collect();
        // Chromium lists the newest first; the first tab is the session's own.
        tabs.reverse();
        tabs.sort_by_key(|t| !t.main);
        Ok(tabs)
    }

    /// Download starts anywhere in this browser (filter on the frame); they are reported once
    /// downloads are enabled for the context (`Browser.setDownloadBehavior` with events).
    pub(crate) async fn download_events(
        &self,
    ) -> Result<
        chromiumoxide::listeners::EventStream<
            chromiumoxide::cdp::browser_protocol::browser::EventDownloadWillBegin,
        >,
        BrowserError,
    > {
        self.process
            .browser
            .event_listener()
            .await
            .map_err(|e| self.fail(e))
    }

    /// The page object of one of this session's tabs.
    pub(crate) async fn tab_page(&self, tab: &Tab) -> Result<Page, BrowserError> {
        if tab.main {
            return Ok(self.page.clone());
        }
        let page = self
            .guard(
                SCRIPT_TIMEOUT,
                self.process
                    .browser
                    .get_page(chromiumoxide::cdp::browser_protocol::target::TargetId::from(
                        tab.target_id.clone(),
                    )),
            )
            .await?
            .map_err(|e| self.fail(e))?;
        Ok(page)
    }

    /// Runs a CDP call on this session's browser with a time limit; a dead browser ends it at
    /// once with [`BrowserError::Crashed`].
    pub(crate) async fn cdp<T: chromiumoxide::Command>(
        &self,
        page: &Page,
        cmd: T,
        limit: Duration,
    ) -> Result<T::Response, BrowserError> {
        let resp = self.guard(limit, page.execute(cmd)).await?;
        resp.map(|r| r.result).map_err(|e| self.fail(e))
    }

    /// The browser's DevTools WebSocket address (for a second connection of our own).
    /// The device this session emulates.
    pub(crate) fn device(&self) -> Device {
        self.opts.device
    }

    pub(crate) fn ws_url(&self) -> String {
        self.process.browser.websocket_address().clone()
    }

    /// The browser process under this session.
    pub(crate) fn process(&self) -> &BrowserProcess {
        &self.process
    }

    /// The isolated context, or None for a dedicated process's default context.
    pub(crate) fn context_id(&self) -> Option<&BrowserContextId> {
        self.context.as_ref()
    }

    /// Whether the browser under this session is still up.
    pub fn browser_alive(&self) -> bool {
        self.process.is_alive()
    }

    /// Resolves when the browser under this session is gone: its process exited (crashed or
    /// was killed) or the connection to it ended. Sessions wait on it beside their commands.
    pub async fn browser_gone(&self) {
        self.process.exited.cancelled().await;
    }

    /// Runs a CDP call with a timeout, ending at once if the browser process dies.
    async fn guard<T>(
        &self,
        limit: Duration,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, BrowserError> {
        tokio::select! {
            r = tokio::time::timeout(limit, fut) => r.map_err(|_| BrowserError::Timeout(limit.as_secs())),
            _ = self.process.exited.cancelled() => Err(BrowserError::Crashed("the browser process exited".into())),
        }
    }

    fn fail(&self, e: chromiumoxide::error::CdpError) -> BrowserError {
        crashed(&self.process, e)
    }
}

/// The error of a navigation the proxy refused.
pub(crate) fn proxy_refused(url: &str) -> String {
    format!(
        "cannot open {url}: the proxy refused the credentials (407 Proxy Authentication Required; check proxy_username and proxy_password)"
    )
}
/// A fresh isolated context for the session, with the proxy it asked for; `None` for a
/// dedicated process (profile, extensions), which runs in its default context, whose proxy
/// comes from its command line.
async fn new_context(
    process: &BrowserProcess,
    opts: &SessionOptions,
) -> Result<Option<BrowserContextId>, BrowserError> {
    if opts.default_context {
        return Ok(None);
    }
    let mut params = CreateBrowserContextParams::builder().dispose_on_detach(true);
    if let Some(proxy) = &opts.proxy_server {
        // `<-loopback>` removes Chromium's implicit bypass for localhost: all page
        // traffic goes through the proxy the user asked for.
        params = params
            .proxy_server(proxy.clone())
            .proxy_bypass_list("<-loopback>");
    }
    let context = process
        .browser
        .create_browser_context(params.build())
        .await
        .map_err(|e| crashed(process, e))?;
    Ok(Some(context))
}

/// Iframes in other processes and workers get the page's overrides before they run, and
/// service workers get started at all (chromiumoxide detaches from them while they wait).
/// Without it the page still works (a browser that takes one connection only, say); its
/// workers and other-process iframes then keep the browser-wide identity.
async fn watch_children(
    process: &BrowserProcess,
    page: &Page,
    overrides: contexts::Overrides,
) -> Option<contexts::ChildOverrides> {
    match contexts::watch(
        process.browser.websocket_address(),
        page.target_id().as_ref(),
        overrides,
    )
    .await
    {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the page's workers and frames");
            None
        }
    }
}

/// Turns a CDP failure into `Crashed` when the connection is gone.
fn crashed(process: &BrowserProcess, e: chromiumoxide::error::CdpError) -> BrowserError {
    let err = BrowserError::from(e);
    if matches!(err, BrowserError::Crashed(_)) {
        process.mark_dead();
    }
    if !process.is_alive() {
        return BrowserError::Crashed(err.to_string());
    }
    err
}
