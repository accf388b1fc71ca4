//! The worker pool: claims tasks, holds their leases by heartbeat, runs each through an
//! [`Executor`], relays cancellation, and writes a true final state fenced on the attempt.
//!
//! One task's path, top to bottom: `pool.rs` claims it and watches its lease, hands it to
//! the [`Executor`] (`executor.rs`, the seam); [`BasicExecutor`] (`basic.rs`) runs a session
//! (`session.rs`, with commands in `actions.rs`) or the agent (`agent.rs`) in a browser from
//! `setup.rs` drawing on the process's [`Services`]; the pool then writes the final state.

mod actions;
mod agent;
mod basic;
mod context;
mod executor;
mod live;
mod media;
mod pool;
mod replay;
mod services;
mod session;
mod setup;
mod tunnel;

pub use basic::BasicExecutor;
pub use context::{LeaseLost, StopReason, TaskContext};
pub use executor::Executor;
pub use live::LiveServer;
pub use media::{MediaConfig, MediaServices, TaskMedia};
pub use pool::{WorkerConfig, WorkerPool, reap_loop};
pub use services::Services;
pub use session::SessionConfig;
pub use setup::Prepared;
pub use smoothd_browser::{Blocker, BrowserPool, LaunchConfig, MediaOptions, find_chromium};
