//! Wiring: opens the store, registers the bootstrap key, and runs the API and the workers in
//! the roles asked for, until the shutdown token fires. `main` only parses flags and settings.

pub mod settings;

use std::sync::Arc;

use anyhow::Context;
use smoothd_api::{ApiConfig, AppState, Links, RateLimiter};
use smoothd_store::{Blobs, Store, StoreOptions};
use smoothd_worker::{
    BasicExecutor, Blocker, BrowserPool, Executor, LaunchConfig, LiveServer, MediaConfig, MediaServices,
    Services, SessionConfig, WorkerConfig, WorkerPool, find_chromium,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use settings::Settings;
use settings::key;

/// Which parts of the server this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    pub workers: bool,
}

/// Opens the database (creating the data folder), applies migrations, and stores the
/// bootstrap key if one is configured.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create data_dir {}", settings.data_dir.display()))?;
    let opts = StoreOptions {
        max_connections: settings.db_max_connections,
        acquire_timeout: Settings::secs(settings.db_acquire_timeout_seconds),
    };
    let store = Store::connect(&settings.database_url(), &opts)
        .await
        .context("cannot open the database")?;
    if let Some(key) = &settings.api_key {
        store
            .ensure_key("bootstrap", key.expose().trim())
            .await
            .context("cannot store the bootstrap API key")?;
    }
    Ok(store)
}

/// On an API process's first start against an empty key table (no `api_key` setting and no key
/// ever created, revoked ones included), creates a key named `bootstrap`, stores only its hash,
/// and prints it once on stderr with how to use it. Two processes starting together race on the
/// unique name: only the one whose insert wins prints. Returns whether it created one.
pub async fn bootstrap_first_key(settings: &Settings, store: &Store) -> anyhow::Result<bool> {
    if settings.api_key.is_some() {
        return Ok(false);
    }
    if !store
        .list_keys()
        .await
        .context("cannot list the API keys")?
        .is_empty()
    {
        return Ok(false);
    }
    let key = smoothd_core::ids::api_key();
    match store.create_key("bootstrap", &key).await {
        Ok(_) => {}
        Err(smoothd_store::StoreError::Conflict) => return Ok(false),
        Err(e) => return Err(e).context("cannot store the bootstrap API key"),
    }
    let base = settings.public_url();
    eprintln!(
        "\n==== smoothd: no API key existed, so one was created (name \"bootstrap\"). ====\n\
         It is shown only this once (only its hash is stored); keep it now:\n\n    {key}\n\n\
         Point a Smooth client at this server:\n\
         \x20   export SMOOTH_BASE_URL={base}/\n\
         \x20   export CIRCLEMIND_API_KEY={key}\n\
         More keys: `smoothd keys create --name NAME`; revoke this one with `smoothd keys revoke bootstrap`.\n"
    );
    tracing::warn!("created the bootstrap API key (printed above, once)");
    Ok(true)
}

/// The artifact store: the S3 bucket when one is configured, else the data folder. A bucket
/// that does not answer or refuses the credentials stops the start, naming the setting.
pub async fn open_blobs(settings: &Settings) -> anyhow::Result<Blobs> {
    let Some(s3) = settings.s3() else {
        let dir = settings.data_dir.join("artifacts");
        return Blobs::local(&dir).with_context(|| format!("cannot open artifact folder {}", dir.display()));
    };
    let blobs =
        Blobs::s3(&s3).with_context(|| format!("{}: cannot use bucket {:?}", key("s3_bucket"), s3.bucket))?;
    blobs.check().await.with_context(|| {
        format!(
            "{}: bucket {:?} at {} did not answer or refused the credentials (s3_endpoint, s3_region, s3_access_key_id)", key("s3_bucket"),
            s3.bucket,
            s3.endpoint.as_deref().unwrap_or("AWS")
        )
    })?;
    tracing::info!(bucket = %s3.bucket, endpoint = s3.endpoint.as_deref().unwrap_or("AWS"), prefix = s3.prefix.as_deref().unwrap_or(""), "artifacts in S3");
    Ok(blobs)
}

