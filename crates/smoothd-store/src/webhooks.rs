//! Webhook deliveries. Each API key has a signing secret and an optional default URL. A task
//! that asked for a webhook gets one delivery row, written before the task itself, so a
//! process that stops at any point loses nothing: a delivery becomes due once its task is
//! final, and any process claims it with a lease (as workers claim tasks), fenced on the
//! attempt number. Every attempt is logged with its status and latency.

use smoothd_core::time::now_ms;

use crate::{Backend, Result, Store, with_pool};

/// An API key's webhook settings.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookKeyRow {
    /// Standard Webhooks secret, `whsec_<base64>`.
    pub secret: String,
    /// Default URL for the key's tasks, if set.
    pub url: Option<String>,
}

/// A delivery claimed for one attempt; `attempt` is the fence for [`Store::finish_attempt`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryClaim {
    pub id: String,
    pub task_id: String,
    pub owner: String,
    pub url: String,
    /// `final` (the task ended) or `step` (an agent step).
    pub kind: String,
    /// The step's ordinal (1 = first), for `step` deliveries.
    pub step: Option<i64>,
    /// The body sent, fixed at the first attempt (None before it).
    pub body: Option<String>,
    pub attempt: i64,
}

/// A delivery as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub url: String,
    pub kind: String,
    pub step: Option<i64>,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// One logged attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub delivery_id: String,
    pub attempt: i64,
    pub started_at: i64,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// What an attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// Try again at this time (epoch ms).
    RetryAt(i64),
    /// Out of time: no more attempts.
    GiveUp,
}

/// Everything logged about one attempt.
#[derive(Debug, Clone)]
pub struct AttemptLog<'a> {
    pub started_at: i64,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<&'a str>,
}

impl Store {
    /// The key's webhook settings, creating its secret (`fresh_secret`) on first use.
    pub async fn webhook_key(&self, owner: &str, fresh_secret: &str) -> Result<WebhookKeyRow> {
        let q = self.sql(
            "INSERT INTO webhook_keys (owner, secret, url, created_at) VALUES ($1, $2, NULL, $3) \
             ON CONFLICT (owner) DO NOTHING",
        );
        with_pool!(self, pool => sqlx::query(&q).bind(owner).bind(fresh_secret).bind(now_ms())
            .execute(pool).await.map(|r| r.rows_affected())?);
        let q = self.sql("SELECT secret, url FROM webhook_keys WHERE owner = $1");
        Ok(with_pool!(self, pool => sqlx::query_as(&q).bind(owner).fetch_one(pool).await?))
    }

    /// The key's default URL, without creating anything.
    pub async fn webhook_default_url(&self, owner: &str) -> Result<Option<String>> {
        let q = self.sql("SELECT url FROM webhook_keys WHERE owner = $1");
        let url: Option<Option<String>> =
            with_pool!(self, pool => sqlx::query_scalar(&q).bind(owner).fetch_optional(pool).await?);
        Ok(url.flatten())
    }

    /// Sets (or clears) the key's default URL.
    pub async fn set_webhook_url(
        &self,
        owner: &str,
        fresh_secret: &str,
        url: Option<&str>,
    ) -> Result<WebhookKeyRow> {
        self.webhook_key(owner, fresh_secret).await?;
        let q = self.sql("UPDATE webhook_keys SET url = $1 WHERE owner = $2");
        with_pool!(self, pool => sqlx::query(&q).bind(url).bind(owner).execute(pool).await.map(|r| r.rows_affected())?);
        self.webhook_key(owner, fresh_secret).await
    }

    /// Stores the final delivery of a task about to be inserted (so it exists before the task
    /// can end); `watch_steps` asks for a delivery per agent step too.
    pub async fn insert_delivery(
        &self,
        id: &str,
        task_id: &str,
        owner: &str,
        url: &str,
        watch_steps: bool,
    ) -> Result<()> {
        let now = now_ms();
        let q = self.sql(
            "INSERT INTO webhook_deliveries (id, task_id, owner, url, kind, watch_steps, status, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, 'final', $5, 'pending', $6, $6)",
        );
        with_pool!(self, pool => sqlx::query(&q).bind(id).bind(task_id).bind(owner).bind(url).bind(watch_steps).bind(now)
            .execute(pool).await.map(|r| r.rows_affected())?);
        Ok(())
    }

