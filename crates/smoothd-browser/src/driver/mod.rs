//! The agent's hands and eyes on a [`BrowserSession`]: observe → [`PageView`], act([`Action`]) →
//! [`ActionResult`], and the few captures an agent needs (tabs, screenshot, PDF, page text).
//! Every CDP call stays in this crate; callers see only these types.
//!
//! - [`observe`](self::observe): the page view, one `Runtime.evaluate` per step (skipped when
//!   nothing changed), with cross-origin frames read in place;
//! - [`route`](self::route): how each cross-origin frame is reached (its own target or an
//!   isolated world), over [`frames`]'s second DevTools connection;
//! - [`act`](self::act): element actions by index with real input events, navigation, uploads;
//! - [`settle`](self::settle): waiting for what an action started, and following new tabs;
//! - [`ready`](self::ready): when a new document is usable (DOMContentLoaded, its scripts and
//!   data, content, a quiet DOM), without waiting for `load`;
//! - [`target`](self::target): elements and pages described so a replay finds them again;
//! - [`tabs`](self::tabs), [`capture`](self::capture), [`keys`](self::keys);
//! - [`captcha`](self::captcha): challenges a person must pass (captchas, interstitials).

mod act;
mod captcha;
mod capture;
mod frames;
mod keys;
mod observe;
mod ready;
mod route;
mod settle;
mod tabs;
mod target;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::browser::EventDownloadWillBegin;
use chromiumoxide::cdp::browser_protocol::page::{
    AddScriptToEvaluateOnNewDocumentParams, CreateIsolatedWorldParams, FrameId,
};
use chromiumoxide::cdp::js_protocol::runtime::{
    EvaluateParams, EvaluateReturns, EventExecutionContextCreated, ExecutionContextId,
};
use chromiumoxide::listeners::EventStream;
use serde::Deserialize;
use serde_json::Value;

use crate::error::BrowserError;
use crate::session::BrowserSession;
pub use captcha::{Challenge, ChallengeKind};
pub use frames::FrameError;
use route::{Link, XFrame};
pub use settle::Settle;
pub use target::{PageShape, Target};

const PAGE_JS: &str = include_str!("page.js");
/// The name of the isolated world page.js runs in, in every frame it reads.
const WORLD: &str = "smoothd";
const CALL_LIMIT: Duration = Duration::from_secs(20);
/// What a helper call answers in a document that does not have the helper (see [`Driver::call`]).
const NO_HELPER: &str = "smoothd: no helper here";

/// What one observation found: the page as the model reads it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PageView {
    /// Nothing changed since the view whose key was passed in (the rest is then empty).
    #[serde(default)]
    pub unchanged: bool,
    /// Identifies this view's state (mutations, URL, scroll, viewport).
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub title: String,
    /// The page's text with its interactive elements as `[n]<tag ...>` lines.
    #[serde(default)]
    pub text: String,
    /// How many interactive elements the text numbers.
    #[serde(default)]
    pub elements: u32,
    /// Elements left out for length.
    #[serde(default)]
    pub truncated: u32,
    /// Pixels of page above and below the viewport.
    #[serde(default)]
    pub above: i64,
    #[serde(default)]
    pub below: i64,
    #[serde(default)]
    pub width: i64,
    #[serde(default)]
    pub height: i64,
    /// Cross-origin frames that could not be read.
    #[serde(rename = "crossOrigin", default)]
    pub cross_origin: u32,
    /// Canvases in the viewport (a screenshot tells more than the text).
    #[serde(default)]
    pub canvas: u32,
    /// A captcha or "verify you are human" page in the way, if any.
    #[serde(default)]
    pub challenge: Option<Challenge>,
    /// Files this task's tabs started downloading so far.
    #[serde(skip)]
    pub downloads: Vec<String>,
}

/// An action's failure the model should hear about (the task goes on), or the browser's death.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// The action could not be done; the message is for the model.
    #[error("{0}")]
    Model(String),
    /// The browser failed under the action.
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
pub struct ActionResult {
    /// A new document loaded (or a tab opened): the rest of the reply's calls are skipped.
    pub navigated: bool,
    /// What happened, for the model.
    pub note: String,
}