/// The browser pool, or why there is none (no Chromium on this machine).
pub fn browser_pool(settings: &Settings) -> Result<Arc<BrowserPool>, String> {
    if let Some(endpoint) = &settings.browser_ws {
        if !settings.chromium_args.is_empty() || settings.chromium.is_some() {
            tracing::warn!(
                "browser_ws is set: chromium and chromium_args are not used (the remote browser has its own flags)"
            );
        }
        let pool = Arc::new(BrowserPool::remote(endpoint.to_string()));
        pool.set_spare_sessions(settings.spare_session);
        return Ok(pool);
    }
    let chromium = find_chromium(settings.chromium.as_deref()).map_err(|e| e.to_string())?;
    let mut launch = LaunchConfig::new(chromium);
    launch.extra_args = settings.chromium_args.clone();
    let pool = Arc::new(BrowserPool::new(launch));
    pool.set_spare_sessions(settings.spare_session);
    Ok(pool)
}

/// Compiles the ad-block lists once for the process (EasyList takes a moment).
pub async fn blocker(settings: &Settings) -> anyhow::Result<Option<Arc<Blocker>>> {
    let lists = settings
        .adblock_lists
        .clone()
        .unwrap_or_else(Blocker::default_lists);
    if lists.is_empty() {
        tracing::warn!(
            "no ad-block lists found (install webext-ublock-origin-chromium or set adblock_lists); use_adblock has no effect"
        );
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let blocker = tokio::task::spawn_blocking(move || Blocker::from_files(&lists))
        .await
        .context("ad-block compilation panicked")?
        .map_err(|e| anyhow::anyhow!("{}: {e}", key("adblock_lists")))?;
    tracing::info!(
        rules = blocker.rule_count(),
        ms = started.elapsed().as_millis() as u64,
        "ad-block lists compiled"
    );
    Ok(Some(Arc::new(blocker)))
}

/// The executor this build runs tasks with.
pub fn executor(
    settings: &Settings,
    browsers: Result<Arc<BrowserPool>, String>,
    blocker: Option<Arc<Blocker>>,
    blobs: Blobs,
    media: Option<Arc<MediaServices>>,
) -> anyhow::Result<Arc<dyn Executor>> {
    let agent = settings.agent()?;
    Ok(Arc::new(BasicExecutor {
        services: Services {
            agent,
            browsers,
            blocker,
            blobs,
            media,
        },
        sessions: SessionConfig {
            idle: Settings::secs(settings.session_idle_seconds),
            close_grace: Settings::secs(settings.close_grace_seconds),
            tunnel_wait: Settings::secs(settings.tunnel_wait_seconds),
        },
    }))
}

/// The ffmpeg recordings use, or None (recordings off, with a warning).
pub fn ffmpeg(settings: &Settings) -> Option<std::path::PathBuf> {
    if let Some(p) = &settings.ffmpeg {
        let p = std::path::PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
        tracing::warn!(ffmpeg = %p.display(), "SMOOTHD_FFMPEG does not exist; recordings are off");
        return None;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join("ffmpeg"))
        .find(|c| c.is_file());
    if found.is_none() {
        tracing::warn!("no ffmpeg on PATH (Debian: apt-get install ffmpeg); recordings are off");
    }
    found
}

/// Where API processes reach a live listener bound to all interfaces (`0.0.0.0:port`, as in a
/// container): this machine's address on the route to the database server, which every API
/// process reaches too. `None` keeps the bound address (a specific one, or SQLite on one machine).
fn live_address(local: std::net::SocketAddr, database_url: &str) -> Option<String> {
    if !local.ip().is_unspecified() {
        return None;
    }
    let db = url::Url::parse(database_url).ok()?;
    // `sqlite://data/smoothd.db` parses with a "host" (`data`) that is a folder: never look it up.
    if !db.scheme().starts_with("postgres") {
        return None;
    }
    let host = db
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = db.port().unwrap_or(5432);
    let probe = std::net::UdpSocket::bind((local.ip(), 0)).ok()?;
    // Connecting a UDP socket only picks the route: nothing is sent.
    probe.connect((host.as_str(), port)).ok()?;
    let ip = probe.local_addr().ok()?.ip();
    Some(std::net::SocketAddr::new(ip, local.port()).to_string())
}

/// Media capture for this process's workers: the live-stream listener and the recorder.
pub async fn media_services(
    settings: &Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<MediaServices> {
    let listener = TcpListener::bind(&settings.live_listen).await.with_context(|| {
        format!(
            "{}: cannot listen on {}",
            key("live_listen"),
            settings.live_listen
        )
    })?;
    let advertise = settings.live_advertise.clone().or_else(|| {
        let local = listener.local_addr().ok()?;
        let db = settings.database_url.as_deref().unwrap_or("");
        live_address(local, db)
    });
    let live =
        LiveServer::start(listener, advertise, shutdown).context("cannot start the live stream listener")?;
    Ok(MediaServices {
        config: MediaConfig {
            ffmpeg: ffmpeg(settings),
            fps: settings.recording_fps,
            ..MediaConfig::default()
        },
        live: Some(live),
    })
}

/// The host the SDK's frpc dials for `proxy_server: "self"`: `tunnel_host`, else the public URL's.
fn tunnel_host(settings: &Settings, public_url: &str) -> String {
    settings.tunnel_host.clone().unwrap_or_else(|| {
        url::Url::parse(public_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "localhost".into())
    })
}

/// The tunnel's own TLS listener (`tunnel_listen`), with the configured or a generated certificate.
async fn start_tunnel_listener(
    settings: &Settings,
    addr: &str,
    store: &Store,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let files = settings
        .tunnel_cert_file
        .as_deref()
        .zip(settings.tunnel_key_file.as_deref())
        .map(|(c, k)| (std::path::Path::new(c), std::path::Path::new(k)));
    let host = tunnel_host(settings, &settings.public_url());
    let acceptor = smoothd_tunnel::tls::acceptor(files, &host)
        .with_context(|| format!("{} / {}", key("tunnel_cert_file"), key("tunnel_key_file")))?;
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!(
            "{}: cannot listen on {addr} (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
            key("tunnel_listen")
        )
    })?;
    tracing::info!(%addr, %host, generated_certificate = files.is_none(), "tunnel listening (TLS)");
    let sessions: Arc<dyn smoothd_tunnel::Sessions> =
        Arc::new(smoothd_api::StoreSessions { store: store.clone() });
    Ok(tokio::spawn(smoothd_tunnel::tls::serve(
        listener, acceptor, sessions, stop,
    )))
}

