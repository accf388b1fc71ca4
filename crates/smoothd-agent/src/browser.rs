//! The agent's hands and eyes on a [`BrowserSession`]: the page view (one `Runtime.evaluate`
//! per step, skipped when nothing changed), element actions by index with real input events,
//! tabs, and waiting for the page to settle after an action.

use std::time::{Duration, Instant};

use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::dom::SetFileInputFilesParams;
use chromiumoxide::cdp::browser_protocol::input::{
    DispatchKeyEventParams, DispatchKeyEventType, DispatchMouseEventParams, DispatchMouseEventType,
    InsertTextParams, MouseButton,
};
use chromiumoxide::cdp::browser_protocol::page::{
    CaptureScreenshotFormat, CaptureScreenshotParams, EventFrameStartedLoading, EventFrameStoppedLoading,
    EventLoadEventFired, GetNavigationHistoryParams, NavigateToHistoryEntryParams, PrintToPdfParams,
};
use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use smoothd_browser::{BrowserError, BrowserSession, Tab};

use crate::frames::{self, RawCdp, Route};

const PAGE_JS: &str = include_str!("page.js");
const TIMERS_JS: &str = include_str!("timers.js");
/// After a page loads: DOM quiet for this long with no short timer pending, at most `LATE_MAX`.
const LATE_QUIET_MS: u32 = 50;
const LATE_MAX_MS: u32 = 700;
const CALL_LIMIT: Duration = Duration::from_secs(20);
const LOAD_LIMIT: Duration = Duration::from_secs(20);
/// Cross-origin frames read per view (each costs a round trip per step; ad-heavy pages have many).
const MAX_FRAMES: usize = 10;

/// What one observation found.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct View {
    #[serde(default)]
    pub unchanged: bool,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub elements: u32,
    #[serde(default)]
    pub truncated: u32,
    #[serde(default)]
    pub above: i64,
    #[serde(default)]
    pub below: i64,
    #[serde(default)]
    pub width: i64,
    #[serde(default)]
    pub height: i64,
    #[serde(rename = "crossOrigin", default)]
    pub cross_origin: u32,
    #[serde(default)]
    pub canvas: u32,
    /// Files this task's tabs started downloading so far.
    #[serde(skip)]
    pub downloads: Vec<String>,
}

/// An action's failure the model should hear about (the task goes on).
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("{0}")]
    Model(String),
    #[error(transparent)]
    Browser(#[from] BrowserError),
}

impl ActError {
    /// A dead browser ends the task; anything else is told to the model.
    pub fn is_fatal(&self) -> bool {
        matches!(self, ActError::Browser(BrowserError::Crashed(_)))
    }
}

/// What an action did to the page.
#[derive(Debug, Clone, Default)]
pub struct Effect {
    /// A new document loaded (or a tab opened): the rest of the reply's calls are skipped.
    pub navigated: bool,
    pub note: String,
}

/// The agent's view of a session: which tab is current and the last view's key.
pub struct Driver<'a> {
    pub session: &'a BrowserSession,
    page: Page,
    tab_count: usize,
    last: Option<View>,
    /// Browser-wide download starts, filtered to the main frames of this task's tabs.
    download_events: Option<
        chromiumoxide::listeners::EventStream<
            chromiumoxide::cdp::browser_protocol::browser::EventDownloadWillBegin,
        >,
    >,
    frames: Vec<chromiumoxide::cdp::browser_protocol::page::FrameId>,
    downloads: Vec<String>,
    /// Our own DevTools connection for cross-origin frames, opened when a page first has one.
    link: Option<Link>,
    /// How each cross-origin frame (by frame id) was reached.
    routes: std::collections::HashMap<String, Route>,
    /// The cross-origin frames of the last view, in the order of the page's markers.
    xframes: Vec<XFrame>,
}

/// [`RawCdp`] attached to the current tab.
struct Link {
    cdp: RawCdp,
    target: String,
    session: String,
}

/// One cross-origin frame of the view: how to reach it and its last view.
#[derive(Default)]
struct XFrame {
    route: Option<Route>,
    frame: String,
    /// Its first index in the last view, and how many elements it had.
    base: u32,
    elements: u32,
    key: String,
    url: String,
    text: String,
    truncated: u32,
    nested: u32,
    canvas: u32,
    /// Why it could not be read, when it could not.
    failed: Option<String>,
}

impl<'a> Driver<'a> {
    pub fn new(session: &'a BrowserSession) -> Self {
        Self {
            session,
            page: session.page().clone(),
            tab_count: 1,
            last: None,
            download_events: None,
            frames: Vec::new(),
            downloads: Vec::new(),
            link: None,
            routes: std::collections::HashMap::new(),
            xframes: Vec::new(),
        }
    }

