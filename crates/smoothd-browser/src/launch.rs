//! Starting Chromium ourselves (so we own its flags, its profile folder and its process) and
//! connecting chromiumoxide to the DevTools URL it prints, or connecting to a browser someone
//! else runs (`browser_ws`: a fleet's endpoint), which has no process of ours to watch or
//! kill. The CDP handler runs on its own task; when it ends, the browser is marked dead and
//! the pool replaces it (relaunches, or reconnects).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chromiumoxide::Browser;
use chromiumoxide::handler::HandlerConfig;
use futures::StreamExt;
use smoothd_core::Device;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::binary::{KEPT_ENV, setpriv};
use crate::error::BrowserError;

/// How to start Chromium.
#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// The binary.
    pub chromium: PathBuf,
    /// Extra flags (tests add `--host-resolver-rules=...`).
    pub extra_args: Vec<String>,
    /// How long Chromium may take to print its DevTools URL.
    pub launch_timeout: Duration,
}

impl LaunchConfig {
    /// Defaults for `chromium`.
    pub fn new(chromium: PathBuf) -> Self {
        Self {
            chromium,
            extra_args: Vec::new(),
            launch_timeout: Duration::from_secs(20),
        }
    }
}

/// The flags every browser gets. Background networking and component updates are off: they
/// are useless to an agent and fail on closed networks.
fn base_args(data_dir: &Path) -> Vec<String> {
    vec![
        "--headless".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--no-default-browser-check".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-default-apps".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-breakpad".into(),
        // Every task's page runs at full speed, whichever window is in front: a context opened
        // for another task (or the spare one) must not occlude, background or throttle it.
        "--disable-background-timer-throttling".into(),
        "--disable-backgrounding-occluded-windows".into(),
        "--disable-renderer-backgrounding".into(),
        "--disable-features=Translate,MediaRouter,OptimizationHints,AutomationControlled".into(),
        "--disable-blink-features=AutomationControlled".into(),
        "--hide-scrollbars".into(),
        "--mute-audio".into(),
        "--password-store=basic".into(),
        "--use-mock-keychain".into(),
        "--remote-debugging-port=0".into(),
        format!("--user-data-dir={}", data_dir.display()),
        "about:blank".into(),
    ]
}

/// A running Chromium and our CDP connection to it.
pub struct BrowserProcess {
    pub(crate) browser: Arc<Browser>,
    /// Fires when the process exits or the connection ends.
    pub(crate) exited: CancellationToken,
    /// Fires when the process has exited (has been reaped): only then is its profile folder
    /// complete on disk. For a remote browser, when the connection watcher is done.
    gone: CancellationToken,
    kill: tokio::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    alive: Arc<AtomicBool>,
    /// Set before we ask Chromium to exit, so its exit is not counted as a crash.
    closing: Arc<AtomicBool>,
    pid: Option<u32>,
    /// The remote endpoint, for a browser we connected to rather than started.
    remote: Option<String>,
    /// The profile folder of a browser we started.
    data_dir: Option<tempfile::TempDir>,
    /// Its `HOME` (the NSS database with a task's client certificates lives there), removed
    /// with the process.
    _home: Option<tempfile::TempDir>,
    /// The device's client hints in every shared and service worker (a phone's browser).
    _workers: Option<crate::contexts::ChildOverrides>,
    handler: tokio::task::JoinHandle<()>,
}

impl Drop for BrowserProcess {
    fn drop(&mut self) {
        // Closes the DevTools connection (a remote browser stays up; ours is killed by its
        // watcher, which notices the kill sender go away).
        self.handler.abort();
    }
}

/// For a browser launched for `device`, the client hints of its shared and service workers,
/// when the device's differ from the browser's own (a phone; see [`crate::contexts`]). Without
/// it the browser still works, and those workers say desktop Linux in their client hints.
async fn worker_overrides(browser: &Browser, device: Device) -> Option<crate::contexts::ChildOverrides> {
    let version = browser
        .version()
        .await
        .map_err(|e| tracing::warn!(error = %e, "cannot ask the browser its version"))
        .ok()?;
    let chrome_version = version.product.rsplit('/').next().unwrap_or("130.0.0.0");
    let params = crate::emulation::user_agent_override(device, chrome_version, &version.user_agent)?;
    let params = serde_json::to_value(&params).ok()?;
    crate::contexts::watch_browser(browser.websocket_address(), params)
        .await
        .map_err(|e| tracing::warn!(error = %e, "cannot watch the browser's shared and service workers"))
        .ok()
}

