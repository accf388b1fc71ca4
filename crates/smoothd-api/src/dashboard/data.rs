//! The dashboard's own reads, cookie-authenticated and scoped to the signed-in key: the
//! filtered task list (keyset-paged), one task with everything its page shows, the trace
//! export, files, and health from the same numbers as `/metrics`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use smoothd_core::event::Direction;
use smoothd_store::{TaskFilter, TaskRow};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::models::TaskResponse;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard/api/tasks", get(list))
        .route("/dashboard/api/task/{id}", get(task))
        .route("/dashboard/api/task/{id}/trace", get(trace))
        .route("/dashboard/api/files", get(files))
        .route("/dashboard/api/health", get(health))
}

const STATUSES: [&str; 5] = ["waiting", "running", "done", "failed", "cancelled"];

fn unprocessable(detail: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
}

/// Removes anything secret from a stored value: proxy passwords, certificates, and a
/// session `run_task`'s `secrets` (their values, TOTP keys among them).
fn scrub(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| {
                let k = k.to_ascii_lowercase();
                !(k.contains("password") || k.contains("secret") || k == "certificates")
            });
            m.values_mut().for_each(scrub);
        }
        Value::Array(a) => a.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// The request as stored, without anything secret (proxy passwords, certificates).
fn public_request(row: &TaskRow) -> Value {
    let mut v: Value = serde_json::from_str(&row.request).unwrap_or(Value::Null);
    scrub(&mut v);
    v
}

/// The list's view of tasks: what a row shows, with step and token totals.
pub(crate) async fn summaries(state: &AppState, rows: &[TaskRow]) -> ApiResult<Vec<Value>> {
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let totals = state.store.step_totals(&ids).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let req: Value = serde_json::from_str(&r.request).unwrap_or(Value::Null);
            let t = totals.get(&r.id).copied().unwrap_or_default();
            json!({
                "id": r.id,
                "kind": r.kind,
                "status": r.status,
                "task": req.get("task").cloned().unwrap_or(Value::Null),
                "url": req.get("url").cloned().unwrap_or(Value::Null),
                "created_at": r.created_at,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "steps": t.steps,
                "prompt_tokens": t.prompt_tokens,
                "completion_tokens": t.completion_tokens,
                "credits": r.credits_used,
                "error": r.error,
                "cancel_requested": r.cancel_requested,
                "data_deleted": r.data_deleted_at.is_some(),
            })
        })
        .collect())
}

/// The task list's query string; a malformed value answers 422 naming its parameter.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct ListQuery {
    status: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    q: Option<String>,
    after: Option<String>,
    l: Option<i64>,
}

/// `GET /dashboard/api/tasks?status=&since=&until=&q=&after=&l=`: newest first; `next` is the
/// cursor of the following page (`created_ms:id`), or null at the end.
async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Value>> {
    let owner = super::require(&state, &headers).await?;
    let limit = q.l.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(unprocessable(format!(
            "l: must be between 1 and 200, got {limit}"
        )));
    }
    let status = match q.status.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) if STATUSES.contains(&s) => Some(s.to_string()),
        Some(s) => {
            return Err(unprocessable(format!(
                "status: must be one of {}, got {s:?}",
                STATUSES.join(", ")
            )));
        }
    };
    let after = match q.after.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(c) => {
            let parsed = c
                .split_once(':')
                .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_string())))
                .filter(|(_, id)| !id.is_empty());
            Some(parsed.ok_or_else(|| unprocessable(format!("after: not a cursor from `next`, got {c:?}")))?)
        }
    };
    let text =
        q.q.as_deref()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
    if text.as_ref().is_some_and(|t| t.chars().count() > 200) {
        return Err(unprocessable("q: at most 200 characters".into()));
    }
    let filter = TaskFilter {
        status,
        since_ms: q.since,
        until_ms: q.until,
        text,
        after,
    };
    // One more than a page tells whether there is a next one.
    let mut rows = state.store.dashboard_tasks(&owner.id, &filter, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(|r| format!("{}:{}", r.created_at, r.id))
    } else {
        None
    };
    let items = summaries(&state, &rows).await?;
    Ok(Json(json!({"items": items, "next": next})))
}

