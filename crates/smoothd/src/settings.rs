//! Settings: one typed struct, layered defaults → `config/smoothd.toml` (or the file named by
//! `SMOOTHD_CONFIG` / `--config`) → `SMOOTHD_*` environment variables. Validated at start with
//! messages naming the key; secrets never appear in `Debug`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Every setting, with its default.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the API listens on.
    pub listen: String,
    /// Base of URLs handed out (live view, recordings, downloads); default `http://{listen}`.
    pub public_url: Option<String>,
    /// `sqlite://PATH` or `postgres://...`; default `sqlite://{data_dir}/smoothd.db`.
    pub database_url: Option<String>,
    /// Folder for the SQLite database and (without `s3_bucket`) artifacts.
    pub data_dir: PathBuf,
    /// S3-compatible bucket for artifacts (uploads, profiles, extensions, recordings, downloads);
    /// unset: `{data_dir}/artifacts`. Processes on several machines need a bucket.
    pub s3_bucket: Option<String>,
    /// Endpoint of a non-AWS S3 server (MinIO, Ceph, R2, ...), `https://host:port` or, for a
    /// server on a private network, `http://...`; unset: AWS.
    pub s3_endpoint: Option<String>,
    /// Region (default: `AWS_REGION`, else `us-east-1`).
    pub s3_region: Option<String>,
    /// Access key; unset: the `AWS_*` environment, web identity or instance metadata.
    pub s3_access_key_id: Option<String>,
    /// Secret key (goes with `s3_access_key_id`).
    pub s3_secret_access_key: Option<String>,
    /// Folder inside the bucket for smoothd's objects, e.g. `smoothd/prod`.
    pub s3_prefix: Option<String>,
    /// A bootstrap API key (stored hashed under the name `bootstrap`).
    pub api_key: Option<String>,
    /// Concurrent tasks per process.
    pub workers: usize,
    /// Chromium binary (found automatically when unset).
    pub chromium: Option<String>,
    /// Extra Chromium flags, e.g. `["--host-resolver-rules=..."]`.
    pub chromium_args: Vec<String>,
    /// Filter lists for `use_adblock` (default: Debian's EasyList and EasyPrivacy).
    pub adblock_lists: Option<Vec<PathBuf>>,
    /// OpenAI-compatible endpoint, e.g. `http://127.0.0.1:11434/v1`.
    pub llm_base_url: Option<String>,
    /// API key for the endpoint.
    pub llm_api_key: Option<String>,
    /// Model name.
    pub llm_model: Option<String>,
    /// Model for `agent: "smooth-lite"` tasks (a smaller, faster one) on the same endpoint;
    /// unset: `llm_model`.
    pub llm_lite_model: Option<String>,
    /// One model request's limit, in seconds.
    pub llm_timeout_seconds: u64,
    /// Further attempts after a failed model request (429, 5xx, timeout, unreadable reply).
    pub llm_max_retries: u32,
    /// First retry delay in milliseconds, doubled per retry.
    pub llm_retry_base_ms: u64,
    /// Cap on one reply's tokens.
    pub llm_max_tokens: u32,
    /// Screenshots for vision models: `auto` (when the text view cannot show the page), `on`, `off`.
    pub llm_vision: String,
    /// USD per million tokens by model name, for `credits_used`, e.g.
    /// `{ "gpt-4o" = { input = 2.5, output = 10.0 } }`.
    pub llm_prices: std::collections::HashMap<String, smoothd_agent::Price>,
    /// How long the agent waits for a custom tool's answer from the client.
    pub custom_tool_timeout_seconds: u64,
    /// A task's lease; a worker silent this long loses the task.
    pub lease_seconds: u64,
    /// Lease renewal interval.
    pub heartbeat_seconds: u64,
    /// Idle workers re-check the queue this often even without a wake-up signal.
    pub queue_poll_seconds: u64,
    /// Attempts before a task whose worker keeps dying is failed.
    pub max_attempts: i64,
    /// Longest hold of an event poll with nothing new (0 disables long-polling).
    pub long_poll_seconds: u64,
    /// Largest JSON request body.
    pub max_body_bytes: usize,
    /// Largest upload.
    pub max_upload_bytes: usize,
    /// An interactive session ends after this long without a command.
    pub session_idle_seconds: u64,
    /// How long a closing session waits for the client to read the close answer.
    pub close_grace_seconds: u64,
    /// At shutdown, how long running tasks may finish before they are stopped.
    pub drain_seconds: u64,
    /// Database pool size.
    pub db_max_connections: u32,
    /// How long a request waits for a database connection before it gets a 503 (during an
    /// outage: the client retries after this long).
    pub db_acquire_timeout_seconds: u64,
    /// ffmpeg binary for recordings (found on `PATH` when unset; without one, no recordings).
    pub ffmpeg: Option<String>,
    /// Frames per second of recordings (the latest frame is repeated while the page is still).
    pub recording_fps: u32,
    /// Where workers serve live streams for API processes to relay (`127.0.0.1:0`: any port).
    pub live_listen: String,
    /// `host:port` API processes use to reach `live_listen` (default: its bound address).
    pub live_advertise: Option<String>,
    /// `proxy_server: "self"`: the tunnel's own TLS listener (frpc dials port 443), if any.
    pub tunnel_listen: Option<String>,
    /// The host frpc dials on port 443 (the `b` of `live_url`; default: `public_url`'s host).
    pub tunnel_host: Option<String>,
    /// PEM certificate chain and key of `tunnel_listen` (default: self-signed at start).
    pub tunnel_cert_file: Option<String>,
    pub tunnel_key_file: Option<String>,
    /// How long a self-proxy session's actions wait for the caller's frpc.
    pub tunnel_wait_seconds: u64,
    /// Recordings and downloads archives are deleted this long after they are made.
    pub artifact_retention_seconds: u64,
    /// How long a handed-out recording or downloads link works.
    pub artifact_url_seconds: u64,
    /// Log filter (`info`, `smoothd=debug,info`, ...); `RUST_LOG` also works.
    pub log: String,
    /// Whether `GET /metrics` on the API port answers without an API key.
    pub metrics_public: bool,
    /// An extra address serving only `/metrics` and `/healthz`, without a key (for worker
    /// processes, which have no API port, and for scraping on an internal interface).
    pub metrics_listen: Option<String>,
    /// Requests per API key per minute, per API process (token bucket; 0 = no limit). Task
    /// reads (the SDK's polling) and cancels are not counted.
    pub rate_limit_per_minute: u32,
    /// Tasks and sessions one API key may have waiting or running at once, across all
    /// processes (0 = no limit); a submit beyond it gets 429.
    pub max_running_per_key: u32,
    /// An existing browser's DevTools endpoint (`ws://host:9222/devtools/browser/<id>`, or
    /// `http://host:9222` resolved through `/json/version`) that workers use instead of
    /// launching Chromium.
    pub browser_ws: Option<String>,
    /// Let webhooks use `http://` and reach private, loopback and link-local addresses
    /// (self-hosted receivers); off: https:// to public addresses only, redirects included.
    pub webhook_allow_private: bool,
    /// Delay before a webhook's second attempt, in milliseconds; doubled per attempt (at most
    /// an hour between attempts).
    pub webhook_retry_base_ms: u64,
    /// Webhooks are retried until this long after their task ended.
    pub webhook_max_age_seconds: u64,
    /// One webhook attempt's limit.
    pub webhook_timeout_seconds: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            database_url: None,
            data_dir: PathBuf::from("./data"),
            s3_bucket: None,
            s3_endpoint: None,
            s3_region: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_prefix: None,
            api_key: None,
            workers: 2,
            chromium: None,
            chromium_args: Vec::new(),
            adblock_lists: None,
            llm_base_url: None,
            llm_api_key: None,
            llm_model: None,
            llm_lite_model: None,
            llm_timeout_seconds: 60,
            llm_max_retries: 3,
            llm_retry_base_ms: 500,
            llm_max_tokens: 2048,
            llm_vision: "auto".into(),
            llm_prices: std::collections::HashMap::new(),
            custom_tool_timeout_seconds: 300,
            lease_seconds: 30,
            heartbeat_seconds: 5,
            queue_poll_seconds: 5,
            max_attempts: 3,
            long_poll_seconds: 10,
            max_body_bytes: 2 * 1024 * 1024,
            max_upload_bytes: 50 * 1024 * 1024,
            session_idle_seconds: 15 * 60,
            close_grace_seconds: 5,
            drain_seconds: 30,
            db_max_connections: 16,
            db_acquire_timeout_seconds: 3,
            ffmpeg: None,
            recording_fps: 5,
            live_listen: "127.0.0.1:0".into(),
            live_advertise: None,
            tunnel_listen: None,
            tunnel_host: None,
            tunnel_cert_file: None,
            tunnel_key_file: None,
            tunnel_wait_seconds: 30,
            artifact_retention_seconds: 24 * 60 * 60,
            artifact_url_seconds: 60 * 60,
            log: "info".into(),
            metrics_public: false,
            metrics_listen: None,
            rate_limit_per_minute: 0,
            max_running_per_key: 0,
            browser_ws: None,
            webhook_allow_private: false,
            webhook_retry_base_ms: 5000,
            webhook_max_age_seconds: 24 * 60 * 60,
            webhook_timeout_seconds: 10,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hide = |s: &Option<String>| s.as_ref().map(|_| "<hidden>");
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("database_url", &self.database_url.as_deref().map(redact_url))
            .field("data_dir", &self.data_dir)
            .field("s3_bucket", &self.s3_bucket)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field("s3_secret_access_key", &hide(&self.s3_secret_access_key))
            .field("s3_prefix", &self.s3_prefix)
            .field("api_key", &hide(&self.api_key))
            .field("workers", &self.workers)
            .field("chromium", &self.chromium)
            .field("chromium_args", &self.chromium_args)
            .field("adblock_lists", &self.adblock_lists)
            .field("llm_base_url", &self.llm_base_url)
            .field("llm_api_key", &hide(&self.llm_api_key))
            .field("llm_model", &self.llm_model)
            .field("llm_lite_model", &self.llm_lite_model)
            .field("llm_timeout_seconds", &self.llm_timeout_seconds)
            .field("llm_max_retries", &self.llm_max_retries)
            .field("llm_vision", &self.llm_vision)
            .field("llm_prices", &self.llm_prices)
            .field("lease_seconds", &self.lease_seconds)
            .field("heartbeat_seconds", &self.heartbeat_seconds)
            .field("queue_poll_seconds", &self.queue_poll_seconds)
            .field("max_attempts", &self.max_attempts)
            .field("long_poll_seconds", &self.long_poll_seconds)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("session_idle_seconds", &self.session_idle_seconds)
            .field("close_grace_seconds", &self.close_grace_seconds)
            .field("drain_seconds", &self.drain_seconds)
            .field("db_max_connections", &self.db_max_connections)
            .field("db_acquire_timeout_seconds", &self.db_acquire_timeout_seconds)
            .field("ffmpeg", &self.ffmpeg)
            .field("recording_fps", &self.recording_fps)
            .field("live_listen", &self.live_listen)
            .field("live_advertise", &self.live_advertise)
            .field("tunnel_listen", &self.tunnel_listen)
            .field("tunnel_host", &self.tunnel_host)
            .field("tunnel_cert_file", &self.tunnel_cert_file)
            .field("tunnel_key_file", &self.tunnel_key_file)
            .field("tunnel_wait_seconds", &self.tunnel_wait_seconds)
            .field("artifact_retention_seconds", &self.artifact_retention_seconds)
            .field("artifact_url_seconds", &self.artifact_url_seconds)
            .field("log", &self.log)
            .field("metrics_public", &self.metrics_public)
            .field("metrics_listen", &self.metrics_listen)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("max_running_per_key", &self.max_running_per_key)
            .field("browser_ws", &self.browser_ws.as_deref().map(redact_endpoint))
            .field("webhook_allow_private", &self.webhook_allow_private)
            .field("webhook_retry_base_ms", &self.webhook_retry_base_ms)
            .field("webhook_max_age_seconds", &self.webhook_max_age_seconds)
            .field("webhook_timeout_seconds", &self.webhook_timeout_seconds)
            .finish()
    }
}

