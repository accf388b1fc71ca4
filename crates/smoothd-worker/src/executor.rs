//! The executor seam, and the executor this build ships: it runs interactive sessions in a
//! real browser (navigation and JavaScript through client events) and fails agent tasks at
//! once with the reason (the agent is not part of this build yet).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use smoothd_browser::{Blocker, BrowserError, BrowserPool, SessionOptions};
use smoothd_core::event::Event;
use smoothd_core::urlpattern::UrlPattern;

use smoothd_agent::Agent;
use smoothd_store::Blobs;

use crate::agent::{self as glue, TaskHost};
use crate::context::{StopReason, TaskContext};
use crate::setup::{self, Prepared};
use crate::tunnel::SessionTunnel;

/// How a task ended, as its executor reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Success, with the task's output.
    Done { output: Value, credits_used: i64 },
    /// Failure, with a message for the user and any partial output.
    Failed {
        error: String,
        output: Option<Value>,
        credits_used: i64,
    },
    /// Stopped on request (or by shutdown/lease loss; the pool decides what to write).
    Stopped,
}

/// Runs one claimed task to an outcome. Must return promptly once the context's stop token
/// fires.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    async fn run(&self, ctx: &mut TaskContext) -> Outcome;
}

/// Sessions in a real browser; tasks without the agent.
#[derive(Clone)]
pub struct BasicExecutor {
    /// The agent, when a model endpoint is configured.
    pub agent: Option<Agent>,
    /// An idle session ends after this long without a command.
    pub session_idle: Duration,
    /// How long a closing session waits for the client to read the close answer.
    pub close_grace: Duration,
    /// The browsers, or why there are none (e.g. Chromium is not installed).
    pub browsers: Result<Arc<BrowserPool>, String>,
    /// The compiled ad and tracker lists (shared by every task), if any were found.
    pub blocker: Option<Arc<Blocker>>,
    /// Artifact bytes: profiles, extensions, uploaded files.
    pub blobs: Blobs,
    /// How long a `proxy_server: "self"` session's actions wait for the caller's frpc.
    pub tunnel_wait: Duration,
}

fn failed(error: impl Into<String>) -> Outcome {
    Outcome::Failed {
        error: error.into(),
        output: None,
        credits_used: 0,
    }
}

#[async_trait]
impl Executor for BasicExecutor {
    async fn run(&self, ctx: &mut TaskContext) -> Outcome {
        if ctx.spec.is_session() {
            return self.run_session(ctx).await;
        }
        match &self.agent {
            Some(agent) => {
                let agent = agent.for_task(&ctx.spec.agent);
                self.run_agent_task(ctx, &agent).await
            }
            None => failed(NO_MODEL),
        }
    }
}

/// How long a session whose browser died waits for a command already on its way.
const CRASH_GRACE: Duration = Duration::from_secs(3);

/// The final error of a task or session whose browser died under it.
const BROWSER_CRASHED: &str =
    "the browser crashed (its process exited or the connection to it was lost); the task cannot continue";

const NO_MODEL: &str = "no model configured: set SMOOTHD_LLM_BASE_URL and SMOOTHD_LLM_MODEL (and \
     SMOOTHD_LLM_API_KEY if the endpoint needs one) to run tasks";

