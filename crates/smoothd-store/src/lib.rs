//! The durable store: tasks, events, the queue, keys, profiles, files, extensions and the
//! artifact index, over PostgreSQL or SQLite chosen by URL scheme. The same SQL runs on both
//! where it can (written with `$N` placeholders, rewritten to `?N` for SQLite); where the
//! dialects differ (claims, event timestamps) each backend has its own statement.

pub mod blobs;
mod dashboard;
mod keys;
mod media;
mod queue;
mod replay;
mod resources;
pub mod signals;
mod stats;
mod steps;
mod tasks;
mod webhooks;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use tokio_util::sync::CancellationToken;

pub use blobs::{Blobs, S3Config};
pub use dashboard::{StepTotals, TaskFilter};
pub use keys::ApiKeyRow;
pub use queue::{Claim, Heartbeat, Reaped};
pub use replay::{NewReplayPath, ReplayPathRow};
pub use resources::{ArtifactRow, ExtensionRow, FileRow, ProfileRow};
pub use signals::Signals;
pub use tasks::{CancelOutcome, EraseOutcome, EventFence, NewTask, TaskRow};
pub use webhooks::{AttemptLog, AttemptOutcome, AttemptRow, DeliveryClaim, DeliveryRow, WebhookKeyRow};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database URL is not one we can use.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// A row already exists with that key.
    #[error("already exists")]
    Conflict,
    /// A stored JSON column did not parse.
    #[error("corrupt stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Artifact bytes could not be read or written.
    #[error("artifact storage: {0}")]
    Blob(#[from] object_store::Error),
    /// The database did not answer within the caller's deadline.
    #[error("the database did not answer in time")]
    TimedOut,
}

impl StoreError {
    /// Whether the database could not be reached or dropped the connection (a restart, a
    /// failover, the network): worth retrying shortly, and a 503 for clients. sqlx replaces
    /// dead pooled connections on the next acquire, so a retry reconnects.
    pub fn is_unavailable(&self) -> bool {
        let e = match self {
            StoreError::TimedOut => return true,
            StoreError::Database(e) => e,
            _ => return false,
        };
        match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
            // 08xxx: connection exceptions; 57P01-57P03: shutting down, crashed, starting up;
            // 53300: too many connections.
            sqlx::Error::Database(d) => d.code().is_some_and(|c| {
                c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
            }),
            _ => false,
        }
    }

    /// Whether artifact bytes were missing (deleted) rather than unreadable.
    pub fn is_blob_not_found(&self) -> bool {
        matches!(self, StoreError::Blob(object_store::Error::NotFound { .. }))
    }
}

/// Results of store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database we talk to.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// The store handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) backend: Backend,
    signals: Signals,
    /// Dropping every clone of the store stops the PostgreSQL listener.
    _listener: std::sync::Arc<ListenerGuard>,
}

#[derive(Debug, Default)]
struct ListenerGuard(CancellationToken);

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Runs `$body` with `$pool` bound to whichever pool the store has; the body is compiled once
/// per backend, so it must only use SQL that both accept (see [`Store::sql`]).
macro_rules! with_pool {
    ($self:expr, $pool:ident => $body:expr) => {
        match &$self.backend {
            $crate::Backend::Postgres($pool) => $body,
            $crate::Backend::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Connection settings beyond the URL.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Largest pool size.
    pub max_connections: u32,
    /// How long to wait for a connection before failing a request.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

impl Store {
    /// Connects, applies migrations and, on PostgreSQL, starts listening for notifications.
    pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Self> {
        let signals = Signals::default();
        let guard = ListenerGuard::default();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let connect = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(connect)
                .await?;
            sqlx::migrate!("../../migrations/postgres").run(&pool).await?;
            signals::spawn_pg_listener(pool.clone(), signals.clone(), guard.0.clone()).await?;
            Backend::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(opts.max_connections.max(2))
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(connect)
                .await?;
            sqlx::migrate!("../../migrations/sqlite").run(&pool).await?;
            Backend::Sqlite(pool)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        Ok(Self {
            backend,
            signals,
            _listener: std::sync::Arc::new(guard),
        })
    }

    /// `postgres` or `sqlite`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }

    /// Wake-ups for queue and task changes (in-process, fed by NOTIFY on PostgreSQL).
    pub fn signals(&self) -> &Signals {
        &self.signals
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await.map(|r| r.rows_affected())?;
        });
        Ok(())
    }

    /// Stops the listener and closes the pools.
    pub async fn close(&self) {
        self._listener.0.cancel();
        with_pool!(self, pool => pool.close().await)
    }

    /// Rewrites `$N` placeholders to `?N` for SQLite (which reads `$N` as a named parameter
    /// numbered by first appearance, not by N).
    pub(crate) fn sql(&self, q: &'static str) -> Cow<'static, str> {
        match self.backend {
            Backend::Postgres(_) => Cow::Borrowed(q),
            Backend::Sqlite(_) => Cow::Owned(q.replace('$', "?")),
        }
    }

    /// Tells every process that a task changed (events, status, cancel).
    pub(crate) async fn announce_task(&self, task_id: &str) {
        self.signals.notify_task(task_id);
        if let Backend::Postgres(pool) = &self.backend {
            let payload = format!("t:{task_id}");
            if let Err(e) = sqlx::query("SELECT pg_notify('smoothd', $1)")
                .bind(payload)
                .execute(pool)
                .await
            {
                tracing::warn!(error = %e, "pg_notify failed; other processes fall back to polling");
            }
        }
    }

    /// Tells every worker that there is new work.
    pub(crate) async fn announce_queue(&self) {
        self.signals.notify_queue();
        if let Backend::Postgres(pool) = &self.backend
            && let Err(e) = sqlx::query("SELECT pg_notify('smoothd', 'q')")
                .execute(pool)
                .await
        {
            tracing::warn!(error = %e, "pg_notify failed; workers fall back to polling");
        }
    }
}
