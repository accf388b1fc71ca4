//! Replay paths: per API key and cache key, the action path a successful run recorded (JSON),
//! with the task it came from. Every query is scoped to the owning key, so another key can
//! neither read, use nor delete a path.

use serde_json::Value;
use smoothd_core::time::now_ms;

use crate::{Result, Store, with_pool};

/// A stored path.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReplayPathRow {
    pub cache_key: String,
    pub task: String,
    pub url: Option<String>,
    /// Recorded steps in the path.
    pub steps: i64,
    /// The path document, as the agent wrote it.
    pub path: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Runs that replayed the path to its end.
    pub replays: i64,
}

impl ReplayPathRow {
    /// The path document; `Err` when the stored text is not JSON.
    pub fn path_json(&self) -> Result<Value> {
        Ok(serde_json::from_str(&self.path)?)
    }
}

/// What [`Store::save_replay_path`] stores.
#[derive(Debug, Clone)]
pub struct NewReplayPath<'a> {
    pub owner: &'a str,
    pub cache_key: &'a str,
    pub task: &'a str,
    pub url: Option<&'a str>,
    pub steps: i64,
    pub path: &'a Value,
}

impl Store {
    /// The owner's path under `cache_key`, if there is one.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn replay_path(&self, owner: &str, cache_key: &str) -> Result<Option<ReplayPathRow>> {
        let q = self.sql(
            "SELECT cache_key, task, url, steps, path, created_at, updated_at, replays \
             FROM replay_paths WHERE owner = $1 AND cache_key = $2",
        );
        let row = with_pool!(self, pool => sqlx::query_as::<_, ReplayPathRow>(&q)
            .bind(owner).bind(cache_key).fetch_optional(pool).await?);
        Ok(row)
    }

    /// The owner's paths, most recently updated first.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn replay_paths(&self, owner: &str) -> Result<Vec<ReplayPathRow>> {
        let q = self.sql(
            "SELECT cache_key, task, url, steps, path, created_at, updated_at, replays \
             FROM replay_paths WHERE owner = $1 ORDER BY updated_at DESC, cache_key",
        );
        let rows = with_pool!(self, pool => sqlx::query_as::<_, ReplayPathRow>(&q)
            .bind(owner).fetch_all(pool).await?);
        Ok(rows)
    }

    /// Stores a path, replacing the one under the same owner and key (keeping its creation
    /// time and replay count).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn save_replay_path(&self, p: &NewReplayPath<'_>) -> Result<()> {
        let text = serde_json::to_string(p.path)?;
        let now = now_ms();
        let q = self.sql(
            "INSERT INTO replay_paths (owner, cache_key, task, url, steps, path, created_at, updated_at, replays) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 0) \
             ON CONFLICT (owner, cache_key) DO UPDATE SET task = excluded.task, url = excluded.url, \
             steps = excluded.steps, path = excluded.path, updated_at = excluded.updated_at",
        );
        with_pool!(self, pool => sqlx::query(&q)
            .bind(p.owner).bind(p.cache_key).bind(p.task).bind(p.url).bind(p.steps).bind(&text).bind(now)
            .execute(pool).await?.rows_affected());
        Ok(())
    }

    /// Counts one run that replayed the path to its end.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn count_replay(&self, owner: &str, cache_key: &str) -> Result<()> {
        let q = self.sql("UPDATE replay_paths SET replays = replays + 1 WHERE owner = $1 AND cache_key = $2");
        with_pool!(self, pool => sqlx::query(&q).bind(owner).bind(cache_key).execute(pool).await?.rows_affected());
        Ok(())
    }

    /// Deletes the owner's path; false when there was none.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn delete_replay_path(&self, owner: &str, cache_key: &str) -> Result<bool> {
        let q = self.sql("DELETE FROM replay_paths WHERE owner = $1 AND cache_key = $2");
        let n = with_pool!(self, pool => sqlx::query(&q)
            .bind(owner).bind(cache_key).execute(pool).await?.rows_affected());
        Ok(n > 0)
    }
}
