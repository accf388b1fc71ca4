//! The URLs smoothd hands out without the API key: a task's live view (authorized by the
//! task's unguessable live token) and signed, expiring artifact downloads. Signatures are
//! HMAC-SHA256 over `{artifact id}:{expiry}` with a secret every process reads from the
//! database (created at random by the first one), so any API process verifies any link.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use smoothd_core::time::now_ms;
use smoothd_store::TaskRow;

type HmacSha256 = Hmac<Sha256>;

fn is_self_proxy(task: &TaskRow) -> bool {
    task.request.contains("\"self\"")
        && task
            .spec()
            .ok()
            .and_then(|s| s.proxy)
            .is_some_and(|p| p.is_self())
}

/// Builds and checks the public links.
#[derive(Clone)]
pub struct Links {
    public_url: String,
    /// The `b` parameter of self-proxy sessions' live URLs (see [`Links::with_tunnel_host`]).
    tunnel_b: Option<String>,
    secret: Vec<u8>,
    ttl: Duration,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("public_url", &self.public_url)
            .field("secret", &"<hidden>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// Why a signed link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// The signature does not match.
    BadSignature,
    /// The link's time is up.
    Expired,
}

impl Links {
    /// Links under `public_url` (no trailing slash), signed with `secret`, valid for `ttl`.
    pub fn new(public_url: &str, secret: &str, ttl: Duration) -> Self {
        Self {
            public_url: public_url.trim_end_matches('/').to_string(),
            tunnel_b: None,
            secret: secret.as_bytes().to_vec(),
            ttl,
        }
    }

    /// Self-proxy sessions' live URLs lead the SDK's frpc to `host` (port 443). The SDK reads
    /// `b` as URL-safe base64 of `https://{host}` and replaces `browser-live` with
    /// `browser-proxy` in it, so a host with `browser-proxy` in its name is written with
    /// `browser-live` to come out right (one with `browser-live` cannot be expressed).
    pub fn with_tunnel_host(mut self, host: &str) -> Self {
        let written = format!("https://{}", host.replace("browser-proxy", "browser-live"));
        self.tunnel_b = Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(written));
        self
    }

    /// The live view page of a task; a `proxy_server: "self"` session's carries `b`.
    pub fn live_url(&self, task: &TaskRow) -> String {
        let base = format!("{}/live/{}?token={}", self.public_url, task.id, task.live_token);
        match &self.tunnel_b {
            Some(b) if task.is_session() && is_self_proxy(task) => format!("{base}&b={b}"),
            _ => base,
        }
    }

    /// A signed link to an artifact, valid for the configured time.
    pub fn artifact_url(&self, artifact_id: &str, name: &str) -> String {
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let expires = now_ms().saturating_add(ttl_ms) / 1000;
        format!(
            "{}/artifacts/{artifact_id}/{name}?expires={expires}&signature={}",
            self.public_url,
            self.sign(artifact_id, expires)
        )
    }

    #[expect(clippy::expect_used, reason = "HMAC accepts keys of any length")]
    fn mac(&self, artifact_id: &str, expires: i64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("any key length");
        mac.update(format!("{artifact_id}:{expires}").as_bytes());
        mac
    }

    fn sign(&self, artifact_id: &str, expires: i64) -> String {
        hex::encode(self.mac(artifact_id, expires).finalize().into_bytes())
    }

    /// Checks a link's signature (in constant time) and expiry (epoch seconds).
    pub fn verify(&self, artifact_id: &str, expires: i64, signature: &str) -> Result<(), LinkError> {
        let sig = hex::decode(signature).map_err(|_| LinkError::BadSignature)?;
        self.mac(artifact_id, expires)
            .verify_slice(&sig)
            .map_err(|_| LinkError::BadSignature)?;
        if expires.saturating_mul(1000) < now_ms() {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_the_artifact_and_the_expiry() {
        let links = Links::new("http://h/", "secret", Duration::from_secs(60));
        let url = links.artifact_url("art_1", "recording.mp4");
        assert!(
            url.starts_with("http://h/artifacts/art_1/recording.mp4?expires="),
            "{url}"
        );
        let q: std::collections::HashMap<&str, &str> = url
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let exp: i64 = q["expires"].parse().unwrap_or_default();
        let sig = q["signature"];
        assert_eq!(links.verify("art_1", exp, sig), Ok(()));
        assert_eq!(links.verify("art_2", exp, sig), Err(LinkError::BadSignature));
        assert_eq!(links.verify("art_1", exp + 1, sig), Err(LinkError::BadSignature));
        assert_eq!(links.verify("art_1", exp, "zz"), Err(LinkError::BadSignature));
        let other = Links::new("http://h", "other secret", Duration::from_secs(60));
        assert_eq!(other.verify("art_1", exp, sig), Err(LinkError::BadSignature));
        let past = 1_000;
        let old = links.sign("art_1", past);
        assert_eq!(links.verify("art_1", past, &old), Err(LinkError::Expired));
    }

    #[test]
    fn tunnel_host_survives_the_sdks_rewrite() {
        use base64::Engine;
        let links = Links::new("http://h", "s", Duration::from_secs(60))
            .with_tunnel_host("browser-proxy.example.com");
        let b = links.tunnel_b.clone().unwrap_or_default();
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b)
            .unwrap_or_default();
        let text = String::from_utf8(decoded).unwrap_or_default();
        // What smooth-py does: keep what follows https://, browser-live -> browser-proxy.
        let host = text
            .split("https://")
            .nth(1)
            .unwrap_or_default()
            .replace("browser-live", "browser-proxy");
        assert_eq!(host, "browser-proxy.example.com");
    }
}
