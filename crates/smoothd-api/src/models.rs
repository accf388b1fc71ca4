//! Wire shapes, as the Smooth clients read and send them. These types are what the OpenAPI
//! document describes; request bodies are validated by `smoothd_core` for field-naming errors.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use smoothd_core::event::Event;
use smoothd_store::{ExtensionRow, ProfileRow, TaskRow};
use utoipa::ToSchema;

use crate::links::Links;

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
    /// The result; matches `response_model` when one was given.
    #[schema(value_type = Object)]
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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(dead_code)]
pub enum AgentName {
    Smooth,
    SmoothLite,
}

/// `POST /v1/task` body. Unknown extra fields are accepted and ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[expect(dead_code, reason = "an OpenAPI mirror of what the handler parses by hand")]
pub struct TaskRequest {
    /// The instruction; null opens an interactive session.
    pub task: Option<String>,
    /// A JSON schema the output must match.
    #[schema(value_type = Option<Object>)]
    pub response_model: Option<Value>,
    /// Start page.
    pub url: Option<String>,
    /// Up to 16 variables (string, number or boolean; strings up to 2048 characters).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Uploaded file ids.
    pub files: Option<Vec<String>>,
    /// "smooth" (default) or "smooth-lite" (the server's lite model, `llm_lite_model`).
    #[schema(value_type = Option<AgentName>)]
    pub agent: Option<String>,
    /// 2..=128, default 32.
    pub max_steps: Option<i64>,
    /// desktop (default), desktop-lg or mobile.
    pub device: Option<String>,
    /// Wildcard URL patterns the browser may visit.
    pub allowed_urls: Option<Vec<String>>,
    pub enable_recording: Option<bool>,
    pub profile_id: Option<String>,
    pub profile_read_only: Option<bool>,
    pub use_stealth: Option<bool>,
    pub proxy_server: Option<String>,
    pub proxy_username: Option<String>,
    pub proxy_password: Option<String>,
    /// `[{file: base64 .p12, password, filters}]`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub certificates: Option<Vec<Value>>,
    pub use_adblock: Option<bool>,
    pub use_captcha_solver: Option<bool>,
    /// `{tool_name: options or null}`: screenshot, hover, print_page, drag_drop.
    #[schema(value_type = Option<Object>)]
    pub additional_tools: Option<Value>,
    /// `[{name, description, inputs, output}]`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub custom_tools: Option<Vec<Value>>,
    #[schema(value_type = Option<Object>)]
    pub experimental_features: Option<Value>,
    /// Uploaded extension ids.
    pub extensions: Option<Vec<String>>,
    pub show_cursor: Option<bool>,
    /// Deprecated mirror of `profile_id`.
    pub session_id: Option<String>,
}

/// `{"id": ...}` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdResponse {
    pub id: String,
}

/// `POST /v1/profile` body.
#[derive(Debug, Deserialize, ToSchema)]
#[expect(dead_code, reason = "an OpenAPI mirror of what the handler parses by hand")]
pub struct ProfileRequest {
    /// 1-128 characters of A-Z a-z 0-9 . _ -; generated when absent.
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

/// `POST /v1/browser/session` (deprecated) body.
#[derive(Debug, Deserialize, ToSchema)]
#[expect(dead_code, reason = "an OpenAPI mirror of what the handler parses by hand")]
pub struct BrowserSessionRequest {
    pub profile_id: Option<String>,
    pub live_view: Option<bool>,
    pub device: Option<String>,
    pub url: Option<String>,
    pub proxy_server: Option<String>,
    pub proxy_username: Option<String>,
    pub proxy_password: Option<String>,
    pub extensions: Option<Vec<String>>,
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
