//! Tasks and sessions: submit, list, read with events (long-poll), cancel, post client
//! events, and erase data.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use smoothd_core::event::Direction;
use smoothd_core::{RunTaskInput, TaskSpec, ValidationError, ids};
use smoothd_store::{CancelOutcome, EventFence, NewTask, TaskRow};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Owner, Unmetered};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::models::{
    EVENT_PAGE, Envelope, ErrorBody, EventRequest, IdResponse, ListQuery, TaskEvent, TaskQuery, TaskRequest,
    TaskResponse, ToolResponseRequest,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_task, list_tasks))
        .routes(routes!(get_task, cancel_task, update_task))
        .routes(routes!(post_event))
        .routes(routes!(erase_task_data))
        .routes(routes!(task_steps))
}

/// Validates a request body and its references to the owner's files, extensions and profile.
#[tracing::instrument(skip_all)]
pub(crate) async fn validate_request(
    state: &AppState,
    owner: &Owner,
    body: &TaskRequest,
) -> ApiResult<TaskSpec> {
    let spec = TaskSpec::from_json(&body.to_value())?;
    for (i, id) in spec.files.iter().enumerate() {
        if state.store.get_file(&owner.id, id).await?.is_none() {
            return Err(
                ValidationError::unknown(format!("files[{i}]"), format!("unknown file id {id:?}")).into(),
            );
        }
    }
    for (i, id) in spec.extensions.iter().enumerate() {
        if state.store.get_extension(&owner.id, id).await?.is_none() {
            return Err(ValidationError::unknown(
                format!("extensions[{i}]"),
                format!("unknown extension id {id:?}"),
            )
            .into());
        }
    }
    if let Some(p) = &spec.profile_id
        && state.store.get_profile(&owner.id, p).await?.is_none()
    {
        return Err(ValidationError::unknown(
            "profile_id",
            format!("unknown profile {p:?}; create it first with POST /v1/profile"),
        )
        .into());
    }
    Ok(spec)
}

