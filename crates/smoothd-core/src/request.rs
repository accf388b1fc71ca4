//! Validation of `POST /v1/task` bodies into a [`TaskSpec`]. Every error names the field it
//! is about; unknown extra fields are accepted, as the wire protocol allows. References to
//! stored things (file, extension, profile ids) are checked later against the store.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::device::Device;
use crate::urlpattern::UrlPattern;
pub use crate::validation::{ValidationError, kind};

/// The most metadata keys a task may carry.
pub const METADATA_MAX_KEYS: usize = 16;
/// The longest metadata value, in characters.
pub const METADATA_MAX_VALUE_CHARS: usize = 2048;
/// The step budget bounds.
pub const MAX_STEPS_RANGE: std::ops::RangeInclusive<i64> = 2..=128;
/// Default step budget.
pub const DEFAULT_MAX_STEPS: u32 = 32;
/// Smooth's documented extra tools.
pub const ADDITIONAL_TOOLS: [&str; 4] = ["screenshot", "hover", "print_page", "drag_drop"];
/// The `agent` values accepted: `smooth-lite` runs on the lite model when one is configured.
pub const AGENTS: &[&str] = &["smooth", "smooth-lite"];

/// Names the agent's own actions use; a custom tool may not take one.
pub const RESERVED_TOOL_NAMES: [&str; 16] = [
    "goto",
    "click",
    "type",
    "select_option",
    "scroll",
    "press_key",
    "go_back",
    "switch_tab",
    "upload_file",
    "wait",
    "done",
    "screenshot",
    "hover",
    "print_page",
    "drag_drop",
    "extract",
];

/// Proxy settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proxy {
    /// `scheme://host:port`, normalised.
    pub server: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Proxy {
    /// `proxy_server: "self"`: the browser's traffic goes through the caller's frpc tunnel,
    /// which logs in with `password`.
    pub fn is_self(&self) -> bool {
        self.server == "self"
    }
}

/// A client certificate (PKCS#12), as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    /// Base64 of the .p12 file.
    pub file: String,
    pub password: Option<String>,
    pub filters: Option<Vec<Vec<String>>>,
}

/// A tool the client runs on its side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomTool {
    pub name: String,
    pub description: String,
    pub inputs: Map<String, Value>,
    pub output: String,
}

/// A validated task request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The instruction; `None` opens an interactive session.
    pub task: Option<String>,
    pub response_model: Option<Value>,
    pub url: Option<String>,
    pub metadata: Map<String, Value>,
    pub files: Vec<String>,
    pub agent: String,
    pub max_steps: u32,
    pub device: Device,
    /// Compiled once here; stored as the patterns' text.
    pub allowed_urls: Vec<UrlPattern>,
    pub enable_recording: bool,
    pub profile_id: Option<String>,
    pub profile_read_only: bool,
    pub use_stealth: bool,
    pub proxy: Option<Proxy>,
    pub certificates: Vec<Certificate>,
    pub use_adblock: bool,
    pub use_captcha_solver: bool,
    pub additional_tools: BTreeMap<String, Option<Value>>,
    pub custom_tools: Vec<CustomTool>,
    pub experimental_features: Map<String, Value>,
    pub extensions: Vec<String>,
    pub show_cursor: bool,
    /// `experimental_features.replay`, validated (`None`: the task does not replay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<crate::replay::ReplayOptions>,
}

impl TaskSpec {
    /// Whether this is an interactive session (no task text).
    pub fn is_session(&self) -> bool {
        self.task.is_none()
    }

    /// The spend cap in US dollars, `experimental_features.max_cost_usd` (checked positive).
    pub fn max_cost_usd(&self) -> Option<f64> {
        self.experimental_features
            .get("max_cost_usd")
            .and_then(Value::as_f64)
            .filter(|usd| usd.is_finite() && *usd > 0.0)
    }

