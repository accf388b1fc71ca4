//! The dashboard's reads: a filtered, keyset-paged task list on the `(owner, created_at DESC,
//! id DESC)` index, per-task step totals, files, running tasks per worker, and the newest
//! waiting tasks (for the process-wide change feed). Every owner-facing read is scoped to it.

use std::collections::HashMap;

use crate::resources::FileRow;
use crate::{Backend, Result, Store, TaskRow, with_pool};

/// What the task list shows: every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// One status (`waiting`, `running`, `done`, `failed`, `cancelled`).
    pub status: Option<String>,
    /// Created at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Created before this time (ms).
    pub until_ms: Option<i64>,
    /// Case-insensitive text that the task text or start URL contains.
    pub text: Option<String>,
    /// Keyset cursor: only tasks strictly after `(created_at, id)` in newest-first order.
    pub after: Option<(i64, String)>,
}

/// Totals over a task's stored steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepTotals {
    pub steps: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

const TASK_COLUMNS: &str = "id, owner, kind, status, request, device, output, error, credits_used, created_at, \
     started_at, finished_at, attempt, max_attempts, worker_id, lease_expires_at, cancel_requested, \
     effects_started, last_event_t, acked_event_t, live_token, recording, downloads, data_deleted_at";

/// `LIKE` pattern matching `text` literally anywhere (`\` escapes).
fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

impl Store {
    fn sql_owned(&self, q: String) -> String {
        match self.backend {
            Backend::Postgres(_) => q,
            Backend::Sqlite(_) => q.replace('$', "?"),
        }
    }

    /// The owner's tasks matching `f`, newest first, at most `limit`. Walks the owner's index
    /// from the cursor, so page 1000 costs what page 1 does.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn dashboard_tasks(&self, owner: &str, f: &TaskFilter, limit: i64) -> Result<Vec<TaskRow>> {
        let pg = matches!(self.backend, Backend::Postgres(_));
        let ph = |i: usize| if pg { format!("${i}") } else { format!("?{i}") };
        let mut cond = vec![format!("owner = {}", ph(1))];
        let mut n = 1;
        let mut next = || {
            n += 1;
            n
        };
        let status_i = f.status.as_ref().map(|_| next());
        let since_i = f.since_ms.map(|_| next());
        let until_i = f.until_ms.map(|_| next());
        let text_i = f.text.as_ref().map(|_| next());
        let after_i = f.after.as_ref().map(|_| (next(), next()));
        let limit_i = next();
        if let Some(i) = status_i {
            cond.push(format!("status = {}", ph(i)));
        }
        if let Some(i) = since_i {
            cond.push(format!("created_at >= {}", ph(i)));
        }
        if let Some(i) = until_i {
            cond.push(format!("created_at < {}", ph(i)));
        }
        if let (Some(i), Some(t)) = (text_i, &f.text) {
            // The task text and start URL only (not the request's keys). The raw column is a
            // cheap prefilter that spares parsing most rows' JSON; it is skipped for text that
            // JSON escapes (`"`, `\`, control characters).
            let (like, task, url) = if pg {
                ("ILIKE", "(request::json->>'task')", "(request::json->>'url')")
            } else {
                (
                    "LIKE",
                    "json_extract(request, '$.task')",
                    "json_extract(request, '$.url')",
                )
            };
            let p = ph(i);
            let exact = format!("({task} {like} {p} ESCAPE '\\' OR {url} {like} {p} ESCAPE '\\')");
            if t.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
                cond.push(exact);
            } else {
                cond.push(format!("request {like} {p} ESCAPE '\\' AND {exact}"));
            }
        }
        if let Some((c, id)) = after_i {
            let (c, id) = (ph(c), ph(id));
            cond.push(format!("(created_at < {c} OR (created_at = {c} AND id < {id}))"));
        }
        let q = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE {} ORDER BY created_at DESC, id DESC LIMIT {}",
            cond.join(" AND "),
            ph(limit_i)
        );
        let pattern = f.text.as_deref().map(contains_pattern);
        with_pool!(self, pool => {
            let mut query = sqlx::query_as::<_, TaskRow>(&q).bind(owner);
            if let Some(s) = &f.status {
                query = query.bind(s);
            }
            if let Some(t) = f.since_ms {
                query = query.bind(t);
            }
            if let Some(t) = f.until_ms {
                query = query.bind(t);
            }
            if let Some(p) = &pattern {
                query = query.bind(p);
            }
            if let Some((c, id)) = &f.after {
                query = query.bind(*c).bind(id);
            }
            Ok(query.bind(limit).fetch_all(pool).await?)
        })
    }

    /// Step count and token sums of each of `task_ids` (absent ids have no steps).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn step_totals(&self, task_ids: &[String]) -> Result<HashMap<String, StepTotals>> {
        if task_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let marks: Vec<String> = (1..=task_ids.len()).map(|i| format!("${i}")).collect();
        let q = self.sql_owned(format!(
            "SELECT task_id, COUNT(*), CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) \
             FROM task_steps WHERE task_id IN ({}) GROUP BY task_id",
            marks.join(", ")
        ));
        let rows: Vec<(String, i64, i64, i64)> = with_pool!(self, pool => {
            let mut query = sqlx::query_as(&q);
            for id in task_ids {
                query = query.bind(id);
            }
            query.fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, steps, prompt_tokens, completion_tokens)| {
                (
                    id,
                    StepTotals {
                        steps,
                        prompt_tokens,
                        completion_tokens,
                    },
                )
            })
            .collect())
    }

    /// The owner's uploaded files, newest first.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn list_files(&self, owner: &str) -> Result<Vec<FileRow>> {
        let q = self.sql(
            "SELECT id, owner, name, purpose, size_bytes, storage_key, created_at FROM files \
             WHERE owner = $1 ORDER BY created_at DESC, id DESC",
        );
        Ok(with_pool!(self, pool => sqlx::query_as::<_, FileRow>(&q).bind(owner).fetch_all(pool).await?))
    }

    /// Running tasks and sessions per worker id, busiest first.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn running_per_worker(&self) -> Result<Vec<(String, i64)>> {
        let q = "SELECT COALESCE(worker_id, '?'), COUNT(*) FROM tasks WHERE status = 'running' \
                 GROUP BY worker_id ORDER BY COUNT(*) DESC";
        Ok(with_pool!(self, pool => sqlx::query_as::<_, (String, i64)>(q).fetch_all(pool).await?))
    }

    /// Ids of tasks still waiting that were created at or after `since_ms` (the queue index).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn waiting_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>> {
        let q = self.sql(
            "SELECT id, created_at FROM tasks WHERE status = 'waiting' AND created_at >= $1 \
             ORDER BY created_at LIMIT 500",
        );
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, (String, i64)>(&q).bind(since_ms).fetch_all(pool).await?),
        )
    }

    /// When each of a task's steps was stored (ms), in step order: the recording's markers.
    #[tracing::instrument(level = "debug", skip_all, fields(task.id = %task_id))]
    pub async fn step_times(&self, task_id: &str) -> Result<Vec<(i64, i64)>> {
        let q = self.sql("SELECT step, created_at FROM task_steps WHERE task_id = $1 ORDER BY step");
        Ok(with_pool!(self, pool => sqlx::query_as::<_, (i64, i64)>(&q).bind(task_id).fetch_all(pool).await?))
    }
}
