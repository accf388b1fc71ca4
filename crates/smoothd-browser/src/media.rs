//! What a person sees of a task's page and what they may do to it: the CDP screencast (the
//! latest JPEG frame, always replaced, never queued), the page's current URL, a viewer's
//! mouse, wheel and keyboard input, and the files the page downloads.
//!
//! Frames: Chromium sends a frame when the page changes, and the next only after we ack;
//! acks are spaced by `1 / max_fps`, which bounds Chromium's encoding work.
//! Downloads: the context saves into `<dir>/.incoming/<guid>` ("allowAndName"); when
//! Chromium reports a download complete, the file is moved to `<dir>/<original name>`
//! (made unique). So `<dir>` only ever holds finished files under their own names, and
//! anything else written there (the agent's screenshots) joins them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::browser::{
    DownloadProgressState, EventDownloadProgress, EventDownloadWillBegin, SetDownloadBehaviorBehavior,
    SetDownloadBehaviorParams,
};
use chromiumoxide::cdp::browser_protocol::input::{
    DispatchKeyEventParams, DispatchKeyEventType, DispatchMouseEventParams, DispatchMouseEventType,
    MouseButton,
};
use chromiumoxide::cdp::browser_protocol::page::{
    EventFrameNavigated, EventNavigatedWithinDocument, EventScreencastFrame, ScreencastFrameAckParams,
    StartScreencastFormat, StartScreencastParams, StopScreencastParams,
};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::watch;

use crate::error::BrowserError;
use crate::session::BrowserSession;

/// One screencast frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The JPEG image.
    pub jpeg: Bytes,
    /// Image size in pixels.
    pub width: u32,
    pub height: u32,
    /// The viewport in CSS pixels (input coordinates).
    pub css_width: f64,
    pub css_height: f64,
    /// Counts frames from 1.
    pub seq: u64,
}

/// How to capture.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    /// Stream frames (for the live view and the recording).
    pub screencast: bool,
    /// Frames at most this often per second.
    pub max_fps: u32,
    /// JPEG quality, 0-100.
    pub quality: u8,
    /// Largest frame side in pixels (a 3x phone is scaled down).
    pub max_side: u32,
    /// Where finished downloads go, under their original names.
    pub downloads_dir: Option<PathBuf>,
}

impl Default for MediaOptions {
    fn default() -> Self {
        Self {
            screencast: true,
            max_fps: 8,
            quality: 60,
            max_side: 1280,
            downloads_dir: None,
        }
    }
}

/// Input from a live viewer. Coordinates are fractions (0..1) of the frame, so the viewer
/// needs to know nothing about the page's size.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ViewerInput {
    /// `action`: down, up or move.
    Mouse {
        action: String,
        x: f64,
        y: f64,
        #[serde(default)]
        button: Option<String>,
        #[serde(default)]
        clicks: Option<i64>,
        #[serde(default)]
        modifiers: Option<i64>,
    },
    /// A wheel turn at (x, y), in CSS pixels of scroll.
    Wheel { x: f64, y: f64, dx: f64, dy: f64 },
    /// `action`: down or up; `key` as in `KeyboardEvent.key`.
    Key {
        action: String,
        key: String,
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        modifiers: Option<i64>,
    },
}

/// Downloads seen by the browser; guids are shared by every context of a browser, so each
/// session only acts on files that land in its own folder.
#[derive(Debug, Default)]
struct DownloadState {
    names: HashMap<String, String>,
    /// Begun from this session's page and not yet finished.
    in_progress: HashMap<String, ()>,
}

