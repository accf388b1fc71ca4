//! The queue. A worker claims the oldest waiting task (or one whose lease expired, if it may
//! safely run again) and holds it with a lease it renews by heartbeat. Every worker write is
//! fenced on the attempt number: zero rows affected means the lease was lost and the worker
//! must stop. Expired leases that may not be retried are failed by the reaper.

use smoothd_core::time::now_ms;
use smoothd_core::{Final, TaskStatus};

use crate::tasks::TaskRow;
use crate::{Backend, Result, Store, with_pool};

/// A claimed task; `task.attempt` is the fence for every write.
#[derive(Debug, Clone)]
pub struct Claim {
    pub task: TaskRow,
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// The lease is extended; `cancel` says whether the user asked to stop.
    Held { cancel: bool },
    /// Another attempt owns the task now, or it is final: stop without writing.
    Lost,
}

/// A task the reaper finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub id: String,
    pub status: TaskStatus,
}

/// The worker-lost message stored on reaped tasks.
pub const WORKER_LOST: &str = "worker lost: the process running this task stopped renewing its lease, and the task may already have \
     acted in the browser, so it was not retried";

impl Store {
    /// Claims one task for `worker_id` with a lease of `lease_ms`.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn claim(&self, worker_id: &str, lease_ms: i64) -> Result<Option<Claim>> {
        let now = now_ms();
        let task: Option<TaskRow> = match &self.backend {
            Backend::Postgres(pool) => {
                sqlx::query_as(
                    "WITH c AS ( \
                       SELECT id FROM tasks \
                       WHERE status = 'waiting' \
                          OR (status = 'running' AND lease_expires_at < $1 AND attempt < max_attempts \
                              AND NOT effects_started AND NOT cancel_requested) \
                       ORDER BY created_at \
                       FOR UPDATE SKIP LOCKED \
                       LIMIT 1) \
                     UPDATE tasks t SET status = 'running', attempt = t.attempt + 1, worker_id = $2, \
                       lease_expires_at = $3, started_at = COALESCE(t.started_at, $1) \
                     FROM c WHERE t.id = c.id \
                     RETURNING t.*",
                )
                .bind(now)
                .bind(worker_id)
                .bind(now + lease_ms)
                .fetch_optional(pool)
                .await?
            }
            Backend::Sqlite(pool) => {
                // SQLite has one writer at a time, so this single statement is the atomic claim.
                sqlx::query_as(
                    "UPDATE tasks SET status = 'running', attempt = attempt + 1, worker_id = ?2, \
                       lease_expires_at = ?3, started_at = COALESCE(started_at, ?1) \
                     WHERE id = ( \
                       SELECT id FROM tasks \
                       WHERE status = 'waiting' \
                          OR (status = 'running' AND lease_expires_at < ?1 AND attempt < max_attempts \
                              AND NOT effects_started AND NOT cancel_requested) \
                       ORDER BY created_at LIMIT 1) \
                     RETURNING *",
                )
                .bind(now)
                .bind(worker_id)
                .bind(now + lease_ms)
                .fetch_optional(pool)
                .await?
            }
        };
        if let Some(t) = &task {
            self.announce_task(&t.id).await;
        }
        Ok(task.map(|task| Claim { task }))
    }

    /// Renews the lease of `attempt` on `task_id`.
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn heartbeat(&self, task_id: &str, attempt: i64, lease_ms: i64) -> Result<Heartbeat> {
        let q = self.sql(
            "UPDATE tasks SET lease_expires_at = $1 WHERE id = $2 AND attempt = $3 AND status = 'running' \
             RETURNING cancel_requested",
        );
        let row: Option<bool> = with_pool!(self, pool => sqlx::query_scalar(&q)
            .bind(now_ms() + lease_ms).bind(task_id).bind(attempt).fetch_optional(pool).await?);
        Ok(match row {
            Some(cancel) => Heartbeat::Held { cancel },
            None => Heartbeat::Lost,
        })
    }

    /// Whether the user asked to cancel (cheap read for loops between actions).
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn cancel_requested(&self, task_id: &str) -> Result<bool> {
        let q = self.sql("SELECT cancel_requested FROM tasks WHERE id = $1");
        let v: Option<bool> =
            with_pool!(self, pool => sqlx::query_scalar(&q).bind(task_id).fetch_optional(pool).await?);
        Ok(v.unwrap_or(true))
    }

    /// Marks that the task has acted on the outside world, so it must never run again.
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn mark_effects(&self, task_id: &str, attempt: i64) -> Result<bool> {
        let q = self.sql(
            "UPDATE tasks SET effects_started = TRUE WHERE id = $1 AND attempt = $2 AND status = 'running'",
        );
        let n = with_pool!(self, pool => sqlx::query(&q).bind(task_id).bind(attempt).execute(pool).await?.rows_affected());
        Ok(n > 0)
    }

    /// Finishes `attempt` of a running task; false if the lease was lost (nothing written).
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn finish(&self, task_id: &str, attempt: i64, end: &Final) -> Result<bool> {
        let output = end.output().map(serde_json::to_string).transpose()?;
        let q = self.sql(
            "UPDATE tasks SET status = $1, output = $2, error = $3, credits_used = $4, finished_at = $5, \
             lease_expires_at = NULL, recording = COALESCE(recording, ''), downloads = COALESCE(downloads, '') \
             WHERE id = $6 AND attempt = $7 AND status = 'running'",
        );
        let n = with_pool!(self, pool => sqlx::query(&q)
            .bind(end.status().as_str()).bind(output).bind(end.error()).bind(end.credits_used()).bind(now_ms())
            .bind(task_id).bind(attempt).execute(pool).await?.rows_affected());
        if n > 0 {
            self.announce_task(task_id).await;
        }
        Ok(n > 0)
    }

    /// Hands a task back to the queue at shutdown, if it never acted outside (so running it
    /// again is safe); false if it did, or the lease was lost.
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn release(&self, task_id: &str, attempt: i64) -> Result<bool> {
        let q = self.sql(
            "UPDATE tasks SET lease_expires_at = 0, worker_id = NULL \
             WHERE id = $1 AND attempt = $2 AND status = 'running' AND NOT effects_started AND attempt < max_attempts",
        );
        let n = with_pool!(self, pool => sqlx::query(&q).bind(task_id).bind(attempt).execute(pool).await.map(|r| r.rows_affected())?);
        if n > 0 {
            self.announce_queue().await;
        }
        Ok(n > 0)
    }

    /// Finishes running tasks whose lease expired and that may not be claimed again: cancelled
    /// if the user asked, failed ("worker lost") otherwise. Each gets a final event.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn reap_expired(&self) -> Result<Vec<Reaped>> {
        let now = now_ms();
        let q = self.sql(
            "UPDATE tasks SET \
               status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END, \
               error = CASE WHEN cancel_requested THEN error ELSE $1 END, \
               finished_at = $2, lease_expires_at = NULL, \
               recording = COALESCE(recording, ''), downloads = COALESCE(downloads, '') \
             WHERE status = 'running' AND lease_expires_at < $2 \
               AND (attempt >= max_attempts OR effects_started OR cancel_requested) \
             RETURNING id, status",
        );
        let rows: Vec<(String, String)> = with_pool!(self, pool => sqlx::query_as(&q)
            .bind(WORKER_LOST).bind(now).fetch_all(pool).await?);
        let mut out = Vec::with_capacity(rows.len());
        for (id, status) in rows {
            let status = TaskStatus::parse(&status).unwrap_or(TaskStatus::Failed);
            let payload = match status {
                TaskStatus::Cancelled => {
                    serde_json::json!({"status": "cancelled", "reason": "cancelled while its worker was lost"})
                }
                _ => serde_json::json!({"status": "failed", "error": WORKER_LOST}),
            };
            let eid = smoothd_core::ids::event_id();
            self.append_event(
                &id,
                crate::EventFence::Any,
                smoothd_core::Direction::Out,
                &eid,
                "task_ended",
                &payload,
            )
            .await?;
            tracing::warn!(task.id = %id, %status, "reaped a task whose worker was lost");
            out.push(Reaped { id, status });
        }
        Ok(out)
    }

    /// Tasks waiting and the age in ms of the oldest, for metrics and readiness.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn queue_depth(&self) -> Result<(i64, i64)> {
        let q = "SELECT COUNT(*), COALESCE(MIN(created_at), 0) FROM tasks WHERE status = 'waiting'";
        let (n, oldest): (i64, i64) = with_pool!(self, pool => sqlx::query_as(q).fetch_one(pool).await?);
        Ok((n, if n > 0 { now_ms() - oldest } else { 0 }))
    }
}