    /// Validates a request body.
    pub fn from_json(body: &Value) -> Result<Self, ValidationError> {
        let obj = body
            .as_object()
            .ok_or_else(|| ValidationError::invalid("body", "must be a JSON object"))?;
        let f = Fields(obj);

        let task = task_field(&f)?;
        let max_steps = max_steps_field(&f)?;
        let device = device_field(&f)?;
        let agent = agent_field(&f)?;
        let response_model = response_model_field(&f)?;
        let url = match f.opt_str("url")? {
            None => None,
            Some(u) if u.trim().is_empty() => None,
            Some(u) => Some(normalize_url(&u).map_err(|m| ValidationError::invalid("url", m))?),
        };

        let metadata = validate_metadata(f.get("metadata"))?;
        let files = f.str_list("files")?;
        let extensions = f.str_list("extensions")?;
        let allowed_urls = allowed_urls_field(&f)?;
        let profile_id = profile_id_field(&f)?;
        let proxy = validate_proxy(&f)?;
        if task.is_some() && proxy.as_ref().is_some_and(Proxy::is_self) {
            return Err(ValidationError::invalid(
                "proxy_server",
                "\"self\" (the tunnel through your machine) works with sessions only, not tasks",
            ));
        }
        let certificates = validate_certificates(f.get("certificates"))?;
        let additional_tools = validate_additional_tools(f.get("additional_tools"))?;
        let custom_tools = validate_custom_tools(f.get("custom_tools"))?;
        let experimental_features = experimental_features_field(&f)?;
        let replay = crate::replay::ReplayOptions::from_features(&experimental_features)?;

        Ok(TaskSpec {
            task,
            response_model,
            url,
            metadata,
            files,
            agent,
            max_steps,
            device,
            allowed_urls,
            enable_recording: f.bool_or("enable_recording", true)?,
            profile_id,
            profile_read_only: f.bool_or("profile_read_only", false)?,
            use_stealth: f.bool_or("use_stealth", true)?,
            proxy,
            certificates,
            use_adblock: f.bool_or("use_adblock", true)?,
            use_captcha_solver: f.bool_or("use_captcha_solver", false)?,
            additional_tools,
            custom_tools,
            experimental_features,
            extensions,
            show_cursor: f.bool_or("show_cursor", false)?,
            replay,
        })
    }
}

/// `task`, checked.
fn task_field(f: &Fields<'_>) -> Result<Option<String>, ValidationError> {
    let value = match f.opt_str("task")? {
        Some(t) if t.trim().is_empty() => {
            return Err(ValidationError::invalid(
                "task",
                "must not be empty (use null to open a session)",
            ));
        }
        Some(t) if t.len() > 100_000 => {
            return Err(ValidationError::invalid("task", "longer than 100000 characters"));
        }
        t => t,
    };
    Ok(value)
}

/// `max_steps`, checked.
fn max_steps_field(f: &Fields<'_>) -> Result<u32, ValidationError> {
    let value = match f.get("max_steps") {
        None => DEFAULT_MAX_STEPS,
        Some(v) => {
            let n = v.as_i64().filter(|_| v.is_i64() || v.is_u64()).ok_or_else(|| {
                ValidationError::invalid("max_steps", format!("must be an integer, got {}", kind(v)))
            })?;
            if !MAX_STEPS_RANGE.contains(&n) {
                return Err(ValidationError::invalid(
                    "max_steps",
                    format!("must be between 2 and 128, got {n}"),
                ));
            }
            u32::try_from(n).unwrap_or(DEFAULT_MAX_STEPS)
        }
    };
    Ok(value)
}

/// `device`, checked.
fn device_field(f: &Fields<'_>) -> Result<Device, ValidationError> {
    let value = match f.opt_str("device")? {
        None => Device::Desktop,
        Some(d) => Device::parse(&d).ok_or_else(|| {
            ValidationError::invalid(
                "device",
                format!("unknown device {d:?}; expected one of {}", Device::NAMES),
            )
        })?,
    };
    Ok(value)
}

/// `agent`, checked.
fn agent_field(f: &Fields<'_>) -> Result<String, ValidationError> {
    let agent = f.opt_str("agent")?.unwrap_or_else(|| "smooth".into());
    if !AGENTS.contains(&agent.as_str()) {
        return Err(ValidationError::invalid(
            "agent",
            format!("unknown agent {agent:?}; expected \"smooth\" or \"smooth-lite\""),
        ));
    }
    Ok(agent)
}

/// `response_model`, checked.
fn response_model_field(f: &Fields<'_>) -> Result<Option<Value>, ValidationError> {
    let value = match f.get("response_model") {
        None => None,
        Some(schema) => {
            if !schema.is_object() {
                return Err(ValidationError::invalid(
                    "response_model",
                    format!("must be a JSON schema object, got {}", kind(schema)),
                ));
            }
            if let Err(e) = jsonschema::validator_for(schema) {
                return Err(ValidationError::invalid(
                    "response_model",
                    format!("not a valid JSON schema: {e}"),
                ));
            }
            Some(schema.clone())
        }
    };
    Ok(value)
}

