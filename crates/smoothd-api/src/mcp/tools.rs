//! The MCP tools. Each goes through the code the REST API runs: `run_task` and `open_session`
//! validate and submit like `POST /v1/task` (an MCP session is an ordinary session: listed,
//! with a live view, ended by close or idle); session commands are client events answered
//! like the SDK's (`POST /v1/task/{id}/event`, then the answer event with the same id); the
//! reads are `GET /v1/task` and `GET /v1/task/{id}`. Cancelling a `run_task` call cancels
//! the task.

use std::time::Duration;

use rmcp::RoleServer;
use rmcp::model::{CallToolResult, ContentBlock, ProgressNotificationParam, Tool};
use rmcp::service::RequestContext;
use serde_json::{Map, Value, json};
use smoothd_core::event::Direction;
use smoothd_core::ids;

use super::component_schema;
use crate::AppState;
use crate::auth::Owner;
use crate::error::ApiError;
use crate::models::{TaskEvent, TaskRequest, TaskResponse};
use crate::routes::task::{append_client_event, submit, validate_request};

/// What a tool answers: a JSON result, or an error text for the model.
type ToolResult = Result<Value, String>;

/// Fields of `POST /v1/task` a session's `run_task` takes.
const SESSION_TASK_FIELDS: &[&str] = &["task", "max_steps", "response_model", "url", "metadata"];

fn object(properties: Map<String, Value>, required: &[&str]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), json!("object"));
    m.insert("properties".into(), Value::Object(properties));
    m.insert("required".into(), json!(required));
    m
}

fn session_id_prop() -> (String, Value) {
    (
        "session_id".into(),
        json!({"type": "string", "description": "The id open_session returned"}),
    )
}

/// Every tool, with input schemas cut from the `TaskRequest` OpenAPI schema.
///
/// Long because it is a table: one entry per tool, read side by side with [`call`].
pub(super) fn definitions() -> Vec<Tool> {
    let request = component_schema("TaskRequest");
    let props = request
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let pick = |names: &[&str]| -> Map<String, Value> {
        props
            .iter()
            .filter(|(k, _)| names.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut run = request.clone();
    run.insert("required".into(), json!(["task"]));
    let mut open = request.clone();
    if let Some(Value::Object(p)) = open.get_mut("properties") {
        p.remove("task");
    }
    let mut goto = Map::from_iter([session_id_prop()]);
    goto.insert(
        "url".into(),
        json!({"type": "string", "description": "The page to open"}),
    );
    let mut js = Map::from_iter([session_id_prop()]);
    js.insert(
        "js".into(),
        json!({"type": "string", "description": "An expression, a function `(args) => ...`, or a body with `return`"}),
    );
    js.insert(
        "args".into(),
        json!({"type": "object", "description": "Passed to a function"}),
    );
    let mut extract = Map::from_iter([session_id_prop()]);
    extract.insert(
        "schema".into(),
        json!({"type": "object", "description": "JSON schema of the data"}),
    );
    extract.insert(
        "prompt".into(),
        json!({"type": "string", "description": "What to extract"}),
    );
    let mut session_task = pick(SESSION_TASK_FIELDS);
    session_task.extend([session_id_prop()]);
    let list = Map::from_iter([
        (
            "limit".to_string(),
            json!({"type": "integer", "minimum": 1, "maximum": 128, "description": "Page size, default 32"}),
        ),
        (
            "before_ms".to_string(),
            json!({"type": "integer", "description": "Only tasks created before this time (epoch ms)"}),
        ),
    ]);
    let get = Map::from_iter([(
        "id".to_string(),
        json!({"type": "string", "description": "Task or session id"}),
    )]);
    vec![
        Tool::new(
            "run_task",
            "Run a browser agent task to its end (the fields of POST /v1/task). Sends a progress notification per \
             step; returns the status, output, and the live view, recording and downloads links.",
            run,
        ),
        Tool::new(
            "open_session",
            "Open an interactive browser session (the options of POST /v1/task). Returns session_id and live_url.",
            open,
        ),
        Tool::new(
            "goto",
            "Open a URL in a session.",
            object(goto, &["session_id", "url"]),
        ),
        Tool::new(
            "evaluate_js",
            "Run JavaScript in a session's page; returns its JSON result.",
            object(js, &["session_id", "js"]),
        ),
        Tool::new(
            "extract",
            "Extract data from a session's page, matching a JSON schema.",
            object(extract, &["session_id"]),
        ),
        Tool::new(
            "run_session_task",
            "Let the agent do a task in a session's browser, where it is now.",
            object(session_task, &["session_id", "task"]),
        ),
        Tool::new(
            "close_session",
            "Close a session.",
            object(Map::from_iter([session_id_prop()]), &["session_id"]),
        ),
        Tool::new(
            "list_tasks",
            "The caller's tasks and sessions, newest first.",
            object(list, &[]),
        ),
        Tool::new(
            "get_task",
            "A task or session as GET /v1/task/{id} returns it.",
            object(get, &["id"]),
        ),
    ]
}

/// A tool's result as MCP content: the JSON as text, and as structured content.
pub(super) fn into_result(r: ToolResult) -> CallToolResult {
    match r {
        Ok(v) => {
            let mut res = CallToolResult::success(vec![ContentBlock::text(v.to_string())]);
            res.structured_content = Some(v);
            res
        }
        Err(e) => {
            let mut res = CallToolResult::success(vec![ContentBlock::text(e)]);
            res.is_error = Some(true);
            res
        }
    }
}

fn api_err(e: ApiError) -> String {
    format!("{} {}", e.status.as_u16(), e.detail)
}

fn str_arg<'a>(args: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match args.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(format!("{name}: required string")),
    }
}

