//! When a new document is usable: its DOMContentLoaded, then no script, stylesheet, frame or
//! data request of its own in flight, content in its body, and a quiet DOM. Images, fonts and
//! media are not waited for (the `load` event is): a click's point is taken at click time, and
//! late content is in the next view. Everything is read from CDP events and from the helper's
//! isolated world, so the page sees none of it.

use std::collections::HashMap;
use std::time::Duration;

use chromiumoxide::Page;
use chromiumoxide::cdp::IntoEventKind;
use chromiumoxide::cdp::browser_protocol::browser::EventDownloadWillBegin;
use chromiumoxide::cdp::browser_protocol::network::{
    EventLoadingFailed, EventLoadingFinished, EventRequestWillBeSent, EventResponseReceived, LoaderId,
    RequestId, ResourceType,
};
use chromiumoxide::cdp::browser_protocol::page::{EventFrameStoppedLoading, EventLifecycleEvent, FrameId};
use chromiumoxide::listeners::EventStream;
use futures::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::time::Instant;

use super::{ActError, Driver};
use crate::error::BrowserError;

/// The DOM counts as settled after this long without a mutation: a frame and a bit, time for
/// what the page's scripts render on DOMContentLoaded, in a microtask, a zero timer or the next
/// animation frame (anything they fetch is waited for as a request).
const QUIET_MS: u32 = 20;
/// At most this long after DOMContentLoaded for requests, content and quiet.
const READY_MAX: Duration = Duration::from_millis(1500);
/// One look for content in an empty body, before checking the network again.
const EMPTY_SLICE_MS: u32 = 250;
/// A document that never reaches DOMContentLoaded.
pub(super) const LOAD_LIMIT: Duration = Duration::from_secs(20);
/// How long a stop of the main frame's loading waits for a new document to start before it
/// counts as "no new document" (see [`Watch::document`]).
const STOP_GRACE: Duration = Duration::from_millis(300);

/// What a navigation's document is doing, subscribed to before the navigation starts.
pub(super) struct Watch {
    main: Option<FrameId>,
    lifecycle: EventStream<EventLifecycleEvent>,
    stops: EventStream<EventFrameStoppedLoading>,
    /// The document's requests, watched once a navigation started (not for every action).
    sent: Option<EventStream<EventRequestWillBeSent>>,
    done: Option<EventStream<EventLoadingFinished>>,
    failed: Option<EventStream<EventLoadingFailed>>,
    responses: Option<EventStream<EventResponseReceived>>,
    /// The new document's loader, once it committed (lifecycle `init`) or was given.
    loader: Option<LoaderId>,
    /// Its `load` fired.
    loaded: bool,
    /// Downloads the browser starts, watched with the requests.
    downloads: Option<EventStream<EventDownloadWillBegin>>,
    /// Requests the document waits on (scripts, styles, frames, XHR, fetch), by id.
    inflight: HashMap<RequestId, ResourceType>,
    /// A response for the document came with status 407 (a proxy refusing the credentials).
    pub(super) got_407: bool,
}

/// How the wait for a document ended.
#[derive(Debug, PartialEq)]
pub(super) enum Doc {
    /// Its DOMContentLoaded fired.
    Ready,
    /// Loading stopped without a new document (a download, a 204).
    Stopped,
    /// Nothing within [`LOAD_LIMIT`].
    TimedOut,
}