/// Stores a validated request as a waiting task.
#[tracing::instrument(skip_all, fields(task.id = tracing::field::Empty))]
pub(crate) async fn submit(state: &AppState, owner: &Owner, spec: TaskSpec) -> ApiResult<TaskRow> {
    let new = NewTask {
        id: ids::task_id(),
        owner: owner.id.clone(),
        spec,
        max_attempts: state.config.max_attempts,
        live_token: ids::random_token(32),
    };
    tracing::Span::current().record("task.id", new.id.as_str());
    // The delivery is stored first, so it exists whenever the task does (a delivery whose
    // task never appears is never due).
    let webhook = match crate::webhooks::target(state, owner, &new.spec).await? {
        Some((url, steps)) => {
            let id = format!("msg_{}", ids::random_token(24));
            state
                .store
                .insert_delivery(&id, &new.id, &owner.id, &url, steps)
                .await?;
            Some(id)
        }
        None => None,
    };
    let max = state.config.max_running_per_key;
    let inserted = if max > 0 {
        state
            .store
            .insert_task_within(&new, max)
            .await
            .map_err(ApiError::from)
            .and_then(|r| r.ok_or_else(|| over_concurrency_limit(max)))
    } else {
        state.store.insert_task(&new).await.map_err(ApiError::from)
    };
    let row = match (inserted, webhook) {
        (Ok(row), _) => row,
        (Err(e), Some(id)) => {
            state.store.delete_delivery(&id).await?;
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    tracing::info!(task.id = %row.id, kind = %row.kind, owner = %owner.name, "task accepted");
    Ok(row)
}

/// How long a key at its concurrency limit is told to wait: a slot frees when one of its
/// tasks ends, which no one can predict; a few seconds keeps retries cheap.
const CONCURRENCY_RETRY_AFTER_SECS: u64 = 5;

/// The 429 of a submit beyond `max_running_per_key`.
fn over_concurrency_limit(max: i64) -> ApiError {
    ApiError::too_many_requests(
        format!(
            "max_running_per_key: this API key already has {max} tasks and sessions waiting or running; \
             wait for one to end (or close a session) and retry"
        ),
        CONCURRENCY_RETRY_AFTER_SECS,
    )
}

/// Refuses early, before a request has side effects of its own, when the key is already at its
/// concurrency limit. Advisory only: [`submit`] counts again, atomically.
#[tracing::instrument(skip_all)]
pub(crate) async fn check_capacity(state: &AppState, owner: &Owner) -> ApiResult<()> {
    let max = state.config.max_running_per_key;
    if max > 0 && state.store.active_tasks(&owner.id).await? >= max {
        return Err(over_concurrency_limit(max));
    }
    Ok(())
}

/// Submit a task, or open a session with `task: null`.
#[utoipa::path(post, path = "/task", tag = "task", request_body = TaskRequest,
    responses(
        (status = 200, description = "Accepted; the task is waiting", body = Envelope<TaskResponse>),
        ApiJson<TaskRequest>, Owner,
        (status = 400, description = "Malformed JSON, or an unknown file, extension or profile id", body = ErrorBody),
        (status = 429, description = "Rate limit or per-key concurrency limit (`max_running_per_key`) reached; see `Retry-After`",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
#[tracing::instrument(skip_all)]
async fn create_task(
    State(state): State<AppState>,
    owner: Owner,
    ApiJson(body): ApiJson<TaskRequest>,
) -> ApiResult<Json<Envelope<TaskResponse>>> {
    let spec = validate_request(&state, &owner, &body).await?;
    let row = submit(&state, &owner, spec).await?;
    Ok(Json(Envelope {
        r: TaskResponse::from_row(&row, Some(Vec::new()), false, &state.links),
    }))
}

/// The caller's tasks, newest first.
#[utoipa::path(get, path = "/task", tag = "task",
    params(ListQuery),
    responses(
        (status = 200, body = Envelope<Vec<TaskResponse>>),
        ApiQuery<ListQuery>, Owner,
    ))]
#[tracing::instrument(skip_all)]
async fn list_tasks(
    State(state): State<AppState>,
    owner: Owner,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Envelope<Vec<TaskResponse>>>> {
    let limit = q.l.unwrap_or(32);
    if !(1..=128).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("l: must be between 1 and 128, got {limit}"),
        ));
    }
    let before = match q.t {
        None => i64::MAX,
        // Seconds look like 1.7e9; milliseconds like 1.7e12.
        Some(t) if t < 100_000_000_000 => t.saturating_mul(1000),
        Some(t) => t,
    };
    let rows = state.store.list_tasks(&owner.id, before, limit).await?;
    let r = rows
        .iter()
        .map(|t| TaskResponse::from_row(t, None, false, &state.links))
        .collect();
    Ok(Json(Envelope { r }))
}

/// A task with the server-to-client events newer than `event_t`. Answers 202 while the task
/// is waiting or running and 200 once final. A poll with `event_t > 0` and nothing new is held
/// until something happens or the long-poll bound passes.
#[utoipa::path(get, path = "/task/{id}", tag = "task",
    params(("id" = String, Path, description = "Task id"), TaskQuery),
    responses(
        (status = 200, description = "Final", body = Envelope<TaskResponse>),
        (status = 202, description = "Waiting or running", body = Envelope<TaskResponse>),
        (status = 404, body = ErrorBody),
        ApiPath<String>, ApiQuery<TaskQuery>, Unmetered,
    ))]