/// How often a remote browser is asked whether it is still there, and how long it may take to
/// answer (`Browser.getVersion`, answered by the browser process even while pages are busy).
const REMOTE_PROBE_EVERY: Duration = Duration::from_secs(5);
const REMOTE_PROBE_LIMIT: Duration = Duration::from_secs(10);

/// How our CDP connections are driven.
fn handler_config() -> HandlerConfig {
    HandlerConfig {
        viewport: None,
        request_timeout: Duration::from_secs(30),
        // We answer paused requests ourselves (ad block, allowed_urls, proxy auth); this
        // stops chromiumoxide from continuing them behind our back.
        request_intercept: true,
        ..HandlerConfig::default()
    }
}

/// Polls the CDP handler until the connection ends, then marks the browser dead.
fn spawn_handler(
    mut handler: chromiumoxide::Handler,
    alive: Arc<AtomicBool>,
    exited: CancellationToken,
    what: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(msg) = handler.next().await {
            match msg {
                // The WebSocket broke (the browser died, the peer went away). The handler would
                // go on returning nothing rather than end, so this is where we learn of it.
                Err(e @ chromiumoxide::error::CdpError::Ws(_)) => {
                    tracing::warn!(error = %e, browser = %what, "browser connection lost");
                    break;
                }
                // Newer Chromium sends messages chromiumoxide cannot parse; log and go on.
                Err(e) => tracing::debug!(error = %e, "CDP handler message error"),
                Ok(()) => {}
            }
        }
        alive.store(false, Ordering::SeqCst);
        exited.cancel();
        tracing::warn!(browser = %what, "browser connection ended");
    })
}