    /// Prepares the current tab for the agent: counts the page's short timers from the next
    /// document on (see timers.js).
    pub async fn install(&self) -> Result<(), ActError> {
        use chromiumoxide::cdp::browser_protocol::page::AddScriptToEvaluateOnNewDocumentParams;
        self.session
            .cdp(
                &self.page,
                AddScriptToEvaluateOnNewDocumentParams {
                    source: TIMERS_JS.to_string(),
                    world_name: None,
                    include_command_line_api: None,
                    run_immediately: None,
                },
                CALL_LIMIT,
            )
            .await?;
        Ok(())
    }

    /// After a new document loaded: lets what the page shows "a moment later" appear.
    async fn late_settle(&self) {
        let _ = self
            .eval(
                format!("{PAGE_JS}\nwindow.__smoothd.settle({LATE_QUIET_MS}, {LATE_MAX_MS})"),
                true,
            )
            .await;
    }

    /// Collects the download starts that arrived since the last look.
    async fn collect_downloads(&mut self) {
        if self.download_events.is_none() {
            self.download_events = self.session.download_events().await.ok();
        }
        if let Ok(Some(f)) = self.page.mainframe().await
            && !self.frames.contains(&f)
        {
            self.frames.push(f);
        }
        if let Some(d) = self.download_events.as_mut() {
            while let Some(Some(ev)) = futures::FutureExt::now_or_never(d.next()) {
                if self.frames.contains(&ev.frame_id) && !self.downloads.contains(&ev.suggested_filename) {
                    self.downloads.push(ev.suggested_filename.clone());
                }
            }
        }
    }

    pub fn page(&self) -> &Page {
        &self.page
    }

    async fn eval(&self, expr: String, by_value: bool) -> Result<Value, ActError> {
        let mut p = EvaluateParams::new(expr);
        p.return_by_value = Some(by_value);
        p.await_promise = Some(true);
        p.user_gesture = Some(true);
        let r = self.session.cdp(&self.page, p, CALL_LIMIT).await?;
        if let Some(ex) = r.exception_details {
            let msg = ex.exception.and_then(|o| o.description).unwrap_or(ex.text);
            return Err(ActError::Model(format!("the page refused: {msg}")));
        }
        Ok(r.result.value.unwrap_or(Value::Null))
    }

