//! The human takeover of a captcha. smoothd solves none: with the task's `use_captcha_solver`
//! on, a challenge on the page (see `smoothd_browser::Challenge`) pauses the agent before the
//! step is observed, with no model request, while the client is told (a `captcha` event with
//! the interactive live view) and a person solves it there. The agent carries on when the
//! challenge is gone or the page has moved on, fails with "captcha not solved" when no one did
//! within `captcha_timeout`, and stops at once when the task is cancelled. With it off, the
//! model reads that a captcha is on the page (`prompt::render_view`) and can report failure.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use smoothd_browser::{ActError, Challenge, ChallengeKind, Driver};
use smoothd_core::ActionTrace;
use tokio_util::sync::CancellationToken;

use super::{End, Finish, Host, Observation, Run, cut};

/// How often a paused agent looks whether the challenge is still there.
const POLL: Duration = Duration::from_millis(500);

/// Where a challenge stands, as the `captcha` event tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptchaState {
    /// The agent is paused until a person solves it in the live view.
    Waiting,
    /// It is gone (or the page moved on): the agent carries on.
    Solved,
    /// No one solved it in time: the task fails.
    NotSolved,
}

/// The payload of a `captcha` event, less the live view URL the worker adds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaptchaNotice {
    pub state: CaptchaState,
    /// Whether the challenge was got past (`null` while waiting).
    pub solved: Option<bool>,
    pub kind: ChallengeKind,
    /// What was found, in a few words.
    pub description: String,
    /// The page the challenge is on.
    pub url: String,
    /// For a person reading the event.
    pub message: String,
    /// How long the agent waited (absent while waiting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
    /// How long the agent waits in all.
    pub timeout_s: u64,
}

/// How a wait for a person ended.
enum Waited {
    /// The challenge is gone (`true`) or the page moved on to another URL (`false`).
    Passed(bool),
    TimedOut,
    Stopped,
    Crashed(ActError),
}

impl Run {
    /// Before step `n` is observed: while a challenge is on the page, waits for a person (when
    /// the task asks for captcha handling). `Err` is how the run ends.
    pub(super) async fn wait_for_human(
        &mut self,
        host: &mut dyn Host,
        driver: &mut Driver<'_>,
        n: u32,
        stop: &CancellationToken,
    ) -> Result<(), Finish> {
        self.waited = None;
        if !self.job.use_captcha_solver || (n == 1 && self.prefetched.is_some()) {
            return Ok(());
        }
        let challenge = match driver.challenge().await {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(()),
            Err(e) if e.is_fatal() => return Err(self.crashed(&e, n - 1)),
            // A page mid-navigation: the observation deals with it.
            Err(_) => return Ok(()),
        };
        let url = driver.url().await;
        let timeout = self.agent.config.captcha_timeout;
        let notice = |state, waited: Option<Duration>, message: String| CaptchaNotice {
            state,
            solved: match state {
                CaptchaState::Waiting => None,
                CaptchaState::Solved => Some(true),
                CaptchaState::NotSolved => Some(false),
            },
            kind: challenge.kind,
            description: challenge.description.clone(),
            url: url.clone(),
            message,
            waited_ms: waited.map(|d| d.as_millis() as u64),
            timeout_s: timeout.as_secs(),
        };
        host.status(&format!(
            "waiting for a person to solve the captcha ({}) in the live view",
            challenge.description
        ))
        .await;
        let waiting = notice(
            CaptchaState::Waiting,
            None,
            format!(
                "A captcha ({}) is in the way on {}. smoothd does not solve captchas: open the live view (live_url) and solve it; the agent waits up to {} s and carries on by itself.",
                challenge.description,
                cut(&url, 200),
                timeout.as_secs()
            ),
        );
        if !host.captcha(&waiting).await {
            return Err(self.finish(End::Stopped, n - 1));
        }
        let started = Instant::now();
        let waited = wait(driver, &url, timeout, stop).await;
        let took = started.elapsed();
        let secs = format!("{:.1} s", took.as_secs_f64());
        let (result, state, message) = match &waited {
            Waited::Passed(true) => (
                format!("solved after {secs}"),
                CaptchaState::Solved,
                "the captcha is solved: the agent carries on".to_string(),
            ),
            Waited::Passed(false) => (
                format!("the page moved on after {secs}"),
                CaptchaState::Solved,
                "the page moved on: the agent carries on".to_string(),
            ),
            Waited::TimedOut => (
                format!("not solved within {} s", timeout.as_secs()),
                CaptchaState::NotSolved,
                format!(
                    "captcha not solved within {} s: the task fails",
                    timeout.as_secs()
                ),
            ),
            Waited::Stopped => return Err(self.finish(End::Stopped, n - 1)),
            Waited::Crashed(e) => return Err(self.crashed(e, n - 1)),
        };
        self.waited = Some(ActionTrace {
            name: "wait_for_human".into(),
            args: json!({
                "kind": challenge.kind, "description": challenge.description, "url": url,
                "waited_ms": took.as_millis() as u64,
            }),
            result: result.clone(),
        });
        let told = host.captcha(&notice(state, Some(took), message.clone())).await;
        host.status(&message).await;
        if !told {
            return Err(self.finish(End::Stopped, n - 1));
        }
        if state == CaptchaState::Solved {
            // The person changed the page: the next view is read afresh, once it has settled.
            driver.after_challenge().await;
            return Ok(());
        }
        Err(self.not_solved(host, &challenge, &url, n, &result).await)
    }

    /// Records the step that waited in vain and ends the run.
    async fn not_solved(
        &self,
        host: &mut dyn Host,
        challenge: &Challenge,
        url: &str,
        n: u32,
        result: &str,
    ) -> Finish {
        let error = format!(
            "captcha not solved: {} on {} ({result}; no one solved it in the live view)",
            challenge.description,
            cut(url, 200)
        );
        let seen = Observation {
            n,
            step: self.job.first_step + n,
            view: format!(
                "(the agent waited for a person to solve the captcha: {})",
                challenge.description
            ),
            url: url.to_string(),
            started: Instant::now(),
            guard: None,
        };
        host.record_step(self.trace(&seen, None, Vec::new(), Some(error.clone())))
            .await;
        self.finish(
            End::Failed {
                error,
                output: self.best_output.clone(),
            },
            n,
        )
    }
}

/// Polls the page every [`POLL`] until the challenge is gone, the tab is on another URL than
/// `url`, `timeout` runs out, or the task is stopped.
async fn wait(driver: &Driver<'_>, url: &str, timeout: Duration, stop: &CancellationToken) -> Waited {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Waited::TimedOut;
        }
        tokio::select! {
            () = stop.cancelled() => return Waited::Stopped,
            () = tokio::time::sleep(POLL.min(left)) => {}
        }
        let now = driver.url().await;
        if !now.is_empty() && now != url {
            return Waited::Passed(false);
        }
        match driver.challenge().await {
            Ok(None) => return Waited::Passed(true),
            Ok(Some(_)) => {}
            Err(e) if e.is_fatal() => return Waited::Crashed(e),
            // Mid-navigation: look again.
            Err(_) => {}
        }
    }
}
