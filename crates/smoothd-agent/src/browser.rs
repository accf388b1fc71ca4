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

const PAGE_JS: &str = include_str!("page.js");
const TIMERS_JS: &str = include_str!("timers.js");
/// After a page loads: DOM quiet for this long with no short timer pending, at most `LATE_MAX`.
const LATE_QUIET_MS: u32 = 50;
const LATE_MAX_MS: u32 = 700;
const CALL_LIMIT: Duration = Duration::from_secs(20);
const LOAD_LIMIT: Duration = Duration::from_secs(20);

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

    /// The current page view; `None` fields are reused from the last view when nothing changed.
    pub async fn observe(&mut self) -> Result<View, ActError> {
        let prev = self.last.as_ref().map(|v| v.key.clone()).unwrap_or_default();
        let opts = json!({"prevKey": prev});
        let v = self.helper(&format!("view({opts})")).await?;
        let view: View =
            serde_json::from_value(v).map_err(|e| ActError::Model(format!("unreadable page view: {e}")))?;
        let mut view = match (&self.last, view.unchanged) {
            (Some(last), true) => last.clone(),
            _ => view,
        };
        self.collect_downloads().await;
        view.downloads.clone_from(&self.downloads);
        self.last = Some(view.clone());
        Ok(view)
    }

    pub fn forget_view(&mut self) {
        self.last = None;
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
        let settle = self.eval(
            "window.__smoothd ? window.__smoothd.settle(40, 400) : 0".into(),
            true,
        );
        let mut navigated = false;
        tokio::select! {
            r = settle => { let _ = r; }
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
        let p = self.helper(&format!("point({index})")).await?;
        let x = p.get("x").and_then(Value::as_f64).unwrap_or(0.0);
        let y = p.get("y").and_then(Value::as_f64).unwrap_or(0.0);
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
            .settled(|| async {
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
            .settled(|| self.mouse(DispatchMouseEventType::MouseMoved, x, y, false))
            .await?;
        self.after(nav, format!("the mouse is over [{index}]")).await
    }

    pub async fn drag_drop(&mut self, from: u32, to: u32) -> Result<Effect, ActError> {
        let (x0, y0, _) = self.point(from).await?;
        let (x1, y1, _) = self.point(to).await?;
        let ((), nav) = self
            .settled(|| async {
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
        let f = self.helper(&format!("focus({index}, {arg})")).await?;
        let typed = f.get("mode").and_then(Value::as_str) == Some("keys");
        let ((), nav) = self
            .settled(|| async {
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
        let (v, nav) = self.settled(|| self.helper(&call)).await?;
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
