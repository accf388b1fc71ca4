//! Settings: one typed struct, layered defaults → `config/smoothd.toml` (or the file named by
//! `SMOOTHD_CONFIG` / `--config`) → `SMOOTHD_*` environment variables. Validated at start with
//! messages naming the key; secrets never appear in `Debug`.
//!
//! The settings themselves are one flat struct (each key is one `SMOOTHD_*` variable and one
//! line of `smoothd.toml`); their checks are per area in `validate.rs`, and credentials are
//! [`Secret`]s or [`CredentialUrl`]s (`secret.rs`), so a derived `Debug` shows every setting
//! and no secret.

mod secret;
mod validate;

pub use secret::{CredentialUrl, Secret};

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// A setting's name as users write it, with its environment variable: `key (SMOOTHD_KEY)`.
/// Every message about a setting names it this way.
pub fn key(name: &str) -> String {
    format!("{name} (SMOOTHD_{})", name.to_ascii_uppercase())
}

/// Every setting, with its default, grouped by area: serving, storage, browsers, the model,
/// the queue, sessions and media, the tunnel, artifacts, observability, limits, webhooks.
/// Flat on purpose: each key is one `SMOOTHD_*` variable and one line of `smoothd.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the API listens on.
    pub listen: String,
    /// Base of URLs handed out (live view, recordings, downloads); default `http://{listen}`.
    pub public_url: Option<String>,
    /// `sqlite://PATH` or `postgres://...`; default `sqlite://{data_dir}/smoothd.db`.
    pub database_url: Option<CredentialUrl>,
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
    pub s3_secret_access_key: Option<Secret>,
    /// Folder inside the bucket for smoothd's objects, e.g. `smoothd/prod`.
    pub s3_prefix: Option<String>,
    /// A bootstrap API key (stored hashed under the name `bootstrap`).
    pub api_key: Option<Secret>,
    /// Concurrent tasks per process.
    pub workers: usize,
    /// Chromium binary (found automatically when unset).
    pub chromium: Option<String>,
    /// Extra Chromium flags, e.g. `["--host-resolver-rules=..."]`.
    pub chromium_args: Vec<String>,
    /// Keep one fresh browser context prepared for the next task (device emulation, stealth
    /// and interception done ahead), so a task's first navigation does not wait for it. On by
    /// default (see README, "The browser").
    pub spare_session: bool,
    /// Filter lists for `use_adblock` (default: Debian's EasyList and EasyPrivacy).
    pub adblock_lists: Option<Vec<PathBuf>>,
    /// OpenAI-compatible endpoint, e.g. `http://127.0.0.1:11434/v1`.
    pub llm_base_url: Option<String>,
    /// API key for the endpoint.
    pub llm_api_key: Option<Secret>,
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
    /// A TOTP secret's code is typed only if it stays valid at least this long; else the agent
    /// waits for the next code.
    pub totp_min_validity_seconds: u64,
    /// Loop guard: the same action on the same target, the page unchanged, this many times in a
    /// row warns the model (0: off).
    pub agent_loop_repeats: u32,
    /// Loop guard: this many observations alternating between two page states warn the model
    /// (0: off; else at least 3).
    pub agent_loop_alternation: u32,
    /// Loop guard: this many steps in a row without any change to the URL, the page or the
    /// scroll position warn the model (0: off).
    pub agent_stall_steps: u32,
    /// Loop guard: steps without progress after the warning before the task ends `failed`
    /// (0: warn only).
    pub agent_loop_grace: u32,
    /// Spend cap per task in US dollars at `llm_prices` (unset: none); a task's
    /// `experimental_features.max_cost_usd` can only lower it.
    pub max_cost_usd: Option<f64>,
    /// How long a task with `use_captcha_solver` waits for a person to solve a captcha in the
    /// live view before it fails with "captcha not solved".
    pub captcha_timeout_seconds: u64,
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
    pub browser_ws: Option<CredentialUrl>,
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
            spare_session: true,
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
            totp_min_validity_seconds: 3,
            agent_loop_repeats: 3,
            agent_loop_alternation: 4,
            agent_stall_steps: 5,
            agent_loop_grace: 2,
            max_cost_usd: None,
            captcha_timeout_seconds: 300,
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
        for v in [&mut settings.llm_base_url, &mut settings.llm_model] {
            if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
                *v = None;
            }
        }
        for v in [&mut settings.api_key, &mut settings.llm_api_key] {
            if v.as_ref().is_some_and(|s| s.expose().trim().is_empty()) {
                *v = None;
            }
        }
        settings.validate()?;
        Ok(settings)
    }

    /// The S3 bucket for artifacts, when one is configured.
    pub fn s3(&self) -> Option<smoothd_store::S3Config> {
        let bucket = self.s3_bucket.clone()?;
        Some(smoothd_store::S3Config {
            bucket,
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.as_ref().map(|s| s.expose().to_string()),
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
            Some(u) => u.to_string(),
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
            other => bail!("{}: auto, on or off, got {other:?}", key("llm_vision")),
        })
    }

    /// The agent, when a model is configured.
    pub fn agent(&self) -> anyhow::Result<Option<smoothd_agent::Agent>> {
        let (Some(base_url), Some(model)) = (&self.llm_base_url, &self.llm_model) else {
            return Ok(None);
        };
        let llm = smoothd_agent::Llm::new(smoothd_agent::LlmConfig {
            base_url: base_url.clone(),
            api_key: self.llm_api_key.as_ref().map(|s| s.expose().to_string()),
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
                totp_min_validity: Duration::from_secs(self.totp_min_validity_seconds),
                guard: smoothd_agent::GuardConfig {
                    repeats: self.agent_loop_repeats,
                    alternation: self.agent_loop_alternation,
                    stall_steps: self.agent_stall_steps,
                    grace: self.agent_loop_grace,
                },
                max_cost_usd: self.max_cost_usd,
                captcha_timeout: Duration::from_secs(self.captcha_timeout_seconds),
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
mod tests;