    /// Adds a `step` delivery for every step recorded since the last call, for tasks whose final
    /// delivery watches steps and is still pending. Each task's counter moves by compare-and-set
    /// in the same transaction as the inserts, so concurrent processes add each step once.
    pub async fn enqueue_step_deliveries(&self) -> Result<usize> {
        let q = "SELECT id, task_id, owner, url, steps_sent, latest FROM ( \
                   SELECT d.id, d.task_id, d.owner, d.url, d.steps_sent, \
                     (SELECT COUNT(*) FROM task_steps s WHERE s.task_id = d.task_id) AS latest \
                   FROM webhook_deliveries d \
                   WHERE d.kind = 'final' AND d.watch_steps AND d.status = 'pending') x \
                 WHERE latest > steps_sent";
        let due: Vec<(String, String, String, String, i64, i64)> =
            with_pool!(self, pool => sqlx::query_as(q).fetch_all(pool).await?);
        let mut added = 0;
        for (id, task_id, owner, url, sent, latest) in due {
            let now = now_ms();
            let n = with_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                let moved = sqlx::query(&self.sql(
                    "UPDATE webhook_deliveries SET steps_sent = $1 WHERE id = $2 AND steps_sent = $3",
                ))
                .bind(latest).bind(&id).bind(sent).execute(&mut *tx).await?.rows_affected();
                if moved == 1 {
                    for step in (sent + 1)..=latest {
                        sqlx::query(&self.sql(
                            "INSERT INTO webhook_deliveries (id, task_id, owner, url, kind, step, status, \
                             next_attempt_at, created_at) VALUES ($1, $2, $3, $4, 'step', $5, 'pending', $6, $6)",
                        ))
                        .bind(format!("msg_{}", smoothd_core::ids::random_token(24)))
                        .bind(&task_id).bind(&owner).bind(&url).bind(step).bind(now)
                        .execute(&mut *tx).await?;
                    }
                }
                tx.commit().await?;
                if moved == 1 { latest - sent } else { 0 }
            });
            added += usize::try_from(n).unwrap_or(0);
        }
        Ok(added)
    }

    /// Removes a delivery whose task was not inserted after all.
    pub async fn delete_delivery(&self, id: &str) -> Result<()> {
        let q = self.sql("DELETE FROM webhook_deliveries WHERE id = $1");
        with_pool!(self, pool => sqlx::query(&q).bind(id).execute(pool).await.map(|r| r.rows_affected())?);
        Ok(())
    }

    /// Claims one due delivery of a final task for `lease_ms`, counting the attempt.
    pub async fn claim_delivery(&self, lease_ms: i64) -> Result<Option<DeliveryClaim>> {
        let now = now_ms();
        let due = "d.status = 'pending' AND d.next_attempt_at <= $1 \
                   AND (d.lease_expires_at IS NULL OR d.lease_expires_at < $1) \
                   AND (d.kind = 'step' OR t.status IN ('done', 'failed', 'cancelled'))";
        let claim: Option<DeliveryClaim> = match &self.backend {
            Backend::Postgres(pool) => {
                let q = format!(
                    "WITH c AS (SELECT d.id FROM webhook_deliveries d JOIN tasks t ON t.id = d.task_id \
                       WHERE {due} ORDER BY d.next_attempt_at FOR UPDATE OF d SKIP LOCKED LIMIT 1) \
                     UPDATE webhook_deliveries w SET attempts = w.attempts + 1, lease_expires_at = $2 \
                     FROM c WHERE w.id = c.id \
                     RETURNING w.id, w.task_id, w.owner, w.url, w.kind, w.step, w.body, w.attempts AS attempt"
                );
                sqlx::query_as(&q)
                    .bind(now)
                    .bind(now + lease_ms)
                    .fetch_optional(pool)
                    .await?
            }
            Backend::Sqlite(pool) => {
                // One statement: SQLite's single writer makes it the atomic claim.
                let q = format!(
                    "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_expires_at = $2 \
                     WHERE id = (SELECT d.id FROM webhook_deliveries d JOIN tasks t ON t.id = d.task_id \
                       WHERE {due} ORDER BY d.next_attempt_at LIMIT 1) \
                     RETURNING id, task_id, owner, url, kind, step, body, attempts AS attempt"
                )
                .replace('$', "?");
                sqlx::query_as(&q)
                    .bind(now)
                    .bind(now + lease_ms)
                    .fetch_optional(pool)
                    .await?
            }
        };
        Ok(claim)
    }

    /// Fixes the body of a delivery at its first attempt; false if the lease was lost.
    pub async fn set_delivery_body(&self, id: &str, attempt: i64, body: &str) -> Result<bool> {
        let q = self.sql(
            "UPDATE webhook_deliveries SET body = $1 WHERE id = $2 AND attempts = $3 AND status = 'pending'",
        );
        let n = with_pool!(self, pool => sqlx::query(&q).bind(body).bind(id).bind(attempt)
            .execute(pool).await?.rows_affected());
        Ok(n > 0)
    }

    /// Logs an attempt and applies its outcome; false if the lease was lost (another process
    /// has claimed the delivery since), in which case only the log is written.
    pub async fn finish_attempt(
        &self,
        id: &str,
        attempt: i64,
        log: &AttemptLog<'_>,
        outcome: AttemptOutcome,
    ) -> Result<bool> {
        let q = self.sql(
            "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, status_code, latency_ms, error) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (delivery_id, attempt) DO NOTHING",
        );
        with_pool!(self, pool => sqlx::query(&q).bind(id).bind(attempt).bind(log.started_at)
            .bind(log.status_code).bind(log.latency_ms).bind(log.error)
            .execute(pool).await.map(|r| r.rows_affected())?);
        let (status, next, delivered) = match outcome {
            AttemptOutcome::Delivered => ("delivered", 0, Some(now_ms())),
            AttemptOutcome::RetryAt(at) => ("pending", at, None),
            AttemptOutcome::GiveUp => ("failed", 0, None),
        };
        let q = self.sql(
            "UPDATE webhook_deliveries SET status = $1, next_attempt_at = CASE WHEN $2 > 0 THEN $2 ELSE next_attempt_at END, \
             delivered_at = $3, lease_expires_at = NULL WHERE id = $4 AND attempts = $5 AND status = 'pending'",
        );
        let n = with_pool!(self, pool => sqlx::query(&q).bind(status).bind(next).bind(delivered).bind(id).bind(attempt)
            .execute(pool).await?.rows_affected());
        Ok(n > 0)
    }

    /// The finish time of a delivery's task (epoch ms), for the retry window.
    pub async fn task_finished_at(&self, task_id: &str) -> Result<Option<i64>> {
        let q = self.sql("SELECT finished_at FROM tasks WHERE id = $1");
        let v: Option<Option<i64>> =
            with_pool!(self, pool => sqlx::query_scalar(&q).bind(task_id).fetch_optional(pool).await?);
        Ok(v.flatten())
    }

    /// A task's deliveries, oldest first, with their attempts in order.
    pub async fn deliveries(&self, task_id: &str) -> Result<Vec<(DeliveryRow, Vec<AttemptRow>)>> {
        let q = self.sql(
            "SELECT id, url, kind, step, status, attempts, next_attempt_at, created_at, delivered_at \
             FROM webhook_deliveries WHERE task_id = $1 ORDER BY created_at, kind DESC, step, id",
        );
        let rows: Vec<DeliveryRow> =
            with_pool!(self, pool => sqlx::query_as(&q).bind(task_id).fetch_all(pool).await?);
        let q = self.sql(
            "SELECT a.delivery_id, a.attempt, a.started_at, a.status_code, a.latency_ms, a.error \
             FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id \
             WHERE d.task_id = $1 ORDER BY a.delivery_id, a.attempt",
        );
        let attempts: Vec<AttemptRow> =
            with_pool!(self, pool => sqlx::query_as(&q).bind(task_id).fetch_all(pool).await?);
        Ok(rows
            .into_iter()
            .map(|d| {
                let mine = attempts
                    .iter()
                    .filter(|a| a.delivery_id == d.id)
                    .cloned()
                    .collect();
                (d, mine)
            })
            .collect())
    }
}
