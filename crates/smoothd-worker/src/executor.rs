//! The executor seam: what the pool hands a claimed task to, and what it gets back. The pool
//! owns the lease and the final write; an executor only runs the task and says how it ended.

use async_trait::async_trait;
use smoothd_core::Final;

use crate::context::TaskContext;

/// Runs one claimed task. Must return promptly once the context's stop token fires.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// How the task ended, or `None` when it was stopped (cancel, shutdown or a lost lease:
    /// the pool knows which, and decides what to write).
    async fn run(&self, ctx: &mut TaskContext) -> Option<Final>;
}