/// One thing to do on the page. Indexes are those of the last [`PageView`].
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Goto {
        url: String,
    },
    Click {
        index: u32,
    },
    /// Replaces the field's value with `text`, then presses Enter if `submit`.
    Type {
        index: u32,
        text: String,
        submit: bool,
    },
    SelectOption {
        index: u32,
        option: String,
    },
    Scroll {
        down: bool,
        pages: f64,
    },
    PressKey {
        key: String,
    },
    GoBack,
    SwitchTab {
        tab: usize,
    },
    /// Attaches a local file to a file input.
    Upload {
        index: u32,
        path: PathBuf,
    },
    /// Waits up to 10 s.
    Wait {
        seconds: f64,
    },
    Hover {
        index: u32,
    },
    DragDrop {
        from: u32,
        to: u32,
    },
}

/// The agent's view of a session: which tab is current and the last view's key.
pub struct Driver<'a> {
    session: &'a BrowserSession,
    page: Page,
    tab_count: usize,
    last: Option<PageView>,
    /// Browser-wide download starts, filtered to the main frames of this task's tabs.
    download_events: Option<EventStream<EventDownloadWillBegin>>,
    frames: Vec<FrameId>,
    downloads: Vec<String>,
    /// Our own DevTools connection for cross-origin frames, opened when a page first has one.
    link: Option<Link>,
    /// How each cross-origin frame (by frame id) was reached.
    routes: HashMap<String, frames::Route>,
    /// The cross-origin frames of the last view, in the order of the page's markers.
    xframes: Vec<XFrame>,
    /// The page helper's isolated world: (tab's target id, execution context id).
    world: Mutex<Option<(String, i64)>>,
    /// The worlds Chromium makes for the helper at each new document of the current tab (see
    /// [`Driver::world`]): (tab's target id, the tab's new execution contexts).
    born: Mutex<Option<(String, EventStream<EventExecutionContextCreated>)>>,
    /// How an action that does not navigate waits for the page.
    settle: Settle,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
            routes: HashMap::new(),
            xframes: Vec::new(),
            world: Mutex::new(None),
            born: Mutex::new(None),
            settle: Settle::Full,
        }
    }

    /// Does `action` and says what it did to the page.
    pub async fn act(&mut self, action: Action) -> Result<ActionResult, ActError> {
        match action {
            Action::Goto { url } => self.goto(&url).await,
            Action::Click { index } => self.click(index).await,
            Action::Type { index, text, submit } => self.type_text(index, &text, submit).await,
            Action::SelectOption { index, option } => self.select_option(index, &option).await,
            Action::Scroll { down, pages } => self.scroll(down, pages).await,
            Action::PressKey { key } => self.press_key(&key).await,
            Action::GoBack => self.go_back().await,
            Action::SwitchTab { tab } => self.switch_tab(tab).await,
            Action::Upload { index, path } => self.upload(index, &path).await,
            Action::Wait { seconds } => Ok(self.wait(seconds).await),
            Action::Hover { index } => self.hover(index).await,
            Action::DragDrop { from, to } => self.drag_drop(from, to).await,
        }
    }

    /// The current tab's URL ("" when it cannot be read).
    pub async fn url(&self) -> String {
        self.page.url().await.ok().flatten().unwrap_or_default()
    }

    /// The files this task's tabs started downloading so far (their suggested names, in the
    /// order they started).
    pub async fn downloads(&mut self) -> Vec<String> {
        self.collect_downloads().await;
        self.downloads.clone()
    }

    /// Forgets the last view, so the next observation reads everything again.
    pub fn forget_view(&mut self) {
        self.last = None;
        self.xframes.clear();
    }

    /// Evaluates `expr` in the page helper's isolated world of the current tab.
    async fn eval(&self, expr: String, by_value: bool) -> Result<Value, ActError> {
        let r = self.eval_raw(expr, by_value).await?;
        if let Some(ex) = r.exception_details {
            let msg = ex.exception.and_then(|o| o.description).unwrap_or(ex.text);
            return Err(ActError::Model(format!("the page refused: {msg}")));
        }
        Ok(r.result.value.unwrap_or(Value::Null))
    }

    /// [`Self::eval`] without reading the answer (`by_value` false keeps a remote object).
    async fn eval_raw(&self, expr: String, by_value: bool) -> Result<EvaluateReturns, ActError> {
        let mut p = EvaluateParams::new(expr);
        p.return_by_value = Some(by_value);
        p.await_promise = Some(true);
        p.user_gesture = Some(true);
        p.context_id = Some(ExecutionContextId::new(self.world(false).await?));
        match self.session.cdp(&self.page, p.clone(), CALL_LIMIT).await {
            Ok(r) => Ok(r),
            // The world went with its document (a navigation): make one in the new document.
            Err(BrowserError::Cdp(_)) => {
                p.context_id = Some(ExecutionContextId::new(self.world(true).await?));
                Ok(self.session.cdp(&self.page, p, CALL_LIMIT).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The execution context of the page helper's isolated world in the current tab's document:
    /// the one Chromium made when the document was created (page.js already ran in it, before
    /// the page's own scripts), else the remembered one, else one made now when `fresh` (the
    /// DOM is shared with the page; its JavaScript globals are not, so the page sees neither
    /// the helper nor its calls).
    async fn world(&self, fresh: bool) -> Result<i64, ActError> {
        let target = self.page.target_id().as_ref().to_string();
        self.preinstall(&target).await;
        let known = lock(&self.world)
            .as_ref()
            .filter(|(t, _)| *t == target)
            .map(|(_, c)| *c);
        if let Some(born) = self.newest_born(&target).await
            && Some(born) != known
        {
            *lock(&self.world) = Some((target, born));
            return Ok(born);
        }
        if !fresh && let Some(ctx) = known {
            return Ok(ctx);
        }
        let frame = self
            .page
            .mainframe()
            .await
            .map_err(|e| ActError::Browser(BrowserError::from(e)))?
            .ok_or_else(|| ActError::Model("the page has no document yet".into()))?;
        let mut p = CreateIsolatedWorldParams::new(frame);
        p.world_name = Some(WORLD.into());
        let r = self.session.cdp(&self.page, p, CALL_LIMIT).await?;
        let ctx = *r.execution_context_id.inner();
        *lock(&self.world) = Some((target, ctx));
        Ok(ctx)
    }

    /// Has Chromium run page.js in the helper's world of every new document of tab `target`
    /// from now on (once per tab), and watches for those worlds. Without it (a browser that
    /// refuses) worlds are made on demand as before.
    async fn preinstall(&self, target: &str) {
        if lock(&self.born).as_ref().is_some_and(|(t, _)| t == target) {
            return;
        }
        let Ok(stream) = self.page.event_listener::<EventExecutionContextCreated>().await else {
            return;
        };
        let mut p = AddScriptToEvaluateOnNewDocumentParams::new(PAGE_JS);
        p.world_name = Some(WORLD.into());
        if let Err(e) = self.session.cdp(&self.page, p, CALL_LIMIT).await {
            tracing::debug!(error = %e, "page.js is not installed ahead in new documents");
            return;
        }
        *lock(&self.born) = Some((target.to_string(), stream));
    }

    /// The newest helper world Chromium made in the main frame of tab `target` since the last
    /// look, if any.
    async fn newest_born(&self, target: &str) -> Option<i64> {
        let mut newest = Vec::new();
        {
            let mut born = lock(&self.born);
            let (t, stream) = born.as_mut()?;
            if t != target {
                return None;
            }
            while let Some(Some(ev)) = futures::FutureExt::now_or_never(futures::StreamExt::next(stream)) {
                if ev.context.name == WORLD {
                    newest.push(ev);
                }
            }
        }
        let main = self.page.mainframe().await.ok().flatten()?;
        newest
            .iter()
            .rev()
            .find(|ev| {
                ev.context
                    .aux_data
                    .as_ref()
                    .and_then(|d| d.get("frameId"))
                    .and_then(Value::as_str)
                    == Some(main.as_ref())
            })
            .map(|ev| *ev.context.id.inner())
    }

    /// Calls `window.__smoothd.<call>` in the current document, installing the helper first if
    /// it is not there; the answer as it comes. Chromium installs the helper in every new
    /// document (see [`Self::preinstall`]), so page.js (40 KB, compiled again by every evaluation
    /// that carries it) is sent only to a document that lacks it, after a first call says so.
    pub(super) async fn call(&self, call: &str) -> Result<Value, ActError> {
        let v = self
            .eval(
                format!("window.__smoothd ? window.__smoothd.{call} : {NO_HELPER:?}"),
                true,
            )
            .await?;
        if v.as_str() == Some(NO_HELPER) {
            return self
                .eval(format!("{PAGE_JS}\nwindow.__smoothd.{call}"), true)
                .await;
        }
        Ok(v)
    }

    /// Calls `window.__smoothd.<call>` (installing the helper first if needed); an `error` it
    /// answers is the model's.
    async fn helper(&self, call: &str) -> Result<Value, ActError> {
        let v = self.call(call).await?;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            return Err(ActError::Model(e.to_string()));
        }
        Ok(v)
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
}
