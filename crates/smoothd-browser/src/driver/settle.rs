//! Settling: after an action, wait for what it started (a new document until it is usable, see
//! ready.rs, or the DOM going quiet); then follow a tab the action opened. Nothing here touches
//! the page's own JavaScript world.

use chromiumoxide::cdp::browser_protocol::page::{
    EventFrameStartedLoading, EventFrameStartedNavigating, FrameStartedNavigatingNavigationType as Kind,
};
use futures::StreamExt;
use serde_json::Value;

use chromiumoxide::cdp::browser_protocol::page::FrameId;

use super::ready::{Doc, Watch};
use super::{ActError, ActionResult, Driver};
use crate::error::BrowserError;

impl Driver<'_> {
    /// Prepares the current tab for the agent: makes the page helper's isolated world. A dead
    /// browser fails here.
    pub async fn install(&self) -> Result<(), ActError> {
        self.world(true).await?;
        Ok(())
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
