//! Settling: after an action, wait for what it started (a navigation's load, or the DOM going
//! quiet), and after a load let what the page shows "a moment later" appear; then follow a tab
//! the action opened. Nothing here touches the page's own JavaScript world.

use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::page::{
    EventFrameStartedLoading, EventFrameStoppedLoading, EventLoadEventFired,
};
use futures::StreamExt;
use serde_json::Value;

use super::{ActError, ActionResult, Driver, PAGE_JS};
use crate::error::BrowserError;

/// After a page loads: DOM quiet for this long, at most `LATE_MAX`; for a page that has set
/// timers, quiet for `LATE_QUIET_TIMERS_MS`, long enough for what it shows "a moment after load"
/// (a modal 300 ms later). Which timers are pending cannot be known without patching the page's
/// `setTimeout`, which a detector sees; whether it made any can (page.js `pageTimers`).
const LATE_QUIET_MS: u32 = 50;
const LATE_QUIET_TIMERS_MS: u32 = 350;
const LATE_MAX_MS: u32 = 700;
const LOAD_LIMIT: Duration = Duration::from_secs(20);

impl Driver<'_> {
    /// Prepares the current tab for the agent: makes the page helper's isolated world. A dead
    /// browser fails here.
    pub async fn install(&self) -> Result<(), ActError> {
        self.world(true).await?;
        Ok(())
    }

    /// After a new document loaded: lets what the page shows "a moment later" appear.
    pub(super) async fn late_settle(&self) {
        let _ = self
            .eval(
                format!(
                    "{PAGE_JS}\nwindow.__smoothd.settle(window.__smoothd.pageTimers() > 0 ? {LATE_QUIET_TIMERS_MS} : {LATE_QUIET_MS}, {LATE_MAX_MS})"
                ),
                true,
            )
            .await;
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
