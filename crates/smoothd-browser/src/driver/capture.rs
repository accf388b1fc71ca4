//! Captures of the current tab: a screenshot, a PDF, its readable text, and the plain wait.

use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::page::{
    CaptureScreenshotFormat, CaptureScreenshotParams, PrintToPdfParams,
};

use super::{ActError, ActionResult, CALL_LIMIT, Driver};

impl Driver<'_> {
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

    /// The current tab printed to PDF.
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

    /// Waits `seconds` (at most 10).
    pub(super) async fn wait(&mut self, seconds: f64) -> ActionResult {
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(seconds.clamp(0.0, 10.0))).await;
        ActionResult {
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
