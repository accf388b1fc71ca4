//! Observation: the page view as page.js builds it, with each cross-origin frame's own view put
//! in place of its marker and its elements numbered after the page's own. Parts that did not
//! change since the last view are reused, so a quiet page costs one small evaluation per step.

use futures::StreamExt;
use serde_json::json;

use super::frames::FrameError;
use super::route::XFrame;
use super::{ActError, Driver, PAGE_JS, PageView};

/// Cross-origin frames read per view (each costs a round trip per step; ad-heavy pages have many).
const MAX_FRAMES: usize = 10;

/// A document younger than this (ms since its navigation started) that has not changed since the
/// last view, and whose scripts made timers, is given until its first change or this age before
/// it is read again. Pages show consent dialogs, ads and late widgets by timer soon after they
/// load; an agent fast enough to act twice in that time (a scroll at the bottom, a click that did
/// nothing) would otherwise see the same page again and give up on what was about to appear. A
/// model that takes a second to answer never waits here.
const YOUNG_MS: u32 = 1000;

impl Driver<'_> {
    /// The current page view, with its cross-origin frames read in place.
    pub async fn observe(&mut self) -> Result<PageView, ActError> {
        let prev = self.last.as_ref().map(|v| v.key.clone()).unwrap_or_default();
        let opts = json!({"prevKey": prev, "young": YOUNG_MS});
        let mut v = self.helper(&format!("view({opts})")).await?;
        if v.get("young").and_then(serde_json::Value::as_bool) == Some(true) {
            // A missing helper (the document went) is found by the view below.
            let _ = self.helper(&format!("late({YOUNG_MS})")).await;
            v = self.helper(&format!("view({opts})")).await?;
        }
        let view: PageView =
            serde_json::from_value(v).map_err(|e| ActError::Model(format!("unreadable page view: {e}")))?;
        let changed = !view.unchanged;
        let main = match (&self.last, view.unchanged) {
            // A widget's answer sets a field's value, which no mutation reports: the challenge
            // is looked at every time.
            (Some(last), true) => PageView {
                challenge: view.challenge,
                ..last.clone()
            },
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
            self.read_frames(&main).await;
            self.compose(&main)
        };
        self.collect_downloads().await;
        view.downloads.clone_from(&self.downloads);
        Ok(view)
    }

    /// Collects the download starts that arrived since the last look.
    pub(super) async fn collect_downloads(&mut self) {
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

    /// Reads every cross-origin frame the main view marked, numbering their elements after the
    /// page's own. A frame that cannot be read is marked so, with why.
    async fn read_frames(&mut self, main: &PageView) {
        let count = main.cross_origin as usize;
        self.xframes.truncate(count);
        let mut base = main.elements;
        for n in 0..count {
            if self.xframes.len() <= n {
                self.xframes.push(XFrame::default());
            }
            if n >= MAX_FRAMES {
                self.xframes[n] = XFrame {
                    base,
                    failed: Some(FrameError::TooMany(MAX_FRAMES)),
                    ..XFrame::default()
                };
                continue;
            }
            // A remembered way into a frame may be stale (the frame navigated): find it once more.
            for attempt in 0..2 {
                if self.read_frame(n, base).await || attempt == 1 {
                    break;
                }
            }
            base += self.xframes[n].elements;
        }
        let live: Vec<&String> = self.xframes.iter().map(|x| &x.frame).collect();
        self.routes.retain(|f, _| live.contains(&f));
    }

    /// One attempt at frame `n`'s view, its elements numbered from `base`. False when another
    /// attempt may help: the frame is marked unreadable and its route forgotten, so a retry
    /// looks for it again.
    async fn read_frame(&mut self, n: usize, base: u32) -> bool {
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
                    // Resolving again would fail the same way.
                    return true;
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
            .and_then(|v| {
                serde_json::from_value::<PageView>(v).map_err(|e| FrameError::Unreadable(e.to_string()))
            });
        let xf = &mut self.xframes[n];
        match r {
            Ok(v) if v.unchanged => true,
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
                true
            }
            Err(e) => {
                self.routes.remove(&xf.frame);
                *xf = XFrame {
                    base,
                    failed: Some(e),
                    ..XFrame::default()
                };
                false
            }
        }
    }

    /// The main view with each frame marker replaced by that frame's view.
    fn compose(&self, main: &PageView) -> PageView {
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
                    let why = other
                        .and_then(|x| x.failed.as_ref())
                        .map_or_else(|| "not found".to_string(), ToString::to_string);
                    lines.push(format!("--- iframe (cross-origin, not readable: {why}) ---"));
                }
            }
        }
        view.text = lines.join("\n");
        view.cross_origin = unreadable;
        view
    }
}
