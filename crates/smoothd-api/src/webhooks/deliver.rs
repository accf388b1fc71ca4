//! The delivery loop every process runs: claim a due delivery (its task is final), fix its
//! body at the first attempt (the task as `GET /v1/task/{id}` returns it), sign and POST it,
//! log the attempt, and schedule the next one with exponential backoff until the retry window
//! closes. Without `webhook_allow_private`, names resolving to private addresses are refused
//! at connect time and redirects are followed only to https:// URLs on public addresses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use smoothd_core::event::Direction;
use smoothd_core::time::now_ms;
use smoothd_store::{AttemptLog, AttemptOutcome, DeliveryClaim, Store};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{WebhookConfig, check_url, fresh_secret, is_private};
use crate::links::Links;
use crate::models::{TaskEvent, TaskResponse};

/// Attempts in flight per process.
const PARALLEL: usize = 8;
/// How often an idle loop looks for due deliveries.
const POLL: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
const MAX_DELAY: Duration = Duration::from_secs(60 * 60);

/// Why a delivery attempt could not even be made.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("store: {0}")]
    Store(#[from] smoothd_store::StoreError),
    #[error("task vanished")]
    NoTask,
    #[error("cannot encode the body: {0}")]
    Json(#[from] serde_json::Error),
}

/// Resolves names, keeping only public addresses.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_private(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves only to private addresses").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client for webhook requests.
pub fn client(config: &WebhookConfig) -> reqwest::Result<reqwest::Client> {
    let allow = config.allow_private;
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error("too many redirects");
        }
        match check_url(attempt.url().as_str(), allow) {
            Ok(_) => attempt.follow(),
            Err(e) => attempt.error(format!("refused redirect: {e}")),
        }
    });
    let mut b = reqwest::Client::builder()
        .timeout(config.timeout)
        .redirect(policy)
        .user_agent(concat!("smoothd/", env!("CARGO_PKG_VERSION"), " webhooks"));
    if !allow {
        b = b.dns_resolver(Arc::new(PublicOnly));
    }
    b.build()
}

/// `v1,<base64>` over `{id}.{timestamp}.{body}` with a `whsec_` secret.
#[expect(clippy::expect_used, reason = "HMAC accepts keys of any length")]
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let raw = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = b64.decode(raw).unwrap_or_else(|_| raw.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", b64.encode(mac.finalize().into_bytes()))
}

/// Delivers webhooks until `stop` fires.
pub async fn run(store: Store, links: Arc<Links>, config: WebhookConfig, stop: CancellationToken) {
    let http = match client(&config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are off");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(PARALLEL));
    // A claim outlives any attempt (bounded by the timeout); a process that dies mid-attempt
    // leaves the delivery to another one once the lease has passed.
    let lease = config.timeout.saturating_mul(2) + Duration::from_secs(5);
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        if stop.is_cancelled() {
            return;
        }
        // Steps first: a task's steps are all recorded before it is final, so every step
        // delivery exists before its final one can be claimed.
        if let Err(e) = store.enqueue_step_deliveries().await {
            tracing::warn!(error = %e, "cannot add step webhook deliveries");
        }
        match store.claim_delivery(lease_ms).await {
            Ok(Some(claim)) => {
                let (store, links, config, http) =
                    (store.clone(), links.clone(), config.clone(), http.clone());
                tokio::spawn(async move {
                    let id = claim.id.clone();
                    if let Err(e) = attempt(&store, &links, &config, &http, claim).await {
                        tracing::warn!(webhook.id = %id, error = %e, "webhook attempt not made; retried after its lease");
                    }
                    drop(permit);
                });
            }
            Ok(None) => {
                drop(permit);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
            Err(e) => {
                drop(permit);
                tracing::warn!(error = %e, "cannot claim webhook deliveries");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(POLL * 4) => {}
                }
            }
        }
    }
}

/// The body: the task exactly as `GET /v1/task/{id}` answers it (for a step delivery: when
/// its first attempt is made).
pub(crate) async fn render(store: &Store, links: &Links, task_id: &str) -> Result<String, DeliverError> {
    let task = store
        .get_task_unscoped(task_id)
        .await?
        .ok_or(DeliverError::NoTask)?;
    let events = store
        .events_after(task_id, Direction::Out, 0, crate::models::EVENT_PAGE)
        .await?;
    let events: Vec<TaskEvent> = events.into_iter().map(TaskEvent::from).collect();
    let body = TaskResponse::from_row(&task, Some(events), false, links);
    Ok(serde_json::to_string(&json!({"r": body}))?)
}

