//! Aggregates for `/metrics`: cheap scans a scrape can afford (the status count reads the
//! `tasks_queue` index; the artifact sum reads one narrow table).

use crate::{Result, Store, with_pool};

impl Store {
    /// Task count per status.
    pub async fn task_counts(&self) -> Result<Vec<(String, i64)>> {
        let q = "SELECT status, COUNT(*) FROM tasks GROUP BY status";
        Ok(with_pool!(self, pool => sqlx::query_as(q).fetch_all(pool).await?))
    }

    /// Stored artifact bytes per artifact kind.
    pub async fn artifact_bytes(&self) -> Result<Vec<(String, i64)>> {
        // SUM of BIGINT is NUMERIC on PostgreSQL: cast back so both backends read an i64.
        let q = "SELECT kind, CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM artifacts GROUP BY kind";
        Ok(with_pool!(self, pool => sqlx::query_as(q).fetch_all(pool).await?))
    }
}