impl std::fmt::Debug for BrowserProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserProcess")
            .field("pid", &self.pid)
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl BrowserProcess {
    /// Starts Chromium with its own temporary profile folder and connects to it.
    pub async fn launch(cfg: &LaunchConfig, extra: &[String]) -> Result<Self, BrowserError> {
        Self::launch_in(cfg, extra, None).await
    }

    /// Starts a browser whose every context presents `device` (see
    /// [`crate::emulation::identity`]), with its own temporary profile folder.
    pub async fn launch_for(cfg: &LaunchConfig, device: Device) -> Result<Self, BrowserError> {
        Self::launch_with(cfg, device, &[], None, None).await
    }

    /// Starts Chromium on `data_dir` (a restored profile) or a fresh temporary folder.
    pub async fn launch_in(
        cfg: &LaunchConfig,
        extra: &[String],
        data_dir: Option<tempfile::TempDir>,
    ) -> Result<Self, BrowserError> {
        Self::launch_with(cfg, Device::Desktop, extra, data_dir, None).await
    }

    /// Starts Chromium for `device`'s tasks on `data_dir` (or a fresh folder) with `home` as
    /// its `HOME` (or a fresh empty one): Chromium on Linux reads client certificates from
    /// `$HOME/.pki/nssdb`, so each browser sees only the certificates put there for it.
    pub async fn launch_with(
        cfg: &LaunchConfig,
        device: Device,
        extra: &[String],
        data_dir: Option<tempfile::TempDir>,
        home: Option<tempfile::TempDir>,
    ) -> Result<Self, BrowserError> {
        let home = folder(home, "smoothd-home-", "a home folder")?;
        let data_dir = folder(data_dir, "smoothd-chromium-", "a profile folder")?;
        let mut args = base_args(data_dir.path());
        // The start page stays last.
        let start = args.pop();
        // The browser-wide user agent of the device, without "Headless" (see emulation.rs).
        args.extend(crate::emulation::launch_args(&cfg.chromium, device).await);
        args.extend(cfg.extra_args.iter().cloned());
        args.extend(extra.iter().cloned());
        args.extend(start);
        let mut child = chromium_command(&cfg.chromium, home.path())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BrowserError::Launch(format!("{}: {e}", cfg.chromium.display())))?;
        let pid = child.id();
        let ws_url = devtools_url(&mut child, cfg.launch_timeout).await?;
        let (browser, handler) = Browser::connect_with_config(ws_url, handler_config())
            .await
            .map_err(|e| BrowserError::Launch(format!("cannot connect to Chromium: {e}")))?;
        let alive = Arc::new(AtomicBool::new(true));
        let exited = CancellationToken::new();
        let handler_task = spawn_handler(handler, alive.clone(), exited.clone(), format!("pid {pid:?}"));
        // The process watcher owns the child: it notices a crash at once (the CDP connection
        // may take a request timeout to notice) and kills the process on request.
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let (flag, done) = (alive.clone(), exited.clone());
        let gone = CancellationToken::new();
        let reaped = gone.clone();
        let closing = Arc::new(AtomicBool::new(false));
        let asked = closing.clone();
        smoothd_metrics::browser_launched();
        tokio::spawn(async move {
            let crashed = tokio::select! {
                status = child.wait() => {
                    tracing::warn!(pid = ?pid, ?status, "Chromium exited");
                    !asked.load(Ordering::SeqCst)
                }
                _ = kill_rx => {
                    let _ = child.start_kill();
                    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    false
                }
            };
            smoothd_metrics::browser_exited(crashed);
            flag.store(false, Ordering::SeqCst);
            done.cancel();
            reaped.cancel();
        });
        tracing::info!(pid = ?pid, "Chromium started");
        let workers = worker_overrides(&browser, device).await;
        Ok(Self {
            browser: Arc::new(browser),
            exited,
            gone,
            kill: tokio::sync::Mutex::new(Some(kill_tx)),
            alive,
            closing,
            pid,
            remote: None,
            data_dir: Some(data_dir),
            _home: Some(home),
            _workers: workers,
            handler: handler_task,
        })
    }

    /// Connects to a browser someone else runs: `ws://host:port/devtools/browser/<id>`, or
    /// `http://host:port`, whose `/json/version` names the WebSocket. Nothing here can kill
    /// that browser; when the connection ends the browser reads dead, and the pool connects
    /// again. Our browser contexts are created `dispose_on_detach`, so the browser drops them
    /// when the connection goes, whichever way it goes.
    pub async fn connect(endpoint: &str, limit: Duration) -> Result<Self, BrowserError> {
        let shown = shown_endpoint(endpoint);
        let connect = async {
            let ws_url = resolve_endpoint(endpoint).await?;
            Browser::connect_with_config(ws_url, handler_config())
                .await
                .map_err(|e| BrowserError::Connect(format!("{shown}: {e}")))
        };
        let (browser, handler) = tokio::time::timeout(limit, connect)
            .await
            .map_err(|_| BrowserError::Connect(format!("{shown}: no answer within {limit:?}")))??;
        let alive = Arc::new(AtomicBool::new(true));
        let exited = CancellationToken::new();
        let handler_task = spawn_handler(handler, alive.clone(), exited.clone(), shown.clone());
        let browser = Arc::new(browser);
        // The connection watcher counts the browser in and out of the metrics, once: a lost
        // connection is a crash, unless we dropped it. A connection can also die without
        // closing (a frozen browser, a network partition), so it asks the browser now and then
        // whether it is still there.
        let (kill_tx, mut kill_rx) = tokio::sync::oneshot::channel::<()>();
        let closing = Arc::new(AtomicBool::new(false));
        let (flag, done, asked) = (alive.clone(), exited.clone(), closing.clone());
        let gone = CancellationToken::new();
        let finished = gone.clone();
        let probe = Arc::downgrade(&browser);
        let what = shown.clone();
        smoothd_metrics::browser_launched();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REMOTE_PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let crashed = loop {
                tokio::select! {
                    _ = done.cancelled() => break !asked.load(Ordering::SeqCst),
                    _ = &mut kill_rx => break false,
                    _ = tick.tick() => {
                        // Weak: the watcher must not keep the connection open on its own.
                        let Some(browser) = probe.upgrade() else { break false };
                        if !matches!(
                            tokio::time::timeout(REMOTE_PROBE_LIMIT, browser.version()).await,
                            Ok(Ok(_))
                        ) {
                            tracing::warn!(browser = %what, "the remote browser stopped answering");
                            break true;
                        }
                    }
                }
            };
            smoothd_metrics::browser_exited(crashed);
            flag.store(false, Ordering::SeqCst);
            done.cancel();
            finished.cancel();
        });
        tracing::info!(browser = %shown, "connected to a remote browser");
        Ok(Self {
            browser,
            exited,
            gone,
            kill: tokio::sync::Mutex::new(Some(kill_tx)),
            alive,
            closing,
            pid: None,
            remote: Some(shown),
            data_dir: None,
            _home: None,
            _workers: None,
            handler: handler_task,
        })
    }

    /// Whether the process and its connection are still up.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// The operating system process id.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The remote endpoint (credentials hidden), for a browser we connected to.
    pub fn remote(&self) -> Option<&str> {
        self.remote.as_deref()
    }

    /// Kills the process (used on shutdown and when replacing a sick browser); for a remote
    /// browser, drops the connection.
    pub async fn kill(&self) {
        self.alive.store(false, Ordering::SeqCst);
        if let Some(tx) = self.kill.lock().await.take() {
            let _ = tx.send(());
        }
        if self.remote.is_some() {
            self.handler.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(6), self.gone.cancelled()).await;
    }

    /// The profile folder this process runs on (None for a remote browser).
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_ref().map(tempfile::TempDir::path)
    }

    /// Asks Chromium to exit cleanly (so it flushes cookies and storage to disk) and waits;
    /// kills it if it does not exit within 10 s. A remote browser is left running: only our
    /// connection to it is closed.
    pub async fn close_gracefully(&self) {
        use chromiumoxide::cdp::browser_protocol::browser::CloseParams;
        self.closing.store(true, Ordering::SeqCst);
        if self.remote.is_some() {
            // Not ours to close: only our connection goes.
            self.kill().await;
            return;
        }
        if self.is_alive() {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                self.browser.execute(CloseParams::default()),
            )
            .await;
        }
        // The process, not the connection: the connection ends first, while Chromium is
        // still writing the profile out.
        if tokio::time::timeout(Duration::from_secs(10), self.gone.cancelled())
            .await
            .is_err()
        {
            tracing::warn!(pid = ?self.pid, "Chromium did not exit after Browser.close; killing it");
            self.kill().await;
        }
    }

    /// Cookie count and registered domains (most cookies first) of the default context.
    pub async fn cookie_summary(&self) -> Result<(i64, Vec<String>), BrowserError> {
        let cookies = self.browser.get_cookies().await?;
        let mut counts: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
        for c in &cookies {
            *counts.entry(registered_domain(&c.domain)).or_default() += 1;
        }
        let mut domains: Vec<(String, i64)> = counts.into_iter().collect();
        domains.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok((
            i64::try_from(cookies.len()).unwrap_or(i64::MAX),
            domains.into_iter().map(|(d, _)| d).collect(),
        ))
    }

    /// Marks the process dead (a CDP call found the connection broken).
    pub(crate) fn mark_dead(&self) {
        self.alive.store(false, Ordering::SeqCst);
    }
}