/// Deletes recordings and downloads archives older than the retention, now and then.
async fn reap_artifacts(
    store: Store,
    blobs: smoothd_store::Blobs,
    retention: std::time::Duration,
    stop: CancellationToken,
) {
    let every = (retention / 4).clamp(
        std::time::Duration::from_secs(15),
        std::time::Duration::from_secs(600),
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let before = smoothd_core::time::now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        match store.reap_artifacts(&blobs, before).await {
            Ok(keys) => {
                if !keys.is_empty() {
                    tracing::info!(count = keys.len(), "expired artifacts deleted");
                }
            }
            Err(e) => tracing::warn!(error = %e, "artifact retention pass failed"),
        }
    }
}

/// Worker pool settings from the settings.
pub fn worker_config(settings: &Settings) -> WorkerConfig {
    WorkerConfig {
        workers: settings.workers,
        lease: Settings::secs(settings.lease_seconds),
        heartbeat: Settings::secs(settings.heartbeat_seconds),
        drain_timeout: Settings::secs(settings.drain_seconds),
        poll: Settings::secs(settings.queue_poll_seconds.max(1)),
        ..WorkerConfig::default()
    }
}

/// The URL clients use, and the signer of the links handed to them. Without a configured
/// public URL, links point at the port actually bound (the listen address may say port 0).
async fn links(
    settings: &Settings,
    store: &Store,
    listener: Option<&TcpListener>,
) -> anyhow::Result<(String, Arc<Links>)> {
    let secret = store
        .shared_secret("artifact_url")
        .await
        .context("cannot read the link signing secret")?;
    let public_url = match (&settings.public_url, listener.map(TcpListener::local_addr)) {
        (None, Some(Ok(addr))) => format!("http://{addr}"),
        _ => settings.public_url(),
    };
    let links = Arc::new(
        Links::new(
            &public_url,
            &secret,
            Settings::secs(settings.artifact_url_seconds),
        )
        .with_tunnel_host(&tunnel_host(settings, &public_url)),
    );
    Ok((public_url, links))
}

