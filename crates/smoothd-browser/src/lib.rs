//! Chromium over CDP: launching and pooling browser processes, an isolated browser context
//! per task with device emulation and stealth, navigation and JavaScript evaluation, and the
//! media a person sees (screencast, viewer input, downloads), and the agent's page view and
//! actions ([`Driver`]). No LLM, no database: the worker and the agent drive this crate, and no
//! chromiumoxide type leaves it.

pub mod adblock;
mod binary;
pub mod certs;
mod contexts;
pub mod driver;
mod emulation;
mod error;
mod launch;
pub mod media;
mod network;
mod pool;
mod session;
pub mod storage;

pub use adblock::Blocker;
pub use binary::find_chromium;
pub use certs::ClientCertificate;
pub use driver::{
    ActError, Action, ActionResult, Challenge, ChallengeKind, Driver, FrameError, PageShape, PageView,
    Settle, Target,
};
pub use error::BrowserError;
pub use launch::{BrowserProcess, LaunchConfig};
pub use media::{Frame, MediaOptions, PageMedia, ViewerInput};
pub use pool::BrowserPool;
pub use session::{BrowserSession, SessionOptions, SpareKey, Tab};
pub use tempfile::TempDir;
