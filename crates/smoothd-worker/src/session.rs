//! An interactive session's life: its tunnel (for `proxy_server: "self"`), its browser, the
//! start URL, then client commands one at a time until `close`, the idle timeout, a stop, or
//! the browser's death. A session with no browser on this machine still opens, so close and
//! cancel behave, and answers browser commands with the reason.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use smoothd_core::Final;
use smoothd_core::event::Event;

use crate::actions::{self, Reply};
use crate::agent;
use crate::context::{StopReason, TaskContext};
use crate::services::{BROWSER_CRASHED, Services};
use crate::setup::{Prepared, SetupError};
use crate::tunnel::SessionTunnel;

/// How long a session whose browser died waits for a command already on its way.
const CRASH_GRACE: Duration = Duration::from_secs(3);

/// Session timings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// An idle session ends after this long without a command.
    pub idle: Duration,
    /// How long a closing session waits for the client to read the close answer.
    pub close_grace: Duration,
    /// How long a `proxy_server: "self"` session's actions wait for the caller's frpc.
    pub tunnel_wait: Duration,
}

/// Runs a session from its tunnel and browser to its end; the browser is closed (and its
/// media stored) before the outcome is returned.
pub(crate) async fn run(services: &Services, config: &SessionConfig, ctx: &mut TaskContext) -> Option<Final> {
    let live = services.media.as_ref().and_then(|m| m.live.as_ref());
    let tunnel = match SessionTunnel::open(ctx, live, config.tunnel_wait).await {
        Ok(t) => t,
        Err(e) => return Some(Final::failed(e.to_string())),
    };
    let prepared = match services.open_browser(ctx, tunnel.as_ref()).await {
        Ok(b) => Some(b),
        Err(e @ SetupError::NoBrowser(_)) => {
            // No browser on this machine: keep the session so close/cancel behave, and
            // answer browser actions with the reason.
            tracing::warn!(error = %e, "session without a browser");
            None
        }
        Err(e) => return Some(Final::failed(e.to_string())),
    };
    let session = Session {
        services,
        config,
        browser: prepared.as_ref(),
        tunnel: tunnel.as_ref(),
    };
    let outcome = session.serve(ctx).await;
    drop(tunnel);
    if let Some(p) = prepared {
        p.finish(ctx, &services.blobs).await;
    }
    outcome
}

/// One open session's parts, for its command loop.
struct Session<'a> {
    services: &'a Services,
    config: &'a SessionConfig,
    browser: Option<&'a Prepared>,
    tunnel: Option<&'a SessionTunnel>,
}

/// What the loop does after a command.
enum Next {
    Continue,
    End(Option<Final>),
}