/// The next event of a stream that may not be watched (then never).
async fn next<T: IntoEventKind + Unpin>(s: &mut Option<EventStream<T>>) -> Option<std::sync::Arc<T>> {
    match s {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

fn waits_on(kind: &ResourceType) -> bool {
    matches!(
        kind,
        ResourceType::Script
            | ResourceType::Stylesheet
            | ResourceType::Document
            | ResourceType::Xhr
            | ResourceType::Fetch
    )
}

impl Watch {
    /// Watches the document's lifecycle; [`Self::requests_of`] adds its requests.
    pub(super) async fn new(page: &Page) -> Result<Self, ActError> {
        let e = |e| ActError::Browser(BrowserError::from(e));
        Ok(Self {
            main: page.mainframe().await.ok().flatten(),
            lifecycle: page.event_listener().await.map_err(e)?,
            stops: page.event_listener().await.map_err(e)?,
            sent: None,
            done: None,
            failed: None,
            responses: None,
            loader: None,
            loaded: false,
            downloads: None,
            inflight: HashMap::new(),
            got_407: false,
        })
    }

    /// Also watches the downloads the browser starts (a stop that comes with one is final).
    pub(super) fn downloads(&mut self, downloads: EventStream<EventDownloadWillBegin>) {
        self.downloads = Some(downloads);
    }

    /// Also watches the requests of `page` (before an action, or as soon as a navigation
    /// started); once is enough.
    pub(super) async fn requests_of(&mut self, page: &Page) -> Result<(), ActError> {
        if self.sent.is_some() {
            return Ok(());
        }
        let e = |e| ActError::Browser(BrowserError::from(e));
        self.sent = Some(page.event_listener().await.map_err(e)?);
        self.done = Some(page.event_listener().await.map_err(e)?);
        self.failed = Some(page.event_listener().await.map_err(e)?);
        self.responses = Some(page.event_listener().await.map_err(e)?);
        Ok(())
    }

    fn is_main(&self, frame: &FrameId) -> bool {
        self.main.as_ref().is_none_or(|m| m == frame)
    }

    /// The navigation's loader, when the command that started it said.
    pub(super) fn expect(&mut self, loader: LoaderId) {
        self.loader = Some(loader);
    }

    fn lifecycle(&mut self, ev: &EventLifecycleEvent) -> bool {
        if !self.is_main(&ev.frame_id) {
            return false;
        }
        match ev.name.as_str() {
            "init" if self.loader.is_none() => self.loader = Some(ev.loader_id.clone()),
            "load" if self.loader.as_ref() == Some(&ev.loader_id) => self.loaded = true,
            "DOMContentLoaded" => return self.loader.as_ref() == Some(&ev.loader_id),
            _ => {}
        }
        false
    }

    fn sent(&mut self, ev: &EventRequestWillBeSent) {
        let main_doc = ev.r#type == Some(ResourceType::Document)
            && ev.frame_id.as_ref().is_some_and(|f| self.is_main(f));
        if let Some(kind) = ev.r#type.clone().filter(|k| waits_on(k) && !main_doc) {
            self.inflight.insert(ev.request_id.clone(), kind);
        }
    }

    fn response(&mut self, ev: &EventResponseReceived) {
        if matches!(ev.r#type, ResourceType::Document)
            && ev.response.status == 407
            && self.loader.as_ref().is_none_or(|l| *l == ev.loader_id)
        {
            self.got_407 = true;
        }
    }

    /// Takes in what arrived, without waiting.
    fn drain(&mut self) {
        while let Some(Some(ev)) = next(&mut self.sent).now_or_never() {
            self.sent(&ev);
        }
        while let Some(Some(ev)) = next(&mut self.done).now_or_never() {
            self.inflight.remove(&ev.request_id);
        }
        while let Some(Some(ev)) = next(&mut self.failed).now_or_never() {
            self.inflight.remove(&ev.request_id);
        }
        while let Some(Some(ev)) = next(&mut self.responses).now_or_never() {
            self.response(&ev);
        }
        while let Some(Some(ev)) = self.lifecycle.next().now_or_never() {
            self.lifecycle(&ev);
        }
    }

    /// Waits for the new document's DOMContentLoaded (`stopped_counts`: loading that stops
    /// first means no new document came, as for a download). The stop may be the last
    /// document's own (it was read before its `load`, and an action followed at once): a stop
    /// counts when the frame started a download, or when no new document starts within
    /// [`STOP_GRACE`] of it.
    pub(super) async fn document(&mut self, stopped_counts: bool) -> Doc {
        let wait = async {
            loop {
                tokio::select! {
                    Some(ev) = self.lifecycle.next() => if self.lifecycle(&ev) { return Doc::Ready; },
                    Some(ev) = self.stops.next(), if stopped_counts => {
                        if self.is_main(&ev.frame_id) && !self.loaded {
                            match self.after_stop().await {
                                Some(doc) => return doc,
                                None => continue,
                            }
                        }
                    }
                    Some(ev) = next(&mut self.sent) => self.sent(&ev),
                    Some(ev) = next(&mut self.done) => { self.inflight.remove(&ev.request_id); }
                    Some(ev) = next(&mut self.failed) => { self.inflight.remove(&ev.request_id); }
                    Some(ev) = next(&mut self.responses) => self.response(&ev),
                    else => return Doc::TimedOut,
                }
            }
        };
        tokio::time::timeout(LOAD_LIMIT, wait)
            .await
            .unwrap_or(Doc::TimedOut)
    }

    /// After a stop of the main frame's loading: `Ready` when the new document's
    /// DOMContentLoaded comes within [`STOP_GRACE`], None when a new document started (go on
    /// waiting for it), else `Stopped`.
    async fn after_stop(&mut self) -> Option<Doc> {
        let had = self.loader.is_some();
        let grace = tokio::time::sleep(STOP_GRACE);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                () = &mut grace => return Some(Doc::Stopped),
                Some(ev) = next(&mut self.downloads) => {
                    if self.is_main(&ev.frame_id) {
                        return Some(Doc::Stopped);
                    }
                }
                Some(ev) = self.lifecycle.next() => {
                    if self.lifecycle(&ev) {
                        return Some(Doc::Ready);
                    }
                    if !had && self.loader.is_some() {
                        return None;
                    }
                }
                else => return Some(Doc::Stopped),
            }
        }
    }

    /// Waits until no request the document waits on is in flight, or `until`; says whether
    /// any was.
    pub(super) async fn requests(&mut self, until: Instant) -> bool {
        self.drain();
        let waited = !self.inflight.is_empty();
        while !self.inflight.is_empty() && Instant::now() < until {
            tokio::select! {
                () = tokio::time::sleep_until(until) => break,
                Some(ev) = next(&mut self.sent) => self.sent(&ev),
                Some(ev) = next(&mut self.done) => { self.inflight.remove(&ev.request_id); }
                Some(ev) = next(&mut self.failed) => { self.inflight.remove(&ev.request_id); }
                Some(ev) = self.lifecycle.next() => { self.lifecycle(&ev); }
                Some(ev) = next(&mut self.responses) => self.response(&ev),
            }
        }
        waited
    }
}

impl Driver<'_> {
    /// After DOMContentLoaded: waits until the document is usable (see the module's doc), at
    /// most [`READY_MAX`]. An empty body is waited on while the page has requests in flight or
    /// timers it made, or has not loaded; a page with content is not waited on for its timers
    /// (a late overlay is in the next view, and a click at a covered element is refused).
    pub(super) async fn ready(&self, w: &mut Watch) {
        let until = Instant::now() + READY_MAX;
        loop {
            w.requests(until).await;
            let left = until.saturating_duration_since(Instant::now());
            let slice = u32::try_from(left.as_millis())
                .unwrap_or(u32::MAX)
                .min(EMPTY_SLICE_MS);
            let r = self
                .call(&format!("ready({QUIET_MS}, {slice})"))
                .await
                .unwrap_or(Value::Null);
            w.drain();
            let content = r.get("content").and_then(Value::as_bool).unwrap_or(true);
            let timers = r.get("timers").and_then(Value::as_bool).unwrap_or(false);
            let idle = w.inflight.is_empty();
            if Instant::now() >= until || (idle && (content || (w.loaded && !timers))) {
                return;
            }
        }
    }
}