/// A session's capture: live while this value lives.
pub struct PageMedia {
    page: Page,
    frames: watch::Receiver<Option<Arc<Frame>>>,
    url: watch::Receiver<String>,
    downloads: Option<(PathBuf, Arc<Mutex<DownloadState>>)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for PageMedia {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl BrowserSession {
    /// Starts capturing this session's page.
    pub async fn start_media(&self, opts: &MediaOptions) -> Result<PageMedia, BrowserError> {
        let page = self.page().clone();
        let mut tasks = Vec::new();
        let (url_tx, url) = watch::channel(page.url().await.ok().flatten().unwrap_or_default());
        let mut navigated = page.event_listener::<EventFrameNavigated>().await?;
        let mut within = page.event_listener::<EventNavigatedWithinDocument>().await?;
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = navigated.next() => match ev {
                        Some(ev) if ev.frame.parent_id.is_none() => { url_tx.send_replace(ev.frame.url.clone()); }
                        Some(_) => {}
                        None => break,
                    },
                    ev = within.next() => match ev {
                        Some(ev) => { url_tx.send_replace(ev.url.clone()); }
                        None => break,
                    },
                }
            }
        }));

        let (frame_tx, frames) = watch::channel(None);
        if opts.screencast {
            let mut events = page.event_listener::<EventScreencastFrame>().await?;
            let side = i64::from(opts.max_side.max(64));
            page.execute(
                StartScreencastParams::builder()
                    .format(StartScreencastFormat::Jpeg)
                    .quality(i64::from(opts.quality.min(100)))
                    .max_width(side)
                    .max_height(side)
                    .every_nth_frame(1)
                    .build(),
            )
            .await?;
            let pace = Duration::from_secs_f64(1.0 / f64::from(opts.max_fps.max(1)));
            let ack_page = page.clone();
            tasks.push(tokio::spawn(async move {
                let mut seq = 0u64;
                while let Some(ev) = events.next().await {
                    let started = tokio::time::Instant::now();
                    if let Some(frame) = decode_frame(&ev, seq + 1) {
                        seq += 1;
                        frame_tx.send_replace(Some(Arc::new(frame)));
                    }
                    // The next frame comes only after the ack: pacing it bounds the frame rate.
                    tokio::time::sleep_until(started + pace).await;
                    if let Err(e) = ack_page
                        .execute(ScreencastFrameAckParams::new(ev.session_id))
                        .await
                    {
                        tracing::debug!(error = %e, "screencast ack failed");
                        break;
                    }
                }
            }));
        }

        let downloads = match &opts.downloads_dir {
            Some(dir) => Some((dir.clone(), self.capture_downloads(dir, &mut tasks).await?)),
            None => None,
        };
        Ok(PageMedia {
            page,
            frames,
            url,
            downloads,
            tasks,
        })
    }

    async fn capture_downloads(
        &self,
        dir: &Path,
        tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    ) -> Result<Arc<Mutex<DownloadState>>, BrowserError> {
        let incoming = dir.join(".incoming");
        std::fs::create_dir_all(&incoming)
            .map_err(|e| BrowserError::Cdp(format!("cannot create the downloads folder: {e}")))?;
        let browser = &self.process().browser;
        let mut begin = browser.event_listener::<EventDownloadWillBegin>().await?;
        let mut progress = browser.event_listener::<EventDownloadProgress>().await?;
        let mut params = SetDownloadBehaviorParams::builder()
            .behavior(SetDownloadBehaviorBehavior::AllowAndName)
            .download_path(incoming.display().to_string())
            .events_enabled(true);
        if let Some(c) = self.context_id() {
            params = params.browser_context_id(c.clone());
        }
        browser
            .execute(params.build().map_err(BrowserError::Cdp)?)
            .await?;
        let main_frame = self.page().mainframe().await.ok().flatten();
        let state = Arc::new(Mutex::new(DownloadState::default()));
        let (st, dir) = (state.clone(), dir.to_path_buf());
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = begin.next() => {
                        let Some(ev) = ev else { break };
                        if let Ok(mut s) = st.lock() {
                            s.names.insert(ev.guid.clone(), ev.suggested_filename.clone());
                            if main_frame.as_ref().is_some_and(|f| *f == ev.frame_id) {
                                s.in_progress.insert(ev.guid.clone(), ());
                            }
                        }
                    }
                    ev = progress.next() => {
                        let Some(ev) = ev else { break };
                        match ev.state {
                            DownloadProgressState::InProgress => {}
                            DownloadProgressState::Completed => {
                                let name = st.lock().ok().and_then(|s| s.names.get(&ev.guid).cloned());
                                settle(&dir, &ev.guid, name.as_deref());
                                if let Ok(mut s) = st.lock() { s.in_progress.remove(&ev.guid); }
                            }
                            DownloadProgressState::Canceled => {
                                if let Ok(mut s) = st.lock() { s.in_progress.remove(&ev.guid); }
                            }
                        }
                    }
                }
            }
        }));
        Ok(state)
    }
}