/// Runs one tool call for `owner`.
///
/// Long because it is a table: one arm per tool, each a few lines over the task API.
pub(super) async fn call(
    state: &AppState,
    owner: &Owner,
    name: &str,
    args: Map<String, Value>,
    ctx: &RequestContext<RoleServer>,
) -> ToolResult {
    match name {
        "run_task" => run_task(state, owner, args, ctx).await,
        "open_session" => {
            let mut body = args;
            body.insert("task".into(), Value::Null);
            let request = TaskRequest::from_value(&Value::Object(body)).map_err(api_err)?;
            let spec = validate_request(state, owner, &request).await.map_err(api_err)?;
            let row = submit(state, owner, spec).await.map_err(api_err)?;
            Ok(json!({"session_id": row.id, "live_url": state.links.live_url(&row)}))
        }
        "goto" => {
            let payload = json!({"name": "goto", "input": {"url": str_arg(&args, "url")?}});
            session_call(state, owner, &args, "browser_action", payload, ctx).await
        }
        "evaluate_js" => {
            let input =
                json!({"js": str_arg(&args, "js")?, "args": args.get("args").cloned().unwrap_or(json!({}))});
            session_call(
                state,
                owner,
                &args,
                "browser_action",
                json!({"name": "evaluate_js", "input": input}),
                ctx,
            )
            .await
        }
        "extract" => {
            let input = json!({
                "schema": args.get("schema").cloned().unwrap_or(Value::Null),
                "prompt": args.get("prompt").cloned().unwrap_or(Value::Null),
            });
            session_call(
                state,
                owner,
                &args,
                "browser_action",
                json!({"name": "extract", "input": input}),
                ctx,
            )
            .await
        }
        "run_session_task" => {
            let input: Map<String, Value> = args
                .iter()
                .filter(|(k, _)| SESSION_TASK_FIELDS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            str_arg(&args, "task")?;
            session_call(
                state,
                owner,
                &args,
                "session_action",
                json!({"name": "run_task", "input": input}),
                ctx,
            )
            .await
        }
        "close_session" => {
            let id = str_arg(&args, "session_id")?;
            let r = state
                .store
                .request_cancel(&owner.id, id)
                .await
                .map_err(|e| api_err(e.into()))?;
            match r {
                smoothd_store::CancelOutcome::NotFound => Err(format!("404 session {id:?} not found")),
                smoothd_store::CancelOutcome::AlreadyFinal(s) => {
                    Ok(json!({"closed": false, "status": s.as_str()}))
                }
                _ => Ok(json!({"closed": true})),
            }
        }
        "list_tasks" => {
            let limit = args.get("limit").and_then(Value::as_i64).unwrap_or(32);
            if !(1..=128).contains(&limit) {
                return Err(format!("limit: must be between 1 and 128, got {limit}"));
            }
            let before = args.get("before_ms").and_then(Value::as_i64).unwrap_or(i64::MAX);
            let rows = state
                .store
                .list_tasks(&owner.id, before, limit)
                .await
                .map_err(|e| api_err(e.into()))?;
            let items: Vec<TaskResponse> = rows
                .iter()
                .map(|t| TaskResponse::from_row(t, None, false, &state.links))
                .collect();
            Ok(json!({"tasks": items}))
        }
        "get_task" => {
            let id = str_arg(&args, "id")?;
            let t = state
                .store
                .get_task(&owner.id, id)
                .await
                .map_err(|e| api_err(e.into()))?;
            let t = t.ok_or_else(|| format!("404 task {id:?} not found"))?;
            Ok(
                serde_json::to_value(TaskResponse::from_row(&t, None, true, &state.links))
                    .unwrap_or(Value::Null),
            )
        }
        other => Err(format!("unknown tool {other:?}")),
    }
}

/// Submits a task and waits for its end, notifying progress per step; a cancelled call
/// cancels the task.
async fn run_task(
    state: &AppState,
    owner: &Owner,
    args: Map<String, Value>,
    ctx: &RequestContext<RoleServer>,
) -> ToolResult {
    let request = TaskRequest::from_value(&Value::Object(args)).map_err(api_err)?;
    let spec = validate_request(state, owner, &request).await.map_err(api_err)?;
    if spec.is_session() {
        return Err("task: required string (use open_session for a session)".into());
    }
    let row = submit(state, owner, spec).await.map_err(api_err)?;
    // However the call ends early (a cancel notification, or the client dropping the
    // request, which drops this future), the task is cancelled.
    let mut guard = CancelOnDrop {
        store: state.store.clone(),
        owner: owner.id.clone(),
        task: Some(row.id.clone()),
    };
    let live_url = state.links.live_url(&row);
    let token = ctx.meta.get_progress_token();
    let store = &state.store;
    let mut steps_seen = 0usize;
    let mut watch = store.signals().watch_task(&row.id);
    loop {
        let task = store
            .get_task(&owner.id, &row.id)
            .await
            .map_err(|e| api_err(e.into()))?;
        let task = task.ok_or_else(|| "task vanished".to_string())?;
        if let Some(token) = &token {
            let steps = store.steps(&row.id).await.map_err(|e| api_err(e.into()))?;
            for step in steps.iter().skip(steps_seen) {
                let n = steps_seen + 1;
                let what = step
                    .get("reasoning")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .chars()
                    .take(300)
                    .collect::<String>();
                let url = step.get("url").and_then(Value::as_str).unwrap_or("");
                let msg = format!("step {n} at {url}: {what}");
                let note = ProgressNotificationParam::new(token.clone(), n as f64).with_message(msg);
                if let Err(e) = ctx.peer.notify_progress(note).await {
                    tracing::debug!(error = %e, "MCP progress notification not sent");
                }
                steps_seen = n;
            }
        }
        if task.status().is_final() {
            guard.task = None;
            let resp = TaskResponse::from_row(&task, None, true, &state.links);
            return Ok(json!({
                "id": resp.id, "status": resp.status, "output": resp.output, "error": resp.error,
                "credits_used": resp.credits_used, "live_url": live_url,
                "recording_url": resp.recording_url, "downloads_url": resp.downloads_url,
            }));
        }
        tokio::select! {
            _ = ctx.ct.cancelled() => return Err("cancelled".into()),
            _ = state.shutdown.cancelled() => {
                guard.task = None;
                return Err("server shutting down; get_task reads the result later".into());
            }
            _ = watch.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Cancels a task when dropped while armed (`task` set).
struct CancelOnDrop {
    store: smoothd_store::Store,
    owner: String,
    task: Option<String>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        let (store, owner) = (self.store.clone(), self.owner.clone());
        tokio::spawn(async move {
            match store.request_cancel(&owner, &task).await {
                Ok(outcome) => {
                    tracing::info!(task.id = %task, ?outcome, "MCP call ended early: task cancelled")
                }
                Err(e) => {
                    tracing::warn!(task.id = %task, error = %e, "MCP call ended early; cancelling its task failed")
                }
            }
        });
    }
}

/// Posts a client event to a session and waits for its answer, as the SDK does over REST.
async fn session_call(
    state: &AppState,
    owner: &Owner,
    args: &Map<String, Value>,
    name: &str,
    payload: Value,
    ctx: &RequestContext<RoleServer>,
) -> ToolResult {
    let sid = str_arg(args, "session_id")?;
    let event_id = ids::event_id();
    append_client_event(state, owner, sid, &event_id, name, &payload)
        .await
        .map_err(api_err)?;
    let store = &state.store;
    let mut watch = store.signals().watch_task(sid);
    let mut after = 0;
    loop {
        let events = store
            .events_after(sid, Direction::Out, after, 500)
            .await
            .map_err(|e| api_err(e.into()))?;
        if let Some(last) = events.last() {
            after = last.timestamp;
        }
        if let Some(answer) = events.into_iter().find(|e| e.id == event_id && e.name == name) {
            let ack = store.ack_events(sid, answer.timestamp).await;
            if let Err(e) = ack {
                tracing::debug!(error = %e, "could not acknowledge a session answer");
            }
            let ev = TaskEvent::from(answer);
            let code = ev.payload.get("code").and_then(Value::as_i64).unwrap_or(500);
            let output = ev.payload.get("output").cloned().unwrap_or(Value::Null);
            return match (code, output) {
                // The SDK's answer: `{"output", "credits_used", "duration"}` (or null for goto).
                (200, v @ Value::Object(_)) => Ok(v),
                (200, v) => Ok(json!({"output": v})),
                (code, v) => Err(format!("{code} {v}")),
            };
        }
        let task = store
            .get_task(&owner.id, sid)
            .await
            .map_err(|e| api_err(e.into()))?;
        if task.is_none_or(|t| t.status().is_final()) {
            return Err(format!("session {sid:?} has ended"));
        }
        tokio::select! {
            _ = ctx.ct.cancelled() => return Err("cancelled".into()),
            _ = state.shutdown.cancelled() => return Err("server shutting down".into()),
            _ = watch.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