/// The action a client event names (`payload.name`), or "".
pub(crate) fn action_name(event: &Event) -> String {
    event
        .payload
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The answer to one client event.
pub(crate) struct Reply {
    pub(crate) code: u16,
    pub(crate) output: Value,
}

impl Reply {
    fn ok(output: Value) -> Self {
        Self { code: 200, output }
    }
    fn user(msg: impl Into<String>) -> Self {
        Self {
            code: 400,
            output: Value::String(msg.into()),
        }
    }
    fn internal(msg: impl Into<String>) -> Self {
        Self {
            code: 500,
            output: Value::String(msg.into()),
        }
    }
}

impl BasicExecutor {
    async fn open_browser(
        &self,
        ctx: &TaskContext,
        tunnel: Option<&SessionTunnel>,
    ) -> Result<Prepared, String> {
        let pool = self.browsers.as_ref().map_err(Clone::clone)?;
        let spec = &ctx.spec;
        let allowed_urls = spec
            .allowed_urls
            .iter()
            .filter_map(|p| UrlPattern::parse(p).ok())
            .collect();
        let opts = SessionOptions {
            device: spec.device,
            stealth: spec.use_stealth,
            allowed_urls,
            default_context: false,
            show_cursor: spec.show_cursor,
            proxy_server: match tunnel {
                Some(t) => Some(t.socks_url()),
                None => spec.proxy.as_ref().map(|p| p.server.clone()),
            },
            proxy_credentials: spec.proxy.as_ref().filter(|p| !p.is_self()).and_then(|p| {
                match (&p.username, &p.password) {
                    (None, None) => None,
                    (u, pw) => Some((u.clone().unwrap_or_default(), pw.clone().unwrap_or_default())),
                }
            }),
            blocker: if spec.use_adblock {
                self.blocker.clone()
            } else {
                None
            },
        };
        setup::prepare(ctx, pool, &self.blobs, opts).await
    }

    /// A task: the agent's loop in a fresh browser. The first model request goes out while the
    /// browser is being prepared when the task starts on a blank tab.
    async fn run_agent_task(&self, ctx: &mut TaskContext, agent: &Agent) -> Outcome {
        let job = glue::job_for_task(ctx).await;
        let mut run = agent.start(job);
        let stop = ctx.stop_token().clone();
        let (prepared, ()) = tokio::join!(self.open_browser(ctx, None), run.prefetch(&stop));
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => return failed(e),
        };
        run.set_files(glue::placed_files(&prepared));
        let finish = {
            let mut host = TaskHost {
                exec: self,
                ctx,
                browser: &prepared,
            };
            // A browser that dies while the model thinks ends the task now, not at its next
            // action.
            tokio::select! {
                f = run.run(&mut host, &prepared.session, &stop) => Some(f),
                () = prepared.session.browser_gone() => None,
            }
        };
        let Some(finish) = finish else {
            tracing::warn!(task.id = %ctx.id(), "the browser crashed under an agent task");
            prepared.finish(ctx, &self.blobs).await;
            return failed(BROWSER_CRASHED);
        };
        tracing::info!(
            task.id = %ctx.id(), steps = finish.steps, prompt_tokens = finish.usage.prompt,
            completion_tokens = finish.usage.completion, model_retries = finish.model_retries,
            "agent finished"
        );
        smoothd_metrics::record_task_end(finish.steps);
        prepared.finish(ctx, &self.blobs).await;
        glue::outcome(finish)
    }

    /// A session's `run_task`: the same loop on the session's browser; answers
    /// `{"output", "credits_used", "duration"}`, or 400 with why the agent failed.
    async fn session_run_task(
        &self,
        ctx: &mut TaskContext,
        browser: Option<&Prepared>,
        event: &Event,
        credits: &mut i64,
    ) -> Reply {
        let started = Instant::now();
        let Some(agent) = self.agent.as_ref().map(|a| a.for_task(&ctx.spec.agent)) else {
            return Reply::internal(NO_MODEL);
        };
        let Some(prepared) = browser else {
            return Reply::internal("no browser available for run_task");
        };
        let input = event.payload.get("input").cloned().unwrap_or(Value::Null);
        // Numbering continues the session's steps; guessing 0 on a database error would write
        // step numbers that collide with the ones already stored.
        let first = match ctx.store().step_count(ctx.id()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "run_task: the session's step count could not be read");
                return Reply::internal("run_task: the database could not be read; try again");
            }
        };
        let mut job = match glue::job_for_run_task(&ctx.spec, &input, u32::try_from(first).unwrap_or(0)) {
            Ok(j) => j,
            Err(why) => return Reply::user(why),
        };
        job.files = glue::placed_files(prepared);
        let stop = ctx.stop_token().clone();
        let finish = {
            let mut host = TaskHost {
                exec: self,
                ctx,
                browser: prepared,
            };
            agent.start(job).run(&mut host, &prepared.session, &stop).await
        };
        *credits += finish.credits;
        let duration = started.elapsed().as_secs_f64();
        match finish.end {
            smoothd_agent::End::Done(output) => Reply::ok(json!({
                "output": output, "credits_used": finish.credits, "duration": duration,
            })),
            smoothd_agent::End::Failed { error, .. } => Reply::user(error),
            smoothd_agent::End::Stopped => Reply::internal("the session was stopped"),
        }
    }

    async fn run_session(&self, ctx: &mut TaskContext) -> Outcome {
        let tunnel = match SessionTunnel::open(ctx, self.tunnel_wait).await {
            Ok(t) => t,
            Err(e) => return failed(e),
        };
        let prepared = match self.open_browser(ctx, tunnel.as_ref()).await {
            Ok(b) => Some(b),
            Err(e) if self.browsers.is_err() => {
                // No browser on this machine: keep the session so close/cancel behave, and
                // answer browser actions with the reason.
                tracing::warn!(error = %e, "session without a browser");
                None
            }
            Err(e) => return failed(e),
        };
        let outcome = self.session_loop(ctx, prepared.as_ref(), tunnel.as_ref()).await;
        drop(tunnel);
        if let Some(p) = prepared {
            p.finish(ctx, &self.blobs).await;
        }
        outcome
    }

    async fn session_loop(
        &self,
        ctx: &mut TaskContext,
        browser: Option<&Prepared>,
        tunnel: Option<&SessionTunnel>,
    ) -> Outcome {
        if let (Some(b), Some(url)) = (browser, ctx.spec.url.clone()) {
            if ctx.mark_effects().await.is_err() {
                return Outcome::Stopped;
            }
            if let Some(Err(e)) = match tunnel {
                Some(t) => Some(t.ready().await),
                None => None,
            } {
                return failed(format!("could not open the start URL: {e}"));
            }
            if let Err(e) = b.session.goto(&url).await {
                return failed(format!("could not open the start URL: {e}"));
            }
        }
        let mut credits = 0;
        // Set once the browser is gone: the session then waits only CRASH_GRACE for a command
        // already on its way (answered 500, "the browser crashed", which the client reads
        // better than a call cancelled by the final state), then fails.
        let mut dead = false;
        loop {
            // An idle session whose browser dies ends within moments (the pool notices the
            // crash at once; the session must too, not at its next command or idle timeout).
            let next = match browser {
                Some(b) if !dead => tokio::select! {
                    e = ctx.next_client_event(self.session_idle) => Some(e),
                    () = b.session.browser_gone() => None,
                },
                _ if dead => Some(ctx.next_client_event(CRASH_GRACE).await),
                _ => Some(ctx.next_client_event(self.session_idle).await),
            };
            let Some(next) = next else {
                tracing::warn!(task.id = %ctx.id(), "the browser crashed under an idle session");
                dead = true;
                continue;
            };
            let Some(event) = next else {
                if ctx.stop_reason().is_some() {
                    return Outcome::Stopped;
                }
                if dead {
                    return failed(BROWSER_CRASHED);
                }
                return failed(format!(
                    "session closed after {} s without a command (idle timeout)",
                    self.session_idle.as_secs()
                ));
            };
            let started = Instant::now();
            let action = action_name(&event);
            if event.name == "session_action" && action == "close" {
                let duration = started.elapsed().as_secs_f64();
                let Ok(sent) = ctx
                    .reply(
                        &event,
                        200,
                        json!({"output": true, "credits_used": 0, "duration": duration}),
                    )
                    .await
                else {
                    return Outcome::Stopped;
                };
                ctx.wait_acked(sent.timestamp, self.close_grace).await;
                if ctx.stop_reason() == Some(StopReason::LeaseLost) {
                    return Outcome::Stopped;
                }
                if browser.is_some_and(|b| !b.session.browser_alive()) {
                    return failed(BROWSER_CRASHED);
                }
                return Outcome::Done {
                    output: Value::Null,
                    credits_used: credits,
                };
            }
            // Answers to tool calls go to whoever made the call; a session makes none yet.
            if event.name == "tool_call" {
                continue;
            }
            let tunnel_down = match tunnel {
                Some(t) if event.name != "tool_call" => t.ready().await.err(),
                _ => None,
            };
            let reply = if let Some(why) = tunnel_down {
                Reply::user(why)
            } else if event.name == "session_action" && action == "run_task" {
                self.session_run_task(ctx, browser, &event, &mut credits).await
            } else {
                self.handle(ctx, browser, &event, &action, started).await
            };
            let crashed = browser.is_some_and(|b| !b.session.browser_alive());
            let Ok(sent) = ctx.reply(&event, reply.code, reply.output.clone()).await else {
                return Outcome::Stopped;
            };
            if crashed {
                // As with close: the SDK never reads the events of the first final response,
                // so the 500 answer must be read while the session still reads running.
                ctx.wait_acked(sent.timestamp, self.close_grace).await;
                return failed(BROWSER_CRASHED);
            }
        }
    }

    pub(crate) async fn handle(
        &self,
        ctx: &TaskContext,
        browser: Option<&Prepared>,
        event: &Event,
        action: &str,
        started: Instant,
    ) -> Reply {
        let input = event.payload.get("input").cloned().unwrap_or(Value::Null);
        let needs_browser = matches!(action, "goto" | "evaluate_js" | "exec_js" | "upload_file");
        match (event.name.as_str(), action) {
            ("browser_action", _) if needs_browser => {
                let Some(prepared) = browser else {
                    return Reply::internal(match &self.browsers {
                        Err(why) => format!("no browser available: {why}"),
                        Ok(_) => "no browser available".to_string(),
                    });
                };
                let b = &prepared.session;
                if ctx.mark_effects().await.is_err() {
                    return Reply::internal("this worker lost the task");
                }
                let result = match action {
                    // smoothd's own session action (the agent's upload_file uses the same path):
                    // attach one of the task's `files` (by id or original name) to a file input.
                    "upload_file" => {
                        let (Some(selector), Some(file)) = (
                            input.get("selector").and_then(Value::as_str),
                            input.get("file").and_then(Value::as_str),
                        ) else {
                            return Reply::user("upload_file: input.selector and input.file are required");
                        };
                        let Some(placed) = prepared.files.iter().find(|f| f.id == file || f.name == file)
                        else {
                            let known: Vec<&str> = prepared.files.iter().map(|f| f.name.as_str()).collect();
                            return Reply::user(format!(
                                "upload_file: {file:?} is not one of this task's files {known:?}"
                            ));
                        };
                        b.set_input_files(selector, std::slice::from_ref(&placed.path))
                            .await
                            .map(|()| None)
                    }
                    "goto" => match input.get("url").and_then(Value::as_str) {
                        Some(url) => b.goto(url).await.map(|()| None),
                        None => return Reply::user("goto: input.url is required"),
                    },
                    _ => match input.get("js").and_then(Value::as_str) {
                        Some(js) => b
                            .evaluate(js, input.get("args").filter(|a| !a.is_null()))
                            .await
                            .map(Some),
                        None => return Reply::user(format!("{action}: input.js is required")),
                    },
                };
                let duration = started.elapsed().as_secs_f64();
                match result {
                    Ok(None) => Reply::ok(json!({"credits_used": 0, "duration": duration})),
                    Ok(Some(v)) => Reply::ok(json!({"output": v, "credits_used": 0, "duration": duration})),
                    Err(e) if e.is_user_error() => Reply::user(e.to_string()),
                    Err(e @ BrowserError::Crashed(_)) => Reply::internal(e.to_string()),
                    Err(e) => Reply::internal(e.to_string()),
                }
            }
            ("browser_action", "extract") => {
                let Some(agent) = self.agent.as_ref().map(|a| a.for_task(&ctx.spec.agent)) else {
                    return Reply::internal(NO_MODEL);
                };
                let Some(prepared) = browser else {
                    return Reply::internal("no browser available for extract");
                };
                let schema = input.get("schema").filter(|s| !s.is_null());
                if let Some(s) = schema
                    && let Err(e) = jsonschema::validator_for(s)
                {
                    return Reply::user(format!("extract: input.schema is not a valid JSON schema: {e}"));
                }
                let prompt = input.get("prompt").and_then(Value::as_str).unwrap_or("");
                match agent
                    .extract(&prepared.session, schema, prompt, ctx.stop_token())
                    .await
                {
                    Ok((output, usage)) => {
                        let credits = smoothd_agent::llm::credits(usage, agent.llm.price());
                        Reply::ok(json!({
                            "output": output, "credits_used": credits,
                            "duration": started.elapsed().as_secs_f64(),
                        }))
                    }
                    Err(e) => Reply::user(format!("extract failed: {e}")),
                }
            }
            ("session_action", "run_task") => Reply::user("run_task is only available in a session"),
            ("browser_action" | "session_action", other) => {
                Reply::user(format!("unknown {} {other:?}", event.name))
            }
            (other, _) => Reply::user(format!("unknown event name {other:?}")),
        }
    }
}