#[tracing::instrument(skip_all, fields(task.id = %id))]
async fn get_task(
    State(state): State<AppState>,
    Unmetered(owner): Unmetered,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TaskQuery>,
) -> ApiResult<Response> {
    let after = q.event_t.unwrap_or(0).max(0);
    let with_downloads = q.downloads.unwrap_or(false);
    let store = &state.store;
    let mut task = store
        .get_task(&owner.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("task", &id))?;
    if after > task.acked_event_t {
        // The client has read everything up to `after`: a closing session may now end.
        store.ack_events(&id, after).await?;
    }
    let mut events = store.events_after(&id, Direction::Out, after, EVENT_PAGE).await?;
    let first_status = task.status();
    if events.is_empty() && after > 0 && !first_status.is_final() && !state.config.long_poll.is_zero() {
        let deadline = tokio::time::Instant::now() + state.config.long_poll;
        let mut watch = store.signals().watch_task(&id);
        loop {
            // Re-read after subscribing so a change in between is not missed.
            task = store
                .get_task(&owner.id, &id)
                .await?
                .ok_or_else(|| ApiError::not_found("task", &id))?;
            events = store.events_after(&id, Direction::Out, after, EVENT_PAGE).await?;
            if !events.is_empty() || task.status() != first_status {
                break;
            }
            tokio::select! {
                _ = watch.changed() => {}
                _ = tokio::time::sleep_until(deadline) => break,
                _ = state.shutdown.cancelled() => break,
                // Signals only cut latency; re-check each second in case one was lost (or the
                // writer is another process sharing a SQLite file, which has no NOTIFY).
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }
    let code = if task.status().is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let events: Vec<TaskEvent> = events.into_iter().map(TaskEvent::from).collect();
    let r = TaskResponse::from_row(&task, Some(events), with_downloads, &state.links);
    Ok((code, Json(Envelope { r })).into_response())
}

/// Cancel a task or close a session. A waiting task is cancelled at once; a running one is
/// signalled and ends `cancelled` within seconds. `r` is false if it had already finished.
#[utoipa::path(delete, path = "/task/{id}", tag = "task",
    params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = Envelope<bool>), (status = 404, body = ErrorBody), ApiPath<String>, Unmetered))]
#[tracing::instrument(skip_all, fields(task.id = %id))]
async fn cancel_task(
    State(state): State<AppState>,
    Unmetered(owner): Unmetered,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Envelope<bool>>> {
    let r = match state.store.request_cancel(&owner.id, &id).await? {
        CancelOutcome::CancelledNow | CancelOutcome::Signalled => true,
        // Closing an already-closed session must not raise in the SDK's context manager.
        CancelOutcome::AlreadyFinal(_) => false,
        CancelOutcome::NotFound => return Err(ApiError::not_found("task", &id)),
    };
    tracing::info!(task.id = %id, cancelled = r, "cancel requested");
    Ok(Json(Envelope { r }))
}

/// Deprecated: answer a tool call with `{"tool_response": {"id", "code", "output"}}`.
#[utoipa::path(put, path = "/task/{id}", tag = "task",
    params(("id" = String, Path, description = "Task id")),
    request_body = ToolResponseRequest,
    responses(
        (status = 200, body = Envelope<bool>),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The task has finished", body = ErrorBody),
        ApiPath<String>, ApiJson<ToolResponseRequest>, Owner,
    ))]
#[tracing::instrument(skip_all, fields(task.id = %id))]
async fn update_task(
    State(state): State<AppState>,
    owner: Owner,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ToolResponseRequest>,
) -> ApiResult<Json<Envelope<bool>>> {
    let resp = body.tool_response;
    let payload = json!({
        "code": resp.code.map_or(200, |c| c.0),
        "output": resp.output.unwrap_or(Value::Null),
    });
    append_client_event(&state, &owner, &id, &resp.id, "tool_call", &payload).await?;
    Ok(Json(Envelope { r: true }))
}

/// Send a client event (`browser_action`, `session_action`, or a `tool_call` answer) to
/// whoever runs the task; its answer arrives as a server event with the same id.
#[utoipa::path(post, path = "/task/{id}/event", tag = "task",
    params(("id" = String, Path, description = "Task id")),
    request_body = EventRequest,
    responses(
        (status = 200, description = "Stored", body = Envelope<IdResponse>),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The task has finished", body = ErrorBody),
        (status = 422, description = "A bad event name or id, or a session_action run_task whose input \
            cannot run (the detail names the field, never a secret's value)", body = ErrorBody),
        ApiPath<String>, ApiJson<EventRequest>, Owner,
    ))]
