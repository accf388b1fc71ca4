//! Frame routing: how the driver reaches each cross-origin frame of the current tab (its own
//! out-of-process target, or an isolated world in an in-process frame), remembered per frame so
//! a frame keeps its world, and its idea of which elements are new, from step to step.

use std::time::Duration;

use serde_json::{Value, json};

use super::frames::{self, FrameError, RawCdp, Route};
use super::{ActError, CALL_LIMIT, Driver};
use crate::error::BrowserError;

/// [`RawCdp`] attached to the current tab.
pub(super) struct Link {
    pub(super) cdp: RawCdp,
    pub(super) target: String,
    pub(super) session: String,
}

/// One cross-origin frame of the view: how to reach it and its last view.
#[derive(Default)]
pub(super) struct XFrame {
    pub(super) route: Option<Route>,
    pub(super) frame: String,
    /// Its first index in the last view, and how many elements it had.
    pub(super) base: u32,
    pub(super) elements: u32,
    pub(super) key: String,
    pub(super) url: String,
    pub(super) text: String,
    pub(super) truncated: u32,
    pub(super) nested: u32,
    pub(super) canvas: u32,
    /// Why it could not be read, when it could not.
    pub(super) failed: Option<FrameError>,
}

impl Driver<'_> {
    /// Our DevTools connection, attached to the current tab.
    pub(super) async fn link(&mut self) -> Result<&Link, FrameError> {
        let target = self.page.target_id().as_ref().to_string();
        let stale = self.link.as_ref().is_some_and(|l| l.target != target);
        if stale || self.link.is_none() {
            let cdp = match self.link.take() {
                Some(l) => l.cdp,
                None => RawCdp::connect(&self.session.ws_url()).await?,
            };
            let session = cdp.attach_page(&target, CALL_LIMIT).await?;
            // Isolated worlds belong to the old tab's session.
            self.routes.clear();
            self.link = Some(Link { cdp, target, session });
        }
        self.link
            .as_ref()
            .ok_or(FrameError::Missing("no DevTools connection"))
    }

    /// A frame failure: the browser's death ends the task, anything else is told.
    pub(super) fn frame_error(&self, e: FrameError) -> ActError {
        if self.session.browser_alive() {
            ActError::Model(e.to_string())
        } else {
            ActError::Browser(BrowserError::Crashed("the browser process exited".into()))
        }
    }

    /// How to run JavaScript in the page's cross-origin frame `n` (and the frame's id): its own
    /// target when it is out of process, else an isolated world in it.
    pub(super) async fn resolve(&mut self, n: usize) -> Result<(String, Route), FrameError> {
        // The frame's element, from the page helper in its world (a context id is the
        // renderer's, so our second connection can use the one chromiumoxide's made).
        let world = self
            .world(false)
            .await
            .map_err(|e| FrameError::Cdp(e.to_string()))?;
        let link = self.link().await?;
        let page = Route::Context(link.session.clone(), world);
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
            .ok_or(FrameError::Missing("the frame has no document yet"))?
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
    async fn reach(&mut self, frame: &str) -> Result<Route, FrameError> {
        let link = self.link().await?;
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
                    let ctx = w["executionContextId"]
                        .as_i64()
                        .ok_or(FrameError::Missing("no execution context"))?;
                    tracing::debug!(%frame, "cross-origin frame: in process, through an isolated world");
                    return Ok(Route::Context(link.session.clone(), ctx));
                }
                // An out-of-process frame whose attach event is still on its way.
                Err(e) if attempt == 1 => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Err(FrameError::Unreachable)
    }

    /// Evaluates `expr` in cross-origin frame `n`.
    pub(super) async fn frame_eval(&self, n: usize, expr: &str, by_value: bool) -> Result<Value, FrameError> {
        let (link, route) = self.frame_route(n)?;
        frames::evaluate(&link.cdp, route, expr, by_value, CALL_LIMIT).await
    }

    /// Our connection and the way into cross-origin frame `n`.
    pub(super) fn frame_route(&self, n: usize) -> Result<(&Link, &Route), FrameError> {
        let route = self
            .xframes
            .get(n)
            .and_then(|x| x.route.as_ref())
            .ok_or(FrameError::Gone)?;
        let link = self
            .link
            .as_ref()
            .ok_or(FrameError::Missing("no DevTools connection"))?;
        Ok((link, route))
    }

    /// The cross-origin frame holding element `index` of the last view, if any.
    pub(super) fn frame_of(&self, index: u32) -> Option<usize> {
        self.xframes
            .iter()
            .position(|x| x.failed.is_none() && index >= x.base && index < x.base + x.elements)
    }
}