/// Hides a password in a database URL.
fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("<hidden>"));
            parsed.to_string()
        }
        _ => u.to_string(),
    }
}

/// Hides what may be a credential in a browser endpoint: a password, and the query (fleets
/// such as browserless take `?token=`).
fn redact_endpoint(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("<hidden>"));
            }
            if parsed.query().is_some() {
                parsed.set_query(Some("<hidden>"));
            }
            parsed.to_string()
        }
        Err(_) => "<not a URL>".into(),
    }
}

impl Settings {
    /// Webhook checks and delivery.
    pub fn webhooks(&self) -> smoothd_api::webhooks::WebhookConfig {
        smoothd_api::webhooks::WebhookConfig {
            allow_private: self.webhook_allow_private,
            retry_base: Duration::from_millis(self.webhook_retry_base_ms),
            max_age: Self::secs(self.webhook_max_age_seconds),
            timeout: Self::secs(self.webhook_timeout_seconds),
        }
    }

    /// Loads and validates: defaults, then the config file, then `SMOOTHD_*` variables.
    pub fn load(config_file: Option<&Path>) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        let file = config_file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("SMOOTHD_CONFIG").map(PathBuf::from));
        match file {
            Some(f) => {
                if !f.exists() {
                    bail!("config file {} does not exist", f.display());
                }
                fig = fig.merge(Toml::file(f));
            }
            None => {
                let default = Path::new("config/smoothd.toml");
                if default.exists() {
                    fig = fig.merge(Toml::file(default));
                }
            }
        }
        // SMOOTHD_CONFIG names the file, not a setting.
        fig = fig.merge(Env::prefixed("SMOOTHD_").ignore(&["CONFIG"]).split("__"));
        let mut settings: Settings = fig.extract().context("invalid settings")?;
        // An empty key or model setting counts as unset: `docker compose` passes `${VAR:-}`
        // from a `.env` file that leaves it out as an empty string.
        for v in [
            &mut settings.api_key,
            &mut settings.llm_base_url,
            &mut settings.llm_api_key,
            &mut settings.llm_model,
        ] {
            if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
                *v = None;
            }
        }
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.listen.parse::<SocketAddr>().with_context(|| {
            format!(
                "listen (SMOOTHD_LISTEN): {:?} is not an address like 127.0.0.1:8080",
                self.listen
            )
        })?;
        if let Some(m) = &self.metrics_listen {
            m.parse::<SocketAddr>().with_context(|| {
                format!(
                    "metrics_listen (SMOOTHD_METRICS_LISTEN): {m:?} is not an address like 127.0.0.1:9090"
                )
            })?;
        }
        if let Some(u) = &self.public_url {
            let parsed = url::Url::parse(u)
                .with_context(|| format!("public_url (SMOOTHD_PUBLIC_URL): {u:?} is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("public_url (SMOOTHD_PUBLIC_URL): must be http or https, got {u:?}");
            }
        }
        let db = self.database_url();
        if !(db.starts_with("sqlite:") || db.starts_with("postgres://") || db.starts_with("postgresql://")) {
            bail!(
                "database_url (SMOOTHD_DATABASE_URL): use sqlite://PATH or postgres://..., got {:?}",
                redact_url(&db)
            );
        }
        self.validate_s3()?;
        if let Some(k) = &self.api_key
            && k.trim().len() < 16
        {
            bail!("api_key (SMOOTHD_API_KEY): at least 16 characters, so it cannot be guessed");
        }
        if self.heartbeat_seconds == 0 || self.heartbeat_seconds * 2 > self.lease_seconds {
            bail!(
                "heartbeat_seconds (SMOOTHD_HEARTBEAT_SECONDS) must be at least 1 and at most half of lease_seconds ({})",
                self.lease_seconds
            );
        }
        if !(1..=60).contains(&self.db_acquire_timeout_seconds) {
            bail!(
                "db_acquire_timeout_seconds (SMOOTHD_DB_ACQUIRE_TIMEOUT_SECONDS): between 1 and 60, got {}",
                self.db_acquire_timeout_seconds
            );
        }
        if self.max_attempts < 1 {
            bail!("max_attempts (SMOOTHD_MAX_ATTEMPTS): at least 1");
        }
        if self.long_poll_seconds > 25 {
            bail!(
                "long_poll_seconds (SMOOTHD_LONG_POLL_SECONDS): at most 25, under the SDK's 30 s request timeout"
            );
        }
        if !(1..=30).contains(&self.recording_fps) {
            bail!(
                "recording_fps (SMOOTHD_RECORDING_FPS): between 1 and 30, got {}",
                self.recording_fps
            );
        }
        self.live_listen.parse::<SocketAddr>().with_context(|| {
            format!(
                "live_listen (SMOOTHD_LIVE_LISTEN): {:?} is not an address like 127.0.0.1:0",
                self.live_listen
            )
        })?;
        if let Some(a) = &self.live_advertise
            && !a
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        {
            bail!("live_advertise (SMOOTHD_LIVE_ADVERTISE): {a:?} is not host:port");
        }
        self.validate_tunnel()?;
        if self.artifact_retention_seconds < 60 {
            bail!("artifact_retention_seconds (SMOOTHD_ARTIFACT_RETENTION_SECONDS): at least 60");
        }
        if self.webhook_retry_base_ms == 0 {
            bail!("webhook_retry_base_ms (SMOOTHD_WEBHOOK_RETRY_BASE_MS): at least 1");
        }
        if self.webhook_timeout_seconds == 0 {
            bail!("webhook_timeout_seconds (SMOOTHD_WEBHOOK_TIMEOUT_SECONDS): at least 1");
        }
        if self.artifact_url_seconds < 60 {
            bail!("artifact_url_seconds (SMOOTHD_ARTIFACT_URL_SECONDS): at least 60");
        }
        if let Some(u) = &self.llm_base_url {
            url::Url::parse(u)
                .with_context(|| format!("llm_base_url (SMOOTHD_LLM_BASE_URL): {u:?} is not a URL"))?;
        }
        if self.llm_base_url.is_some() != self.llm_model.is_some() {
            bail!(
                "llm_base_url (SMOOTHD_LLM_BASE_URL) and llm_model (SMOOTHD_LLM_MODEL) go together: set both or neither"
            );
        }
        if self.llm_lite_model.is_some() && self.llm_model.is_none() {
            bail!(
                "llm_lite_model (SMOOTHD_LLM_LITE_MODEL) needs llm_base_url and llm_model: the lite model runs on the same endpoint"
            );
        }
        self.vision()?;
        if self.llm_timeout_seconds == 0 {
            bail!("llm_timeout_seconds (SMOOTHD_LLM_TIMEOUT_SECONDS): at least 1");
        }
        if self.llm_max_retries > 10 {
            bail!("llm_max_retries (SMOOTHD_LLM_MAX_RETRIES): at most 10");
        }
        if let Some(u) = &self.browser_ws {
            let parsed = url::Url::parse(u).map_err(|e| {
                anyhow::anyhow!(
                    "browser_ws (SMOOTHD_BROWSER_WS): {} is not a URL: {e}",
                    redact_endpoint(u)
                )
            })?;
            // Plain ws and http only: this build's DevTools client has no TLS.
            if !matches!(parsed.scheme(), "ws" | "http") || parsed.host().is_none() {
                bail!(
                    "browser_ws (SMOOTHD_BROWSER_WS): use ws://host:port/devtools/browser/<id> or http://host:port (no TLS), got {}",
                    redact_endpoint(u)
                );
            }
        }
        for (model, p) in &self.llm_prices {
            if !(p.input >= 0.0 && p.output >= 0.0) {
                bail!(
                    "llm_prices (SMOOTHD_LLM_PRICES): the prices of {model:?} must be non-negative numbers"
                );
            }
        }
        Ok(())
    }

    fn validate_tunnel(&self) -> anyhow::Result<()> {
        if let Some(t) = &self.tunnel_listen {
            t.parse::<SocketAddr>().with_context(|| {
                format!("tunnel_listen (SMOOTHD_TUNNEL_LISTEN): {t:?} is not an address like 0.0.0.0:443")
            })?;
        }
        if let Some(h) = &self.tunnel_host
            && (h.is_empty() || h.contains(['/', ':', '?', ' ']) || h.contains("browser-live"))
        {
            bail!(
                "tunnel_host (SMOOTHD_TUNNEL_HOST): a bare host name or IPv4 address without port, not containing \
                 \"browser-live\" (the SDK rewrites that), got {h:?}"
            );
        }
        if self.tunnel_cert_file.is_some() != self.tunnel_key_file.is_some() {
            bail!(
                "tunnel_cert_file and tunnel_key_file (SMOOTHD_TUNNEL_CERT_FILE, SMOOTHD_TUNNEL_KEY_FILE): set both or neither"
            );
        }
        if !(1..=600).contains(&self.tunnel_wait_seconds) {
            bail!(
                "tunnel_wait_seconds (SMOOTHD_TUNNEL_WAIT_SECONDS): between 1 and 600, got {}",
                self.tunnel_wait_seconds
            );
        }
        Ok(())
    }

    fn validate_s3(&self) -> anyhow::Result<()> {
        let Some(bucket) = &self.s3_bucket else {
            let set = [
                ("s3_endpoint", "SMOOTHD_S3_ENDPOINT", self.s3_endpoint.is_some()),
                ("s3_region", "SMOOTHD_S3_REGION", self.s3_region.is_some()),
                (
                    "s3_access_key_id",
                    "SMOOTHD_S3_ACCESS_KEY_ID",
                    self.s3_access_key_id.is_some(),
                ),
                (
                    "s3_secret_access_key",
                    "SMOOTHD_S3_SECRET_ACCESS_KEY",
                    self.s3_secret_access_key.is_some(),
                ),
                ("s3_prefix", "SMOOTHD_S3_PREFIX", self.s3_prefix.is_some()),
            ];
            if let Some((key, env, _)) = set.iter().find(|(_, _, is_set)| *is_set) {
                bail!(
                    "{key} ({env}) is set but s3_bucket (SMOOTHD_S3_BUCKET) is not: set the bucket to store artifacts in S3, or remove {key}"
                );
            }
            return Ok(());
        };
        // S3's bucket naming rules (what every S3-compatible server accepts).
        let ok_chars = bucket
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
        let ends_ok = bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !(3..=63).contains(&bucket.len()) || !ok_chars || !ends_ok {
            bail!(
                "s3_bucket (SMOOTHD_S3_BUCKET): {bucket:?} is not a bucket name (3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)"
            );
        }
        if let Some(e) = &self.s3_endpoint {
            let parsed = url::Url::parse(e).with_context(|| {
                format!("s3_endpoint (SMOOTHD_S3_ENDPOINT): {e:?} is not a URL like https://s3.example.com or http://127.0.0.1:9000")
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                bail!(
                    "s3_endpoint (SMOOTHD_S3_ENDPOINT): must be an http:// or https:// URL with a host, got {e:?}"
                );
            }
        }
        if let Some(r) = &self.s3_region
            && (r.is_empty() || !r.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
        {
            bail!("s3_region (SMOOTHD_S3_REGION): {r:?} is not a region name like us-east-1");
        }
        match (&self.s3_access_key_id, &self.s3_secret_access_key) {
            (Some(_), None) | (None, Some(_)) => bail!(
                "s3_access_key_id (SMOOTHD_S3_ACCESS_KEY_ID) and s3_secret_access_key (SMOOTHD_S3_SECRET_ACCESS_KEY) go together: set both, or neither to use the AWS_* environment"
            ),
            (Some(id), Some(_)) if id.trim().is_empty() => {
                bail!("s3_access_key_id (SMOOTHD_S3_ACCESS_KEY_ID): empty")
            }
            _ => {}
        }
        if let Some(p) = &self.s3_prefix {
            let trimmed = p.trim_matches('/');
            let bad_part = |part: &str| {
                part.is_empty() || part == "." || part == ".." || part.chars().any(char::is_control)
            };
            if trimmed.is_empty() || trimmed.split('/').any(bad_part) {
                bail!(
                    "s3_prefix (SMOOTHD_S3_PREFIX): {p:?} is not a folder path like smoothd/prod (no empty, '.' or '..' parts)"
                );
            }
        }
        Ok(())
    }

    /// The S3 bucket for artifacts, when one is configured.
    pub fn s3(&self) -> Option<smoothd_store::S3Config> {
        let bucket = self.s3_bucket.clone()?;
        Some(smoothd_store::S3Config {
            bucket,
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            prefix: self
                .s3_prefix
                .as_deref()
                .map(|p| p.trim_matches('/').to_string())
                .filter(|p| !p.is_empty()),
        })
    }

    /// The database URL, defaulting to SQLite in the data folder.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("smoothd.db").display()),
        }
    }

    /// The public base URL, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }

    /// `llm_vision` parsed.
    pub fn vision(&self) -> anyhow::Result<smoothd_agent::Vision> {
        Ok(match self.llm_vision.to_ascii_lowercase().as_str() {
            "auto" => smoothd_agent::Vision::Auto,
            "on" | "true" => smoothd_agent::Vision::On,
            "off" | "false" => smoothd_agent::Vision::Off,
            other => bail!("llm_vision (SMOOTHD_LLM_VISION): auto, on or off, got {other:?}"),
        })
    }

    /// The agent, when a model is configured.
    pub fn agent(&self) -> anyhow::Result<Option<smoothd_agent::Agent>> {
        let (Some(base_url), Some(model)) = (&self.llm_base_url, &self.llm_model) else {
            return Ok(None);
        };
        let llm = smoothd_agent::Llm::new(smoothd_agent::LlmConfig {
            base_url: base_url.clone(),
            api_key: self.llm_api_key.clone(),
            model: model.clone(),
            timeout: Duration::from_secs(self.llm_timeout_seconds),
            max_retries: self.llm_max_retries,
            retry_base: Duration::from_millis(self.llm_retry_base_ms),
            max_completion_tokens: self.llm_max_tokens,
            prices: self.llm_prices.clone(),
        })
        .map_err(anyhow::Error::msg)?;
        Ok(Some(smoothd_agent::Agent {
            llm,
            config: smoothd_agent::AgentConfig {
                vision: self.vision()?,
                custom_tool_timeout: Duration::from_secs(self.custom_tool_timeout_seconds),
            },
            lite_model: self.llm_lite_model.clone(),
        }))
    }

    /// Seconds as a duration.
    pub fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }
}

