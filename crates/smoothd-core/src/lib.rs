//! Domain rules shared by the API and the workers, with no I/O: identifiers, task status
//! transitions, request validation, events and their timestamps, devices, URL patterns
//! and one-time codes.

pub mod device;
pub mod event;
pub mod ids;
pub mod replay;
pub mod request;
pub mod run_task;
pub mod status;
pub mod step;
pub mod time;
pub mod totp;
pub mod urlpattern;
pub mod validation;

pub use device::Device;
pub use event::{Direction, Event};
pub use request::{TaskSpec, ValidationError};
pub use run_task::{RunTaskError, RunTaskInput};
pub use status::{Final, TaskStatus};
pub use step::{ActionTrace, StepCost, StepSource, StepTrace};
pub use totp::Totp;
