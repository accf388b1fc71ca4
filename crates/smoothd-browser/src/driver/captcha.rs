//! Challenges a person must pass before a page goes on: reCAPTCHA, hCaptcha and Turnstile
//! widgets, and "verify you are human" interstitials. page.js finds them in the page's DOM (the
//! widgets' class names and frame URLs, and an unanswered response field; a short page saying
//! so); every [`PageView`](super::PageView) carries what it found, and [`Driver::challenge`] is
//! the cheap check to poll while a person solves one. Nothing here solves anything.

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
}
