//! Warm browsers. Tasks share one long-lived Chromium process and each gets a fresh browser
//! context in it, so a task does not pay a launch. A dead process is noticed on the next
//! acquire (or by the session that hit it) and replaced.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::error::BrowserError;
use crate::launch::{BrowserProcess, LaunchConfig};

/// A pool of warm Chromium processes.
#[derive(Debug)]
pub struct BrowserPool {
    config: LaunchConfig,
    shared: Mutex<Option<Arc<BrowserProcess>>>,
}

impl BrowserPool {
    /// A pool that launches browsers with `config`.
    pub fn new(config: LaunchConfig) -> Self {
        Self {
            config,
            shared: Mutex::new(None),
        }
    }

    /// How this pool launches browsers (dedicated processes use it too).
    pub fn config(&self) -> &LaunchConfig {
        &self.config
    }

    /// Starts the shared browser now, so the first task does not wait for it.
    pub async fn warm(&self) -> Result<(), BrowserError> {
        self.shared().await.map(|_| ())
    }

    /// The shared browser, launching (or relaunching after a crash) as needed.
    pub async fn shared(&self) -> Result<Arc<BrowserProcess>, BrowserError> {
        let mut slot = self.shared.lock().await;
        if let Some(p) = slot.as_ref() {
            if p.is_alive() {
                return Ok(p.clone());
            }
            tracing::warn!(pid = ?p.pid(), "replacing a dead browser");
            p.kill().await;
        }
        let p = Arc::new(BrowserProcess::launch(&self.config, &[]).await?);
        *slot = Some(p.clone());
        Ok(p)
    }
}
