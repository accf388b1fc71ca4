//! What an executor sees of its task: the request, a fenced event writer, the inbox of client
//! events, and the stop signal (user cancel, lost lease or shutdown). Writes ride out a
//! database outage (restart, failover) by retrying while this attempt's lease still holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use smoothd_core::event::{Direction, Event};
use smoothd_core::{TaskSpec, ids};
use smoothd_store::{EventFence, Store, StoreError, TaskRow};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// When this attempt's lease runs out as far as this process can know: the moment the last
/// successful renewal was sent, plus the lease. Past it another worker may claim the task, so
/// the attempt must have stopped by then (see the watchdog in `pool.rs`).
#[derive(Debug, Clone)]
pub(crate) struct LeaseClock {
    until: Arc<Mutex<Instant>>,
}

impl LeaseClock {
    /// A lease granted by a claim (or renewal) sent at `sent`.
    pub(crate) fn new(sent: Instant, lease: Duration) -> Self {
        Self {
            until: Arc::new(Mutex::new(sent + lease)),
        }
    }

    /// A renewal sent at `sent` succeeded.
    pub(crate) fn renewed(&self, sent: Instant, lease: Duration) {
        if let Ok(mut u) = self.until.lock() {
            *u = (*u).max(sent + lease);
        }
    }

    /// When the lease runs out.
    pub(crate) fn until(&self) -> Instant {
        match self.until.lock() {
            Ok(u) => *u,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }
}

/// Runs a worker write; while the database is unreachable, retries with backoff until the
/// lease's end less `margin` (read afresh each time: the heartbeat may renew it meanwhile), so
/// a restart shorter than the lease costs a delay rather than the task. Writes are fenced on
/// the attempt, so a retry never lands on a successor's task.
pub(crate) async fn retry_unavailable<T, F, Fut>(
    what: &str,
    lease: &LeaseClock,
    margin: Duration,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let deadline = || lease.until().checked_sub(margin).unwrap_or_else(Instant::now);
    let mut delay = Duration::from_millis(100);
    loop {
        match tokio::time::timeout_at(deadline(), op()).await {
            Ok(Err(e)) if e.is_unavailable() && Instant::now() + delay < deadline() => {
                tracing::warn!(error = %e, what, "database unavailable; retrying while the lease holds");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Ok(result) => return result,
            Err(_) => return Err(StoreError::TimedOut),
        }
    }
}

/// Why a task was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The user cancelled (DELETE /v1/task/{id}).
    Cancelled,
    /// Another attempt owns the task; write nothing more.
    LeaseLost,
    /// This process is shutting down and the drain deadline passed.
    Shutdown,
}

/// A worker write was refused because this attempt no longer holds the task.
#[derive(Debug, Clone, thiserror::Error)]
#[error("lease lost: another attempt owns this task or it is already final")]
pub struct LeaseLost;

/// The running task's handle for its executor.
pub struct TaskContext {
    pub task: TaskRow,
    pub spec: TaskSpec,
    pub(crate) store: Store,
    pub(crate) stop: CancellationToken,
    pub(crate) reason: Arc<Mutex<Option<StopReason>>>,
    inbox_cursor: i64,
    /// This attempt has written `effects_started`.
    effects_marked: AtomicBool,
    lease: LeaseClock,
    /// Writes stop retrying this long before the lease runs out.
    margin: Duration,
}

impl TaskContext {
    /// The task's spend cap: the smaller of its `max_cost_usd` and its key's (the server's own is
    /// the agent's). A cap that cannot be read is not skipped: the run does not start.
    pub(crate) async fn max_cost_usd(&self) -> Result<Option<f64>, String> {
        match self.store().key_max_cost(&self.task.owner).await {
            Ok(key) => Ok(smoothd_agent::budget::smallest(self.spec.max_cost_usd(), key)),
            Err(e) => {
                tracing::warn!(task.id = %self.id(), error = %e, "the key's max_cost_usd could not be read");
                Err("the key's max_cost_usd could not be read (database unavailable); try again".into())
            }
        }
    }

    pub(crate) fn new(
        task: TaskRow,
        spec: TaskSpec,
        store: Store,
        stop: CancellationToken,
        reason: Arc<Mutex<Option<StopReason>>>,
        lease: LeaseClock,
        margin: Duration,
    ) -> Self {
        Self {
            task,
            spec,
            store,
            stop,
            reason,
            inbox_cursor: 0,
            effects_marked: AtomicBool::new(false),
            lease,
            margin,
        }
    }

    /// This attempt's lease and how long before its end writes stop retrying.
    pub(crate) fn lease(&self) -> (&LeaseClock, Duration) {
        (&self.lease, self.margin)
    }

