//! The executor seam: what the pool hands a claimed task to, and what it gets back. The pool
//! owns the lease and the final write; an executor only runs the task and says how it ended.

use async_trait::async_trait;
use serde_json::Value;

use crate::context::TaskContext;

/// How a task ended, as its executor reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Success, with the task's output.
    Done { output: Value, credits_used: i64 },
    /// Failure, with a message for the user and any partial output.
    Failed {
        error: String,
        output: Option<Value>,
        credits_used: i64,
    },
    /// Stopped on request (or by shutdown/lease loss; the pool decides what to write).
    Stopped,
}

impl Outcome {
    /// A failure with nothing to show and nothing spent.
    pub(crate) fn failed(error: impl Into<String>) -> Self {
        Self::Failed {
            error: error.into(),
            output: None,
            credits_used: 0,
        }
    }
}

/// Runs one claimed task to an outcome. Must return promptly once the context's stop token
/// fires.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    async fn run(&self, ctx: &mut TaskContext) -> Outcome;
}
