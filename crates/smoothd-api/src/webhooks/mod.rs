//! Signed webhooks: the per-key settings endpoint (`/v1/webhook`), the attempt log of a task
//! (`/v1/task/{id}/webhooks`), URL checks at submit, and (in [`deliver`]) the delivery loop.
//! Requests follow Standard Webhooks: `webhook-id`, `webhook-timestamp` and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` keyed with the
//! base64 part of the key's `whsec_` secret.

pub mod deliver;

use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use smoothd_core::TaskSpec;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Owner, Unmetered};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::models::{Envelope, ErrorBody};

/// Webhook settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Allow `http://` URLs and private, loopback and link-local addresses (self-hosters).
    pub allow_private: bool,
    /// Delay before the second attempt; doubled per attempt, at most an hour.
    pub retry_base: Duration,
    /// Retry until this long after the task ended.
    pub max_age: Duration,
    /// One attempt's limit.
    pub timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            retry_base: Duration::from_secs(5),
            max_age: Duration::from_secs(24 * 60 * 60),
            timeout: Duration::from_secs(10),
        }
    }
}

/// A new Standard Webhooks secret.
pub(crate) fn fresh_secret() -> String {
    let raw = smoothd_core::ids::random_token(32);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(raw.as_bytes())
    )
}

/// Whether an address is one a webhook must not reach unless private addresses are allowed.
pub(crate) fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Checks a webhook URL; the error says what is wrong (the caller names the field).
pub(crate) fn check_url(raw: &str, allow_private: bool) -> Result<url::Url, String> {
    let u = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    match u.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => {
            return Err(
                "must be https:// (set webhook_allow_private to allow http:// on a private network)".into(),
            );
        }
        s => return Err(format!("must be an https:// URL, not {s}://")),
    }
    if raw.len() > 2048 {
        return Err("longer than 2048 characters".into());
    }
    if !allow_private {
        let private = match u.host() {
            Some(url::Host::Ipv4(ip)) => is_private(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => is_private(IpAddr::V6(ip)),
            Some(url::Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                d == "localhost" || d.ends_with(".localhost")
            }
            None => return Err("has no host".into()),
        };
        if private {
            return Err(
                "points at a private, loopback or link-local address, which webhooks may not reach \
                 (set webhook_allow_private for a self-hosted receiver)"
                    .into(),
            );
        }
    }
    Ok(u)
}

/// The webhook a submit asks for: `experimental_features.webhook_url`, else the key's default,
/// and whether each step is posted too (`experimental_features.webhook_steps`). A bad value is
/// a 422 naming the field.
pub(crate) async fn target(
    state: &AppState,
    owner: &Owner,
    spec: &TaskSpec,
) -> ApiResult<Option<(String, bool)>> {
    let steps = match spec.experimental_features.get("webhook_steps") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "experimental_features.webhook_steps: must be true or false",
            ));
        }
    };
    Ok(url(state, owner, spec).await?.map(|u| (u, steps)))
}

async fn url(state: &AppState, owner: &Owner, spec: &TaskSpec) -> ApiResult<Option<String>> {
    let allow = state.config.webhooks.allow_private;
    match spec.experimental_features.get("webhook_url") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            check_url(s, allow).map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("experimental_features.webhook_url: {e}"),
                )
            })?;
            return Ok(Some(s.clone()));
        }
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "experimental_features.webhook_url: must be a string URL",
            ));
        }
    }
    Ok(state.store.webhook_default_url(&owner.id).await?)
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(task_webhooks))
}

/// A key's webhook settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookSettings {
    /// Where this key's tasks are posted when they do not name `experimental_features.webhook_url`.
    pub url: Option<String>,
    /// The Standard Webhooks signing secret (`whsec_<base64>`): the HMAC-SHA256 key is the
    /// base64-decoded part after `whsec_`.
    pub secret: String,
}

/// `PUT /v1/webhook` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct WebhookRequest {
    /// The default URL (`https://` to a public address unless `webhook_allow_private`), or
    /// null to clear it. Required.
    #[schema(required = true)]
    #[serde(deserialize_with = "present")]
    pub url: Option<String>,
}

