//! Settling: after an action, wait for what it started (a new document until it is usable, see
//! ready.rs, or the DOM going quiet); then follow a tab the action opened. Nothing here touches
//! the page's own JavaScript world.

use chromiumoxide::cdp::browser_protocol::page::{
    EventFrameStartedLoading, EventFrameStartedNavigating, FrameStartedNavigatingNavigationType as Kind,
};
use futures::StreamExt;
use serde_json::Value;
use tokio::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::page::FrameId;

use super::ready::{Doc, Watch};
use super::{ActError, ActionResult, Driver};
use crate::error::BrowserError;

/// How an action that does not navigate waits for what it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Settle {
    /// 40 ms without a DOM change, at most 400 ms: the model's actions.
    #[default]
    Full,
    /// A replayed action that the replay checks after (the next recorded step's page shape, the
    /// next action's element, both looked at again while they do not match yet). An element
    /// action is done once the page is idle: a frame and a task after it, the DOM has not
    /// changed and the page's scripts have set no timer since before it. Otherwise, and for
    /// other actions, 15 ms without a DOM change, at most 400 ms. Either way the requests that
    /// the action started and that a new document would wait on (scripts, stylesheets, frames,
    /// fetch, XHR) are waited for, then the DOM for 15 ms of quiet again. A navigation the
    /// document started (told by the page's Navigation API before the browser's events come) is
    /// waited for up to a second. An element in a cross-origin frame waits as in `Full`.
    Brief,
    /// The replay's last action, after which the answer is read with nothing to check it
    /// against: as [`Settle::Brief`], but with 40 ms of quiet as in `Full` whenever the page is
    /// not idle, so it waits at least as long as the model's action would for a page that
    /// scheduled more work, and for the requests it started as well.
    Answer,
}

/// How long a [`Settle::Brief`] action whose document started leaving waits for the browser to
/// say a navigation started.
const LEAVING_WAIT: Duration = Duration::from_millis(1000);

impl Settle {
    /// (quiet ms, at most ms) for page.js's `settle` and `brief`.
    fn quiet(self) -> (u32, u32) {
        match self {
            Settle::Full | Settle::Answer => (40, 400),
            Settle::Brief => (15, 400),
        }
    }
}

impl Driver<'_> {
    /// Prepares the current tab for the agent: makes the page helper's isolated world, and
    /// watches for downloads from now on (a replay may start one before it takes any view). A
    /// dead browser fails here.
    pub async fn install(&mut self) -> Result<(), ActError> {
        self.world(true).await?;
        self.collect_downloads().await;
        Ok(())
    }

    /// How the actions from now on wait for the page when they do not navigate
    /// ([`Settle::Full`] unless set).
    pub fn set_settle(&mut self, settle: Settle) {
        self.settle = settle;
    }

    /// Runs `act` and waits for what it started: a navigation's load, or the DOM to go quiet.
    /// Returns whether a new document loaded.
    pub(super) async fn settled<F, Fut, T>(&self, act: F) -> Result<(T, bool), ActError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, ActError>>,
    {
        self.settled_in(None, act).await
    }

    /// [`Self::settled`] for an action on element `at`: a cross-origin frame's own DOM is the one
    /// to watch when the element is in one.
    pub(super) async fn settled_in<F, Fut, T>(&self, at: Option<u32>, act: F) -> Result<(T, bool), ActError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, ActError>>,
    {
        let mut starts = self
            .page
            .event_listener::<EventFrameStartedLoading>()
            .await
            .map_err(|e| ActError::Browser(BrowserError::from(e)))?;
        // A tab still loading its last document (an image) does not start loading again: a
        // navigation's start says it then.
        let mut navs = self
            .page
            .event_listener::<EventFrameStartedNavigating>()
            .await
            .map_err(|e| ActError::Browser(BrowserError::from(e)))?;
        let mut w = Watch::new(&self.page).await?;
        let main = self.page.mainframe().await.ok().flatten();
        let frame = at.and_then(|i| self.frame_of(i));
        // Brief watches the requests the action starts in the current tab (its own frames and
        // same-process ones); an element in a cross-origin frame waits as in Full.
        let brief = matches!(self.settle, Settle::Brief | Settle::Answer) && frame.is_none();
        if brief {
            w.requests_of(&self.page).await?;
        }
        let out = act().await?;
        let started = Instant::now();
        // A click that navigates starts loading within a few ms; DOM-only changes go quiet.
        let (quiet, max) = if brief {
            self.settle.quiet()
        } else {
            Settle::Full.quiet()
        };
        // Says whether the document started leaving (Brief only): it said so, or it is gone
        // (the call failed, or the helper the action used is not in this document).
        let quiet_for = |max: u32| async move {
            let f = if brief { "brief" } else { "settle" };
            let call = format!("window.__smoothd ? window.__smoothd.{f}({quiet}, {max}) : 0");
            let r = match frame {
                Some(n) => self.frame_eval(n, &call, true).await.ok(),
                None => self.eval(call, true).await.ok(),
            };
            brief && r.and_then(|r| r.get("leaving").and_then(Value::as_bool)) != Some(false)
        };
        let settle = async {
            let mut leaving = quiet_for(max).await;
            // Brief: what the action fetched is usually drawn when it arrives.
            let until = started + Duration::from_millis(u64::from(max));
            if brief && w.requests(until).await {
                let left = until.saturating_duration_since(Instant::now()).as_millis();
                if left > 0 {
                    leaving |= quiet_for(u32::try_from(left).unwrap_or(max)).await;
                }
            }
            if leaving {
                // The browser's events for the new document end this wait.
                tokio::time::sleep(LEAVING_WAIT).await;
            }
        };
        let is_main = |f: &FrameId| main.as_ref().is_none_or(|m| m == f);
        let new_doc = |ev: &EventFrameStartedNavigating| {
            is_main(&ev.frame_id)
                && !matches!(ev.navigation_type, Kind::SameDocument | Kind::HistorySameDocument)
        };
        let mut navigated = false;
        tokio::select! {
            () = settle => {}
            Some(ev) = starts.next() => { navigated = is_main(&ev.frame_id); }
            Some(ev) = navs.next() => { navigated = new_doc(&ev); }
        }
        // Drain what arrived meanwhile without waiting.
        while !navigated {
            match futures::FutureExt::now_or_never(starts.next()) {
                Some(Some(ev)) => navigated = is_main(&ev.frame_id),
                _ => break,
            }
        }
        while !navigated {
            match futures::FutureExt::now_or_never(navs.next()) {
                Some(Some(ev)) => navigated = new_doc(&ev),
                _ => break,
            }
        }
        if navigated {
            // A new document is ready at its DOMContentLoaded; loading that stops first brought
            // none (a download, a 204).
            w.requests_of(&self.page).await?;
            if let Ok(d) = self.session.download_events().await {
                w.downloads(d);
            }
            match w.document(true).await {
                Doc::Ready => self.ready(&mut w).await,
                Doc::Stopped => navigated = false,
                Doc::TimedOut => {}
            }
        }
        Ok((out, navigated))
    }

    /// After an action: a new tab becomes current; says what happened (downloads the action
    /// started, if their events have arrived; the next view lists them in any case).
    pub(super) async fn after(&mut self, navigated: bool, note: String) -> Result<ActionResult, ActError> {
        let known = self.downloads.len();
        self.collect_downloads().await;
        let note = match &self.downloads[known..] {
            [] => note,
            new => format!("{note}; download started: {}", new.join(", ")),
        };
        let mut effect = ActionResult { navigated, note };
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
}
