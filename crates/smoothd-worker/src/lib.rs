//! The worker pool: claims tasks, holds their leases by heartbeat, runs each through an
//! [`Executor`], relays cancellation, and writes a true final state fenced on the attempt.
//! What runs a task (a browser session, the agent) plugs in behind the `Executor` trait.

mod agent;
mod context;
mod executor;
mod live;
mod media;
mod pool;
mod setup;
mod tunnel;

pub use context::{LeaseLost, StopReason, TaskContext};
pub use executor::{BasicExecutor, Executor, Outcome};
pub use live::LiveServer;
pub use media::{MediaConfig, MediaServices, TaskMedia};
pub use pool::{WorkerConfig, WorkerPool, reap_loop};
pub use setup::Prepared;
pub use smoothd_browser::{Blocker, BrowserPool, LaunchConfig, MediaOptions, find_chromium};