async fn attempt(
    store: &Store,
    links: &Links,
    config: &WebhookConfig,
    http: &reqwest::Client,
    claim: DeliveryClaim,
) -> Result<(), DeliverError> {
    let body = match claim.body {
        Some(b) => b,
        None => {
            let b = render(store, links, &claim.task_id).await?;
            if !store.set_delivery_body(&claim.id, claim.attempt, &b).await? {
                return Ok(());
            }
            b
        }
    };
    let secret = store.webhook_key(&claim.owner, &fresh_secret()).await?.secret;
    let ts = now_ms() / 1000;
    let started_at = now_ms();
    let clock = Instant::now();
    let result = http
        .post(&claim.url)
        .header("content-type", "application/json")
        .header("webhook-id", &claim.id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature(&secret, &claim.id, ts, &body))
        .header("smoothd-event", format!("task.{}", claim.kind))
        .header(
            "smoothd-step",
            claim.step.map(|s| s.to_string()).unwrap_or_default(),
        )
        .body(body)
        .send()
        .await;
    let latency_ms = i64::try_from(clock.elapsed().as_millis()).unwrap_or(i64::MAX);
    let (status_code, error) = match &result {
        Ok(r) if r.status().is_success() => (Some(i64::from(r.status().as_u16())), None),
        Ok(r) => (
            Some(i64::from(r.status().as_u16())),
            Some(format!("receiver answered {}", r.status())),
        ),
        Err(e) => (None, Some(error_chain(e))),
    };
    let outcome = if error.is_none() {
        AttemptOutcome::Delivered
    } else {
        let finished = store
            .task_finished_at(&claim.task_id)
            .await?
            .unwrap_or(started_at);
        let exp = u32::try_from(claim.attempt.saturating_sub(1).min(30)).unwrap_or(30);
        let delay = config
            .retry_base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(MAX_DELAY);
        let next = now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        let max_age = i64::try_from(config.max_age.as_millis()).unwrap_or(i64::MAX);
        if next > finished.saturating_add(max_age) {
            AttemptOutcome::GiveUp
        } else {
            AttemptOutcome::RetryAt(next)
        }
    };
    let log = AttemptLog {
        started_at,
        status_code,
        latency_ms,
        error: error.as_deref(),
    };
    let held = store
        .finish_attempt(&claim.id, claim.attempt, &log, outcome)
        .await?;
    tracing::info!(
        webhook.id = %claim.id, task.id = %claim.task_id, attempt = claim.attempt,
        status = ?status_code, latency_ms, ?outcome, lease_held = held, error = error.as_deref().unwrap_or(""),
        "webhook attempt"
    );
    Ok(())
}

/// An error with its causes (reqwest's own message hides the interesting part).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let sig = signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let tampered = signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232315}"#,
        );
        assert_ne!(sig, tampered);
    }

    /// A receiver on loopback that answers `answer` to anything and counts requests.
    async fn loopback_receiver(answer: String) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(answer.as_bytes()).await;
            }
        });
        (port, hits)
    }

    const NO_CONTENT: &str = "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";

    #[tokio::test]
    async fn redirects_to_private_addresses_are_not_followed_unless_allowed() {
        let (inner, inner_hits) = loopback_receiver(NO_CONTENT.into()).await;
        let redirect = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{inner}/x\r\ncontent-length: 0\r\n\r\n"
        );
        let (outer, _) = loopback_receiver(redirect).await;
        // An address literal skips the resolver (submit refuses it); the redirect must not pass.
        let strict = client(&WebhookConfig::default()).unwrap();
        let err = strict
            .post(format!("http://127.0.0.1:{outer}/hook"))
            .body("{}")
            .send()
            .await
            .unwrap_err();
        assert!(
            error_chain(&err).contains("refused redirect"),
            "{}",
            error_chain(&err)
        );
        assert_eq!(inner_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
        let open = client(&WebhookConfig {
            allow_private: true,
            ..WebhookConfig::default()
        })
        .unwrap();
        let resp = open
            .post(format!("http://127.0.0.1:{outer}/hook"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204);
        assert_eq!(inner_hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_not_reached_unless_allowed() {
        let (port, hits) = loopback_receiver(NO_CONTENT.into()).await;
        let url = format!("http://localhost:{port}/hook");
        let strict = client(&WebhookConfig::default()).unwrap();
        let err = strict.post(&url).body("{}").send().await.unwrap_err();
        assert!(
            error_chain(&err).contains("private addresses"),
            "{}",
            error_chain(&err)
        );
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
        let open = client(&WebhookConfig {
            allow_private: true,
            ..WebhookConfig::default()
        })
        .unwrap();
        let resp = open.post(&url).body("{}").send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 204);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        for bad in [
            "http://example.com/hook",
            "https://127.0.0.1/hook",
            "https://10.1.2.3/hook",
            "https://192.168.0.1/hook",
            "https://169.254.169.254/latest",
            "https://[::1]/hook",
            "https://[fd00::1]/hook",
            "https://[::ffff:127.0.0.1]/hook",
            "https://localhost/hook",
            "https://a.localhost/hook",
            "https://100.64.0.1/hook",
            "ftp://example.com/",
            "not a url",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad} was accepted");
        }
        assert!(check_url("https://example.com/hook", false).is_ok());
        assert!(check_url("https://93.184.216.34/hook", false).is_ok());
        assert!(check_url("http://127.0.0.1:9/hook", true).is_ok());
        assert!(check_url("ftp://127.0.0.1/", true).is_err());
    }
}