/// A field that must be present, though it may be null.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAttempt {
    pub attempt: i64,
    /// Epoch milliseconds.
    pub started_at_ms: i64,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    /// Why the attempt failed, if it did.
    pub error: Option<String>,
}

/// A task's webhook delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDelivery {
    /// The `webhook-id` header: the same on every attempt, for deduplication.
    pub id: String,
    pub url: String,
    /// `final` (the task ended) or `step` (an agent step, with `webhook_steps`).
    pub kind: String,
    /// The step's ordinal (1 = first), for `step` deliveries.
    pub step: Option<i64>,
    /// pending, delivered or failed (gave up after `webhook_max_age_seconds`).
    pub status: String,
    /// When the next attempt is due (epoch ms), while pending.
    pub next_attempt_at_ms: Option<i64>,
    pub delivered_at_ms: Option<i64>,
    pub attempts: Vec<WebhookAttempt>,
}

fn settings(row: smoothd_store::WebhookKeyRow) -> Json<Envelope<WebhookSettings>> {
    Json(Envelope {
        r: WebhookSettings {
            url: row.url,
            secret: row.secret,
        },
    })
}

/// This key's webhook settings: the signing secret (created on first use) and default URL.
#[utoipa::path(get, path = "/webhook", tag = "webhook",
    responses((status = 200, body = Envelope<WebhookSettings>), Owner))]
async fn get_settings(
    State(state): State<AppState>,
    owner: Owner,
) -> ApiResult<Json<Envelope<WebhookSettings>>> {
    let row = state.store.webhook_key(&owner.id, &fresh_secret()).await?;
    Ok(settings(row))
}

/// Set or clear (`{"url": null}`) this key's default webhook URL.
#[utoipa::path(put, path = "/webhook", tag = "webhook",
    request_body = WebhookRequest,
    responses(
        (status = 200, body = Envelope<WebhookSettings>),
        ApiJson<WebhookRequest>, Owner,
        (status = 422, description = "`url` missing, malformed or refused (not https, or a private address)", body = ErrorBody),
    ))]
async fn put_settings(
    State(state): State<AppState>,
    owner: Owner,
    ApiJson(body): ApiJson<WebhookRequest>,
) -> ApiResult<Json<Envelope<WebhookSettings>>> {
    if let Some(url) = &body.url {
        check_url(url, state.config.webhooks.allow_private)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("url: {e}")))?;
    }
    let row = state
        .store
        .set_webhook_url(&owner.id, &fresh_secret(), body.url.as_deref())
        .await?;
    Ok(settings(row))
}

/// A task's webhook deliveries and every attempt, with status and latency.
#[utoipa::path(get, path = "/task/{id}/webhooks", tag = "webhook",
    params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = Envelope<Vec<WebhookDelivery>>), (status = 404, body = ErrorBody), ApiPath<String>, Unmetered))]
async fn task_webhooks(
    State(state): State<AppState>,
    Unmetered(owner): Unmetered,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Envelope<Vec<WebhookDelivery>>>> {
    if state.store.get_task(&owner.id, &id).await?.is_none() {
        return Err(ApiError::not_found("task", &id));
    }
    let r = state
        .store
        .deliveries(&id)
        .await?
        .into_iter()
        .map(|(d, attempts)| WebhookDelivery {
            next_attempt_at_ms: (d.status == "pending").then_some(d.next_attempt_at),
            id: d.id,
            url: d.url,
            kind: d.kind,
            step: d.step,
            status: d.status,
            delivered_at_ms: d.delivered_at,
            attempts: attempts
                .into_iter()
                .map(|a| WebhookAttempt {
                    attempt: a.attempt,
                    started_at_ms: a.started_at,
                    status_code: a.status_code,
                    latency_ms: a.latency_ms,
                    error: a.error,
                })
                .collect(),
        })
        .collect();
    Ok(Json(Envelope { r }))
}
