//! The executor this build ships: a session runs its command loop (`session.rs`), a task runs
//! the agent in a fresh browser (`agent.rs`), and a task with no model configured fails at
//! once with the reason.

use async_trait::async_trait;
use smoothd_core::Final;

use crate::agent;
use crate::context::TaskContext;
use crate::executor::Executor;
use crate::services::Services;
use crate::session::{self, SessionConfig};

/// Sessions and agent tasks in a real browser.
#[derive(Clone)]
pub struct BasicExecutor {
    /// What every task shares: agent, browsers, blocker, blobs, media.
    pub services: Services,
    /// Session timings.
    pub sessions: SessionConfig,
}

#[async_trait]
impl Executor for BasicExecutor {
    async fn run(&self, ctx: &mut TaskContext) -> Option<Final> {
        if ctx.spec.is_session() {
            return session::run(&self.services, &self.sessions, ctx).await;
        }
        match self.services.agent_for(ctx) {
            Ok(agent) => agent::run_task(&self.services, ctx, &agent).await,
            Err(why) => Some(Final::failed(why)),
        }
    }
}
