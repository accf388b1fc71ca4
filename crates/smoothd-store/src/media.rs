//! What the store keeps for the live view, recordings and downloads: the shared signing
//! secret, where each running task's live stream is served, the artifacts a task produced,
//! and their retention. A task's `recording` / `downloads` columns hold an artifact id, or
//! `""` when there is none; they are only written by the attempt that holds the task.

use smoothd_core::time::now_ms;

use crate::{ArtifactRow, Result, Store, with_pool};

const ARTIFACT_COLUMNS: &str =
    "id, owner, task_id, kind, name, content_type, size_bytes, storage_key, created_at";

impl Store {
    /// The secret named `name`, created at random by the first process that asks, so every
    /// process sharing this database agrees on it without configuration.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn shared_secret(&self, name: &str) -> Result<String> {
        let fresh = smoothd_core::ids::random_token(48);
        let q = self.sql(
            "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        );
        with_pool!(self, pool => sqlx::query(&q).bind(name).bind(&fresh).bind(now_ms())
            .execute(pool).await.map(|r| r.rows_affected())?);
        let q = self.sql("SELECT value FROM server_secrets WHERE name = $1");
        Ok(with_pool!(self, pool => sqlx::query_scalar(&q).bind(name).fetch_one(pool).await?))
    }

    /// Records that `attempt` of a running task serves its live stream at `addr`.
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn set_live_stream(&self, task_id: &str, attempt: i64, addr: &str) -> Result<()> {
        let q = self.sql(
            "INSERT INTO live_streams (task_id, attempt, addr, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (task_id) DO UPDATE SET attempt = excluded.attempt, addr = excluded.addr, \
             updated_at = excluded.updated_at",
        );
        with_pool!(self, pool => sqlx::query(&q).bind(task_id).bind(attempt).bind(addr).bind(now_ms())
            .execute(pool).await.map(|r| r.rows_affected())?);
        Ok(())
    }

    /// Forgets the live stream of `attempt` (a later attempt's entry stays).
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn clear_live_stream(&self, task_id: &str, attempt: i64) -> Result<()> {
        let q = self.sql("DELETE FROM live_streams WHERE task_id = $1 AND attempt = $2");
        with_pool!(self, pool => sqlx::query(&q).bind(task_id).bind(attempt)
            .execute(pool).await.map(|r| r.rows_affected())?);
        Ok(())
    }

    /// Where the task's live stream is served, while its worker serves one.
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn live_stream(&self, task_id: &str) -> Result<Option<String>> {
        let q = self.sql("SELECT addr FROM live_streams WHERE task_id = $1");
        Ok(with_pool!(self, pool => sqlx::query_scalar(&q).bind(task_id).fetch_optional(pool).await?))
    }

    /// Sets the task's recording and/or downloads (an artifact id, or `""` for none) while
    /// `attempt` holds it; `None` leaves a column as it is. False if the lease was lost.
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn set_task_media(
        &self,
        task_id: &str,
        attempt: i64,
        recording: Option<&str>,
        downloads: Option<&str>,
    ) -> Result<bool> {
        let q = self.sql(
            "UPDATE tasks SET recording = COALESCE($3, recording), downloads = COALESCE($4, downloads) \
             WHERE id = $1 AND attempt = $2 AND status = 'running'",
        );
        let n = with_pool!(self, pool => sqlx::query(&q).bind(task_id).bind(attempt).bind(recording).bind(downloads)
            .execute(pool).await.map(|r| r.rows_affected())?);
        Ok(n > 0)
    }

    /// An artifact by id, whoever owns it (signed URLs carry their own authorization).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn get_artifact(&self, id: &str) -> Result<Option<ArtifactRow>> {
        let q = format!("SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE id = $1");
        let q = match self.backend {
            crate::Backend::Postgres(_) => q,
            crate::Backend::Sqlite(_) => q.replace('$', "?"),
        };
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, ArtifactRow>(&q).bind(id).fetch_optional(pool).await?),
        )
    }

    /// Deletes task artifacts created before `before_ms` whose task has ended: the bytes
    /// first, then the index entry (pointing the task at "no recording/downloads"). An artifact
    /// whose bytes cannot be deleted now (storage unreachable) keeps its entry and is tried
    /// again on the next pass, so no object is orphaned. Several processes may reap at once:
    /// both steps are idempotent. Returns the storage keys deleted.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn reap_artifacts(&self, blobs: &crate::Blobs, before_ms: i64) -> Result<Vec<String>> {
        let q = self.sql(
            "SELECT a.id, a.storage_key FROM artifacts a JOIN tasks t ON t.id = a.task_id \
             WHERE a.created_at < $1 AND t.status IN ('done', 'failed', 'cancelled') \
             ORDER BY a.created_at LIMIT 500",
        );
        let rows: Vec<(String, String)> =
            with_pool!(self, pool => sqlx::query_as(&q).bind(before_ms).fetch_all(pool).await?);
        let mut deleted = Vec::with_capacity(rows.len());
        for (id, key) in rows {
            if let Err(e) = blobs.delete(&key).await {
                tracing::warn!(error = %e, key, "cannot delete an expired artifact's bytes; will retry");
                continue;
            }
            self.forget_artifact(&id).await?;
            deleted.push(key);
        }
        Ok(deleted)
    }

    /// Removes an artifact's index entry and the task's reference to it.
    async fn forget_artifact(&self, id: &str) -> Result<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(&self.sql("DELETE FROM artifacts WHERE id = $1")).bind(id).execute(&mut *tx).await?;
            sqlx::query(&self.sql(
                "UPDATE tasks SET recording = CASE WHEN recording = $1 THEN '' ELSE recording END, \
                 downloads = CASE WHEN downloads = $1 THEN '' ELSE downloads END \
                 WHERE recording = $1 OR downloads = $1",
            ))
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Number and total size of stored task artifacts (for metrics).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn artifact_usage(&self) -> Result<(i64, i64)> {
        let q = "SELECT COUNT(*), CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM artifacts";
        Ok(with_pool!(self, pool => sqlx::query_as(q).fetch_one(pool).await?))
    }
}