/// `allowed_urls`, checked.
fn allowed_urls_field(f: &Fields<'_>) -> Result<Vec<UrlPattern>, ValidationError> {
    let value = f
        .str_list("allowed_urls")?
        .iter()
        .enumerate()
        .map(|(i, p)| {
            UrlPattern::parse(p)
                .map_err(|m| ValidationError::invalid(format!("allowed_urls[{i}]"), m.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(value)
}

/// `profile_id`, checked.
fn profile_id_field(f: &Fields<'_>) -> Result<Option<String>, ValidationError> {
    let profile_id = match f.opt_str("profile_id")? {
        Some(p) => Some(p),
        None => f.opt_str("session_id")?,
    };
    if let Some(p) = &profile_id
        && !crate::ids::is_valid_client_id(p)
    {
        return Err(ValidationError::invalid(
            "profile_id",
            "must be 1-128 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    Ok(profile_id)
}

/// `experimental_features`, checked.
fn experimental_features_field(f: &Fields<'_>) -> Result<Map<String, Value>, ValidationError> {
    let value = match f.get("experimental_features") {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(v) => {
            return Err(ValidationError::invalid(
                "experimental_features",
                format!("must be an object, got {}", kind(v)),
            ));
        }
    };
    if let Some(v) = value.get("max_cost_usd").filter(|v| !v.is_null()) {
        match v.as_f64() {
            Some(usd) if usd.is_finite() && usd > 0.0 => {}
            Some(_) => {
                return Err(ValidationError::invalid(
                    "experimental_features.max_cost_usd",
                    format!("must be a positive number of US dollars, got {v}"),
                ));
            }
            None => {
                return Err(ValidationError::invalid(
                    "experimental_features.max_cost_usd",
                    format!("must be a positive number of US dollars, got {}", kind(v)),
                ));
            }
        }
    }
    Ok(value)
}

/// Accessors over a JSON object that treat `null` as absent and name the field on error.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    fn opt_str(&self, k: &str) -> Result<Option<String>, ValidationError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(ValidationError::invalid(
                k,
                format!("must be a string, got {}", kind(v)),
            )),
        }
    }

    fn bool_or(&self, k: &str, default: bool) -> Result<bool, ValidationError> {
        match self.get(k) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(ValidationError::invalid(
                k,
                format!("must be true or false, got {}", kind(v)),
            )),
        }
    }

    fn str_list(&self, k: &str) -> Result<Vec<String>, ValidationError> {
        match self.get(k) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                if items.len() > 100 {
                    return Err(ValidationError::invalid(k, "at most 100 entries"));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) if !s.is_empty() => Ok(s.clone()),
                        v => Err(ValidationError::invalid(
                            format!("{k}[{i}]"),
                            format!("must be a non-empty string, got {}", kind(v)),
                        )),
                    })
                    .collect()
            }
            Some(v) => Err(ValidationError::invalid(
                k,
                format!("must be a list of strings, got {}", kind(v)),
            )),
        }
    }
}

/// `example.com` → `https://example.com/`; only http(s) and about:blank are navigable.
pub fn normalize_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw == "about:blank" {
        return Ok(raw.to_string());
    }
    let candidate = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("https://{raw}")
    };
    let parsed = url::Url::parse(&candidate).map_err(|e| format!("not a valid URL ({e}): {raw:?}"))?;
    match parsed.scheme() {
        "http" | "https" => {}
        s => return Err(format!("scheme {s:?} is not allowed; use http or https")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL has no host: {raw:?}"));
    }
    Ok(parsed.to_string())
}

