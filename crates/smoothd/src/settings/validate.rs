//! The settings' checks, one function per area, each message naming its key with
//! [`key`]. Run once by `Settings::load`.

use std::net::SocketAddr;

use anyhow::{Context, bail};

use super::{CredentialUrl, Settings, key};

impl Settings {
    /// Checks every area; the first problem found is the error.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        self.validate_serving()?;
        self.validate_storage()?;
        self.validate_s3()?;
        self.validate_queue()?;
        self.validate_media()?;
        self.validate_tunnel()?;
        self.validate_model()?;
        self.validate_browser()?;
        self.validate_webhooks()
    }

    /// The API and metrics listeners, the public URL, the bootstrap key.
    fn validate_serving(&self) -> anyhow::Result<()> {
        self.listen.parse::<SocketAddr>().with_context(|| {
            format!(
                "{}: {:?} is not an address like 127.0.0.1:8080",
                key("listen"),
                self.listen
            )
        })?;
        if let Some(m) = &self.metrics_listen {
            m.parse::<SocketAddr>().with_context(|| {
                format!(
                    "{}: {m:?} is not an address like 127.0.0.1:9090",
                    key("metrics_listen")
                )
            })?;
        }
        if let Some(u) = &self.public_url {
            let parsed =
                url::Url::parse(u).with_context(|| format!("{}: {u:?} is not a URL", key("public_url")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("{}: must be http or https, got {u:?}", key("public_url"));
            }
        }
        if let Some(k) = &self.api_key
            && k.expose().trim().len() < 16
        {
            bail!(
                "{}: at least 16 characters, so it cannot be guessed",
                key("api_key")
            );
        }
        Ok(())
    }

    /// The database URL and how long artifacts and their links live.
    fn validate_storage(&self) -> anyhow::Result<()> {
        let db = self.database_url();
        if !(db.starts_with("sqlite:") || db.starts_with("postgres://") || db.starts_with("postgresql://")) {
            bail!(
                "{}: use sqlite://PATH or postgres://..., got {:?}",
                key("database_url"),
                CredentialUrl::redacted(&db)
            );
        }
        if self.artifact_retention_seconds < 60 {
            bail!("{}: at least 60", key("artifact_retention_seconds"));
        }
        if self.artifact_url_seconds < 60 {
            bail!("{}: at least 60", key("artifact_url_seconds"));
        }
        Ok(())
    }

    /// Leases, heartbeats, attempts, database waits and long polls.
    fn validate_queue(&self) -> anyhow::Result<()> {
        if self.heartbeat_seconds == 0 || self.heartbeat_seconds * 2 > self.lease_seconds {
            bail!(
                "{} must be at least 1 and at most half of lease_seconds ({})",
                key("heartbeat_seconds"),
                self.lease_seconds
            );
        }
        if !(1..=60).contains(&self.db_acquire_timeout_seconds) {
            bail!(
                "{}: between 1 and 60, got {}",
                key("db_acquire_timeout_seconds"),
                self.db_acquire_timeout_seconds
            );
        }
        if self.max_attempts < 1 {
            bail!("{}: at least 1", key("max_attempts"));
        }
        if self.long_poll_seconds > 25 {
            bail!(
                "{}: at most 25, under the SDK's 30 s request timeout",
                key("long_poll_seconds")
            );
        }
        Ok(())
    }

    /// Recording and the live-stream listener.
    fn validate_media(&self) -> anyhow::Result<()> {
        if !(1..=30).contains(&self.recording_fps) {
            bail!(
                "{}: between 1 and 30, got {}",
                key("recording_fps"),
                self.recording_fps
            );
        }
        self.live_listen.parse::<SocketAddr>().with_context(|| {
            format!(
                "{}: {:?} is not an address like 127.0.0.1:0",
                key("live_listen"),
                self.live_listen
            )
        })?;
        if let Some(a) = &self.live_advertise
            && !a
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        {
            bail!("{}: {a:?} is not host:port", key("live_advertise"));
        }
        Ok(())
    }

    /// The model endpoint, its models, retries and prices.
    fn validate_model(&self) -> anyhow::Result<()> {
        if let Some(u) = &self.llm_base_url {
            url::Url::parse(u).with_context(|| format!("{}: {u:?} is not a URL", key("llm_base_url")))?;
        }
        if self.llm_base_url.is_some() != self.llm_model.is_some() {
            bail!(
                "{} and {} go together: set both or neither",
                key("llm_base_url"),
                key("llm_model")
            );
        }
        if self.llm_lite_model.is_some() && self.llm_model.is_none() {
            bail!(
                "{} needs llm_base_url and llm_model: the lite model runs on the same endpoint",
                key("llm_lite_model")
            );
        }
        self.vision()?;
        if self.llm_timeout_seconds == 0 {
            bail!("{}: at least 1", key("llm_timeout_seconds"));
        }
        if self.llm_max_retries > 10 {
            bail!("{}: at most 10", key("llm_max_retries"));
        }
        // A margin as long as a 30 s code would make the agent wait for codes that never come.
        if self.totp_min_validity_seconds > 15 {
            bail!("{}: at most 15", key("totp_min_validity_seconds"));
        }
        if self.captcha_timeout_seconds == 0 {
            bail!("{}: at least 1", key("captcha_timeout_seconds"));
        }
        for (model, p) in &self.llm_prices {
            if !(p.input >= 0.0 && p.output >= 0.0) {
                bail!(
                    "{}: the prices of {model:?} must be non-negative numbers",
                    key("llm_prices")
                );
            }
        }
        self.validate_guardrails()
    }

    /// The loop guard's thresholds and the spend cap, which needs a price for every model.
    fn validate_guardrails(&self) -> anyhow::Result<()> {
        if self.agent_loop_alternation > 0 && self.agent_loop_alternation < 3 {
            bail!(
                "{}: 0 (off) or at least 3 (A, B, A)",
                key("agent_loop_alternation")
            );
        }
        let Some(cap) = self.max_cost_usd else {
            return Ok(());
        };
        if !(cap.is_finite() && cap > 0.0) {
            bail!(
                "{}: a positive number of US dollars, got {cap}",
                key("max_cost_usd")
            );
        }
        for model in [&self.llm_model, &self.llm_lite_model].into_iter().flatten() {
            if !self.llm_prices.contains_key(model) {
                bail!(
                    "{}: a cap needs the model's price, and {} has no price for {model:?}",
                    key("max_cost_usd"),
                    key("llm_prices")
                );
            }
        }
        Ok(())
    }

    /// A remote browser endpoint.
    fn validate_browser(&self) -> anyhow::Result<()> {
        if let Some(u) = &self.browser_ws {
            let parsed = url::Url::parse(u).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {} is not a URL: {e}",
                    key("browser_ws"),
                    CredentialUrl::redacted(u)
                )
            })?;
            // Plain ws and http only: this build's DevTools client has no TLS.
            if !matches!(parsed.scheme(), "ws" | "http") || parsed.host().is_none() {
                bail!(
                    "{}: use ws://host:port/devtools/browser/<id> or http://host:port (no TLS), got {}",
                    key("browser_ws"),
                    CredentialUrl::redacted(u)
                );
            }
        }
        Ok(())
    }

    /// Webhook retries and timeouts.
    fn validate_webhooks(&self) -> anyhow::Result<()> {
        if self.webhook_retry_base_ms == 0 {
            bail!("{}: at least 1", key("webhook_retry_base_ms"));
        }
        if self.webhook_timeout_seconds == 0 {
            bail!("{}: at least 1", key("webhook_timeout_seconds"));
        }
        Ok(())
    }

    fn validate_tunnel(&self) -> anyhow::Result<()> {
        if let Some(t) = &self.tunnel_listen {
            t.parse::<SocketAddr>().with_context(|| {
                format!(
                    "{}: {t:?} is not an address like 0.0.0.0:443",
                    key("tunnel_listen")
                )
            })?;
        }
        if let Some(h) = &self.tunnel_host
            && (h.is_empty() || h.contains(['/', ':', '?', ' ']) || h.contains("browser-live"))
        {
            bail!(
                "{}: a bare host name or IPv4 address without port, not containing \
                 \"browser-live\" (the SDK rewrites that), got {h:?}",
                key("tunnel_host")
            );
        }
        if self.tunnel_cert_file.is_some() != self.tunnel_key_file.is_some() {
            bail!(
                "{} and {}: set both or neither",
                key("tunnel_cert_file"),
                key("tunnel_key_file")
            );
        }
        if !(1..=600).contains(&self.tunnel_wait_seconds) {
            bail!(
                "{}: between 1 and 600, got {}",
                key("tunnel_wait_seconds"),
                self.tunnel_wait_seconds
            );
        }
        Ok(())
    }

    fn validate_s3(&self) -> anyhow::Result<()> {
        let Some(bucket) = &self.s3_bucket else {
            let set = [
                ("s3_endpoint", self.s3_endpoint.is_some()),
                ("s3_region", self.s3_region.is_some()),
                ("s3_access_key_id", self.s3_access_key_id.is_some()),
                ("s3_secret_access_key", self.s3_secret_access_key.is_some()),
                ("s3_prefix", self.s3_prefix.is_some()),
            ];
            if let Some((name, _)) = set.iter().find(|(_, is_set)| *is_set) {
                bail!(
                    "{} is set but {} is not: set the bucket to store artifacts in S3, or remove {name}",
                    key(name),
                    key("s3_bucket")
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
                "{}: {bucket:?} is not a bucket name (3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)",
                key("s3_bucket")
            );
        }
        if let Some(e) = &self.s3_endpoint {
            let parsed = url::Url::parse(e).with_context(|| {
                format!(
                    "{}: {e:?} is not a URL like https://s3.example.com or http://127.0.0.1:9000",
                    key("s3_endpoint")
                )
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                bail!(
                    "{}: must be an http:// or https:// URL with a host, got {e:?}",
                    key("s3_endpoint")
                );
            }
        }
        if let Some(r) = &self.s3_region
            && (r.is_empty() || !r.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
        {
            bail!("{}: {r:?} is not a region name like us-east-1", key("s3_region"));
        }
        match (&self.s3_access_key_id, &self.s3_secret_access_key) {
            (Some(_), None) | (None, Some(_)) => bail!(
                "{} and {} go together: set both, or neither to use the AWS_* environment",
                key("s3_access_key_id"),
                key("s3_secret_access_key")
            ),
            (Some(id), Some(_)) if id.trim().is_empty() => {
                bail!("{}: empty", key("s3_access_key_id"))
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
                    "{}: {p:?} is not a folder path like smoothd/prod (no empty, '.' or '..' parts)",
                    key("s3_prefix")
                );
            }
        }
        Ok(())
    }
}