    /// Calls `window.__smoothd.<call>` (installing the helper first if needed).
    async fn helper(&self, call: &str) -> Result<Value, ActError> {
        let v = self
            .eval(format!("{PAGE_JS}\nwindow.__smoothd.{call}"), true)
            .await?;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            return Err(ActError::Model(e.to_string()));
        }
        Ok(v)
    }

    /// The current page view, with its cross-origin frames read in place; parts that did not
    /// change since the last view are reused.
    pub async fn observe(&mut self) -> Result<View, ActError> {
        let prev = self.last.as_ref().map(|v| v.key.clone()).unwrap_or_default();
        let opts = json!({"prevKey": prev});
        let v = self.helper(&format!("view({opts})")).await?;
        let view: View =
            serde_json::from_value(v).map_err(|e| ActError::Model(format!("unreadable page view: {e}")))?;
        let changed = !view.unchanged;
        let main = match (&self.last, view.unchanged) {
            (Some(last), true) => last.clone(),
            _ => view,
        };
        self.last = Some(main.clone());
        let mut view = if main.cross_origin == 0 {
            self.xframes.clear();
            main
        } else {
            if changed {
                // The markers may now stand for other frames: find them again.
                self.xframes.clear();
            }
            self.read_frames(&main).await?;
            self.compose(&main)
        };
        self.collect_downloads().await;
        view.downloads.clone_from(&self.downloads);
        Ok(view)
    }

    pub fn forget_view(&mut self) {
        self.last = None;
        self.xframes.clear();
    }

    /// Our DevTools connection, attached to the current tab.
    async fn link(&mut self) -> Result<&Link, ActError> {
        let target = self.page.target_id().as_ref().to_string();
        let stale = self.link.as_ref().is_some_and(|l| l.target != target);
        if stale || self.link.is_none() {
            let cdp = match self.link.take() {
                Some(l) => l.cdp,
                None => RawCdp::connect(&self.session.ws_url())
                    .await
                    .map_err(|e| self.frame_error(e))?,
            };
            let session = cdp
                .attach_page(&target, CALL_LIMIT)
                .await
                .map_err(|e| self.frame_error(e))?;
            // Isolated worlds belong to the old tab's session.
            self.routes.clear();
            self.link = Some(Link { cdp, target, session });
        }
        self.link
            .as_ref()
            .ok_or_else(|| ActError::Model("no DevTools connection".into()))
    }

    /// A raw CDP failure: the browser's death ends the task, anything else is told.
    fn frame_error(&self, e: String) -> ActError {
        if self.session.browser_alive() {
            ActError::Model(e)
        } else {
            ActError::Browser(BrowserError::Crashed("the browser process exited".into()))
        }
    }

    /// How to run JavaScript in the page's cross-origin frame `n` (and the frame's id): its own
    /// target when it is out of process, else an isolated world in it. Remembered per frame, so
    /// a frame keeps its world (and its idea of which elements are new) from step to step.
    async fn resolve(&mut self, n: usize) -> Result<(String, Route), String> {
        let link = self.link().await.map_err(|e| e.to_string())?;
        let page = Route::Session(link.session.clone());
        let object = frames::evaluate(
            &link.cdp,
            &page,
            &format!("window.__smoothd.xel({n})"),
            false,
            CALL_LIMIT,
        )
        .await?;
        let node = link
            .cdp
            .call(
                Some(&link.session),
                "DOM.describeNode",
                json!({"objectId": object}),
                CALL_LIMIT,
            )
            .await?;
        let _ = link
            .cdp
            .call(
                Some(&link.session),
                "Runtime.releaseObject",
                json!({"objectId": object}),
                CALL_LIMIT,
            )
            .await;
        let frame = node["node"]["frameId"]
            .as_str()
            .ok_or("the frame has no document yet")?
            .to_string();
        let oopif = link.cdp.frame_session(&frame);
        match (self.routes.get(&frame), &oopif) {
            (Some(r @ Route::Session(s)), Some(now)) if s == now => return Ok((frame, r.clone())),
            (Some(r @ Route::Context(..)), None) => return Ok((frame, r.clone())),
            _ => {}
        }
        let route = self.reach(&frame).await?;
        self.routes.insert(frame.clone(), route.clone());
        Ok((frame, route))
    }

    /// A new way into frame `frame` (see [`Self::resolve`]).
    async fn reach(&mut self, frame: &str) -> Result<Route, String> {
        let link = self.link().await.map_err(|e| e.to_string())?;
        for attempt in 0..2 {
            if let Some(s) = link.cdp.frame_session(frame) {
                tracing::debug!(%frame, "cross-origin frame: out of process, through its own target");
                return Ok(Route::Session(s));
            }
            let world = link
                .cdp
                .call(
                    Some(&link.session),
                    "Page.createIsolatedWorld",
                    json!({"frameId": frame, "worldName": "smoothd"}),
                    CALL_LIMIT,
                )
                .await;
            match world {
                Ok(w) => {
                    let ctx = w["executionContextId"].as_i64().ok_or("no execution context")?;
                    tracing::debug!(%frame, "cross-origin frame: in process, through an isolated world");
                    return Ok(Route::Context(link.session.clone(), ctx));
                }
                // An out-of-process frame whose attach event is still on its way.
                Err(e) if attempt == 1 => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Err("the frame cannot be reached".into())
    }

    /// Reads every cross-origin frame the main view marked, numbering their elements after the
    /// page's own.
    async fn read_frames(&mut self, main: &View) -> Result<(), ActError> {
        let count = main.cross_origin as usize;
        self.xframes.truncate(count);
        let readable = count.min(MAX_FRAMES);
        let mut base = main.elements;
        for n in 0..count {
            if self.xframes.len() <= n {
                self.xframes.push(XFrame::default());
            }
            if n >= readable {
                self.xframes[n] = XFrame {
                    base,
                    failed: Some(format!(
                        "only the first {MAX_FRAMES} cross-origin frames are read"
                    )),
                    ..XFrame::default()
                };
                continue;
            }
            // A remembered way into a frame may be stale (the frame navigated): find it once more.
            for attempt in 0..2 {
                if self.xframes[n].route.is_none() {
                    match self.resolve(n).await {
                        Ok((frame, r)) => {
                            self.xframes[n].frame = frame;
                            self.xframes[n].route = Some(r);
                        }
                        Err(e) => {
                            self.xframes[n] = XFrame {
                                base,
                                failed: Some(e),
                                ..XFrame::default()
                            };
                            break;
                        }
                    }
                }
                let xf = &self.xframes[n];
                let prev = if xf.base == base && xf.failed.is_none() {
                    xf.key.clone()
                } else {
                    String::new()
                };
                let opts = json!({"prevKey": prev, "base": base, "nested": true});
                let r = self
                    .frame_eval(n, &format!("{PAGE_JS}\nwindow.__smoothd.view({opts})"), true)
                    .await
                    .and_then(|v| serde_json::from_value::<View>(v).map_err(|e| e.to_string()));
                let xf = &mut self.xframes[n];
                match r {
                    Ok(v) if v.unchanged => {}
                    Ok(v) => {
                        *xf = XFrame {
                            route: xf.route.take(),
                            frame: std::mem::take(&mut xf.frame),
                            base,
                            elements: v.elements,
                            key: v.key,
                            url: v.url,
                            text: v.text,
                            truncated: v.truncated,
                            nested: v.cross_origin,
                            canvas: v.canvas,
                            failed: None,
                        };
                    }
                    Err(e) => {
                        self.routes.remove(&xf.frame);
                        *xf = XFrame {
                            base,
                            failed: Some(e),
                            ..XFrame::default()
                        };
                        if attempt == 0 {
                            continue;
                        }
                    }
                }
                break;
            }
            base += self.xframes[n].elements;
        }
        let live: Vec<&String> = self.xframes.iter().map(|x| &x.frame).collect();
        self.routes.retain(|f, _| live.contains(&f));
        Ok(())
    }

    /// The main view with each frame marker replaced by that frame's view.
    fn compose(&self, main: &View) -> View {
        let mut view = main.clone();
        let mut lines = Vec::new();
        let mut unreadable = 0;
        for line in main.text.lines() {
            let Some(n) = line
                .strip_prefix("\u{1}XFRAME ")
                .and_then(|r| r.strip_suffix('\u{1}'))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                lines.push(line.to_string());
                continue;
            };
            match self.xframes.get(n) {
                Some(xf) if xf.failed.is_none() => {
                    let origin = url::Url::parse(&xf.url)
                        .map(|u| u.origin().ascii_serialization())
                        .unwrap_or_else(|_| xf.url.clone());
                    lines.push(format!("--- iframe {origin} ---"));
                    if !xf.text.is_empty() {
                        lines.push(xf.text.clone());
                    }
                    lines.push("--- end iframe ---".into());
                    view.elements += xf.elements;
                    view.truncated += xf.truncated;
                    view.canvas += xf.canvas;
                    unreadable += xf.nested;
                }
                other => {
                    unreadable += 1;
                    let why = other.and_then(|x| x.failed.as_deref()).unwrap_or("not found");
                    lines.push(format!("--- iframe (cross-origin, not readable: {why}) ---"));
                }
            }
        }
        view.text = lines.join("\n");
        view.cross_origin = unreadable;
        view
    }

    /// Evaluates `expr` in cross-origin frame `n`.
    async fn frame_eval(&self, n: usize, expr: &str, by_value: bool) -> Result<Value, String> {
        let (link, route) = self.frame_route(n)?;
        frames::evaluate(&link.cdp, route, expr, by_value, CALL_LIMIT).await
    }

    /// Our connection and the way into cross-origin frame `n`.
    fn frame_route(&self, n: usize) -> Result<(&Link, &Route), String> {
        let route = self
            .xframes
            .get(n)
            .and_then(|x| x.route.as_ref())
            .ok_or("the frame is gone; look at the new view")?;
        let link = self.link.as_ref().ok_or("no DevTools connection")?;
        Ok((link, route))
    }

    /// The cross-origin frame holding element `index` of the last view, if any.
    fn frame_of(&self, index: u32) -> Option<usize> {
        self.xframes
            .iter()
            .position(|x| x.failed.is_none() && index >= x.base && index < x.base + x.elements)
    }

    /// Calls `window.__smoothd.<call>` where element `index` lives.
    async fn helper_at(&self, index: u32, call: &str) -> Result<Value, ActError> {
        let Some(n) = self.frame_of(index) else {
            return self.helper(call).await;
        };
        let v = self
            .frame_eval(n, &format!("{PAGE_JS}\nwindow.__smoothd.{call}"), true)
            .await
            .map_err(|e| self.frame_error(e))?;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            return Err(ActError::Model(e.to_string()));
        }
        Ok(v)
    }

    pub async fn tabs(&self) -> Result<Vec<Tab>, ActError> {
        Ok(self.session.tabs().await?)
    }

    /// Makes tab `n` current.
    pub async fn switch_tab(&mut self, n: usize) -> Result<Effect, ActError> {
        let tabs = self.tabs().await?;
        let tab = tabs
            .get(n)
            .ok_or_else(|| ActError::Model(format!("there is no tab {n}; there are {}", tabs.len())))?;
        self.page = self.session.tab_page(tab).await?;
        self.tab_count = tabs.len();
        self.last = None;
        Ok(Effect {
            navigated: true,
            note: format!("switched to tab {n}: {}", tab.url),
        })
    }

    /// Runs `act` and waits for what it started: a navigation's load, or the DOM to go quiet.
    /// Returns whether a new document loaded.
    async fn settled<F, Fut, T>(&self, act: F) -> Result<(T, bool), ActError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, ActError>>,
    {
        self.settled_in(None, act).await
    }

    /// [`Self::settled`] for an action on element `at`: a cross-origin frame's own DOM is the one
    /// to watch when the element is in one.
    async fn settled_in<F, Fut, T>(&self, at: Option<u32>, act: F) -> Result<(T, bool), ActError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, ActError>>,
    {
        let mut starts = self
            .page
            .event_listener::<EventFrameStartedLoading>()
            .await
            .map_err(|e| ActError::Browser(BrowserError::from(e)))?;
        let mut loads = self
            .page
            .event_listener::<EventLoadEventFired>()
            .await
            .map_err(|e| ActError::Browser(BrowserError::from(e)))?;
        // A link that turns out to be a download starts loading and stops without a load event.
        let mut stops = self
            .page
            .event_listener::<EventFrameStoppedLoading>()
            .await
            .map_err(|e| ActError::Browser(BrowserError::from(e)))?;
        let main = self.page.mainframe().await.ok().flatten();
        let out = act().await?;
        // A click that navigates starts loading within a few ms; DOM-only changes go quiet.
        const SETTLE: &str = "window.__smoothd ? window.__smoothd.settle(40, 400) : 0";
        let frame = at.and_then(|i| self.frame_of(i));
        let settle = async {
            match frame {
                Some(n) => {
                    let _ = self.frame_eval(n, SETTLE, true).await;
                }
                None => {
                    let _ = self.eval(SETTLE.into(), true).await;
                }
            }
        };
        let mut navigated = false;
        tokio::select! {
            () = settle => {}
            Some(ev) = starts.next() => { navigated = main.as_ref().is_none_or(|m| *m == ev.frame_id); }
        }
        while !navigated {
            // Drain what arrived meanwhile without waiting.
            match futures::FutureExt::now_or_never(starts.next()) {
                Some(Some(ev)) => navigated = main.as_ref().is_none_or(|m| *m == ev.frame_id),
                _ => break,
            }
        }
        if navigated {
            // Loading ends with a load event, or stops without one (a download, a 204).
            let stopped = async {
                while let Some(ev) = stops.next().await {
                    if main.as_ref().is_none_or(|m| *m == ev.frame_id) {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(LOAD_LIMIT, async {
                tokio::select! {
                    _ = loads.next() => self.late_settle().await,
                    () = stopped => navigated = false,
                }
            })
            .await;
        }
        Ok((out, navigated))
    }

    /// After an action: a new tab becomes current; says what happened (downloads the action
    /// started, if their events have arrived; the next view lists them in any case).
    async fn after(&mut self, navigated: bool, note: String) -> Result<Effect, ActError> {
        let known = self.downloads.len();
        self.collect_downloads().await;
        let note = match &self.downloads[known..] {
            [] => note,
            new => format!("{note}; download started: {}", new.join(", ")),
        };
        let mut effect = Effect { navigated, note };
        if navigated {
            self.last = None;
        }
        let tabs = self.tabs().await?;
        if tabs.len() > self.tab_count {
            let newest = tabs.len() - 1;
            self.page = self.session.tab_page(&tabs[newest]).await?;
            effect.navigated = true;
            effect.note = format!("a new tab opened ({}) and is now current", tabs[newest].url);
            self.last = None;
        } else if navigated {
            let url = self
                .eval("location.href".into(), true)
                .await
                .unwrap_or(Value::Null);
            effect.note = format!("page loaded: {}", url.as_str().unwrap_or("?"));
        }
        self.tab_count = tabs.len();
        Ok(effect)
    }

    async fn mouse(
        &self,
        kind: DispatchMouseEventType,
        x: f64,
        y: f64,
        buttons: bool,
    ) -> Result<(), ActError> {
        let mut p = DispatchMouseEventParams::new(kind.clone(), x, y);
        if buttons {
            p.button = Some(MouseButton::Left);
            p.click_count = Some(1);
            p.buttons = Some(if kind == DispatchMouseEventType::MouseReleased {
                0
            } else {
                1
            });
        }
        self.session.cdp(&self.page, p, CALL_LIMIT).await?;
        Ok(())
    }

    async fn point(&self, index: u32) -> Result<(f64, f64, String), ActError> {
        // In a cross-origin frame: the frame's place in the page, then the element's in the frame.
        let (dx, dy) = match self.frame_of(index) {
            Some(n) => {
                let o = self.helper(&format!("xpos({n})")).await?;
                (
                    o.get("x").and_then(Value::as_f64).unwrap_or(0.0),
                    o.get("y").and_then(Value::as_f64).unwrap_or(0.0),
                )
            }
            None => (0.0, 0.0),
        };
        let p = self.helper_at(index, &format!("point({index})")).await?;
        let x = dx + p.get("x").and_then(Value::as_f64).unwrap_or(0.0);
        let y = dy + p.get("y").and_then(Value::as_f64).unwrap_or(0.0);
        let what = format!(
            "{}{}",
            p.get("tag").and_then(Value::as_str).unwrap_or("element"),
            p.get("type")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(|t| format!(" type={t}"))
                .unwrap_or_default()
        );
        Ok((x, y, what))
    }

    pub async fn click(&mut self, index: u32) -> Result<Effect, ActError> {
        let (x, y, _) = self.point(index).await?;
        let ((), nav) = self
            .settled_in(Some(index), || async {
                self.mouse(DispatchMouseEventType::MouseMoved, x, y, false)
                    .await?;
                self.mouse(DispatchMouseEventType::MousePressed, x, y, true)
                    .await?;
                self.mouse(DispatchMouseEventType::MouseReleased, x, y, true)
                    .await
            })
            .await?;
        self.after(nav, format!("clicked [{index}]")).await
    }

    pub async fn hover(&mut self, index: u32) -> Result<Effect, ActError> {
        let (x, y, _) = self.point(index).await?;
        let ((), nav) = self
            .settled_in(Some(index), || {
                self.mouse(DispatchMouseEventType::MouseMoved, x, y, false)
            })
            .await?;
        self.after(nav, format!("the mouse is over [{index}]")).await
    }

    pub async fn drag_drop(&mut self, from: u32, to: u32) -> Result<Effect, ActError> {
        let (x0, y0, _) = self.point(from).await?;
        let (x1, y1, _) = self.point(to).await?;
        let ((), nav) = self
            .settled_in(Some(from), || async {
                self.mouse(DispatchMouseEventType::MouseMoved, x0, y0, false)
                    .await?;
                self.mouse(DispatchMouseEventType::MousePressed, x0, y0, true)
                    .await?;
                for i in 1..=5 {
                    let f = f64::from(i) / 5.0;
                    let mut p = DispatchMouseEventParams::new(
                        DispatchMouseEventType::MouseMoved,
                        x0 + (x1 - x0) * f,
                        y0 + (y1 - y0) * f,
                    );
                    p.button = Some(MouseButton::Left);
                    p.buttons = Some(1);
                    self.session.cdp(&self.page, p, CALL_LIMIT).await?;
                }
                self.mouse(DispatchMouseEventType::MouseReleased, x1, y1, true)
                    .await
            })
            .await?;
        self.after(nav, format!("dragged [{from}] onto [{to}]")).await
    }

    /// Replaces the field's value with `text` (typed as text input), then Enter if `submit`.
    pub async fn type_text(&mut self, index: u32, text: &str, submit: bool) -> Result<Effect, ActError> {
        let arg = serde_json::to_string(text).map_err(|e| ActError::Model(e.to_string()))?;
        let f = self.helper_at(index, &format!("focus({index}, {arg})")).await?;
        let typed = f.get("mode").and_then(Value::as_str) == Some("keys");
        let ((), nav) = self
            .settled_in(Some(index), || async {
                if typed {
                    self.session
                        .cdp(&self.page, InsertTextParams::new(text), CALL_LIMIT)
                        .await?;
                }
                if submit {
                    self.key("Enter").await?;
                }
                Ok(())
            })
            .await?;
        self.after(
            nav,
            format!(
                "typed into [{index}]{}",
                if submit { " and pressed Enter" } else { "" }
            ),
        )
        .await
    }

    pub async fn select_option(&mut self, index: u32, option: &str) -> Result<Effect, ActError> {
        let arg = serde_json::to_string(option).map_err(|e| ActError::Model(e.to_string()))?;
        let call = format!("select({index}, {arg})");
        let (v, nav) = self
            .settled_in(Some(index), || self.helper_at(index, &call))
            .await?;
        let note = format!(
            "selected {:?} in [{index}]",
            v.get("selected").and_then(Value::as_str).unwrap_or(option)
        );
        self.after(nav, note).await
    }

    pub async fn scroll(&mut self, down: bool, pages: f64) -> Result<Effect, ActError> {
        let call = format!("scroll({down}, {pages})");
        let (v, nav) = self.settled(|| self.helper(&call)).await?;
        let moved = v.get("moved").and_then(Value::as_i64).unwrap_or(0);
        let note = {
            if moved == 0 {
                format!(
                    "could not scroll {}: already at the {}",
                    if down { "down" } else { "up" },
                    if down { "bottom" } else { "top" }
                )
            } else {
                format!("scrolled {} {} px", if down { "down" } else { "up" }, moved.abs())
            }
        };
        self.after(nav, note).await
    }

    async fn key(&self, key: &str) -> Result<(), ActError> {
        let (code, vk, text) = key_info(key)
            .ok_or_else(|| ActError::Model(format!("unknown key {key:?}; use names like Enter, Escape, Tab, ArrowDown, Backspace, PageDown or one character")))?;
        let mut down = DispatchKeyEventParams::new(if text.is_some() {
            DispatchKeyEventType::KeyDown
        } else {
            DispatchKeyEventType::RawKeyDown
        });
        down.key = Some(key_name(key));
        down.code = Some(code.clone());
        down.windows_virtual_key_code = Some(vk);
        down.native_virtual_key_code = Some(vk);
        down.text.clone_from(&text);
        down.unmodified_text = text;
        self.session.cdp(&self.page, down, CALL_LIMIT).await?;
        let mut up = DispatchKeyEventParams::new(DispatchKeyEventType::KeyUp);
        up.key = Some(key_name(key));
        up.code = Some(code);
        up.windows_virtual_key_code = Some(vk);
        up.native_virtual_key_code = Some(vk);
        self.session.cdp(&self.page, up, CALL_LIMIT).await?;
        Ok(())
    }

    pub async fn press_key(&mut self, key: &str) -> Result<Effect, ActError> {
        let ((), nav) = self.settled(|| self.key(key)).await?;
        self.after(nav, format!("pressed {key}")).await
    }

    pub async fn goto(&mut self, url: &str) -> Result<Effect, ActError> {
        let page = self.page.clone();
        self.session.goto_in(&page, url).await.map_err(|e| match e {
            e @ BrowserError::Crashed(_) => ActError::Browser(e),
            e => ActError::Model(e.to_string()),
        })?;
        self.last = None;
        self.late_settle().await;
        let url = self
            .eval("location.href".into(), true)
            .await
            .unwrap_or(Value::Null);
        Ok(Effect {
            navigated: true,
            note: format!("page loaded: {}", url.as_str().unwrap_or("?")),
        })
    }

    pub async fn go_back(&mut self) -> Result<Effect, ActError> {
        let h = self
            .session
            .cdp(&self.page, GetNavigationHistoryParams::default(), CALL_LIMIT)
            .await?;
        let Some(idx) = usize::try_from(h.current_index).ok().filter(|i| *i > 0) else {
            return Err(ActError::Model("there is no earlier page in this tab".into()));
        };
        let entry = h.entries[idx - 1].id;
        let session = self.session;
        let page = self.page.clone();
        let ((), _) = self
            .settled(|| async move {
                session
                    .cdp(&page, NavigateToHistoryEntryParams::new(entry), CALL_LIMIT)
                    .await?;
                Ok(())
            })
            .await?;
        self.after(true, "went back".into()).await
    }

    pub async fn upload(&mut self, index: u32, path: &std::path::Path) -> Result<Effect, ActError> {
        if let Some(n) = self.frame_of(index) {
            return self.upload_in_frame(n, index, path).await;
        }
        let mut p = EvaluateParams::new(format!("{PAGE_JS}\nwindow.__smoothd.element({index})"));
        p.return_by_value = Some(false);
        let r = self.session.cdp(&self.page, p, CALL_LIMIT).await?;
        if let Some(ex) = r.exception_details {
            let msg = ex.exception.and_then(|o| o.description).unwrap_or(ex.text);
            return Err(ActError::Model(msg.trim_start_matches("Error: ").to_string()));
        }
        let object_id = r
            .result
            .object_id
            .ok_or_else(|| ActError::Model(format!("element [{index}] cannot take a file")))?;
        let params = SetFileInputFilesParams {
            files: vec![path.display().to_string()],
            node_id: None,
            backend_node_id: None,
            object_id: Some(object_id),
        };
        let session = self.session;
        let page = self.page.clone();
        let (r, nav) = self
            .settled(|| async move { Ok(session.cdp(&page, params, CALL_LIMIT).await) })
            .await?;
        r.map_err(|e| match e {
            e @ BrowserError::Crashed(_) => ActError::Browser(e),
            e => ActError::Model(format!("element [{index}] is not a file input ({e})")),
        })?;
        self.after(nav, format!("attached the file to [{index}]")).await
    }

    /// [`Self::upload`] for a file input in cross-origin frame `n`.
    async fn upload_in_frame(
        &mut self,
        n: usize,
        index: u32,
        path: &std::path::Path,
    ) -> Result<Effect, ActError> {
        let object = self
            .frame_eval(n, &format!("{PAGE_JS}\nwindow.__smoothd.element({index})"), false)
            .await
            .map_err(|e| ActError::Model(e.trim_start_matches("the frame refused: Error: ").to_string()))?;
        let (link, route) = self.frame_route(n).map_err(ActError::Model)?;
        let params = json!({"files": [path.display().to_string()], "objectId": object});
        let (r, nav) = self
            .settled_in(Some(index), || async {
                Ok(link
                    .cdp
                    .call(Some(route.session()), "DOM.setFileInputFiles", params, CALL_LIMIT)
                    .await)
            })
            .await?;
        r.map_err(|e| ActError::Model(format!("element [{index}] is not a file input ({e})")))?;
        self.after(nav, format!("attached the file to [{index}]")).await
    }

    /// A JPEG of the viewport (for the model) or a PNG of the whole page.
    pub async fn screenshot(&self, full_page: bool, jpeg: bool) -> Result<Vec<u8>, ActError> {
        let mut p = CaptureScreenshotParams::builder();
        p = if jpeg {
            p.format(CaptureScreenshotFormat::Jpeg).quality(70)
        } else {
            p.format(CaptureScreenshotFormat::Png)
        };
        if full_page {
            p = p.capture_beyond_viewport(true);
        }
        let r = self.session.cdp(&self.page, p.build(), CALL_LIMIT).await?;
        base64_decode(r.data.as_ref())
    }

    pub async fn pdf(&self) -> Result<Vec<u8>, ActError> {
        let r = self
            .session
            .cdp(&self.page, PrintToPdfParams::default(), Duration::from_secs(60))
            .await?;
        base64_decode(r.data.as_ref())
    }

    /// The whole page's readable text (for `extract`), up to `max` characters.
    pub async fn page_text(&self, max: usize) -> Result<String, ActError> {
        let v = self
            .eval(
                format!("(document.body ? document.body.innerText : '').slice(0, {max})"),
                true,
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    pub async fn wait(&mut self, seconds: f64) -> Effect {
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(seconds.clamp(0.0, 10.0))).await;
        Effect {
            navigated: false,
            note: format!("waited {:.1} s", started.elapsed().as_secs_f64()),
        }
    }
}

fn base64_decode(s: &str) -> Result<Vec<u8>, ActError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| ActError::Model(format!("unreadable capture: {e}")))
}

fn key_name(key: &str) -> String {
    match key.to_ascii_lowercase().as_str() {
        "enter" | "return" => "Enter".into(),
        "esc" | "escape" => "Escape".into(),
        "space" => " ".into(),
        _ => key.to_string(),
    }
}

/// (code, virtual key code, text) for a key name.
fn key_info(key: &str) -> Option<(String, i64, Option<String>)> {
    let k = key.to_ascii_lowercase();
    let named =
        |code: &str, vk: i64, text: Option<&str>| Some((code.to_string(), vk, text.map(str::to_string)));
    match k.as_str() {
        "enter" | "return" => named("Enter", 13, Some("\r")),
        "tab" => named("Tab", 9, None),
        "escape" | "esc" => named("Escape", 27, None),
        "backspace" => named("Backspace", 8, None),
        "delete" => named("Delete", 46, None),
        "space" | " " => named("Space", 32, Some(" ")),
        "arrowdown" | "down" => named("ArrowDown", 40, None),
        "arrowup" | "up" => named("ArrowUp", 38, None),
        "arrowleft" | "left" => named("ArrowLeft", 37, None),
        "arrowright" | "right" => named("ArrowRight", 39, None),
        "pagedown" => named("PageDown", 34, None),
        "pageup" => named("PageUp", 33, None),
        "home" => named("Home", 36, None),
        "end" => named("End", 35, None),
        _ => {
            let mut chars = key.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if c.is_ascii_alphanumeric() => {
                    let up = c.to_ascii_uppercase();
                    let code = if c.is_ascii_digit() {
                        format!("Digit{c}")
                    } else {
                        format!("Key{up}")
                    };
                    Some((code, i64::from(up as u8), Some(c.to_string())))
                }
                _ => None,
            }
        }
    }
}