impl Session<'_> {
    /// Opens the start URL, then answers commands until the session ends.
    async fn serve(&self, ctx: &mut TaskContext) -> Option<Final> {
        if let Err(outcome) = self.open_start_url(ctx).await {
            return outcome;
        }
        let mut credits = 0;
        // Set once the browser is gone: the session then waits only CRASH_GRACE for a command
        // already on its way (answered 500, "the browser crashed", which the client reads
        // better than a call cancelled by the final state), then fails.
        let mut dead = false;
        loop {
            let Some(next) = self.next_event(ctx, dead).await else {
                tracing::warn!(task.id = %ctx.id(), "the browser crashed under an idle session");
                dead = true;
                continue;
            };
            let Some(event) = next else {
                return self.ended_without_command(ctx, dead);
            };
            if let Next::End(outcome) = self.answer(ctx, &event, &mut credits).await {
                return outcome;
            }
        }
    }

    async fn open_start_url(&self, ctx: &TaskContext) -> Result<(), Option<Final>> {
        let (Some(b), Some(url)) = (self.browser, ctx.spec.url.clone()) else {
            return Ok(());
        };
        if ctx.mark_effects().await.is_err() {
            return Err(None);
        }
        if let Some(t) = self.tunnel
            && let Err(e) = t.ready().await
        {
            return Err(Some(Final::failed(format!("could not open the start URL: {e}"))));
        }
        if let Err(e) = b.session.goto(&url).await {
            return Err(Some(Final::failed(format!("could not open the start URL: {e}"))));
        }
        Ok(())
    }

    /// The next client command: `None` when the browser died first (an idle session whose
    /// browser dies ends within moments, not at its next command or idle timeout);
    /// `Some(None)` on a stop or the idle timeout.
    async fn next_event(&self, ctx: &mut TaskContext, dead: bool) -> Option<Option<Event>> {
        match self.browser {
            Some(b) if !dead => tokio::select! {
                e = ctx.next_client_event(self.config.idle) => Some(e),
                () = b.session.browser_gone() => None,
            },
            _ if dead => Some(ctx.next_client_event(CRASH_GRACE).await),
            _ => Some(ctx.next_client_event(self.config.idle).await),
        }
    }

    /// The session's end when no command came: a stop, the browser's death, or idleness.
    fn ended_without_command(&self, ctx: &TaskContext, dead: bool) -> Option<Final> {
        if ctx.stop_reason().is_some() {
            return None;
        }
        if dead {
            return Some(Final::failed(BROWSER_CRASHED));
        }
        Some(Final::failed(format!(
            "session closed after {} s without a command (idle timeout)",
            self.config.idle.as_secs()
        )))
    }

    /// Answers one command; `close`, a lost lease or a dead browser end the session.
    async fn answer(&self, ctx: &mut TaskContext, event: &Event, credits: &mut i64) -> Next {
        let started = Instant::now();
        let action = actions::action_name(event);
        if event.name == "session_action" && action == "close" {
            return Next::End(self.close(ctx, event, started, *credits).await);
        }
        // Answers to tool calls go to whoever made the call; a session makes none yet.
        if event.name == "tool_call" {
            return Next::Continue;
        }
        let tunnel_down = match self.tunnel {
            Some(t) => t.ready().await.err(),
            None => None,
        };
        let reply = if let Some(why) = tunnel_down {
            Reply::user(why.to_string())
        } else if event.name == "session_action" && action == "run_task" {
            agent::session_run_task(self.services, ctx, self.browser, event, credits).await
        } else {
            actions::handle(self.services, ctx, self.browser, event, &action, started).await
        };
        let crashed = self.browser.is_some_and(|b| !b.session.browser_alive());
        let Ok(sent) = ctx.reply(event, reply.code, reply.output).await else {
            return Next::End(None);
        };
        if action == "run_task" {
            forget_secrets(ctx, event).await;
        }
        if crashed {
            // As with close: the SDK never reads the events of the first final response,
            // so the 500 answer must be read while the session still reads running.
            ctx.wait_acked(sent.timestamp, self.config.close_grace).await;
            return Next::End(Some(Final::failed(BROWSER_CRASHED)));
        }
        Next::Continue
    }

    /// Answers `close` and waits (a little) for the client to read the answer before the
    /// session turns final.
    async fn close(&self, ctx: &TaskContext, event: &Event, started: Instant, credits: i64) -> Option<Final> {
        let duration = started.elapsed().as_secs_f64();
        let Ok(sent) = ctx
            .reply(
                event,
                200,
                json!({"output": true, "credits_used": 0, "duration": duration}),
            )
            .await
        else {
            return None;
        };
        ctx.wait_acked(sent.timestamp, self.config.close_grace).await;
        if ctx.stop_reason() == Some(StopReason::LeaseLost) {
            return None;
        }
        if self.browser.is_some_and(|b| !b.session.browser_alive()) {
            return Some(Final::failed(BROWSER_CRASHED));
        }
        Some(Final::Done {
            output: Value::Null,
            credits_used: credits,
        })
    }
}

/// A `run_task` was answered: its secrets' values leave the stored event (a command is never
/// run twice, so nothing needs them again). Failing to is logged, not fatal.
async fn forget_secrets(ctx: &TaskContext, event: &Event) {
    let Some(clean) = smoothd_core::run_task::redacted(&event.payload) else {
        return;
    };
    if let Err(e) = ctx
        .store()
        .rewrite_client_event(ctx.id(), event.timestamp, &clean)
        .await
    {
        tracing::warn!(error = %e, "run_task: the secrets could not be removed from the stored command");
    }
}
