//! Warm browsers. Tasks share a long-lived Chromium and each gets a fresh browser context in
//! it, so a task does not pay a launch. The shared browser is one we start, or, with
//! `browser_ws`, one someone else runs that we connect to. A dead browser (a crashed process,
//! a lost connection) is noticed on the next acquire (or by the session that hit it) and
//! replaced: relaunched, or reconnected.
//!
//! Browsers we start are shared by the tasks of one device identity only (desktop presets in
//! one, phones in another, launched on first use): a browser's own user agent is what its
//! shared and service workers say, whatever a page's override (see [`crate::contexts`]). A
//! remote browser serves every device, and its phone tasks' shared and service workers keep
//! its own user agent.

use std::sync::Arc;
use std::time::Duration;

use smoothd_core::Device;
use tokio::sync::Mutex;

use crate::emulation;
use crate::error::BrowserError;
use crate::launch::{BrowserProcess, LaunchConfig, shown_endpoint};

/// Where the shared browser comes from.
#[derive(Debug)]
enum Source {
    /// Chromium we start (and dedicated processes for profiles and extensions).
    Launch(LaunchConfig),
    /// A DevTools endpoint of a browser someone else runs.
    Remote { endpoint: String, timeout: Duration },
}

/// A pool of warm browsers.
#[derive(Debug)]
pub struct BrowserPool {
    source: Source,
    /// The shared browser of each device identity (see [`emulation::identity`]), each behind
    /// a lock of its own: launching a phone's browser keeps no desktop task waiting.
    shared: [(Device, Mutex<Option<Arc<BrowserProcess>>>); 2],
}

fn slots() -> [(Device, Mutex<Option<Arc<BrowserProcess>>>); 2] {
    [
        (Device::Desktop, Mutex::new(None)),
        (Device::Mobile, Mutex::new(None)),
    ]
}

impl BrowserPool {
    /// A pool that launches browsers with `config`.
    pub fn new(config: LaunchConfig) -> Self {
        Self {
            source: Source::Launch(config),
            shared: slots(),
        }
    }

    /// A pool whose shared browser is the one at `endpoint` (`ws://...` or `http://host:port`).
    pub fn remote(endpoint: String) -> Self {
        Self {
            source: Source::Remote {
                endpoint,
                timeout: Duration::from_secs(20),
            },
            shared: slots(),
        }
    }

    /// How this pool launches browsers (dedicated processes use it too); None when the pool
    /// uses a remote browser and launches nothing.
    pub fn config(&self) -> Option<&LaunchConfig> {
        match &self.source {
            Source::Launch(c) => Some(c),
            Source::Remote { .. } => None,
        }
    }

    /// The remote endpoint (credentials hidden), when the pool uses one.
    pub fn remote_endpoint(&self) -> Option<String> {
        match &self.source {
            Source::Launch(_) => None,
            Source::Remote { endpoint, .. } => Some(shown_endpoint(endpoint)),
        }
    }

    /// Starts (or connects to) the desktop shared browser now, so the first task does not wait.
    pub async fn warm(&self) -> Result<(), BrowserError> {
        self.shared().await.map(|_| ())
    }

    /// The desktop shared browser (see [`BrowserPool::shared_for`]).
    pub async fn shared(&self) -> Result<Arc<BrowserProcess>, BrowserError> {
        self.shared_for(Device::Desktop).await
    }

    /// The shared browser for `device`'s tasks, launching (or relaunching after a crash) or
    /// connecting (again, after a lost connection) as needed.
    pub async fn shared_for(&self, device: Device) -> Result<Arc<BrowserProcess>, BrowserError> {
        let key = match self.source {
            Source::Launch(_) => emulation::identity(device),
            Source::Remote { .. } => Device::Desktop,
        };
        let slot = self
            .shared
            .iter()
            .find(|(d, _)| *d == key)
            .map(|(_, slot)| slot)
            .ok_or_else(|| BrowserError::Unsupported(format!("no browser for device {}", key.as_str())))?;
        let mut slot = slot.lock().await;
        if let Some(p) = slot.as_ref() {
            if p.is_alive() {
                return Ok(p.clone());
            }
            tracing::warn!(pid = ?p.pid(), remote = ?p.remote(), "replacing a dead browser");
            p.kill().await;
        }
        let p = Arc::new(match &self.source {
            Source::Launch(config) => BrowserProcess::launch_for(config, key).await?,
            Source::Remote { endpoint, timeout } => BrowserProcess::connect(endpoint, *timeout).await?,
        });
        *slot = Some(p.clone());
        Ok(p)
    }
}