#[cfg(test)]
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail's closures return figment::Error"
)]
mod tests {
    use super::*;

    #[test]
    fn model_settings_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            // The test command itself runs with SMOOTHD_TEST_* variables set.
            jail.clear_env();
            jail.set_env("SMOOTHD_LLM_BASE_URL", "http://127.0.0.1:9/v1");
            jail.set_env("SMOOTHD_LLM_MODEL", "m1");
            jail.set_env("SMOOTHD_LLM_PRICES", "{m1={input=2.5,output=10}}");
            jail.set_env("SMOOTHD_LLM_VISION", "off");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                s.llm_prices["m1"],
                smoothd_agent::Price {
                    input: 2.5,
                    output: 10.0
                }
            );
            assert_eq!(s.vision().map_err(|e| e.to_string())?, smoothd_agent::Vision::Off);
            assert!(s.agent().map_err(|e| e.to_string())?.is_some());
            jail.set_env("SMOOTHD_LLM_VISION", "sometimes");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("llm_vision (SMOOTHD_LLM_VISION)"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn db_acquire_timeout_and_lite_model_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                s.db_acquire_timeout_seconds, 3,
                "short enough for a client's retry"
            );
            jail.set_env("SMOOTHD_DB_ACQUIRE_TIMEOUT_SECONDS", "1");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.db_acquire_timeout_seconds, 1);
            jail.set_env("SMOOTHD_DB_ACQUIRE_TIMEOUT_SECONDS", "0");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(
                err.contains("db_acquire_timeout_seconds (SMOOTHD_DB_ACQUIRE_TIMEOUT_SECONDS)"),
                "{err}"
            );
            jail.set_env("SMOOTHD_DB_ACQUIRE_TIMEOUT_SECONDS", "3");
            jail.set_env("SMOOTHD_LLM_LITE_MODEL", "small");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("llm_lite_model (SMOOTHD_LLM_LITE_MODEL)"), "{err}");
            jail.set_env("SMOOTHD_LLM_BASE_URL", "http://127.0.0.1:11434/v1");
            jail.set_env("SMOOTHD_LLM_MODEL", "big");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            let agent = s.agent().map_err(|e| e.to_string())?.ok_or("no agent")?;
            assert_eq!(agent.lite_model.as_deref(), Some("small"));
            assert_eq!(agent.for_task("smooth-lite").llm.model(), "small");
            Ok(())
        });
    }

    #[test]
    fn empty_key_and_model_settings_count_as_unset() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for k in [
                "SMOOTHD_API_KEY",
                "SMOOTHD_LLM_BASE_URL",
                "SMOOTHD_LLM_API_KEY",
                "SMOOTHD_LLM_MODEL",
            ] {
                jail.set_env(k, "");
            }
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.api_key, None);
            assert_eq!((s.llm_base_url, s.llm_api_key, s.llm_model), (None, None, None));
            jail.set_env("SMOOTHD_LLM_BASE_URL", "http://host.docker.internal:11434/v1");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("go together"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn metrics_settings_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            // The test command itself runs with SMOOTHD_TEST_* variables set.
            jail.clear_env();
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert!(!s.metrics_public, "the scrape needs a key unless asked otherwise");
            jail.set_env("SMOOTHD_METRICS_PUBLIC", "true");
            jail.set_env("SMOOTHD_METRICS_LISTEN", "127.0.0.1:9091");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert!(s.metrics_public);
            assert_eq!(s.metrics_listen.as_deref(), Some("127.0.0.1:9091"));
            jail.set_env("SMOOTHD_METRICS_LISTEN", "port 9091");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("metrics_listen (SMOOTHD_METRICS_LISTEN)"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn s3_settings_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            // The test command itself runs with SMOOTHD_TEST_* variables set.
            jail.clear_env();
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert!(
                s.s3().is_none(),
                "artifacts stay in the data folder unless a bucket is set"
            );
            jail.set_env("SMOOTHD_S3_BUCKET", "smoothd-artifacts");
            jail.set_env("SMOOTHD_S3_ENDPOINT", "http://127.0.0.1:9000");
            jail.set_env("SMOOTHD_S3_REGION", "eu-west-1");
            jail.set_env("SMOOTHD_S3_ACCESS_KEY_ID", "AKIDEXAMPLE");
            jail.set_env("SMOOTHD_S3_SECRET_ACCESS_KEY", "very-secret-value");
            jail.set_env("SMOOTHD_S3_PREFIX", "/smoothd/prod/");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            let s3 = s.s3().ok_or("no S3 config")?;
            assert_eq!(s3.bucket, "smoothd-artifacts");
            assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
            assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
            assert_eq!(s3.access_key_id.as_deref(), Some("AKIDEXAMPLE"));
            assert_eq!(s3.prefix.as_deref(), Some("smoothd/prod"));
            let shown = format!("{s:?} {s3:?}");
            assert!(!shown.contains("very-secret-value"), "{shown}");
            // Building the client sends nothing, so it works without a server.
            smoothd_store::Blobs::s3(&s3).map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn bad_s3_settings_name_the_key() {
        figment::Jail::expect_with(|jail| {
            // The test command itself runs with SMOOTHD_TEST_* variables set.
            jail.clear_env();
            let refused = |jail: &mut figment::Jail, key: &str, value: &str, expect: &str| {
                jail.set_env(key, value);
                let err = format!("{:#}", Settings::load(None).unwrap_err());
                assert!(err.contains(expect), "{key}={value:?}: {err}");
            };
            refused(
                jail,
                "SMOOTHD_S3_ENDPOINT",
                "http://127.0.0.1:9000",
                "s3_bucket (SMOOTHD_S3_BUCKET)",
            );
            refused(
                jail,
                "SMOOTHD_S3_BUCKET",
                "Not_A_Bucket",
                "s3_bucket (SMOOTHD_S3_BUCKET)",
            );
            jail.set_env("SMOOTHD_S3_BUCKET", "artifacts");
            refused(
                jail,
                "SMOOTHD_S3_ENDPOINT",
                "127.0.0.1:9000",
                "s3_endpoint (SMOOTHD_S3_ENDPOINT)",
            );
            refused(
                jail,
                "SMOOTHD_S3_ENDPOINT",
                "ftp://127.0.0.1",
                "s3_endpoint (SMOOTHD_S3_ENDPOINT)",
            );
            jail.set_env("SMOOTHD_S3_ENDPOINT", "https://s3.example.com");
            refused(
                jail,
                "SMOOTHD_S3_REGION",
                "eu west",
                "s3_region (SMOOTHD_S3_REGION)",
            );
            jail.set_env("SMOOTHD_S3_REGION", "eu-west-1");
            refused(jail, "SMOOTHD_S3_ACCESS_KEY_ID", "AKID", "go together");
            jail.set_env("SMOOTHD_S3_SECRET_ACCESS_KEY", "secret");
            refused(jail, "SMOOTHD_S3_PREFIX", "a//b", "s3_prefix (SMOOTHD_S3_PREFIX)");
            refused(
                jail,
                "SMOOTHD_S3_PREFIX",
                "a/../b",
                "s3_prefix (SMOOTHD_S3_PREFIX)",
            );
            jail.set_env("SMOOTHD_S3_PREFIX", "a/b");
            Settings::load(None).map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn bad_tunnel_settings_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for (key, value, expect) in [
                (
                    "SMOOTHD_TUNNEL_LISTEN",
                    "host443",
                    "tunnel_listen (SMOOTHD_TUNNEL_LISTEN)",
                ),
                (
                    "SMOOTHD_TUNNEL_HOST",
                    "browser-live.example.com",
                    "tunnel_host (SMOOTHD_TUNNEL_HOST)",
                ),
                (
                    "SMOOTHD_TUNNEL_HOST",
                    "example.com:443",
                    "tunnel_host (SMOOTHD_TUNNEL_HOST)",
                ),
                ("SMOOTHD_TUNNEL_CERT_FILE", "/x.pem", "set both or neither"),
                (
                    "SMOOTHD_TUNNEL_WAIT_SECONDS",
                    "0",
                    "tunnel_wait_seconds (SMOOTHD_TUNNEL_WAIT_SECONDS)",
                ),
            ] {
                jail.clear_env();
                jail.set_env(key, value);
                let err = format!("{:#}", Settings::load(None).unwrap_err());
                assert!(err.contains(expect), "{key}={value:?}: {err}");
            }
            jail.clear_env();
            jail.set_env("SMOOTHD_TUNNEL_LISTEN", "0.0.0.0:443");
            jail.set_env("SMOOTHD_TUNNEL_HOST", "browser-proxy.example.com");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.tunnel_listen.as_deref(), Some("0.0.0.0:443"));
            assert_eq!(s.tunnel_wait_seconds, 30);
            Ok(())
        });
    }

    #[test]
    fn limit_and_browser_settings_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            // The test command itself runs with SMOOTHD_TEST_* variables set.
            jail.clear_env();
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                (
                    s.rate_limit_per_minute,
                    s.max_running_per_key,
                    s.browser_ws.as_deref()
                ),
                (0, 0, None),
                "limits are off and Chromium is local unless asked otherwise"
            );
            jail.set_env("SMOOTHD_RATE_LIMIT_PER_MINUTE", "120");
            jail.set_env("SMOOTHD_MAX_RUNNING_PER_KEY", "4");
            jail.set_env(
                "SMOOTHD_BROWSER_WS",
                "ws://10.0.0.5:3000/devtools/browser/abc?token=s3cret",
            );
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!((s.rate_limit_per_minute, s.max_running_per_key), (120, 4));
            assert!(
                s.browser_ws
                    .as_deref()
                    .is_some_and(|u| u.ends_with("token=s3cret"))
            );
            let shown = format!("{s:?}");
            assert!(
                !shown.contains("s3cret"),
                "a fleet token stays out of logs: {shown}"
            );
            assert!(shown.contains("10.0.0.5:3000"), "{shown}");
            jail.set_env("SMOOTHD_BROWSER_WS", "wss://fleet.example/devtools/browser/abc");
            let err = format!("{:#}", Settings::load(None).unwrap_err());
            assert!(err.contains("browser_ws (SMOOTHD_BROWSER_WS)"), "{err}");
            jail.set_env("SMOOTHD_BROWSER_WS", "http://127.0.0.1:9222");
            jail.set_env("SMOOTHD_MAX_RUNNING_PER_KEY", "-1");
            // figment names the variable: `... for key "MAX_RUNNING_PER_KEY" in SMOOTHD_ ...`.
            let err = format!("{:#}", Settings::load(None).unwrap_err());
            assert!(err.contains("MAX_RUNNING_PER_KEY"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_base_url_without_a_model_is_refused() {
        figment::Jail::expect_with(|jail| {
            // The test command itself runs with SMOOTHD_TEST_* variables set.
            jail.clear_env();
            jail.set_env("SMOOTHD_LLM_BASE_URL", "http://127.0.0.1:9/v1");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("go together"), "{err}");
            Ok(())
        });
    }
}
