//! The executor seam, and the executor this build ships: it runs interactive sessions' event
//! loops (answering browser actions with an honest "no browser runtime" until the browser
//! crate plugs in) and fails agent tasks at once with the reason (no model configured).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::context::{StopReason, TaskContext};

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

/// Sessions without a browser, tasks without a model.
#[derive(Debug, Clone)]
pub struct BasicExecutor {
    /// Whether an LLM endpoint is configured (changes only the error message for now).
    pub model_configured: bool,
    /// An idle session ends after this long without a command.
    pub session_idle: Duration,
    /// How long a closing session waits for the client to read the close answer.
    pub close_grace: Duration,
}

/// The answer given to browser actions until the browser runtime is plugged in.
pub const NO_BROWSER: &str = "browser runtime not available in this build";

#[async_trait]
impl Executor for BasicExecutor {
    async fn run(&self, ctx: &mut TaskContext) -> Outcome {
        if ctx.spec.is_session() {
            return self.run_session(ctx).await;
        }
        let error = if self.model_configured {
            "the agent is not available in this build of smoothd; only sessions can run".to_string()
        } else {
            "no model configured: set SMOOTHD_LLM_BASE_URL and SMOOTHD_LLM_MODEL (and SMOOTHD_LLM_API_KEY if the \
             endpoint needs one) to run tasks"
                .to_string()
        };
        Outcome::Failed {
            error,
            output: None,
            credits_used: 0,
        }
    }
}

impl BasicExecutor {
    async fn run_session(&self, ctx: &mut TaskContext) -> Outcome {
        loop {
            let Some(event) = ctx.next_client_event(self.session_idle).await else {
                if ctx.stop_reason().is_some() {
                    return Outcome::Stopped;
                }
                return Outcome::Failed {
                    error: format!(
                        "session closed after {} s without a command (idle timeout)",
                        self.session_idle.as_secs()
                    ),
                    output: None,
                    credits_used: 0,
                };
            };
            let started = Instant::now();
            let action = event
                .payload
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let reply = match (event.name.as_str(), action.as_str()) {
                ("session_action", "close") => {
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
                    return Outcome::Done {
                        output: Value::Null,
                        credits_used: 0,
                    };
                }
                ("browser_action", "goto" | "evaluate_js" | "exec_js" | "extract") => {
                    ctx.reply(&event, 500, json!(NO_BROWSER)).await
                }
                ("session_action", "run_task") => {
                    ctx.reply(
                        &event,
                        500,
                        json!("the agent is not available in this build of smoothd"),
                    )
                    .await
                }
                ("browser_action" | "session_action", other) => {
                    ctx.reply(&event, 400, json!(format!("unknown {} {other:?}", event.name)))
                        .await
                }
                // Answers to tool calls are read by whoever made the call; a session without an
                // agent makes none, so there is nothing to route them to.
                ("tool_call", _) => continue,
                (other, _) => {
                    ctx.reply(&event, 400, json!(format!("unknown event name {other:?}")))
                        .await
                }
            };
            if reply.is_err() {
                return Outcome::Stopped;
            }
        }
    }
}