/// `.shop.example.co.uk` → `example.co.uk`-ish: the last two labels (three when the second
/// to last is a short second-level label like `co`); IP addresses stay whole.
fn registered_domain(domain: &str) -> String {
    let d = domain.trim_start_matches('.');
    if d.parse::<std::net::IpAddr>().is_ok() {
        return d.to_string();
    }
    let labels: Vec<&str> = d.split('.').collect();
    let keep =
        if labels.len() >= 3 && labels[labels.len() - 2].len() <= 3 && labels[labels.len() - 1].len() == 2 {
            3
        } else {
            2
        };
    labels[labels.len().saturating_sub(keep)..].join(".")
}

/// An endpoint as logs and errors may show it: scheme, host, port and path (a fleet's token
/// in the query or the user info stays out).
pub fn shown_endpoint(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "<browser_ws>".into(),
    }
}

/// The DevTools WebSocket URL of `endpoint`: itself when it is `ws://`, else what
/// `/json/version` names, with the host and port we reached (the browser answers with the
/// address it thinks it has, which behind a proxy or in a container is not ours).
async fn resolve_endpoint(endpoint: &str) -> Result<String, BrowserError> {
    let shown = shown_endpoint(endpoint);
    let base = url::Url::parse(endpoint).map_err(|e| BrowserError::Connect(format!("{shown}: {e}")))?;
    if base.scheme() == "ws" {
        return Ok(endpoint.to_string());
    }
    if base.scheme() != "http" {
        return Err(BrowserError::Connect(format!(
            "{shown}: use ws://host:port/devtools/browser/<id> or http://host:port"
        )));
    }
    let mut version = base.clone();
    if !version.path().trim_end_matches('/').ends_with("/json/version") {
        let path = format!("{}/json/version", version.path().trim_end_matches('/'));
        version.set_path(&path);
    }
    let body = http_get(&version)
        .await
        .map_err(|e| BrowserError::Connect(format!("{}: {e}", shown_endpoint(version.as_str()))))?;
    let info: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        BrowserError::Connect(format!(
            "{}: not DevTools JSON: {e}",
            shown_endpoint(version.as_str())
        ))
    })?;
    let ws = info
        .get("webSocketDebuggerUrl")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| {
            BrowserError::Connect(format!(
                "{}: no webSocketDebuggerUrl in the answer",
                shown_endpoint(version.as_str())
            ))
        })?;
    let mut ws = url::Url::parse(ws)
        .map_err(|e| BrowserError::Connect(format!("{shown}: bad webSocketDebuggerUrl {ws:?}: {e}")))?;
    let _ = ws.set_host(base.host_str());
    let _ = ws.set_port(base.port_or_known_default());
    if let Some(q) = base.query() {
        ws.set_query(Some(q));
    }
    Ok(ws.to_string())
}