/// Moves a finished download from `.incoming/<guid>` to its own name in `dir`.
fn settle(dir: &Path, guid: &str, name: Option<&str>) {
    let from = dir.join(".incoming").join(guid);
    if !from.is_file() {
        // Another context's download (guids are browser-wide).
        return;
    }
    let name = sanitize(name.unwrap_or("download"));
    let to = unique(dir, &name);
    if let Err(e) = std::fs::rename(&from, &to) {
        tracing::warn!(error = %e, file = %to.display(), "cannot keep a download");
    }
}

/// A file name safe in a folder and an archive: no separators, no leading dots.
pub fn sanitize(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').trim().to_string();
    if cleaned.is_empty() {
        "download".into()
    } else {
        cleaned
    }
}

/// `dir/name`, or `dir/stem (n).ext` if taken.
pub fn unique(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s.to_string(), format!(".{e}")),
        _ => (name.to_string(), String::new()),
    };
    (1..)
        .map(|n| dir.join(format!("{stem} ({n}){ext}")))
        .find(|p| !p.exists())
        .unwrap_or(first)
}

impl PageMedia {
    /// The latest frame (None until the first arrives).
    pub fn frames(&self) -> watch::Receiver<Option<Arc<Frame>>> {
        self.frames.clone()
    }

    /// The page's current URL.
    pub fn url(&self) -> watch::Receiver<String> {
        self.url.clone()
    }

    /// Replays a viewer's input on the page.
    pub async fn input(&self, ev: &ViewerInput) -> Result<(), BrowserError> {
        let frame = self.frames.borrow().clone();
        let (w, h) = frame.as_ref().map_or((0.0, 0.0), |f| (f.css_width, f.css_height));
        let at = |x: f64, y: f64| (x.clamp(0.0, 1.0) * w, y.clamp(0.0, 1.0) * h);
        match ev {
            ViewerInput::Mouse {
                action,
                x,
                y,
                button,
                clicks,
                modifiers,
            } => {
                let kind = match action.as_str() {
                    "down" => DispatchMouseEventType::MousePressed,
                    "up" => DispatchMouseEventType::MouseReleased,
                    "move" => DispatchMouseEventType::MouseMoved,
                    other => return Err(BrowserError::Script(format!("unknown mouse action {other:?}"))),
                };
                let (px, py) = at(*x, *y);
                let mut p = DispatchMouseEventParams::new(kind.clone(), px, py);
                p.modifiers = *modifiers;
                if kind != DispatchMouseEventType::MouseMoved {
                    p.button = Some(match button.as_deref() {
                        Some("right") => MouseButton::Right,
                        Some("middle") => MouseButton::Middle,
                        _ => MouseButton::Left,
                    });
                    p.click_count = Some(clicks.unwrap_or(1).clamp(1, 3));
                }
                self.page.execute(p).await?;
            }
            ViewerInput::Wheel { x, y, dx, dy } => {
                let (px, py) = at(*x, *y);
                let mut p = DispatchMouseEventParams::new(DispatchMouseEventType::MouseWheel, px, py);
                p.delta_x = Some(dx.clamp(-5000.0, 5000.0));
                p.delta_y = Some(dy.clamp(-5000.0, 5000.0));
                self.page.execute(p).await?;
            }
            ViewerInput::Key {
                action,
                key,
                code,
                modifiers,
            } => {
                let down = match action.as_str() {
                    "down" => true,
                    "up" => false,
                    other => return Err(BrowserError::Script(format!("unknown key action {other:?}"))),
                };
                let mods = modifiers.unwrap_or(0);
                // Alt, Ctrl and Meta (CDP bits 1, 2, 4) make a shortcut, not text.
                let shortcut = mods & 0b111 != 0;
                let (vk, text) = key_code(key);
                let text = if shortcut { None } else { text };
                let kind = match (down, text.is_some()) {
                    (true, true) => DispatchKeyEventType::KeyDown,
                    (true, false) => DispatchKeyEventType::RawKeyDown,
                    (false, _) => DispatchKeyEventType::KeyUp,
                };
                let mut p = DispatchKeyEventParams::new(kind);
                p.key = Some(key.clone());
                p.code = code.clone();
                p.modifiers = Some(mods);
                p.windows_virtual_key_code = vk;
                if down {
                    p.unmodified_text = text.clone();
                    p.text = text;
                }
                self.page.execute(p).await?;
            }
        }
        Ok(())
    }

