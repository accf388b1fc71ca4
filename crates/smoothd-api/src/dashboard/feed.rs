//! Live updates: one fan-out per process. A single pump subscribes to the store's task
//! signals (fed by NOTIFY on PostgreSQL, in-process on SQLite), reads each changed task once,
//! and broadcasts its summary; every open dashboard is a server-sent-event stream filtering
//! that broadcast by owner. N dashboards cost one read per change, not N, and none while
//! no dashboard is open. New tasks are found on queue signals through the queue index.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use smoothd_core::time::now_ms;
use tokio::sync::broadcast;

use crate::AppState;
use crate::error::ApiResult;

/// One task's new summary, for its owner's dashboards; `owner == "*"` means "re-read".
#[derive(Clone, Debug)]
struct Change {
    owner: Arc<str>,
    json: Arc<str>,
}

/// The process's fan-out, started by the first dashboard that listens.
#[derive(Clone, Debug)]
pub struct Feed {
    state: AppState,
    tx: Arc<OnceLock<broadcast::Sender<Change>>>,
}

/// Safety net for a lost signal: how often the pump looks for new tasks while dashboards listen.
const RESCAN: Duration = Duration::from_secs(5);

impl Feed {
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            tx: Arc::new(OnceLock::new()),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        let tx = self.tx.get_or_init(|| {
            let (tx, _) = broadcast::channel(1024);
            tokio::spawn(pump(self.state.clone(), tx.clone()));
            tx
        });
        tx.subscribe()
    }
}

pub fn routes(feed: Feed) -> Router<AppState> {
    Router::new().route(
        "/dashboard/api/stream",
        get(move |State(state): State<AppState>, headers: HeaderMap| {
            let feed = feed.clone();
            async move { stream(state, headers, feed).await }
        }),
    )
}

/// Reads changed tasks and broadcasts them until shutdown; owned by the process's shutdown
/// token. It reads nothing while no dashboard listens.
async fn pump(state: AppState, tx: broadcast::Sender<Change>) {
    let signals = state.store.signals().clone();
    let mut ids = signals.subscribe_all_tasks();
    // Waiting tasks already announced, by creation time (pruned as the window moves).
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut since = now_ms();
    loop {
        let queue = signals.queue_notified();
        tokio::pin!(queue);
        queue.as_mut().enable();
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            r = ids.recv() => match r {
                Ok(id) if !id.is_empty() => {
                    if tx.receiver_count() > 0 {
                        publish(&state, &tx, &id).await;
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = tx.send(Change { owner: "*".into(), json: "".into() });
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = &mut queue => {
                if tx.receiver_count() > 0 {
                    since = new_tasks(&state, &tx, &mut seen, since).await;
                }
            }
            _ = tokio::time::sleep(RESCAN) => {
                if tx.receiver_count() > 0 {
                    since = new_tasks(&state, &tx, &mut seen, since).await;
                }
            }
        }
    }
}

async fn publish(state: &AppState, tx: &broadcast::Sender<Change>, id: &str) {
    match state.store.get_task_unscoped(id).await {
        Ok(Some(row)) => match super::data::summaries(state, std::slice::from_ref(&row)).await {
            Ok(mut list) => {
                if let Some(v) = list.pop() {
                    let _ = tx.send(Change {
                        owner: row.owner.as_str().into(),
                        json: v.to_string().into(),
                    });
                }
            }
            Err(e) => tracing::warn!(task.id = %id, error = ?e, "dashboard feed cannot summarize a task"),
        },
        Ok(None) => {}
        Err(e) => tracing::warn!(task.id = %id, error = %e, "dashboard feed cannot read a task"),
    }
}

/// Announces waiting tasks created since `since` (less a margin for clocks and commit order)
/// that were not announced yet; returns the new `since`.
async fn new_tasks(
    state: &AppState,
    tx: &broadcast::Sender<Change>,
    seen: &mut HashMap<String, i64>,
    since: i64,
) -> i64 {
    const MARGIN: i64 = 10_000;
    let rows = match state.store.waiting_since(since - MARGIN).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "dashboard feed cannot read new tasks");
            return since;
        }
    };
    let mut newest = since;
    for (id, created) in rows {
        newest = newest.max(created);
        if seen.insert(id.clone(), created).is_none() {
            publish(state, tx, &id).await;
        }
    }
    seen.retain(|_, c| *c >= newest - 2 * MARGIN);
    newest
}

/// `GET /dashboard/api/stream`: the signed-in key's task changes as server-sent events
/// (`task` with a summary, `resync` when the client must re-read its list).
async fn stream(
    state: AppState,
    headers: HeaderMap,
    feed: Feed,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let owner = super::require(&state, &headers).await?;
    let rx = feed.subscribe();
    let me: Arc<str> = owner.id.into();
    let shutdown = state.shutdown.clone();
    let hello = futures::stream::once(async { Ok(Event::default().event("hello").data("{}")) });
    let changes = futures::stream::unfold((rx, me, shutdown), |(mut rx, me, shutdown)| async move {
        loop {
            let r = tokio::select! {
                _ = shutdown.cancelled() => return None,
                r = rx.recv() => r,
            };
            let ev = match r {
                Ok(c) if c.owner == me => Event::default().event("task").data(&*c.json),
                Ok(c) if &*c.owner == "*" => Event::default().event("resync").data("{}"),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            return Some((Ok(ev), (rx, me, shutdown)));
        }
    });
    Ok(Sse::new(futures::StreamExt::chain(hello, changes))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