/// A GET of DevTools' `/json/version`.
async fn http_get(url: &url::Url) -> Result<Vec<u8>, String> {
    let resp = reqwest::Client::new()
        .get(url.as_str())
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| format!("cannot reach it: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("answered {}", resp.status()));
    }
    resp.bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| format!("cannot read the answer: {e}"))
}

/// Reads Chromium's stderr until it prints `DevTools listening on ws://...`, then keeps
/// draining it in the background so the pipe never fills.
async fn read_ws_url(stderr: tokio::process::ChildStderr) -> Result<String, BrowserError> {
    let mut lines = BufReader::new(stderr).lines();
    let mut tail = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(url) = line.split("DevTools listening on ").nth(1) {
            let url = url.trim().to_string();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::trace!(target: "chromium", "{line}");
                }
            });
            return Ok(url);
        }
        tail.push(line);
        if tail.len() > 20 {
            tail.remove(0);
        }
    }
    Err(BrowserError::Launch(format!(
        "Chromium exited before it was ready: {}",
        tail.join(" | ")
    )))
}

/// The DevTools WebSocket the starting Chromium prints on its stderr, within `limit`.
async fn devtools_url(child: &mut tokio::process::Child, limit: Duration) -> Result<String, BrowserError> {
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| BrowserError::Launch("no stderr".into()))?;
    tokio::time::timeout(limit, read_ws_url(stderr))
        .await
        .map_err(|_| BrowserError::Launch(format!("Chromium did not start within {limit:?}")))?
}

/// The folder given, or a new temporary one named `prefix...`.
fn folder(
    given: Option<tempfile::TempDir>,
    prefix: &str,
    what: &str,
) -> Result<tempfile::TempDir, BrowserError> {
    match given {
        Some(d) => Ok(d),
        None => tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(|e| BrowserError::Launch(format!("cannot create {what}: {e}"))),
    }
}

/// The command that starts Chromium at `chromium`, with only the kept environment and `home`
/// as its HOME. Chromium dies with us even when we are killed outright (SIGKILL leaves no
/// time to close it): util-linux's setpriv sets the parent-death signal, then execs Chromium
/// in place.
fn chromium_command(chromium: &Path, home: &Path) -> Command {
    let mut command = match setpriv() {
        Some(setpriv) => {
            let mut c = Command::new(setpriv);
            c.args(["--pdeathsig", "KILL", "--"]).arg(chromium);
            c
        }
        None => Command::new(chromium),
    };
    command.env_clear();
    for (k, v) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| KEPT_ENV.contains(&k)) {
            command.env(k, v);
        }
    }
    command.env("HOME", home);
    command
}
