//! Agent step traces: one JSON document per step, in step order, with its token counts
//! beside it as columns for cheap totals.

use serde_json::Value;
use smoothd_core::StepTrace;
use smoothd_core::time::now_ms;

use crate::{Result, Store, with_pool};

impl Store {
    /// Stores one step's trace if `attempt` still holds the running task (a lost worker's late
    /// step is dropped). A step number written twice keeps the first.
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn record_step(&self, task_id: &str, attempt: i64, trace: &StepTrace) -> Result<bool> {
        let text = serde_json::to_string(trace)?;
        let step = i64::from(trace.step);
        let (prompt, completion) = trace.cost.as_ref().map_or((0, 0), |c| {
            (
                i64::try_from(c.prompt_tokens).unwrap_or(i64::MAX),
                i64::try_from(c.completion_tokens).unwrap_or(i64::MAX),
            )
        });
        let q = self.sql(
            "INSERT INTO task_steps (task_id, step, created_at, data, prompt_tokens, completion_tokens) \
             SELECT $1, $2, $3, $4, $6, $7 WHERE EXISTS \
               (SELECT 1 FROM tasks WHERE id = $1 AND status = 'running' AND attempt = $5) \
             ON CONFLICT DO NOTHING",
        );
        let n = with_pool!(self, pool => sqlx::query(&q)
            .bind(task_id).bind(step).bind(now_ms()).bind(&text).bind(attempt)
            .bind(prompt).bind(completion)
            .execute(pool).await?.rows_affected());
        Ok(n > 0)
    }

    /// A task's step traces, oldest first.
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn steps(&self, task_id: &str) -> Result<Vec<Value>> {
        let q = self.sql("SELECT data FROM task_steps WHERE task_id = $1 ORDER BY step");
        let rows: Vec<String> =
            with_pool!(self, pool => sqlx::query_scalar(&q).bind(task_id).fetch_all(pool).await?);
        Ok(rows.iter().filter_map(|t| serde_json::from_str(t).ok()).collect())
    }

    /// The number of steps stored for a task (a session's next `run_task` continues from it).
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn step_count(&self, task_id: &str) -> Result<i64> {
        let q = self.sql("SELECT COALESCE(MAX(step), 0) FROM task_steps WHERE task_id = $1");
        let n: i64 = with_pool!(self, pool => sqlx::query_scalar(&q).bind(task_id).fetch_one(pool).await?);
        Ok(n)
    }
}
