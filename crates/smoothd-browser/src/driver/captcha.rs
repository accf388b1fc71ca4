//! Challenges a person must pass before a page goes on: reCAPTCHA, hCaptcha and Turnstile
//! widgets, and "verify you are human" interstitials. page.js finds them in the page's DOM (the
//! widgets' class names and frame URLs, and an unanswered response field; a short page saying
//! so); every [`PageView`](super::PageView) carries what it found, and [`Driver::challenge`] is
//! the cheap check to poll while a person solves one. Nothing here solves anything.

/// After a challenge is passed, the page reveals its content or moves on: the DOM must be quiet
/// this long (at most `AFTER_MAX_MS`) before the agent looks.
const AFTER_QUIET_MS: u32 = 500;
const AFTER_MAX_MS: u32 = 3000;
/// How long a navigation the pass started may take to load.
const AFTER_LOAD: Duration = Duration::from_secs(10);

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ActError, Driver};

/// Which kind of challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChallengeKind {
    Recaptcha,
    Hcaptcha,
    Turnstile,
    /// A page that only asks to prove the visitor is human (Cloudflare's "Just a moment...").
    Interstitial,
}

impl ChallengeKind {
    /// The name on the wire: `recaptcha`, `hcaptcha`, `turnstile` or `interstitial`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recaptcha => "recaptcha",
            Self::Hcaptcha => "hcaptcha",
            Self::Turnstile => "turnstile",
            Self::Interstitial => "interstitial",
        }
    }
}

/// A challenge on the page, as page.js found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub kind: ChallengeKind,
    /// What was found, in a few words (`reCAPTCHA widget (.g-recaptcha)`).
    pub description: String,
}

impl Driver<'_> {
    /// The challenge on the current tab's page now, if any. One small evaluation when the page
    /// helper is already in the document (the page helper is installed first when it is not).
    pub async fn challenge(&self) -> Result<Option<Challenge>, ActError> {
        let quick = self
            .eval(
                "window.__smoothd ? [window.__smoothd.challenge()] : null".into(),
                true,
            )
            .await?;
        let found = match quick {
            Value::Array(mut v) if v.len() == 1 => v.remove(0),
            _ => self.helper("challenge()").await?,
        };
        serde_json::from_value(found).map_err(|e| ActError::Model(format!("unreadable challenge: {e}")))
    }

    /// After a challenge went away (a person passed it): waits until what the page does next
    /// has happened (a navigation's load, content revealed), so the next view is not of a
    /// half-changed page, and forgets the last view.
    pub async fn after_challenge(&mut self) {
        self.forget_view();
        let deadline = Instant::now() + AFTER_LOAD;
        while Instant::now() < deadline {
            // A document being replaced refuses: look again.
            if let Ok(Value::String(state)) = self.eval("document.readyState".into(), true).await
                && state == "complete"
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self
            .helper(&format!("settle({AFTER_QUIET_MS}, {AFTER_MAX_MS})"))
            .await;
    }
}
