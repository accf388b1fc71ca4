//! Wire shapes, as the Smooth clients read and send them. These types are what the OpenAPI
//! document describes; request bodies are validated by `smoothd_core` for field-naming errors.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use smoothd_core::event::Event;
use smoothd_store::{ExtensionRow, ProfileRow, TaskRow};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::links::Links;

/// Most events one task body carries (a poll, or a webhook's copy of the task); a client
/// polling asks again from the last one.
pub(crate) const EVENT_PAGE: i64 = 500;

/// Every success body: `{"r": payload}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    pub r: T,
}

/// Every error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong; a 4xx names the field.
    pub detail: String,
}

/// One event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskEvent {
    /// Matches a request to its answer.
    pub id: Option<String>,
    /// `browser_action`, `session_action`, `tool_call`, or a server notice.
    pub name: String,
    /// `{name, input}` for actions; `{code, output}` for answers.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Milliseconds; strictly increasing within a task.
    pub timestamp: Option<i64>,
}

impl From<Event> for TaskEvent {
    fn from(e: Event) -> Self {
        Self {
            id: Some(e.id),
            name: e.name,
            payload: e.payload,
            timestamp: Some(e.timestamp),
        }
    }
}

/// A task as the client sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskResponse {
    pub id: String,
    /// waiting, running, done, failed or cancelled.
    pub status: String,
    /// The result (any JSON; null until there is one); matches `response_model` when one
    /// was given.
    pub output: Value,
    /// Why the task failed.
    pub error: Option<String>,
    /// 1 credit = $0.01.
    pub credits_used: i64,
    pub device: String,
    /// The live view, while waiting or running: a page that needs no API key (the URL
    /// carries the task's live token); the SDK adds `interactive` and `embed`.
    pub live_url: Option<String>,
    /// null = not known yet; "" = no recording; else a signed, expiring MP4 URL.
    pub recording_url: Option<String>,
    /// Asked with `downloads=true`. null = not ready; "" = nothing downloaded; else a
    /// signed, expiring URL of a zip of the downloaded files.
    pub downloads_url: Option<String>,
    /// Epoch seconds.
    pub created_at: i64,
    /// Epoch milliseconds (lossless paging cursor for `GET /v1/task?t=`).
    pub created_at_ms: i64,
    /// Server-to-client events newer than `event_t`.
    pub events: Option<Vec<TaskEvent>>,
    /// Present (true) when the task's data was erased.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub data_deleted: bool,
}

impl TaskResponse {
    /// The response for a stored task; `links` builds its live view and artifact URLs.
    pub fn from_row(
        t: &TaskRow,
        events: Option<Vec<TaskEvent>>,
        with_downloads: bool,
        links: &Links,
    ) -> Self {
        let status = t.status();
        // The columns hold an artifact id, "" for none, or NULL while unknown. The worker
        // fills them before the final status, so only a final task shows them.
        let media = |v: &Option<String>, name: &str| -> Option<String> {
            match v.as_deref() {
                None => None,
                Some("") => Some(String::new()),
                Some(id) => Some(links.artifact_url(id, name)),
            }
        };
        let live = !status.is_final() && t.data_deleted_at.is_none();
        Self {
            id: t.id.clone(),
            status: status.as_str().to_string(),
            output: t.output_json(),
            error: t.error.clone(),
            credits_used: t.credits_used,
            device: t.device.clone(),
            live_url: live.then(|| links.live_url(t)),
            recording_url: if status.is_final() {
                media(&t.recording, "recording.mp4")
            } else {
                None
            },
            downloads_url: if with_downloads && status.is_final() {
                media(&t.downloads, "downloads.zip")
            } else {
                None
            },
            created_at: t.created_at / 1000,
            created_at_ms: t.created_at,
            events,
            data_deleted: t.data_deleted_at.is_some(),
        }
    }
}

/// Which agent runs a task (Smooth's enum): `smooth-lite` runs on the server's lite model
/// (`llm_lite_model`), or on the default model when none is configured.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AgentName {
    Smooth,
    SmoothLite,
}

/// Browser size and kind.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceName {
    Desktop,
    DesktopLg,
    Mobile,
}

