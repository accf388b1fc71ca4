//! Tasks and their events. Status changes are single statements guarded by the expected
//! previous status; event timestamps come from a per-task counter bumped in the same
//! statement (or transaction) that inserts the event, so they are strictly increasing and
//! commit in order.

use serde_json::Value;
use smoothd_core::event::{Direction, Event};
use smoothd_core::time::now_ms;
use smoothd_core::{TaskSpec, TaskStatus};

use crate::{Backend, Result, Store, with_pool};

/// A task as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskRow {
    pub id: String,
    pub owner: String,
    pub kind: String,
    pub status: String,
    pub request: String,
    pub device: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub credits_used: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub attempt: i64,
    pub max_attempts: i64,
    pub worker_id: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub cancel_requested: bool,
    pub effects_started: bool,
    pub last_event_t: i64,
    pub acked_event_t: i64,
    pub live_token: String,
    pub recording: Option<String>,
    pub downloads: Option<String>,
    pub data_deleted_at: Option<i64>,
}

/// `SELECT <every task column> FROM tasks WHERE <cond>`, as one literal.
macro_rules! select_task {
    ($cond:literal) => {
        concat!(
            "SELECT id, owner, kind, status, request, device, output, error, credits_used, created_at, started_at, ",
            "finished_at, attempt, max_attempts, worker_id, lease_expires_at, cancel_requested, effects_started, ",
            "last_event_t, acked_event_t, live_token, recording, downloads, data_deleted_at FROM tasks WHERE ",
            $cond
        )
    };
}

impl TaskRow {
    /// The parsed status; an unknown spelling reads as failed rather than panicking.
    pub fn status(&self) -> TaskStatus {
        TaskStatus::parse(&self.status).unwrap_or(TaskStatus::Failed)
    }

    /// The validated request this task was created from.
    pub fn spec(&self) -> Result<TaskSpec> {
        Ok(serde_json::from_str(&self.request)?)
    }

    /// The stored output, as JSON.
    pub fn output_json(&self) -> Value {
        self.output
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null)
    }

    /// Whether this is an interactive session.
    pub fn is_session(&self) -> bool {
        self.kind == "session"
    }
}

/// What the API inserts.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: String,
    pub owner: String,
    pub spec: TaskSpec,
    pub max_attempts: i64,
    pub live_token: String,
}

/// Which writer may append an event.
#[derive(Debug, Clone, Copy)]
pub enum EventFence {
    /// Only while the task is waiting or running (client events).
    Open,
    /// Only while the given attempt holds the task (worker events).
    Lease(i64),
    /// Whatever the status (the reaper's final notes).
    Any,
}

/// What `DELETE /v1/task/{id}` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was waiting and is now cancelled.
    CancelledNow,
    /// It is running; its worker has been asked to stop.
    Signalled,
    /// It had already finished with this status.
    AlreadyFinal(TaskStatus),
    /// No such task for this owner.
    NotFound,
}

/// What `DELETE /v1/task/{id}/data` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EraseOutcome {
    /// Erased; these artifact storage keys must now be deleted.
    Erased(Vec<String>),
    /// Still waiting or running.
    NotFinal(TaskStatus),
    /// No such task for this owner.
    NotFound,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: String,
    name: String,
    payload: String,
    t: i64,
}

impl EventRow {
    fn into_event(self) -> Event {
        Event {
            id: self.id,
            name: self.name,
            payload: serde_json::from_str(&self.payload).unwrap_or(Value::Null),
            timestamp: self.t,
        }
    }
}

