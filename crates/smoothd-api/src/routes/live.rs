//! The live view: a page (no API key; the URL's token is bound to the task) and its
//! WebSocket, which this process relays to the worker serving the task's stream, wherever it
//! runs (its address is in the `live_streams` table). Both stop working when the task ends.
//! `interactive=false` connections never forward input: it is refused here, and again by the
//! worker.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use smoothd_core::ids::same_secret;
use smoothd_store::TaskRow;
use tokio_tungstenite::tungstenite::Message as Upstream;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};

const PAGE: &str = include_str!("live.html");

/// How long a viewer waits for a worker to pick the task up and start its stream.
const START_WAIT: Duration = Duration::from_secs(60);

/// The page is documented; its WebSocket is served but left out of the OpenAPI document,
/// which cannot describe a WebSocket protocol (a plain GET of it is refused with 400).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live_page))
        .route("/live/{id}/ws", axum::routing::get(live_socket))
}

/// `GET /live/{id}` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiveQuery {
    /// The task's live token (part of `live_url`).
    token: String,
    /// Forward the viewer's mouse and keyboard (default false).
    interactive: Option<bool>,
    /// No toolbar, for an iframe (the page reads it).
    #[expect(
        dead_code,
        reason = "read by the page's script, parsed here so a bad value is refused"
    )]
    embed: Option<bool>,
}

/// The task, if `token` is its live token and it is still waiting or running.
async fn live_task(state: &AppState, id: &str, token: &str) -> ApiResult<TaskRow> {
    let task = state
        .store
        .get_task_unscoped(id)
        .await?
        .filter(|t| same_secret(&t.live_token, token))
        .ok_or_else(|| ApiError::not_found("live view", id))?;
    if task.status().is_final() || task.data_deleted_at.is_some() {
        return Err(ApiError::new(
            StatusCode::GONE,
            format!("the task is {}; its live view has ended", task.status()),
        ));
    }
    Ok(task)
}

/// The live view of a task: its browser as it is, the current URL and the latest step.
#[utoipa::path(get, path = "/live/{id}", tag = "live", security(()),
    params(("id" = String, Path, description = "Task id"), LiveQuery),
    responses(
        (status = 200, description = "The page; its WebSocket is `/live/{id}/ws` with the same query", content_type = "text/html"),
        (status = 404, description = "Unknown task or wrong token", body = crate::models::ErrorBody),
        (status = 410, description = "The task has ended", body = crate::models::ErrorBody),
        (status = 503, description = "The database is unreachable; retry shortly", body = crate::models::ErrorBody),
        ApiPath<String>, ApiQuery<LiveQuery>,
    ))]
async fn live_page(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<LiveQuery>,
) -> ApiResult<Response> {
    live_task(&state, &id, &q.token).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
        .into_response())
}

/// The live view's WebSocket (query as the page's): JPEG frames (binary) and
/// `{"type": "meta"|"waiting"|"ended"|"error"}` text out; viewer input
/// (`{"type": "mouse"|"wheel"|"key", ...}`) in.
async fn live_socket(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<LiveQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let ws = ws.map_err(|e| ApiError::new(e.status(), format!("upgrade: {}", e.body_text())))?;
    let task = live_task(&state, &id, &q.token).await?;
    let interactive = q.interactive.unwrap_or(false);
    Ok(ws.on_upgrade(move |socket| relay(state, task, interactive, socket)))
}

fn text(v: serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

/// The address of the worker streaming `task`, once it has one; meanwhile the viewer hears
/// "waiting" once. `None` (the viewer told, when there is anything to tell) when the task
/// ends, the wait runs out or the server shuts down.
async fn worker_address(state: &AppState, task: &TaskRow, viewer: &mut WebSocket) -> Option<String> {
    let deadline = tokio::time::Instant::now() + START_WAIT;
    let mut told = false;
    loop {
        match state.store.live_stream(&task.id).await {
            Ok(Some(addr)) => return Some(addr),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(task.id = %task.id, error = %e, "reading the live stream address failed")
            }
        }
        let ended = match state.store.get_task_unscoped(&task.id).await {
            Ok(Some(t)) => t.status().is_final(),
            Ok(None) => true,
            Err(_) => false,
        };
        if ended || tokio::time::Instant::now() > deadline {
            let _ = viewer.send(text(json!({"type": "ended"}))).await;
            return None;
        }
        if !told {
            told = true;
            if viewer.send(text(json!({"type": "waiting"}))).await.is_err() {
                return None;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            _ = state.shutdown.cancelled() => return None,
        }
    }
}

/// Finds the worker serving the task and pipes the viewer to it until either side ends.
async fn relay(state: AppState, task: TaskRow, interactive: bool, mut viewer: WebSocket) {
    let Some(addr) = worker_address(&state, &task, &mut viewer).await else {
        return;
    };
    let url = format!(
        "ws://{addr}/live/{}?token={}&interactive={interactive}",
        task.id, task.live_token
    );
    let upstream = match tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url))
        .await
    {
        Ok(Ok((s, _))) => s,
        Ok(Err(e)) => {
            tracing::warn!(task.id = %task.id, %addr, error = %e, "cannot reach the worker's live stream");
            let _ = viewer
                .send(text(
                    json!({"type": "error", "detail": "the worker running this task cannot be reached"}),
                ))
                .await;
            return;
        }
        Err(_) => {
            tracing::warn!(task.id = %task.id, %addr, "the worker's live stream did not answer");
            return;
        }
    };
    let (mut up_tx, mut up_rx) = upstream.split();
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            msg = up_rx.next() => {
                let out = match msg {
                    Some(Ok(Upstream::Binary(b))) => Message::Binary(b),
                    Some(Ok(Upstream::Text(t))) => Message::Text(t.as_str().into()),
                    Some(Ok(Upstream::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                if viewer.send(out).await.is_err() {
                    break;
                }
            }
            msg = viewer.recv() => {
                let input = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                if !interactive {
                    let refused = json!({"type": "error", "detail": "view-only: this live view does not accept input (open it with interactive=true)"});
                    if viewer.send(text(refused)).await.is_err() {
                        break;
                    }
                    continue;
                }
                if up_tx.send(Upstream::Text(input.as_str().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = up_tx.close().await;
    let _ = viewer.close().await;
}
