//! In-process wake-ups: "the queue has work" and "task X changed". They only cut latency;
//! every waiter re-reads the database, so a lost or duplicated signal is harmless. On
//! PostgreSQL a listener turns NOTIFYs from other processes into the same signals.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Shared wake-up channels.
#[derive(Clone, Debug, Default)]
pub struct Signals {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tasks: Mutex<HashMap<String, watch::Sender<u64>>>,
    queue: Notify,
    /// Every task change, by id (`""` = "anything may have changed, re-read"): the one feed
    /// a process-wide fan-out (the dashboard's) subscribes to.
    any: broadcast::Sender<String>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            tasks: Mutex::default(),
            queue: Notify::new(),
            any: broadcast::channel(1024).0,
        }
    }
}

/// A subscription to one task's changes; unsubscribes on drop.
pub struct TaskWatch {
    rx: watch::Receiver<u64>,
    id: String,
    inner: Arc<Inner>,
}

impl TaskWatch {
    /// Waits for a change signalled after this watch was created (or after the last `changed`).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The sender lives in the map while we exist; this only happens during teardown.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for TaskWatch {
    fn drop(&mut self) {
        if let Ok(mut map) = self.inner.tasks.lock()
            && map.get(&self.id).is_some_and(|tx| tx.receiver_count() <= 1)
        {
            map.remove(&self.id);
        }
    }
}

impl Signals {
    /// Subscribes to a task's changes. Subscribe before reading state, then wait.
    pub fn watch_task(&self, id: &str) -> TaskWatch {
        let rx = match self.inner.tasks.lock() {
            Ok(mut map) => map
                .entry(id.to_string())
                .or_insert_with(|| watch::channel(0).0)
                .subscribe(),
            Err(poisoned) => {
                let mut map = poisoned.into_inner();
                map.entry(id.to_string())
                    .or_insert_with(|| watch::channel(0).0)
                    .subscribe()
            }
        };
        TaskWatch {
            rx,
            id: id.to_string(),
            inner: self.inner.clone(),
        }
    }

    /// Every later task change, by id; `""` means "re-read everything" (after a lost
    /// notification connection). A lagging receiver must re-read too.
    pub fn subscribe_all_tasks(&self) -> broadcast::Receiver<String> {
        self.inner.any.subscribe()
    }

    /// Wakes everyone watching `id`.
    pub fn notify_task(&self, id: &str) {
        // No receivers is the usual case without a dashboard open.
        let _ = self.inner.any.send(id.to_string());
        if let Ok(map) = self.inner.tasks.lock()
            && let Some(tx) = map.get(id)
        {
            tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Wakes every idle worker.
    pub fn notify_queue(&self) {
        self.inner.queue.notify_waiters();
    }

    /// A future that completes on the next queue signal. Create it (and `enable` it) before
    /// the claim attempt so a signal between the attempt and the wait is not lost.
    pub fn queue_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.queue.notified()
    }
}

/// Listens on the `smoothd` channel and forwards notifications. Any failure of the listening
/// connection (a database restart ends it with an error that sqlx does not always treat as a
/// lost connection) drops it and opens a new one, with backoff while the database is away;
/// after each reconnect everyone is woken to re-read what they may have missed.
pub(crate) async fn spawn_pg_listener(
    pool: PgPool,
    signals: Signals,
    stop: CancellationToken,
) -> Result<(), sqlx::Error> {
    let listener = listen(&pool).await?;
    tokio::spawn(async move {
        let mut listener = Some(listener);
        let mut backoff = Duration::from_millis(250);
        loop {
            let Some(l) = listener.as_mut() else {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                match listen(&pool).await {
                    Ok(l) => {
                        tracing::info!("notification listener reconnected");
                        listener = Some(l);
                        backoff = Duration::from_millis(250);
                        signals.notify_queue();
                        signals.notify_all_tasks();
                    }
                    Err(sqlx::Error::PoolClosed) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "notification listener cannot reconnect yet; retrying");
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
                continue;
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                msg = l.try_recv() => match msg {
                    Ok(Some(n)) => {
                        let payload = n.payload();
                        if payload == "q" {
                            signals.notify_queue();
                        } else if let Some(id) = payload.strip_prefix("t:") {
                            signals.notify_task(id);
                        }
                    }
                    Ok(None) => {
                        // sqlx saw the connection drop and reconnects on the next call: we may
                        // have missed notifications, so wake everyone to re-read.
                        tracing::warn!("notification listener lost its connection; reconnecting");
                        signals.notify_queue();
                        signals.notify_all_tasks();
                    }
                    // The pool is closing: give the connection back so close() can finish.
                    Err(sqlx::Error::PoolClosed) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "notification listener failed; reconnecting");
                        listener = None;
                        signals.notify_queue();
                        signals.notify_all_tasks();
                    }
                }
            }
        }
    });
    Ok(())
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen("smoothd").await?;
    Ok(listener)
}

impl Signals {
    fn notify_all_tasks(&self) {
        let _ = self.inner.any.send(String::new());
        if let Ok(map) = self.inner.tasks.lock() {
            for tx in map.values() {
                tx.send_modify(|v| *v = v.wrapping_add(1));
            }
        }
    }
}
