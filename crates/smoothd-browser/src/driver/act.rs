//! Actions: element actions by index with real input events (the mouse moves to the element's
//! centre, or on a touch device a finger taps it; keys go through `Input.dispatchKeyEvent`), navigation, history and file uploads. Each
//! waits for what it started (see settle.rs) and says what it did.

use chromiumoxide::cdp::browser_protocol::dom::SetFileInputFilesParams;
use chromiumoxide::cdp::browser_protocol::input::{
    DispatchKeyEventParams, DispatchKeyEventType, DispatchMouseEventParams, DispatchMouseEventType,
    DispatchTouchEventParams, DispatchTouchEventType, InsertTextParams, MouseButton, TouchPoint,
};
use chromiumoxide::cdp::browser_protocol::page::{GetNavigationHistoryParams, NavigateToHistoryEntryParams};
use serde_json::{Value, json};

use super::frames::FrameError;
use super::keys::{key_info, key_name};
use super::ready::{Doc, Watch};
use super::{ActError, ActionResult, CALL_LIMIT, Driver, PAGE_JS};
use crate::error::BrowserError;

const NAVIGATION_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A navigation's failure: the browser's death ends the task, anything else is told.
fn nav_error(e: BrowserError) -> ActError {
    match e {
        e @ BrowserError::Crashed(_) => ActError::Browser(e),
        e => ActError::Model(e.to_string()),
    }
}

/// `Input.dispatchTouchEvent` ending a touch: DevTools requires `touchPoints` and wants it
/// empty, and chromiumoxide's generated type leaves an empty list out.
#[derive(Debug, serde::Serialize)]
struct TouchEnd {
    r#type: &'static str,
    #[serde(rename = "touchPoints")]
    touch_points: [TouchPoint; 0],
}

impl Default for TouchEnd {
    fn default() -> Self {
        TouchEnd {
            r#type: "touchEnd",
            touch_points: [],
        }
    }
}

impl chromiumoxide::Method for TouchEnd {
    fn identifier(&self) -> chromiumoxide::types::MethodId {
        "Input.dispatchTouchEvent".into()
    }
}

impl chromiumoxide::Command for TouchEnd {
    type Response = chromiumoxide::cdp::browser_protocol::input::DispatchTouchEventReturns;
}

impl Driver<'_> {
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

    /// A finger's tap at (x, y): how a phone clicks, touch events first, then the click.
    async fn tap(&self, x: f64, y: f64) -> Result<(), ActError> {
        let start =
            DispatchTouchEventParams::new(DispatchTouchEventType::TouchStart, vec![TouchPoint::new(x, y)]);
        self.session.cdp(&self.page, start, CALL_LIMIT).await?;
        self.session
            .cdp(&self.page, TouchEnd::default(), CALL_LIMIT)
            .await?;
        Ok(())
    }

    pub(super) async fn click(&mut self, index: u32) -> Result<ActionResult, ActError> {
        let (x, y, _) = self.point(index).await?;
        let touch = self.session.device().viewport().touch;
        let ((), nav) = self
            .settled_in(Some(index), || async {
                if touch {
                    return self.tap(x, y).await;
                }
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

    pub(super) async fn hover(&mut self, index: u32) -> Result<ActionResult, ActError> {
        let (x, y, _) = self.point(index).await?;
        let ((), nav) = self
            .settled_in(Some(index), || {
                self.mouse(DispatchMouseEventType::MouseMoved, x, y, false)
            })
            .await?;
        self.after(nav, format!("the mouse is over [{index}]")).await
    }

    pub(super) async fn drag_drop(&mut self, from: u32, to: u32) -> Result<ActionResult, ActError> {
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
    pub(super) async fn type_text(
        &mut self,
        index: u32,
        text: &str,
        submit: bool,
    ) -> Result<ActionResult, ActError> {
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

    pub(super) async fn select_option(&mut self, index: u32, option: &str) -> Result<ActionResult, ActError> {
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

    pub(super) async fn scroll(&mut self, down: bool, pages: f64) -> Result<ActionResult, ActError> {
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

    pub(super) async fn press_key(&mut self, key: &str) -> Result<ActionResult, ActError> {
        let ((), nav) = self.settled(|| self.key(key)).await?;
        self.after(nav, format!("pressed {key}")).await
    }

    /// Opens `url` and returns as soon as the new document is usable (see ready.rs), not at its
    /// `load`. `Page.navigate` goes over the driver's own DevTools connection, because
    /// chromiumoxide holds that command's answer until `load`.
    pub(super) async fn goto(&mut self, url: &str) -> Result<ActionResult, ActError> {
        let url = self.session.check_url(url).map_err(nav_error)?;
        self.session.reset_refusals();
        let mut w = Watch::new(&self.page).await?;
        w.requests_of(&self.page).await?;
        let link = match self.link().await {
            Ok(l) => l,
            Err(e) => return Err(self.frame_error(e)),
        };
        let r = link
            .cdp
            .call(
                Some(&link.session),
                "Page.navigate",
                json!({ "url": url }),
                NAVIGATION_LIMIT,
            )
            .await;
        let r = match r {
            Ok(r) => r,
            Err(FrameError::Timeout { .. }) => {
                return Err(ActError::Model(format!("navigation to {url} timed out")));
            }
            Err(e) => return Err(self.frame_error(e)),
        };
        if let Some(err) = r
            .get("errorText")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
        {
            return Err(nav_error(self.session.refused(&url, err)));
        }
        self.last = None;
        // Same-document navigations (a fragment) have no loader and no new document.
        if let Some(loader) = r.get("loaderId").and_then(Value::as_str) {
            w.expect(loader.to_string().into());
            if w.document(false).await == Doc::TimedOut {
                return Err(ActError::Model(format!("navigation to {url} timed out")));
            }
            if w.got_407 || self.session.proxy_refused_now() {
                return Err(ActError::Model(crate::session::proxy_refused(&url)));
            }
            self.ready(&mut w).await;
        }
        let url = self
            .eval("location.href".into(), true)
            .await
            .unwrap_or(Value::Null);
        Ok(ActionResult {
            navigated: true,
            note: format!("page loaded: {}", url.as_str().unwrap_or("?")),
        })
    }

    pub(super) async fn go_back(&mut self) -> Result<ActionResult, ActError> {
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

    pub(super) async fn upload(
        &mut self,
        index: u32,
        path: &std::path::Path,
    ) -> Result<ActionResult, ActError> {
        if let Some(n) = self.frame_of(index) {
            return self.upload_in_frame(n, index, path).await;
        }
        let r = self
            .eval_raw(format!("{PAGE_JS}\nwindow.__smoothd.element({index})"), false)
            .await?;
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
    ) -> Result<ActionResult, ActError> {
        let object = self
            .frame_eval(n, &format!("{PAGE_JS}\nwindow.__smoothd.element({index})"), false)
            .await
            .map_err(|e| match e {
                FrameError::Refused(msg) => ActError::Model(msg.trim_start_matches("Error: ").to_string()),
                e => ActError::Model(e.to_string()),
            })?;
        let (link, route) = self.frame_route(n).map_err(|e| ActError::Model(e.to_string()))?;
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
}