#[tracing::instrument(skip_all, fields(task.id = %id))]
async fn post_event(
    State(state): State<AppState>,
    owner: Owner,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<EventRequest>,
) -> ApiResult<Json<Envelope<IdResponse>>> {
    let chars = body.name.chars().count();
    if !(1..=64).contains(&chars) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name: required string of 1-64 characters",
        ));
    }
    let event_id = match body.id {
        None => ids::event_id(),
        Some(s) if (1..=128).contains(&s.chars().count()) => s,
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "id: must be a string of 1-128 characters",
            ));
        }
    };
    let payload = Value::Object(body.payload);
    append_client_event(&state, &owner, &id, &event_id, &body.name, &payload).await?;
    Ok(Json(Envelope {
        r: IdResponse { id: event_id },
    }))
}

#[tracing::instrument(skip_all, fields(task.id = %task_id))]
pub(crate) async fn append_client_event(
    state: &AppState,
    owner: &Owner,
    task_id: &str,
    event_id: &str,
    name: &str,
    payload: &Value,
) -> ApiResult<()> {
    let task = state
        .store
        .get_task(&owner.id, task_id)
        .await?
        .ok_or_else(|| ApiError::not_found("task", task_id))?;
    if task.status().is_final() {
        return Err(ApiError::conflict(format!(
            "task is {}; it no longer accepts events",
            task.status()
        )));
    }
    // A run_task's input is checked before it is stored: a malformed secret (a bad otpauth
    // URI) is refused here, and the refused value is never written anywhere.
    if name == "session_action" && payload.get("name").and_then(Value::as_str) == Some("run_task") {
        let input = payload.get("input").unwrap_or(&Value::Null);
        RunTaskInput::from_json(input)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    }
    let stored = state
        .store
        .append_event(task_id, EventFence::Open, Direction::In, event_id, name, payload)
        .await?;
    if stored.is_none() {
        return Err(ApiError::conflict(
            "task has finished; it no longer accepts events",
        ));
    }
    Ok(())
}

/// Erase a finished task's stored data (request, output, events, artifacts), keeping a
/// tombstone with its id, status and times.
#[utoipa::path(delete, path = "/task/{id}/data", tag = "task",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, body = Envelope<bool>),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Still waiting or running", body = ErrorBody),
        ApiPath<String>, Owner,
    ))]
#[tracing::instrument(skip_all, fields(task.id = %id))]
async fn erase_task_data(
    State(state): State<AppState>,
    owner: Owner,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Envelope<bool>>> {
    use smoothd_store::EraseOutcome;
    match state.store.erase_task_data(&owner.id, &id).await? {
        EraseOutcome::NotFound => Err(ApiError::not_found("task", &id)),
        EraseOutcome::NotFinal(s) => Err(ApiError::conflict(format!(
            "task is {s}; cancel it (DELETE /v1/task/{id}) before erasing its data"
        ))),
        EraseOutcome::Erased(keys) => {
            for key in keys {
                if let Err(e) = state.blobs.delete(&key).await {
                    tracing::warn!(task.id = %id, error = %e, key, "could not delete an artifact's bytes");
                }
            }
            tracing::info!(task.id = %id, "task data erased");
            Ok(Json(Envelope { r: true }))
        }
    }
}

/// The agent's step traces: per step what it saw (the page view), said and did, the results, tokens,
/// retries and timings. Growing while the task runs.
#[utoipa::path(get, path = "/task/{id}/steps", tag = "task",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "One object per step, oldest first: step, url, view_chars, view (the page view \
            the model saw, secrets masked, cut at 32,000 characters), model, prompt_tokens, completion_tokens, \
            llm_ms, act_ms, step_ms, retries, first_request_ms, reasoning, cost_usd, actions [{name, args, result}], error, \
            and when known total_cost_usd (the run so far) and guard (what the loop guard said)",
            body = Envelope<Vec<Object>>),
        (status = 404, body = ErrorBody),
        ApiPath<String>, Owner,
    ))]
#[tracing::instrument(skip_all, fields(task.id = %id))]
async fn task_steps(
    State(state): State<AppState>,
    owner: Owner,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Envelope<Vec<Value>>>> {
    if state.store.get_task(&owner.id, &id).await?.is_none() {
        return Err(ApiError::not_found("task", &id));
    }
    let r = state.store.steps(&id).await?;
    Ok(Json(Envelope { r }))
}