/// `POST /v1/task` body: parsed into this type (wrong types answer 422 naming the field),
/// then validated by `smoothd_core::TaskSpec` (URLs, proxies, certificates, tools, schemas).
/// Unknown extra fields are accepted and ignored; null is the same as absent.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct TaskRequest {
    /// The instruction; null opens an interactive session. Not blank.
    #[schema(
        min_length = 1,
        max_length = 100000,
        pattern = r"[^\t\n\x0B\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// A JSON schema the output must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_model: Option<Map<String, Value>>,
    /// Start page (http or https; the scheme may be left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Up to 16 variables (string, number or boolean; strings up to 2048 characters).
    #[schema(schema_with = metadata_schema)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// Uploaded file ids.
    #[schema(max_items = 100, inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<NonEmpty>>,
    /// "smooth" (default) or "smooth-lite" (the server's lite model, `llm_lite_model`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentName>,
    /// 2..=128, default 32.
    #[schema(schema_with = max_steps_schema)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<Integer>,
    /// desktop (default), desktop-lg or mobile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceName>,
    /// Wildcard URL patterns the browser may visit.
    #[schema(max_items = 100, inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_urls: Option<Vec<NonEmpty>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_recording: Option<bool>,
    /// 1-128 characters of A-Z a-z 0-9 . _ -
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_read_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_stealth: Option<bool>,
    /// `host:port`, `scheme://user:pass@host:port`, or "self" (the SDK's tunnel, sessions only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_password: Option<String>,
    /// `[{file: base64 .p12, password, filters}]`.
    #[schema(value_type = Option<Vec<Object>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Vec<Map<String, Value>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_adblock: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_captcha_solver: Option<bool>,
    /// `{tool_name: options or null}`: screenshot, hover, print_page, drag_drop.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_tools: Option<Map<String, Value>>,
    /// `[{name, description, inputs, output}]`.
    #[schema(value_type = Option<Vec<Object>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_tools: Option<Vec<Map<String, Value>>>,
    /// `webhook_url`, `webhook_steps`, `replay` and other opt-in features. `replay`:
    /// `{"key"?: string, "mode"?: "auto" | "record" | "off"}` replays this key's recorded
    /// action path for the task (see `GET /v1/replay`), or records one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experimental_features: Option<Map<String, Value>>,
    /// Uploaded extension ids.
    #[schema(max_items = 100, inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<NonEmpty>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_cursor: Option<bool>,
    /// Deprecated mirror of `profile_id`.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

impl TaskRequest {
    /// Parses a JSON value (the MCP tools' arguments) as a request; 422 names the field.
    pub fn from_value(body: &Value) -> Result<Self, ApiError> {
        serde_path_to_error::deserialize(body).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "body".to_string() } else { path };
            ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                format!("{field}: {}", e.into_inner()),
            )
        })
    }

    /// The request as core validates it.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Map::new()))
    }
}

/// `max_steps`: an integer in 2..=128, or null.
fn max_steps_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::SchemaType;
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([
            utoipa::openapi::Type::Integer,
            utoipa::openapi::Type::Null,
        ]))
        .minimum(Some(2))
        .maximum(Some(128))
        .description(Some("2..=128, default 32."))
        .build()
}

/// `metadata`: at most 16 variables.
fn metadata_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::new(
            utoipa::openapi::Type::Object,
        ))
        .max_properties(Some(16))
        .build()
}

/// A JSON Schema `integer`: any JSON number with no fractional part (`5` or `5.0`) that fits
/// an i64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Integer(pub i64);

impl<'de> Deserialize<'de> for Integer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let n = serde_json::Number::deserialize(d)?;
        if let Some(i) = n.as_i64() {
            return Ok(Self(i));
        }
        match n.as_f64() {
            // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive.
            Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 => Ok(Self(f as i64)),
            _ => Err(D::Error::custom(format!(
                "expected an integer that fits 64 bits, got {n}"
            ))),
        }
    }
}

impl utoipa::PartialSchema for Integer {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        i64::schema()
    }
}

impl ToSchema for Integer {}

/// A non-empty string (an id or a pattern in a list).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct NonEmpty(String);

impl utoipa::PartialSchema for NonEmpty {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .min_length(Some(1))
            .into()
    }
}

impl ToSchema for NonEmpty {}

impl TryFrom<String> for NonEmpty {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.is_empty() {
            Err("must be a non-empty string")
        } else {
            Ok(Self(s))
        }
    }
}

