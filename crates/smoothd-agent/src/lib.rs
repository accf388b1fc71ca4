//! smoothd's agent: an LLM-directed observe-act loop over a browser session.
//!
//! - [`llm`]: the OpenAI-compatible client (async-openai), with counted retries and credits;
//! - [`tools`]: the tool definitions offered to the model and their parsing;
//! - [`prompt`]: the system rules, the task message, the page view, secrets;
//! - [`replay`]: recorded action paths (`experimental_features.replay`), played by the loop;
//! - [`run`]: the loop itself, talking to the worker through [`Host`], and to the page through
//!   `smoothd_browser::Driver` (observe → `PageView`, act(`Action`) → `ActionResult`).
//!
//! The contract with the model is `docs/agent-protocol.md`.

pub mod llm;
pub mod prompt;
pub mod replay;
pub mod run;
pub mod tools;

pub use llm::{Llm, LlmConfig, LlmError, Price, Usage};
pub use prompt::Secret;
pub use replay::{PathOutcome, Plan, ReplayPath};
pub use run::{Agent, AgentConfig, End, Finish, Host, Job, Run, ToolAnswer, Vision};
pub use tools::CustomTool;