/// Everything the task page shows except the step traces (read through the API).
async fn task_detail(state: &AppState, headers: &HeaderMap, id: &str) -> ApiResult<Value> {
    let owner = super::require(state, headers).await?;
    let row = state
        .store
        .get_task(&owner.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("task", id))?;
    let summary = summaries(state, std::slice::from_ref(&row))
        .await?
        .pop()
        .unwrap_or(Value::Null);
    let request = public_request(&row);
    let response = TaskResponse::from_row(&row, None, true, &state.links);
    let mut events = Vec::new();
    for (dir, name) in [(Direction::Out, "out"), (Direction::In, "in")] {
        for mut e in state.store.events_after(id, dir, 0, 1000).await? {
            // The client's events carry run_task secrets; the dashboard shows them without.
            if matches!(dir, Direction::In) {
                scrub(&mut e.payload);
            }
            events.push(json!({"direction": name, "id": e.id, "name": e.name, "payload": e.payload, "t": e.timestamp}));
        }
    }
    events.sort_by_key(|e| e.get("t").and_then(Value::as_i64).unwrap_or(0));
    let output_check = match request.get("response_model").filter(|m| !m.is_null()) {
        None => Value::Null,
        Some(schema) => match jsonschema::validator_for(schema) {
            Err(e) => {
                json!({"valid": false, "errors": [format!("the response_model is not a valid schema: {e}")]})
            }
            Ok(v) if row.output.is_some() => {
                let out = row.output_json();
                let errors: Vec<String> = v
                    .iter_errors(&out)
                    .take(10)
                    .map(|e| format!("{} {e}", e.instance_path))
                    .collect();
                json!({"valid": errors.is_empty(), "errors": errors})
            }
            Ok(_) => Value::Null,
        },
    };
    let step_times: Vec<Value> = state
        .store
        .step_times(id)
        .await?
        .into_iter()
        .map(|(step, at)| json!({"step": step, "at": at}))
        .collect();
    let artifacts: Vec<Value> = state
        .store
        .task_artifacts(id)
        .await?
        .into_iter()
        .filter(|a| a.kind != "recording" && a.kind != "downloads")
        .map(|a| {
            json!({"kind": a.kind, "name": a.name, "content_type": a.content_type, "size": a.size_bytes,
                   "url": state.links.artifact_url(&a.id, &a.name)})
        })
        .collect();
    Ok(json!({
        "summary": summary,
        "request": request,
        "response": response,
        "events": events,
        "output_check": output_check,
        "step_times": step_times,
        "artifacts": artifacts,
    }))
}

async fn task(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(task_detail(&state, &headers, &id).await?))
}

/// `GET /dashboard/api/task/{id}/trace`: the task, its request, events and step traces as one
/// JSON download.
async fn trace(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let mut doc = task_detail(&state, &headers, &id).await?;
    let steps = state.store.steps(&id).await?;
    if let Value::Object(m) = &mut doc {
        m.insert("steps".into(), Value::Array(steps));
    }
    let body = serde_json::to_vec_pretty(&doc).map_err(|e| ApiError::internal(&e))?;
    let name = format!(
        "attachment; filename=\"trace-{}.json\"",
        id.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-', "")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        body,
    )
        .into_response())
}

/// `GET /dashboard/api/files`: the key's uploaded files (the API has no list route).
async fn files(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let owner = super::require(&state, &headers).await?;
    let items: Vec<Value> = state
        .store
        .list_files(&owner.id)
        .await?
        .into_iter()
        .map(|f| json!({"id": f.id, "name": f.name, "purpose": f.purpose, "size": f.size_bytes, "created_at": f.created_at}))
        .collect();
    Ok(Json(json!({"items": items})))
}

/// The value of an unlabelled series in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// `GET /dashboard/api/health`: queue, running tasks per worker, browsers and crashes,
/// computed as `/metrics` computes them, plus the key's latest failures.
async fn health(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let owner = super::require(&state, &headers).await?;
    let store = &state.store;
    let (queue_depth, oldest_ms) = store.queue_depth().await?;
    let by_status: Map<String, Value> = store
        .task_counts()
        .await?
        .into_iter()
        .map(|(s, n)| (s, json!(n)))
        .collect();
    let workers: Vec<Value> = store
        .running_per_worker()
        .await?
        .into_iter()
        .map(|(w, n)| json!({"worker": w, "running": n}))
        .collect();
    // This process's counters, exactly as it renders them for a scrape.
    let text = smoothd_metrics::render(None);
    let failed = TaskFilter {
        status: Some("failed".into()),
        ..TaskFilter::default()
    };
    let recent = store.dashboard_tasks(&owner.id, &failed, 5).await?;
    Ok(Json(json!({
        "backend": store.backend_name(),
        "queue_depth": queue_depth,
        "oldest_waiting_ms": oldest_ms,
        "tasks_by_status": by_status,
        "running_per_worker": workers,
        "browsers": metric(&text, "smoothd_browser_processes"),
        "browser_launches": metric(&text, "smoothd_browser_launches_total"),
        "browser_crashes": metric(&text, "smoothd_browser_crashes_total"),
        "recent_failures": summaries(&state, &recent).await?,
    })))
}
