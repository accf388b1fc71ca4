//! Warm browsers. Tasks share one long-lived Chromium and each gets a fresh browser context in
//! it, so a task does not pay a launch. The shared browser is one we start, or, with
//! `browser_ws`, one someone else runs that we connect to. A dead browser (a crashed process,
//! a lost connection) is noticed on the next acquire (or by the session that hit it) and
//! replaced: relaunched, or reconnected.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

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
    shared: Mutex<Option<Arc<BrowserProcess>>>,
}

impl BrowserPool {
    /// A pool that launches browsers with `config`.
    pub fn new(config: LaunchConfig) -> Self {
        Self {
            source: Source::Launch(config),
            shared: Mutex::new(None),
        }
    }

    /// A pool whose shared browser is the one at `endpoint` (`ws://...` or `http://host:port`).
    pub fn remote(endpoint: String) -> Self {
        Self {
            source: Source::Remote {
                endpoint,
                timeout: Duration::from_secs(20),
            },
            shared: Mutex::new(None),
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

    /// Starts (or connects to) the shared browser now, so the first task does not wait.
    pub async fn warm(&self) -> Result<(), BrowserError> {
        self.shared().await.map(|_| ())
    }

    /// The shared browser, launching (or relaunching after a crash) or connecting (again,
    /// after a lost connection) as needed.
    pub async fn shared(&self) -> Result<Arc<BrowserProcess>, BrowserError> {
        let mut slot = self.shared.lock().await;
        if let Some(p) = slot.as_ref() {
            if p.is_alive() {
                return Ok(p.clone());
            }
            tracing::warn!(pid = ?p.pid(), remote = ?p.remote(), "replacing a dead browser");
            p.kill().await;
        }
        let p = Arc::new(match &self.source {
            Source::Launch(config) => BrowserProcess::launch(config, &[]).await?,
            Source::Remote { endpoint, timeout } => BrowserProcess::connect(endpoint, *timeout).await?,
        });
        *slot = Some(p.clone());
        Ok(p)
    }
}
