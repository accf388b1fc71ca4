//! Route handlers, a module per resource.

pub mod artifacts;
pub mod live;
pub mod replay;
pub mod resources;
pub mod system;
pub mod task;
pub mod tunnel;
