//! The claim loop. At most `workers` tasks run at once per process; an idle pool waits on the
//! queue signal (NOTIFY on PostgreSQL) with a slow poll as the safety net. Each running task
//! has a heartbeat that renews its lease and relays cancellation, and every spawned piece is
//! owned by a `TaskTracker` so shutdown can drain it. A task whose lease cannot be renewed
//! (the database is away) is stopped before the lease runs out, so no other worker can claim
//! it while it still runs here; an outage shorter than the lease only delays its writes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use smoothd_core::Final;
use smoothd_store::{Claim, Heartbeat, Store};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::context::{LeaseClock, StopReason, TaskContext, retry_unavailable};
use crate::executor::Executor;

/// Pool settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Concurrent tasks in this process.
    pub workers: usize,
    /// Lease length; a worker silent for this long loses its task.
    pub lease: Duration,
    /// Heartbeat interval (well under the lease).
    pub heartbeat: Duration,
    /// Slow poll for work when no signal arrives.
    pub poll: Duration,
    /// How often to finish tasks whose workers were lost.
    pub reap_every: Duration,
    /// How long running tasks may keep going after shutdown begins.
    pub drain_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            poll: Duration::from_secs(5),
            reap_every: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// A running pool of workers.
pub struct WorkerPool {
    store: Store,
    executor: Arc<dyn Executor>,
    config: WorkerConfig,
    worker_id: String,
}

impl WorkerPool {
    /// A pool that runs tasks with `executor`.
    pub fn new(store: Store, executor: Arc<dyn Executor>, config: WorkerConfig) -> Self {
        Self {
            store,
            executor,
            config,
            worker_id: smoothd_core::ids::worker_id(),
        }
    }

    /// This process's worker id, as stored on claimed tasks.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Claims and runs tasks until `shutdown` fires, then drains: running tasks get
    /// `drain_timeout` to finish, after which they are stopped and given a final state.
    pub async fn run(self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.config.workers.max(1)));
        let tracker = TaskTracker::new();
        // Fires after the drain deadline: running tasks must stop now.
        let hard_stop = CancellationToken::new();
        // Sessions wait for commands, not for an end, so they are stopped as soon as the
        // drain begins rather than holding shutdown for the whole deadline.
        let session_stop = hard_stop.child_token();
        // Reaping runs on its own, so tasks of a lost worker are finished even while every
        // slot here is busy.
        let _reaper = AbortOnDrop(tokio::spawn(reap_loop(
            self.store.clone(),
            self.config.reap_every,
            shutdown.clone(),
        )));
        tracing::info!(worker.id = %self.worker_id, workers = self.config.workers, "workers started");

        'claiming: loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break 'claiming,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break 'claiming,
                },
            };
            // Wait for work with the permit in hand.
            let Some((claim, claim_started)) = self.next_claim(&shutdown).await else {
                break 'claiming;
            };
            let stop = if claim.task.is_session() {
                session_stop.clone()
            } else {
                hard_stop.clone()
            };
            let lease = LeaseClock::new(claim_started, self.config.lease);
            let run = self.run_one(claim, lease, stop);
            tracker.spawn(async move {
                run.await;
                drop(permit);
            });
        }

        tracker.close();
        session_stop.cancel();
        if !tracker.is_empty() {
            tracing::info!(running = tracker.len(), "draining running tasks");
        }
        if tokio::time::timeout(self.config.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = tracker.len(),
                "drain deadline passed; stopping running tasks"
            );
            hard_stop.cancel();
            tracker.wait().await;
        }
        tracing::info!(worker.id = %self.worker_id, "workers stopped");
    }

    /// The next task this process claims, with when the claim was sent (its lease counts
    /// from then); `None` once `shutdown` fires.
    async fn next_claim(&self, shutdown: &CancellationToken) -> Option<(Claim, tokio::time::Instant)> {
        loop {
            let notified = self.store.signals().queue_notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let claim_started = tokio::time::Instant::now();
            let claimed = self.store.claim(&self.worker_id, ms(self.config.lease)).await;
            smoothd_metrics::record_claim_query(claim_started.elapsed());
            match claimed {
                Ok(Some(claim)) => {
                    // Queue latency is a first claim's; a re-claim's wait includes a lost worker.
                    let waited = (claim.task.attempt == 1).then(|| {
                        let ms = smoothd_core::time::now_ms().saturating_sub(claim.task.created_at);
                        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
                    });
                    smoothd_metrics::record_claim(waited);
                    return Some((claim, claim_started));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "claim failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = &mut notified => {}
                _ = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    fn run_one(
        &self,
        claim: Claim,
        lease: LeaseClock,
        hard_stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let store = self.store.clone();
        let executor = self.executor.clone();
        let config = self.config.clone();
        let task = claim.task;
        let span = tracing::info_span!("task", task.id = %task.id, attempt = task.attempt, kind = %task.kind);
        async move {
            let id = task.id.clone();
            let attempt = task.attempt;
            let is_session = task.is_session();
            tracing::info!("claimed");
            let spec = match task.spec() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "stored request does not parse");
                    let corrupt = Final::failed("internal error: corrupt task request");
                    let _ = store.finish(&id, attempt, &corrupt).await;
                    return;
                }
            };
            let stop = CancellationToken::new();
            let reason: Arc<Mutex<Option<StopReason>>> = Arc::new(Mutex::new(None));
            let watchdog = tokio::spawn(watchdog(
                store.clone(),
                id.clone(),
                attempt,
                config.clone(),
                lease.clone(),
                stop.clone(),
                reason.clone(),
                hard_stop,
            ));
            let _watchdog = AbortOnDrop(watchdog);
            let margin = fence_margin(&config);
            let mut ctx = TaskContext::new(
                task,
                spec,
                store.clone(),
                stop,
                reason.clone(),
                lease.clone(),
                margin,
            );
            let ran = executor.run(&mut ctx).await;
            let Some(end) = final_state(&store, &id, attempt, is_session, ran, ctx.stop_reason()).await
            else {
                return;
            };
            let written =
                retry_unavailable("final state", &lease, margin, || store.finish(&id, attempt, &end)).await;
            let status = end.status();
            match written {
                Ok(true) => {
                    smoothd_metrics::record_task_finished(status.as_str());
                    tracing::info!(%status, "finished")
                }
                Ok(false) => tracing::warn!(%status, "lease lost before finishing; not written"),
                Err(e) => {
                    tracing::error!(error = %e, "could not store the final state; the lease will expire")
                }
            }
        }
        .instrument(span)
    }
}

