//! Client commands on a running task's browser (`browser_action` events: `goto`,
//! `evaluate_js`, `exec_js`, `upload_file`, `extract`), each answered with a [`Reply`]. A
//! session's own commands (`close`, `run_task`) are the session loop's, in `session.rs`.

use std::time::Instant;

use serde_json::{Value, json};
use smoothd_browser::BrowserError;
use smoothd_core::event::Event;

use crate::context::TaskContext;
use crate::services::Services;
use crate::setup::Prepared;

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
    pub(crate) fn ok(output: Value) -> Self {
        Self { code: 200, output }
    }
    pub(crate) fn user(msg: impl Into<String>) -> Self {
        Self {
            code: 400,
            output: Value::String(msg.into()),
        }
    }
    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        Self {
            code: 500,
            output: Value::String(msg.into()),
        }
    }
}

/// Answers one client command (not `close` or `run_task`, which the session loop owns).
pub(crate) async fn handle(
    services: &Services,
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
                return Reply::internal(match &services.browsers {
                    Err(why) => format!("no browser available: {why}"),
                    Ok(_) => "no browser available".to_string(),
                });
            };
            if ctx.mark_effects().await.is_err() {
                return Reply::internal("this worker lost the task");
            }
            browser_command(prepared, action, &input, started).await
        }
        ("browser_action", "extract") => extract(services, ctx, browser, &input, started).await,
        ("session_action", "run_task") => Reply::user("run_task is only available in a session"),
        ("browser_action" | "session_action", other) => {
            Reply::user(format!("unknown {} {other:?}", event.name))
        }
        (other, _) => Reply::user(format!("unknown event name {other:?}")),
    }
}

/// `goto`, `evaluate_js`/`exec_js` and `upload_file` on the task's page.
async fn browser_command(prepared: &Prepared, action: &str, input: &Value, started: Instant) -> Reply {
    let b = &prepared.session;
    let result = match action {
        // smoothd's own session action (the agent's upload_file uses the same path): attach
        // one of the task's `files` (by id or original name) to a file input.
        "upload_file" => {
            let (Some(selector), Some(file)) = (
                input.get("selector").and_then(Value::as_str),
                input.get("file").and_then(Value::as_str),
            ) else {
                return Reply::user("upload_file: input.selector and input.file are required");
            };
            let Some(placed) = prepared.files.iter().find(|f| f.id == file || f.name == file) else {
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

/// `extract`: the model reads the page and answers in the given schema.
async fn extract(
    services: &Services,
    ctx: &TaskContext,
    browser: Option<&Prepared>,
    input: &Value,
    started: Instant,
) -> Reply {
    let agent = match services.agent_for(ctx) {
        Ok(a) => a,
        Err(why) => return Reply::internal(why),
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
    let cap = match ctx.max_cost_usd().await {
        Ok(cap) => cap,
        Err(why) => return Reply::internal(why),
    };
    match agent
        .extract(&prepared.session, schema, prompt, cap, ctx.stop_token())
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