/// `{"id": ...}` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdResponse {
    pub id: String,
}

/// `POST /v1/profile` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ProfileRequest {
    /// 1-128 characters of A-Z a-z 0-9 . _ -; generated when absent.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$")]
    pub id: Option<String>,
}

/// A browser profile.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileResponse {
    pub id: String,
    /// Registered domains with cookies, most recent first.
    pub cookie_domains: Vec<String>,
    pub cookie_count: i64,
    /// Size of the stored profile in bytes.
    pub profile_size_bytes: i64,
    /// Epoch seconds of the last save.
    pub last_saved_at: Option<i64>,
}

impl From<&ProfileRow> for ProfileResponse {
    fn from(p: &ProfileRow) -> Self {
        Self {
            id: p.id.clone(),
            cookie_domains: p.cookie_domains(),
            cookie_count: p.cookie_count,
            profile_size_bytes: p.size_bytes,
            last_saved_at: p.last_saved_at.map(|t| t / 1000),
        }
    }
}

/// An uploaded extension.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExtensionResponse {
    pub id: String,
    pub file_name: String,
    /// Epoch seconds.
    pub creation_time: i64,
}

impl From<&ExtensionRow> for ExtensionResponse {
    fn from(e: &ExtensionRow) -> Self {
        Self {
            id: e.id.clone(),
            file_name: e.file_name.clone(),
            creation_time: e.created_at / 1000,
        }
    }
}

/// `POST /v1/browser/session` (deprecated) body: the fields it passes on to a session's
/// [`TaskRequest`], validated the same way.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BrowserSessionRequest {
    /// An existing profile; a new one is created when absent.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$")]
    pub profile_id: Option<String>,
    /// Deprecated mirror of `profile_id`.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$")]
    pub session_id: Option<String>,
    /// Accepted and ignored: every session has a live view.
    pub live_view: Option<bool>,
    pub device: Option<DeviceName>,
    pub url: Option<String>,
    pub proxy_server: Option<String>,
    pub proxy_username: Option<String>,
    pub proxy_password: Option<String>,
    #[schema(max_items = 100, inline)]
    pub extensions: Option<Vec<NonEmpty>>,
    pub use_stealth: Option<bool>,
}

/// `POST /v1/browser/session` (deprecated) answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct BrowserSessionResponse {
    pub profile_id: String,
    /// The session's task id.
    pub live_id: String,
    pub live_url: Option<String>,
}

/// `POST /v1/task/{id}/event` body (other fields, such as `timestamp`, are ignored: the
/// server stamps events).
#[derive(Debug, Deserialize, ToSchema)]
pub struct EventRequest {
    /// Matches the request to its answer; generated when absent.
    #[schema(min_length = 1, max_length = 128)]
    pub id: Option<String>,
    /// `browser_action`, `session_action` or `tool_call`.
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// `{name, input}` for actions; `{code, output}` for answers.
    pub payload: Map<String, Value>,
}

/// `PUT /v1/task/{id}` (deprecated) body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ToolResponseRequest {
    #[serde(deserialize_with = "object")]
    pub tool_response: ToolResponse,
}

/// A struct read from a JSON object only (serde alone would also read one from an array).
fn object<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(d: D) -> Result<T, D::Error> {
    let map = Map::<String, Value>::deserialize(d)?;
    serde_json::from_value(Value::Object(map)).map_err(serde::de::Error::custom)
}

/// The answer to a `tool_call` event.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ToolResponse {
    /// The tool call's event id.
    pub id: String,
    /// 200 = result, 400 = an error the agent may fix, 500 = internal error; default 200.
    #[schema(inline)]
    pub code: Option<Integer>,
    /// The result or error text.
    pub output: Option<Value>,
}

/// `GET /v1/task` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only tasks created before this time: epoch seconds, or milliseconds (e.g. the last
    /// item's `created_at_ms`) for lossless paging.
    pub t: Option<i64>,
    /// Page size, 1..=128, default 32.
    #[param(minimum = 1, maximum = 128)]
    pub l: Option<i64>,
}

/// `GET /v1/task/{id}` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskQuery {
    /// Return events with timestamp > event_t (ms).
    pub event_t: Option<i64>,
    /// Include downloads_url.
    pub downloads: Option<bool>,
}