fn validate_metadata(v: Option<&Value>) -> Result<Map<String, Value>, ValidationError> {
    let Some(v) = v else { return Ok(Map::new()) };
    let Value::Object(m) = v else {
        return Err(ValidationError::invalid(
            "metadata",
            format!("must be an object, got {}", kind(v)),
        ));
    };
    if m.len() > METADATA_MAX_KEYS {
        return Err(ValidationError::invalid(
            "metadata",
            format!("at most {METADATA_MAX_KEYS} keys are allowed, got {}", m.len()),
        ));
    }
    for (k, val) in m {
        let field = format!("metadata.{k}");
        if k.is_empty() || k.chars().count() > 256 {
            return Err(ValidationError::invalid(field, "keys must be 1-256 characters"));
        }
        match val {
            Value::String(s) if s.chars().count() > METADATA_MAX_VALUE_CHARS => {
                return Err(ValidationError::invalid(
                    field,
                    format!(
                        "at most {METADATA_MAX_VALUE_CHARS} characters, got {}",
                        s.chars().count()
                    ),
                ));
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
            other => {
                return Err(ValidationError::invalid(
                    field,
                    format!("must be a string, number or boolean, got {}", kind(other)),
                ));
            }
        }
    }
    Ok(m.clone())
}

fn validate_proxy(f: &Fields<'_>) -> Result<Option<Proxy>, ValidationError> {
    let server = f.opt_str("proxy_server")?;
    let username = f.opt_str("proxy_username")?;
    let password = f.opt_str("proxy_password")?;
    let Some(server) = server.filter(|s| !s.trim().is_empty()) else {
        if username.is_some() || password.is_some() {
            return Err(ValidationError::invalid(
                "proxy_server",
                "required when proxy_username or proxy_password is set",
            ));
        }
        return Ok(None);
    };
    if server == "self" {
        // The smooth SDK's tunnel: frpc on the caller's machine logs in with the password.
        if password.as_deref().is_none_or(str::is_empty) {
            return Err(ValidationError::invalid(
                "proxy_password",
                "required with proxy_server \"self\" (it is the tunnel's token; the smooth SDK makes one)",
            ));
        }
        return Ok(Some(Proxy {
            server,
            username,
            password,
        }));
    }
    let candidate = if server.contains("://") {
        server.clone()
    } else {
        format!("http://{server}")
    };
    let parsed = url::Url::parse(&candidate)
        .map_err(|e| ValidationError::invalid("proxy_server", format!("not a valid proxy address ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https" | "socks4" | "socks5") {
        return Err(ValidationError::invalid(
            "proxy_server",
            format!(
                "scheme {:?} is not supported; use http, https, socks4 or socks5",
                parsed.scheme()
            ),
        ));
    }
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return Err(ValidationError::invalid("proxy_server", "has no host"));
    };
    let normalized = match parsed.port() {
        Some(p) => format!("{}://{host}:{p}", parsed.scheme()),
        None => format!("{}://{host}", parsed.scheme()),
    };
    Ok(Some(Proxy {
        server: normalized,
        username,
        password,
    }))
}

fn validate_certificates(v: Option<&Value>) -> Result<Vec<Certificate>, ValidationError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let Value::Array(items) = v else {
        return Err(ValidationError::invalid(
            "certificates",
            format!("must be a list, got {}", kind(v)),
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("certificates[{i}]");
        let Value::Object(m) = item else {
            return Err(ValidationError::invalid(
                field,
                "must be an object with `file` and optional `password`",
            ));
        };
        let f = Fields(m);
        let file = f
            .opt_str("file")
            .map_err(|e| ValidationError::invalid(format!("{field}.file"), e.message))?
            .ok_or_else(|| {
                ValidationError::invalid(format!("{field}.file"), "required (base64 of a .p12 file)")
            })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(file.trim())
            .map_err(|e| {
                ValidationError::invalid(format!("{field}.file"), format!("not valid base64: {e}"))
            })?;
        if bytes.is_empty() {
            return Err(ValidationError::invalid(format!("{field}.file"), "is empty"));
        }
        let password = f
            .opt_str("password")
            .map_err(|e| ValidationError::invalid(format!("{field}.password"), e.message))?;
        let filters = match f.get("filters") {
            None => None,
            Some(v) => Some(
                serde_json::from_value::<Vec<Vec<String>>>(v.clone()).map_err(|_| {
                    ValidationError::invalid(format!("{field}.filters"), "must be a list of lists of strings")
                })?,
            ),
        };
        out.push(Certificate {
            file,
            password,
            filters,
        });
    }
    Ok(out)
}

fn validate_additional_tools(v: Option<&Value>) -> Result<BTreeMap<String, Option<Value>>, ValidationError> {
    let Some(v) = v else { return Ok(BTreeMap::new()) };
    let Value::Object(m) = v else {
        return Err(ValidationError::invalid(
            "additional_tools",
            format!("must be an object, got {}", kind(v)),
        ));
    };
    let mut out = BTreeMap::new();
    for (name, kwargs) in m {
        if !ADDITIONAL_TOOLS.contains(&name.as_str()) {
            return Err(ValidationError::invalid(
                format!("additional_tools.{name}"),
                format!("unknown tool; available: {}", ADDITIONAL_TOOLS.join(", ")),
            ));
        }
        match kwargs {
            Value::Null => {
                out.insert(name.clone(), None);
            }
            Value::Object(_) => {
                out.insert(name.clone(), Some(kwargs.clone()));
            }
            other => {
                return Err(ValidationError::invalid(
                    format!("additional_tools.{name}"),
                    format!("options must be an object or null, got {}", kind(other)),
                ));
            }
        }
    }
    if let Some(Some(Value::Object(opts))) = out.get("screenshot")
        && let Some(fp) = opts.get("full_page")
        && !fp.is_boolean()
    {
        return Err(ValidationError::invalid(
            "additional_tools.screenshot.full_page",
            "must be true or false",
        ));
    }
    Ok(out)
}

fn validate_custom_tools(v: Option<&Value>) -> Result<Vec<CustomTool>, ValidationError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let Value::Array(items) = v else {
        return Err(ValidationError::invalid(
            "custom_tools",
            format!("must be a list, got {}", kind(v)),
        ));
    };
    let mut out: Vec<CustomTool> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("custom_tools[{i}]");
        let Value::Object(m) = item else {
            return Err(ValidationError::invalid(
                field,
                "must be an object {name, description, inputs, output}",
            ));
        };
        let f = Fields(m);
        let name = f
            .opt_str("name")
            .map_err(|e| ValidationError::invalid(format!("{field}.name"), e.message))?
            .ok_or_else(|| ValidationError::invalid(format!("{field}.name"), "required"))?;
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            return Err(ValidationError::invalid(
                format!("{field}.name"),
                "must be 1-64 characters of A-Z a-z 0-9 _ -",
            ));
        }
        if RESERVED_TOOL_NAMES.contains(&name.as_str()) {
            return Err(ValidationError::invalid(
                format!("{field}.name"),
                format!("{name:?} is a built-in action"),
            ));
        }
        if out.iter().any(|t| t.name == name) {
            return Err(ValidationError::invalid(
                format!("{field}.name"),
                format!("duplicate tool name {name:?}"),
            ));
        }
        let description = f
            .opt_str("description")
            .map_err(|e| ValidationError::invalid(format!("{field}.description"), e.message))?
            .unwrap_or_default();
        let inputs = match f.get("inputs") {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(v) => {
                return Err(ValidationError::invalid(
                    format!("{field}.inputs"),
                    format!("must be an object, got {}", kind(v)),
                ));
            }
        };
        let output = f
            .opt_str("output")
            .map_err(|e| ValidationError::invalid(format!("{field}.output"), e.message))?
            .unwrap_or_default();
        out.push(CustomTool {
            name,
            description,
            inputs,
            output,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(body: Value) -> ValidationError {
        TaskSpec::from_json(&body).unwrap_err()
    }

    #[test]
    fn defaults() {
        let s = TaskSpec::from_json(&json!({"task": "find a flight"})).unwrap();
        assert_eq!(s.max_steps, 32);
        assert_eq!(s.device, Device::Desktop);
        assert!(s.enable_recording && s.use_stealth && s.use_adblock);
        assert!(!s.is_session());
        assert!(TaskSpec::from_json(&json!({"task": null})).unwrap().is_session());
    }

    #[test]
    fn what_the_sdk_sends_is_accepted() {
        let body = json!({"task": "x", "response_model": null, "url": null, "metadata": null, "files": null,
            "agent": "smooth", "max_steps": 32, "device": "desktop", "allowed_urls": null,
            "enable_recording": true, "profile_id": null, "profile_read_only": false, "stealth_mode": false,
            "use_stealth": true, "proxy_server": null, "proxy_username": null, "proxy_password": null,
            "certificates": null, "use_adblock": true, "use_captcha_solver": true, "additional_tools": null,
            "custom_tools": null, "experimental_features": null, "extensions": null, "show_cursor": false,
            "session_id": null, "some_future_field": 1});
        TaskSpec::from_json(&body).unwrap();
    }

    #[test]
    fn max_cost_usd_is_a_positive_number() {
        let spec = |v: Value| {
            TaskSpec::from_json(&json!({"task": "x", "experimental_features": {"max_cost_usd": v}}))
        };
        assert_eq!(spec(json!(0.25)).unwrap().max_cost_usd(), Some(0.25));
        assert_eq!(spec(json!(2)).unwrap().max_cost_usd(), Some(2.0));
        assert_eq!(spec(Value::Null).unwrap().max_cost_usd(), None);
        for bad in [json!(0), json!(-1.5), json!("0.5"), json!(true), json!([1])] {
            let e = spec(bad.clone()).unwrap_err();
            assert_eq!(
                (e.status, e.field.as_str()),
                (422, "experimental_features.max_cost_usd"),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(json!({"task": "x", "max_steps": 1}));
        assert_eq!((e.status, e.field.as_str()), (422, "max_steps"));
        assert_eq!(err(json!({"task": "x", "max_steps": 129})).field, "max_steps");
        assert_eq!(err(json!({"task": "x", "max_steps": 2.5})).field, "max_steps");
        assert_eq!(err(json!({"task": "x", "device": "tablet"})).field, "device");
        let many: Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!(i))).collect();
        assert_eq!(err(json!({"task": "x", "metadata": many})).field, "metadata");
        assert_eq!(
            err(json!({"task": "x", "metadata": {"a": "y".repeat(2049)}})).field,
            "metadata.a"
        );
        assert_eq!(
            err(json!({"task": "x", "metadata": {"a": [1]}})).field,
            "metadata.a"
        );
        assert_eq!(
            err(json!({"task": "x", "response_model": {"type": 12}})).field,
            "response_model"
        );
        assert_eq!(
            err(json!({"task": "x", "response_model": "str"})).field,
            "response_model"
        );
        assert_eq!(
            err(json!({"task": "x", "additional_tools": {"teleport": null}})).field,
            "additional_tools.teleport"
        );
        assert_eq!(
            err(json!({"task": "x", "allowed_urls": [""]})).field,
            "allowed_urls[0]"
        );
        assert_eq!(err(json!({"task": "x", "url": "ftp://x"})).field, "url");
        assert_eq!(
            err(json!({"task": "x", "proxy_username": "u"})).field,
            "proxy_server"
        );
        assert_eq!(
            err(json!({"task": null, "proxy_server": "self"})).field,
            "proxy_password"
        );
        assert_eq!(
            err(json!({"task": "x", "proxy_server": "self", "proxy_password": "p"})).field,
            "proxy_server"
        );
        assert_eq!(
            err(json!({"task": "x", "certificates": [{"file": "%%%"}]})).field,
            "certificates[0].file"
        );
        assert_eq!(
            err(json!({"task": "x", "custom_tools": [{"name": "click"}]})).field,
            "custom_tools[0].name"
        );
        assert_eq!(err(json!({"task": ""})).field, "task");
        assert_eq!(err(json!([1])).field, "body");
        assert_eq!(err(json!({"task": "x", "agent": "smooth-max"})).field, "agent");
    }

    #[test]
    fn both_smooth_agents_are_accepted() {
        for agent in ["smooth", "smooth-lite"] {
            let s = TaskSpec::from_json(&json!({"task": "x", "agent": agent})).unwrap();
            assert_eq!(s.agent, agent);
        }
    }

    #[test]
    fn self_proxy_sessions_keep_their_token() {
        let s = TaskSpec::from_json(&json!({"task": null, "proxy_server": "self", "proxy_password": "tok"}))
            .unwrap_or_else(|e| panic!("{e:?}"));
        let p = s.proxy.unwrap_or_else(|| panic!("no proxy"));
        assert!(p.is_self());
        assert_eq!(p.password.as_deref(), Some("tok"));
    }

    #[test]
    fn allowed_urls_are_compiled_once_and_survive_storage() {
        let s = TaskSpec::from_json(&json!({"task": "x", "allowed_urls": ["example.com/*"]})).unwrap();
        assert!(s.allowed_urls[0].matches(&url::Url::parse("https://example.com/a").unwrap()));
        let stored = serde_json::to_string(&s).unwrap();
        let back: TaskSpec = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn normalises() {
        let s = TaskSpec::from_json(
            &json!({"task": "x", "url": "example.com", "proxy_server": "127.0.0.1:3128",
            "session_id": "p1", "additional_tools": {"screenshot": {"full_page": true}, "hover": null}}),
        )
        .unwrap();
        assert_eq!(s.url.as_deref(), Some("https://example.com/"));
        assert_eq!(s.proxy.unwrap().server, "http://127.0.0.1:3128");
        assert_eq!(s.profile_id.as_deref(), Some("p1"));
        assert_eq!(s.additional_tools.len(), 2);
    }
}