    /// The database stayed away until the lease ran out: this attempt must stop and write
    /// nothing more (another worker may own the task by the time it is back).
    fn outlasted_lease(&self, what: &str, e: &StoreError) {
        tracing::error!(task.id = %self.task.id, error = %e, what, "the database stayed unavailable until the lease ran out; stopping");
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(StopReason::LeaseLost);
        }
        self.stop.cancel();
    }

    /// The task id.
    pub fn id(&self) -> &str {
        &self.task.id
    }

    /// The store, for executors that keep their own records (artifacts, traces).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Fires when the task must stop; see [`TaskContext::stop_reason`].
    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Why the task was stopped, if it was.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.reason.lock().ok().and_then(|r| *r)
    }

    /// Emits a server-to-client event, fenced on this attempt's lease.
    pub async fn emit(&self, id: &str, name: &str, payload: Value) -> Result<Event, LeaseLost> {
        let written = retry_unavailable("event", &self.lease, self.margin, || {
            self.store.append_event(
                &self.task.id,
                EventFence::Lease(self.task.attempt),
                Direction::Out,
                id,
                name,
                &payload,
            )
        })
        .await;
        match written {
            Ok(Some(e)) => Ok(e),
            Ok(None) => Err(LeaseLost),
            Err(e) if e.is_unavailable() => {
                self.outlasted_lease("event", &e);
                Err(LeaseLost)
            }
            Err(e) => {
                // A database outage: the event is not stored, and the caller cannot tell the
                // user; treat it like a lost lease so the task stops rather than diverges.
                tracing::error!(task.id = %self.task.id, error = %e, "could not store an event");
                Err(LeaseLost)
            }
        }
    }

    /// Answers a client event with the same id and name: `{"code", "output"}`.
    pub async fn reply(&self, to: &Event, code: u16, output: Value) -> Result<Event, LeaseLost> {
        self.emit(&to.id, &to.name, json!({"code": code, "output": output}))
            .await
    }

    /// Emits a progress or notice event with a fresh id.
    pub async fn notify(&self, name: &str, payload: Value) -> Result<Event, LeaseLost> {
        self.emit(&ids::event_id(), name, payload).await
    }

    /// Records that the task has acted outside (navigated, clicked), so it is never re-run.
    /// Written once per attempt: later calls cost nothing.
    pub async fn mark_effects(&self) -> Result<(), LeaseLost> {
        if self.task.effects_started || self.effects_marked.load(Ordering::Relaxed) {
            return Ok(());
        }
        let marked = retry_unavailable("effects", &self.lease, self.margin, || {
            self.store.mark_effects(&self.task.id, self.task.attempt)
        })
        .await;
        match marked {
            Ok(true) => {
                self.effects_marked.store(true, Ordering::Relaxed);
                Ok(())
            }
            Ok(false) => Err(LeaseLost),
            Err(e) if e.is_unavailable() => {
                self.outlasted_lease("effects", &e);
                Err(LeaseLost)
            }
            Err(e) => {
                tracing::error!(task.id = %self.task.id, error = %e, "could not mark effects");
                Err(LeaseLost)
            }
        }
    }

    /// The next client-to-server event, in order. `None` when the task must stop or `idle`
    /// passes without one (check [`TaskContext::stop_reason`] to tell them apart).
    pub async fn next_client_event(&mut self, idle: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + idle;
        let mut watch = self.store.signals().watch_task(&self.task.id);
        loop {
            if self.stop.is_cancelled() {
                return None;
            }
            match self
                .store
                .events_after(&self.task.id, Direction::In, self.inbox_cursor, 1)
                .await
            {
                Ok(mut events) if !events.is_empty() => {
                    let e = events.remove(0);
                    self.inbox_cursor = e.timestamp;
                    return Some(e);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(task.id = %self.task.id, error = %e, "reading client events failed"),
            }
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                _ = tokio::time::sleep_until(deadline) => return None,
                _ = watch.changed() => {}
                // Signals only cut latency; a slow poll keeps us correct if one is lost.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Waits until the client has polled past event `t` (so it has read it), or `grace`
    /// passes, or the task is stopped. Used before turning final, because the SDK does not
    /// read the events of the response that first shows a final status.
    pub async fn wait_acked(&self, t: i64, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        let mut watch = self.store.signals().watch_task(&self.task.id);
        loop {
            match self.store.get_task_unscoped(&self.task.id).await {
                Ok(Some(row)) if row.acked_event_t >= t => return,
                Ok(_) => {}
                Err(e) => tracing::warn!(task.id = %self.task.id, error = %e, "reading acks failed"),
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = watch.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}