/// The API server on `listener`, until `api_stop` fires.
fn start_api(
    settings: &Settings,
    store: &Store,
    links: Arc<Links>,
    blobs: &Blobs,
    public_url: String,
    listener: TcpListener,
    api_stop: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let state = AppState {
        store: store.clone(),
        links,
        blobs: blobs.clone(),
        config: ApiConfig {
            public_url,
            long_poll: Settings::secs(settings.long_poll_seconds),
            max_body_bytes: settings.max_body_bytes,
            max_upload_bytes: settings.max_upload_bytes,
            max_attempts: settings.max_attempts,
            metrics_public: settings.metrics_public,
            max_running_per_key: i64::from(settings.max_running_per_key),
            webhooks: settings.webhooks(),
        },
        shutdown: api_stop.clone(),
        rate: Arc::new(RateLimiter::new(settings.rate_limit_per_minute)),
    };
    let addr = listener.local_addr().context("listener has no address")?;
    tracing::info!(%addr, database = store.backend_name(), "API listening");
    let stop = api_stop.clone();
    Ok(tokio::spawn(async move {
        smoothd_api::serve(listener, state, stop).await
    }))
}

/// The worker pool with its browsers, ad blocker and media, until `shutdown` fires. Live view
/// links it hands out (the `captcha` event) start with `public_url`.
async fn start_workers(
    settings: &Settings,
    store: &Store,
    blobs: &Blobs,
    public_url: &str,
    background: &CancellationToken,
    shutdown: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let browsers = browser_pool(settings);
    match &browsers {
        Ok(pool) => {
            // Start the shared browser now so the first task does not wait for it.
            let pool = pool.clone();
            tokio::spawn(async move {
                if let Err(e) = pool.warm().await {
                    tracing::error!(error = %e, "cannot start or reach the browser; sessions will retry");
                }
                pool.prepare_spare();
            });
        }
        Err(e) => tracing::warn!(error = %e, "no browser: sessions cannot navigate"),
    }
    let blocker = blocker(settings).await?;
    let mut media = media_services(settings, background.clone()).await?;
    media.config.public_url = Some(public_url.to_string());
    let media = Some(Arc::new(media));
    let pool = WorkerPool::new(
        store.clone(),
        executor(settings, browsers, blocker, blobs.clone(), media)?,
        worker_config(settings),
    );
    Ok(tokio::spawn(pool.run(shutdown.clone())))
}

/// The metrics-only listener (`metrics_listen`), if one is set, until `api_stop` fires.
async fn start_metrics(
    settings: &Settings,
    store: &Store,
    api_stop: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>> {
    Ok(match &settings.metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("{}: cannot listen on {addr}", key("metrics_listen")))?;
            let bound = listener.local_addr().context("metrics listener has no address")?;
            tracing::info!(addr = %bound, "metrics listening");
            Some(tokio::spawn(smoothd_api::serve_metrics(
                listener,
                store.clone(),
                api_stop.clone(),
            )))
        }
        None => None,
    })
}