    /// Stops the screencast; waits (up to `wait`) for downloads this page started to finish.
    pub async fn stop(&self, wait: Duration) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.page.execute(StopScreencastParams::default()),
        )
        .await;
        let Some((_, state)) = &self.downloads else { return };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let pending = state.lock().map(|s| s.in_progress.len()).unwrap_or(0);
            if pending == 0 || tokio::time::Instant::now() >= deadline {
                if pending > 0 {
                    tracing::warn!(
                        pending,
                        "downloads still running at the end of the task are left out"
                    );
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Windows virtual key code and the text a key types.
fn key_code(key: &str) -> (Option<i64>, Option<String>) {
    let special = match key {
        "Enter" => Some((13, Some("\r"))),
        "Backspace" => Some((8, None)),
        "Tab" => Some((9, None)),
        "Escape" => Some((27, None)),
        "Delete" => Some((46, None)),
        "ArrowLeft" => Some((37, None)),
        "ArrowUp" => Some((38, None)),
        "ArrowRight" => Some((39, None)),
        "ArrowDown" => Some((40, None)),
        "Home" => Some((36, None)),
        "End" => Some((35, None)),
        "PageUp" => Some((33, None)),
        "PageDown" => Some((34, None)),
        "Shift" => Some((16, None)),
        "Control" => Some((17, None)),
        "Alt" => Some((18, None)),
        "Meta" => Some((91, None)),
        _ => None,
    };
    if let Some((vk, text)) = special {
        return (Some(vk), text.map(str::to_string));
    }
    let mut chars = key.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => {
            let vk = if c.is_ascii_alphanumeric() {
                Some(i64::from(c.to_ascii_uppercase() as u8))
            } else if c == ' ' {
                Some(32)
            } else {
                None
            };
            (vk, Some(c.to_string()))
        }
        _ => (None, None),
    }
}

/// Screencast event `ev` as frame number `seq`; `None` (logged) when it is not a JPEG we can
/// read.
fn decode_frame(ev: &EventScreencastFrame, seq: u64) -> Option<Frame> {
    let data: &str = ev.data.as_ref();
    let jpeg = match base64::engine::general_purpose::STANDARD.decode(data) {
        Ok(jpeg) => jpeg,
        Err(e) => {
            tracing::debug!(error = %e, "screencast frame is not base64");
            return None;
        }
    };
    let Some((width, height)) = jpeg_size(&jpeg) else {
        tracing::debug!("screencast frame is not a JPEG we can read");
        return None;
    };
    Some(Frame {
        jpeg: Bytes::from(jpeg),
        width,
        height,
        css_width: ev.metadata.device_width,
        css_height: ev.metadata.device_height,
        seq,
    })
}

/// Width and height from a JPEG's start-of-frame marker.
pub fn jpeg_size(b: &[u8]) -> Option<(u32, u32)> {
    if b.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut i = 2;
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            return None;
        }
        let marker = b[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
        if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
            let h = u16::from_be_bytes([*b.get(i + 5)?, *b.get(i + 6)?]);
            let w = u16::from_be_bytes([*b.get(i + 7)?, *b.get(i + 8)?]);
            return Some((u32::from(w), u32::from(h)));
        }
        i += 2 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_safe_and_unique() {
        assert_eq!(sanitize("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(sanitize(".hidden"), "hidden");
        assert_eq!(sanitize(""), "download");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("a.txt"), b"1").expect("write");
        assert_eq!(unique(dir.path(), "a.txt"), dir.path().join("a (1).txt"));
        assert_eq!(unique(dir.path(), "b.txt"), dir.path().join("b.txt"));
    }

    #[test]
    fn keys_map_to_codes_and_text() {
        assert_eq!(key_code("a"), (Some(65), Some("a".into())));
        assert_eq!(key_code("Enter"), (Some(13), Some("\r".into())));
        assert_eq!(key_code("F13"), (None, None));
    }

    #[test]
    fn jpeg_size_reads_the_frame_header() {
        // SOI, then a SOF0 segment for a 3x2 image.
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x00, 0x02, 0x00, 0x03, 0x03,
        ];
        assert_eq!(jpeg_size(&jpeg), Some((3, 2)));
        assert_eq!(jpeg_size(b"not a jpeg"), None);
    }
}