/// What to write for a run that ended as `ran` with the stop reason `stop`: its own end; for a
/// stopped run, cancelled or failed by why it stopped. `None`: write nothing (the lease was
/// lost, or the task went back to the queue at shutdown).
async fn final_state(
    store: &Store,
    id: &str,
    attempt: i64,
    is_session: bool,
    ran: Option<Final>,
    stop: Option<StopReason>,
) -> Option<Final> {
    match (ran, stop) {
        (_, Some(StopReason::LeaseLost)) => {
            tracing::warn!("lease lost; leaving the task to its new owner");
            None
        }
        (Some(end), _) => Some(end),
        (None, Some(StopReason::Cancelled)) => Some(Final::Cancelled),
        (None, Some(StopReason::Shutdown)) => {
            // A session's browser state dies with this process: give it a final state. A
            // task that never acted outside goes back to the queue for another worker.
            let released = if is_session {
                Ok(false)
            } else {
                store.release(id, attempt).await
            };
            match released {
                Ok(true) => {
                    tracing::info!("handed back to the queue at shutdown");
                    return None;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not hand the task back"),
            }
            Some(Final::failed("server shut down while the task was running"))
        }
        (None, None) => Some(Final::failed("internal error: the task stopped without a reason")),
    }
}

/// Finishes tasks whose workers were lost, every `every`, until `stop`. Worker pools run it,
/// and so do API-only processes (the reap is one fenced statement, safe from many processes).
pub async fn reap_loop(store: Store, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.reap_expired().await {
            Ok(reaped) if !reaped.is_empty() => {
                smoothd_metrics::record_reaped(reaped.len());
                tracing::info!(count = reaped.len(), "reaped lost tasks")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reaping failed"),
        }
    }
}

/// How long before its lease runs out a task whose lease could not be renewed is stopped:
/// one heartbeat interval (at most half the lease), so it has stopped before another worker
/// can see the lease expired.
fn fence_margin(config: &WorkerConfig) -> Duration {
    config.heartbeat.min(config.lease / 2)
}

/// Renews the lease and turns cancel requests, lost leases, a lease that ran out while the
/// database was away, and the drain deadline into a stop.
#[expect(clippy::too_many_arguments, reason = "the watchdog's inputs, each used once")]
async fn watchdog(
    store: Store,
    id: String,
    attempt: i64,
    config: WorkerConfig,
    lease: LeaseClock,
    stop: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
    hard_stop: CancellationToken,
) {
    let set = |r: StopReason| {
        if let Ok(mut g) = reason.lock() {
            g.get_or_insert(r);
        }
        stop.cancel();
    };
    let margin = fence_margin(&config);
    let fence = || {
        lease
            .until()
            .checked_sub(margin)
            .unwrap_or_else(tokio::time::Instant::now)
    };
    let ran_out = || {
        tracing::error!(
            "the lease could not be renewed before it ran out (database unavailable); stopping so that no other worker runs the task at the same time"
        );
    };
    let mut beat = tokio::time::interval(config.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = store.signals().watch_task(&id);
    loop {
        tokio::select! {
            _ = hard_stop.cancelled() => { set(StopReason::Shutdown); return; }
            _ = tokio::time::sleep_until(fence()) => { ran_out(); set(StopReason::LeaseLost); return; }
            _ = beat.tick() => {
                let sent = tokio::time::Instant::now();
                // A renewal stuck on an unreachable database must not outlive the lease.
                match tokio::time::timeout_at(fence(), store.heartbeat(&id, attempt, ms(config.lease))).await {
                    Ok(Ok(Heartbeat::Held { cancel })) => {
                        lease.renewed(sent, config.lease);
                        if cancel { set(StopReason::Cancelled); return; }
                    }
                    Ok(Ok(Heartbeat::Lost)) => { set(StopReason::LeaseLost); return; }
                    Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat failed; retrying"),
                    Err(_) => { ran_out(); set(StopReason::LeaseLost); return; }
                }
            }
            // A cancel wakes us at once through the task's signal.
            _ = watch.changed() => match tokio::time::timeout_at(fence(), store.cancel_requested(&id)).await {
                Ok(Ok(true)) => { set(StopReason::Cancelled); return; }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "reading cancel flag failed"),
                Err(_) => { ran_out(); set(StopReason::LeaseLost); return; }
            },
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Aborts a spawned task when dropped, so no heartbeat outlives its task.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