/// Runs the asked-for roles until `shutdown` fires. On shutdown the workers stop claiming
/// and drain first (so clients can still read final states), then the API drains.
///
/// Longer than most because it is the one startup seam: every role starts here and stops
/// here in order, and that order reads best in one place.
pub async fn run(
    settings: Settings,
    store: Store,
    listener: Option<TcpListener>,
    roles: Roles,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let api_stop = CancellationToken::new();
    let background = CancellationToken::new();
    let blobs = open_blobs(&settings).await?;
    tokio::spawn(reap_artifacts(
        store.clone(),
        blobs.clone(),
        Settings::secs(settings.artifact_retention_seconds),
        background.clone(),
    ));
    let (public_url, links) = links(&settings, &store, listener.as_ref()).await?;
    // Every process that knows the URL clients use (an API process, or any with `public_url`
    // set) delivers webhooks, whose bodies carry links; a lease keeps each attempt to one process.
    if roles.api || settings.public_url.is_some() {
        tokio::spawn(smoothd_api::webhooks::deliver::run(
            store.clone(),
            links.clone(),
            settings.webhooks(),
            background.clone(),
        ));
    }
    let api = match (roles.api, listener) {
        (true, Some(listener)) => Some(start_api(
            &settings,
            &store,
            links,
            &blobs,
            public_url.clone(),
            listener,
            &api_stop,
        )?),
        (true, None) => anyhow::bail!("the API role needs a listener"),
        (false, _) => None,
    };
    let tunnel = match (&settings.tunnel_listen, roles.api) {
        (Some(addr), true) => Some(start_tunnel_listener(&settings, addr, &store, api_stop.clone()).await?),
        _ => None,
    };
    let metrics = start_metrics(&settings, &store, &api_stop).await?;
    let runs_workers = roles.workers && settings.workers > 0;
    if !runs_workers {
        // An API-only deployment still finishes tasks whose worker died (the worker pools do
        // it where they run).
        tokio::spawn(smoothd_worker::reap_loop(
            store.clone(),
            worker_config(&settings).reap_every,
            background.clone(),
        ));
    }
    let workers = if runs_workers {
        Some(start_workers(&settings, &store, &blobs, &public_url, &background, &shutdown).await?)
    } else {
        None
    };

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    if let Some(w) = workers
        && let Err(e) = w.await
    {
        tracing::error!(error = %e, "worker pool ended abnormally");
    }
    api_stop.cancel();
    background.cancel();
    if let Some(a) = api {
        a.await
            .context("API task panicked")?
            .context("API server failed")?;
    }
    if let Some(t) = tunnel {
        let _ = t.await;
    }
    if let Some(m) = metrics
        && let Ok(Err(e)) = m.await
    {
        tracing::warn!(error = %e, "metrics listener failed");
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod live_address_tests {
    use super::live_address;

    #[test]
    fn all_interfaces_advertise_the_address_on_the_route_to_the_database() {
        let any = "0.0.0.0:7070".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            live_address(any, "postgres://u@127.0.0.1:5432/db").as_deref(),
            Some("127.0.0.1:7070")
        );
        // A specific address is kept; SQLite has no server to route to.
        let one = "127.0.0.1:7070".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(live_address(one, "postgres://u@127.0.0.1:5432/db"), None);
        // No lookup either: resolving `data` here (getaddrinfo reads the environment without
        // Rust's lock) raced the settings tests' figment::Jail and crashed this binary in CI.
        assert_eq!(live_address(any, "sqlite://data/smoothd.db"), None);
        assert_eq!(live_address(any, "sqlite://127.0.0.1/smoothd.db"), None);
    }
}
