//! Domain rules shared by the API and the workers, with no I/O: identifiers, task status
//! transitions, request validation, events and their timestamps, devices and URL patterns.

pub mod device;
pub mod event;
pub mod ids;
pub mod replay;
pub mod request;
pub mod run_task;
pub mod status;
pub mod step;
pub mod time;
pub mod urlpattern;

pub use device::Device;
pub use event::{Direction, Event};
pub use request::{TaskSpec, ValidationError};
pub use run_task::{RunTaskError, RunTaskInput};
pub use status::{Final, TaskStatus};
pub use step::{ActionTrace, StepCost, StepSource, StepTrace};
