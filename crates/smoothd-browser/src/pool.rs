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
//!
//! Spare sessions: preparing a task's context (context, page, device emulation, stealth,
//! interception) takes 150 to 250 ms of Chromium's time, which a task's first navigation used
//! to wait for. The pool keeps one session prepared ahead, for the options the last task asked
//! for (at start: the SDK's defaults), and hands it to the next task with the same stealth and
//! cursor, a device of the same identity (either desktop size) and no proxy; that task's
//! `allowed_urls`, ad blocker and desktop size are set on it when it is taken, before it has made
//! any request. A spare is never used twice: once taken, the
//! next one is prepared a moment later ([`REFILL_DELAY`], so it does not compete with the
//! task's first navigation). On unless `spare_session = false`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use smoothd_core::Device;
use tokio::sync::Mutex;

use crate::emulation;
use crate::error::BrowserError;
use crate::launch::{BrowserProcess, LaunchConfig, shown_endpoint};
use crate::session::{BrowserSession, SessionOptions, SpareKey};

/// How long after a spare is taken the next one is prepared.
pub const REFILL_DELAY: Duration = Duration::from_millis(1000);

/// A session prepared ahead for the next task with its key.
struct Spare {
    key: SpareKey,
    session: BrowserSession,
}

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
    /// Whether a spare session is kept (see the module's doc).
    spares: AtomicBool,
    /// The spare session, if one is ready.
    spare: std::sync::Mutex<Option<Spare>>,
    /// A spare is being prepared.
    filling: AtomicBool,
}

impl std::fmt::Debug for Spare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spare")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
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
            spares: AtomicBool::new(true),
            spare: std::sync::Mutex::new(None),
            filling: AtomicBool::new(false),
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
            spares: AtomicBool::new(true),
            spare: std::sync::Mutex::new(None),
            filling: AtomicBool::new(false),
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

impl BrowserPool {
    /// Keeps a spare session (the default) or not; turning it off closes the one kept.
    pub fn set_spare_sessions(&self, on: bool) {
        self.spares.store(on, Ordering::SeqCst);
        if !on && let Some(old) = self.take_slot() {
            tokio::spawn(old.session.close());
        }
    }

    /// A fresh session for a task that asked for `opts` in the shared browser `process`: the
    /// spare when one that serves its key was prepared in that process (nothing to wait for),
    /// else one opened now. Either way the next spare is prepared soon after.
    pub async fn open_session(
        self: &Arc<Self>,
        process: Arc<BrowserProcess>,
        opts: SessionOptions,
    ) -> Result<BrowserSession, BrowserError> {
        let Some(key) = BrowserSession::spare_key(&opts).filter(|_| self.spares.load(Ordering::SeqCst))
        else {
            smoothd_metrics::browser_session(false);
            return BrowserSession::open(process, opts).await;
        };
        let taken = self.take(key, &process);
        self.refill(key, REFILL_DELAY);
        smoothd_metrics::browser_session(taken.is_some());
        match taken {
            Some(mut session) => {
                tracing::debug!(?key, "a task takes the spare session");
                match session.adopt(opts.clone()).await {
                    Ok(()) => Ok(session),
                    Err(e) => {
                        tracing::debug!(error = %e, "the spare could not be given its policy");
                        tokio::spawn(session.close());
                        BrowserSession::open(process, opts).await
                    }
                }
            }
            None => BrowserSession::open(process, opts).await,
        }
    }

    /// Prepares a spare for the SDK's default options (desktop, stealth, no cursor), for the
    /// first task.
    pub fn prepare_spare(self: &Arc<Self>) {
        if self.spares.load(Ordering::SeqCst) {
            self.refill(
                SpareKey {
                    device: Device::Desktop,
                    stealth: true,
                    show_cursor: false,
                },
                Duration::ZERO,
            );
        }
    }

    /// Whether a spare is ready (for tests and metrics).
    pub fn has_spare(&self) -> bool {
        self.slot().is_some()
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Spare>> {
        match self.spare.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Takes the spare out of its slot.
    fn take_slot(&self) -> Option<Spare> {
        let spare = self.slot().take();
        smoothd_metrics::spare_ready(false);
        spare
    }

    /// The spare, if it serves `key` and lives in `process` (any other is closed: the next one
    /// is prepared for this task's key).
    fn take(&self, key: SpareKey, process: &Arc<BrowserProcess>) -> Option<BrowserSession> {
        let spare = self.take_slot()?;
        if spare.key.serves(key) && std::ptr::eq(spare.session.process(), &**process) && process.is_alive() {
            return Some(spare.session);
        }
        tokio::spawn(spare.session.close());
        None
    }

    /// Prepares a spare for `key` after `delay`, unless one is being prepared.
    fn refill(self: &Arc<Self>, key: SpareKey, delay: Duration) {
        if self.filling.swap(true, Ordering::SeqCst) {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let made = match pool.shared_for(key.device).await {
                Ok(process) => BrowserSession::open(process, key.options()).await,
                Err(e) => Err(e),
            };
            match made {
                Ok(session) if pool.spares.load(Ordering::SeqCst) => {
                    let old = pool.slot().replace(Spare { key, session });
                    smoothd_metrics::spare_ready(true);
                    if let Some(old) = old {
                        old.session.close().await;
                    }
                }
                Ok(session) => session.close().await,
                Err(e) => tracing::debug!(error = %e, "no spare session this time"),
            }
            pool.filling.store(false, Ordering::SeqCst);
        });
    }
}