impl Store {
    /// Inserts a waiting task and wakes the workers.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn insert_task(&self, t: &NewTask) -> Result<TaskRow> {
        let request = serde_json::to_string(&t.spec)?;
        let kind = if t.spec.is_session() { "session" } else { "task" };
        let q = self.sql(
            "INSERT INTO tasks (id, owner, kind, status, request, device, created_at, max_attempts, live_token) \
             VALUES ($1, $2, $3, 'waiting', $4, $5, $6, $7, $8) RETURNING *",
        );
        // RETURNING gives the row as inserted, before any worker can claim it.
        let row: TaskRow = with_pool!(self, pool => sqlx::query_as(&q)
            .bind(&t.id).bind(&t.owner).bind(kind).bind(&request).bind(t.spec.device.as_str())
            .bind(now_ms()).bind(t.max_attempts).bind(&t.live_token)
            .fetch_one(pool).await?);
        self.announce_queue().await;
        Ok(row)
    }

    /// Inserts a waiting task unless its owner already has `max_active` tasks and sessions
    /// waiting or running; `None` then, and nothing is written. The count and the insert are
    /// one step for every process on the database: PostgreSQL serializes an owner's submits
    /// on a transaction-scoped advisory lock (taken before the count, so the count sees the
    /// previous holder's insert); SQLite runs one statement, which holds the write lock from
    /// its start.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn insert_task_within(&self, t: &NewTask, max_active: i64) -> Result<Option<TaskRow>> {
        let request = serde_json::to_string(&t.spec)?;
        let kind = if t.spec.is_session() { "session" } else { "task" };
        let row: Option<TaskRow> = match &self.backend {
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                // Class 0x736d ("sm") keeps these locks apart from any other advisory lock.
                sqlx::query("SELECT pg_advisory_xact_lock(29549, hashtext($1))")
                    .bind(&t.owner)
                    .execute(&mut *tx)
                    .await?;
                let active: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM tasks WHERE owner = $1 AND status IN ('waiting', 'running')",
                )
                .bind(&t.owner)
                .fetch_one(&mut *tx)
                .await?;
                if active >= max_active {
                    tx.rollback().await?;
                    return Ok(None);
                }
                let row = sqlx::query_as(
                    "INSERT INTO tasks (id, owner, kind, status, request, device, created_at, max_attempts, live_token) \
                     VALUES ($1, $2, $3, 'waiting', $4, $5, $6, $7, $8) RETURNING *",
                )
                .bind(&t.id).bind(&t.owner).bind(kind).bind(&request).bind(t.spec.device.as_str())
                .bind(now_ms()).bind(t.max_attempts).bind(&t.live_token)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Some(row)
            }
            Backend::Sqlite(pool) => {
                sqlx::query_as(
                    "INSERT INTO tasks (id, owner, kind, status, request, device, created_at, max_attempts, live_token) \
                     SELECT ?1, ?2, ?3, 'waiting', ?4, ?5, ?6, ?7, ?8 \
                     WHERE (SELECT count(*) FROM tasks WHERE owner = ?2 AND status IN ('waiting', 'running')) < ?9 \
                     RETURNING *",
                )
                .bind(&t.id).bind(&t.owner).bind(kind).bind(&request).bind(t.spec.device.as_str())
                .bind(now_ms()).bind(t.max_attempts).bind(&t.live_token).bind(max_active)
                .fetch_optional(pool)
                .await?
            }
        };
        if row.is_some() {
            self.announce_queue().await;
        }
        Ok(row)
    }

    /// How many tasks and sessions the owner has waiting or running.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn active_tasks(&self, owner: &str) -> Result<i64> {
        let q = self.sql("SELECT count(*) FROM tasks WHERE owner = $1 AND status IN ('waiting', 'running')");
        Ok(with_pool!(self, pool => sqlx::query_scalar::<_, i64>(&q).bind(owner).fetch_one(pool).await?))
    }

    /// The ids and requests of waiting or running sessions that asked for `proxy_server:
    /// "self"` (frpc's login is matched against their `proxy_password`).
    pub async fn active_self_sessions(&self) -> Result<Vec<(String, String)>> {
        let q = self.sql(
            "SELECT id, request FROM tasks WHERE kind = 'session' AND status IN ('waiting', 'running') \
             AND request LIKE '%\"self\"%'",
        );
        Ok(with_pool!(self, pool => sqlx::query_as::<_, (String, String)>(&q).fetch_all(pool).await?))
    }

    /// The owner's task.
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %id))]
    pub async fn get_task(&self, owner: &str, id: &str) -> Result<Option<TaskRow>> {
        let q = self.sql(select_task!("id = $1 AND owner = $2"));
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, TaskRow>(&q).bind(id).bind(owner).fetch_optional(pool).await?),
        )
    }

    /// A task whoever owns it (workers, live view tokens).
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %id))]
    pub async fn get_task_unscoped(&self, id: &str) -> Result<Option<TaskRow>> {
        let q = self.sql(select_task!("id = $1"));
        Ok(with_pool!(self, pool => sqlx::query_as::<_, TaskRow>(&q).bind(id).fetch_optional(pool).await?))
    }

    /// The owner's tasks created before `before_ms`, newest first.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn list_tasks(&self, owner: &str, before_ms: i64, limit: i64) -> Result<Vec<TaskRow>> {
        let q = self.sql(select_task!(
            "owner = $1 AND created_at < $2 ORDER BY created_at DESC, id DESC LIMIT $3"
        ));
        Ok(with_pool!(self, pool => sqlx::query_as::<_, TaskRow>(&q)
            .bind(owner).bind(before_ms).bind(limit).fetch_all(pool).await?))
    }

    /// Appends an event and returns it with its timestamp, or `None` if the fence refused
    /// (the task is final, or the attempt lost its lease).
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn append_event(
        &self,
        task_id: &str,
        fence: EventFence,
        direction: Direction,
        id: &str,
        name: &str,
        payload: &Value,
    ) -> Result<Option<Event>> {
        let payload_text = serde_json::to_string(payload)?;
        let now = now_ms();
        let guard = match fence {
            EventFence::Open => "status IN ('waiting', 'running') AND $3 = $3",
            EventFence::Lease(_) => "status = 'running' AND attempt = $3",
            EventFence::Any => "$3 = $3",
        };
        let attempt = match fence {
            EventFence::Lease(a) => a,
            _ => 0,
        };
        let t: Option<i64> = match &self.backend {
            Backend::Postgres(pool) => {
                let q = format!(
                    "WITH bump AS (UPDATE tasks SET last_event_t = GREATEST(last_event_t + 1, $2) \
                       WHERE id = $1 AND {guard} RETURNING last_event_t) \
                     INSERT INTO task_events (task_id, t, id, direction, name, payload) \
                     SELECT $1, last_event_t, $4, $5, $6, $7 FROM bump RETURNING t"
                );
                sqlx::query_scalar(&q)
                    .bind(task_id)
                    .bind(now)
                    .bind(attempt)
                    .bind(id)
                    .bind(direction.as_str())
                    .bind(name)
                    .bind(&payload_text)
                    .fetch_optional(pool)
                    .await?
            }
            Backend::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let guard = guard.replace('$', "?");
                let q = format!(
                    "UPDATE tasks SET last_event_t = MAX(last_event_t + 1, ?2) \
                     WHERE id = ?1 AND {guard} RETURNING last_event_t"
                );
                let t: Option<i64> = sqlx::query_scalar(&q)
                    .bind(task_id)
                    .bind(now)
                    .bind(attempt)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(t) = t {
                    sqlx::query(
                        "INSERT INTO task_events (task_id, t, id, direction, name, payload) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .bind(task_id)
                    .bind(t)
                    .bind(id)
                    .bind(direction.as_str())
                    .bind(name)
                    .bind(&payload_text)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                t
            }
        };
        let Some(t) = t else { return Ok(None) };
        self.announce_task(task_id).await;
        Ok(Some(Event {
            id: id.to_string(),
            name: name.to_string(),
            payload: payload.clone(),
            timestamp: t,
        }))
    }

    /// Replaces the payload of the client's event `t` of a task (a `run_task` whose secrets are
    /// no longer needed once it was answered).
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn rewrite_client_event(&self, task_id: &str, t: i64, payload: &Value) -> Result<()> {
        let text = serde_json::to_string(payload)?;
        let q = self
            .sql("UPDATE task_events SET payload = $1 WHERE task_id = $2 AND t = $3 AND direction = 'in'");
        with_pool!(self, pool => sqlx::query(&q).bind(&text).bind(task_id).bind(t).execute(pool).await?.rows_affected());
        Ok(())
    }

    /// Events of one direction newer than `after`, oldest first.
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn events_after(
        &self,
        task_id: &str,
        direction: Direction,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Event>> {
        let q = self.sql(
            "SELECT id, name, payload, t FROM task_events WHERE task_id = $1 AND direction = $2 AND t > $3 \
             ORDER BY t LIMIT $4",
        );
        let rows = with_pool!(self, pool => sqlx::query_as::<_, EventRow>(&q)
            .bind(task_id).bind(direction.as_str()).bind(after).bind(limit).fetch_all(pool).await?);
        Ok(rows.into_iter().map(EventRow::into_event).collect())
    }

    /// Records that the client has seen every event up to `t` (it polled with `event_t = t`).
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn ack_events(&self, task_id: &str, t: i64) -> Result<()> {
        let q = self.sql("UPDATE tasks SET acked_event_t = $1 WHERE id = $2 AND acked_event_t < $1");
        let n = with_pool!(self, pool => sqlx::query(&q).bind(t).bind(task_id).execute(pool).await?.rows_affected());
        if n > 0 {
            self.announce_task(task_id).await;
        }
        Ok(())
    }

    /// Cancels a waiting task at once, or asks a running task's worker to stop.
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %id))]
    pub async fn request_cancel(&self, owner: &str, id: &str) -> Result<CancelOutcome> {
        let now = now_ms();
        let q = self.sql(
            "UPDATE tasks SET status = 'cancelled', finished_at = $1, recording = COALESCE(recording, ''), \
             downloads = COALESCE(downloads, '') WHERE id = $2 AND owner = $3 AND status = 'waiting'",
        );
        let n = with_pool!(self, pool => sqlx::query(&q).bind(now).bind(id).bind(owner).execute(pool).await?.rows_affected());
        if n > 0 {
            self.announce_task(id).await;
            return Ok(CancelOutcome::CancelledNow);
        }
        let q = self.sql(
            "UPDATE tasks SET cancel_requested = TRUE WHERE id = $1 AND owner = $2 AND status = 'running'",
        );
        let n = with_pool!(self, pool => sqlx::query(&q).bind(id).bind(owner).execute(pool).await?.rows_affected());
        if n > 0 {
            self.announce_task(id).await;
            return Ok(CancelOutcome::Signalled);
        }
        Ok(match self.get_task(owner, id).await? {
            None => CancelOutcome::NotFound,
            // It moved between our statements (claimed just now): ask again.
            Some(t) if !t.status().is_final() => Box::pin(self.request_cancel(owner, id)).await?,
            Some(t) => CancelOutcome::AlreadyFinal(t.status()),
        })
    }

    /// Erases a final task's request, output, events and artifacts, keeping a tombstone.
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %id))]
    pub async fn erase_task_data(&self, owner: &str, id: &str) -> Result<EraseOutcome> {
        let Some(task) = self.get_task(owner, id).await? else {
            return Ok(EraseOutcome::NotFound);
        };
        if !task.status().is_final() {
            return Ok(EraseOutcome::NotFinal(task.status()));
        }
        let keys = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let keys: Vec<String> = sqlx::query_scalar(&self.sql("SELECT storage_key FROM artifacts WHERE task_id = $1"))
                .bind(id).fetch_all(&mut *tx).await?;
            sqlx::query(&self.sql("DELETE FROM artifacts WHERE task_id = $1")).bind(id).execute(&mut *tx).await?;
            sqlx::query(&self.sql("DELETE FROM task_events WHERE task_id = $1")).bind(id).execute(&mut *tx).await?;
            sqlx::query(&self.sql("DELETE FROM task_steps WHERE task_id = $1")).bind(id).execute(&mut *tx).await?;
            sqlx::query(&self.sql(
                "UPDATE tasks SET request = '{}', output = NULL, error = NULL, recording = '', downloads = '', \
                 data_deleted_at = $1 WHERE id = $2",
            )).bind(now_ms()).bind(id).execute(&mut *tx).await?;
            tx.commit().await?;
            keys
        });
        self.announce_task(id).await;
        Ok(EraseOutcome::Erased(keys))
    }
}
