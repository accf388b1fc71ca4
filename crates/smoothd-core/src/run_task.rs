//! A session's `run_task` input (`session_action` event, `payload.input`), validated beside
//! the task request and with its step bounds. Each error names the field it is about; its text
//! is the 400 answer the client reads.

use serde_json::{Map, Value};

use crate::request::{DEFAULT_MAX_STEPS, MAX_STEPS_RANGE};
use crate::totp::{self, Totp, TotpError};
use crate::urlpattern::{PatternError, UrlPattern};

/// Why a `run_task` input is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunTaskError {
    /// `task` is missing, not a string, or blank.
    #[error("run_task: input.task (the instruction) is required")]
    Task,
    /// `max_steps` is not an integer in the task request's bounds.
    #[error("run_task: input.max_steps must be an integer from 2 to 128, got {0}")]
    MaxSteps(Value),
    /// `response_model` does not compile as a JSON schema.
    #[error("run_task: input.response_model is not a valid JSON schema: {0}")]
    ResponseModel(String),
    /// `metadata` is not an object.
    #[error("run_task: input.metadata must be an object, got {0}")]
    Metadata(Value),
    /// `secrets` is not an object (its JSON type is named, never its content).
    #[error("run_task: input.secrets must be an object, got {0}")]
    Secrets(&'static str),
    /// A secret is neither a string nor an object.
    #[error("run_task: input.secrets.{0} must be an object with value and allowed_urls")]
    Secret(String),
    /// A secret object's `value` is not a string (or a `{"totp"}` object).
    #[error("run_task: input.secrets.{0}.value must be a string")]
    SecretValue(String),
    /// A secret's value is a TOTP form (`otpauth://` URI, `{"totp"}`) that cannot be used.
    #[error("run_task: input.secrets.{name}: {error}")]
    SecretTotp { name: String, error: TotpError },
    /// A secret's `allowed_urls` holds something other than strings.
    #[error("run_task: input.secrets.{0}.allowed_urls must be strings")]
    SecretUrlsNotStrings(String),
    /// A secret's `allowed_urls` holds an unusable pattern.
    #[error("run_task: input.secrets.{name}.allowed_urls: {error}")]
    SecretUrl { name: String, error: PatternError },
}

/// A secret the agent may type, only on pages its patterns allow (none: any page). `Debug`
/// hides the value.
#[derive(Clone, PartialEq)]
pub struct SecretInput {
    pub name: String,
    pub value: String,
    pub allowed_urls: Vec<UrlPattern>,
    /// Set when the value is a TOTP key: the agent types its current code, not the value.
    pub totp: Option<Totp>,
}

impl std::fmt::Debug for SecretInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretInput")
            .field("name", &self.name)
            .field("value", &"<hidden>")
            .field("allowed_urls", &self.allowed_urls)
            .field("totp", &self.totp)
            .finish()
    }
}

/// A validated `run_task` input.
#[derive(Debug, Clone, PartialEq)]
pub struct RunTaskInput {
    pub task: String,
    pub url: Option<String>,
    pub max_steps: u32,
    pub response_model: Option<Value>,
    pub metadata: Map<String, Value>,
    pub secrets: Vec<SecretInput>,
}

impl RunTaskInput {
    /// Validates `payload.input` of a `run_task` event (`null` and absent fields take their
    /// defaults).
    pub fn from_json(input: &Value) -> Result<Self, RunTaskError> {
        let present = |k: &str| input.get(k).filter(|v| !v.is_null());
        let task = input
            .get("task")
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty())
            .ok_or(RunTaskError::Task)?;
        let max_steps = match present("max_steps") {
            None => DEFAULT_MAX_STEPS,
            Some(v) => v
                .as_i64()
                .filter(|n| MAX_STEPS_RANGE.contains(n))
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| RunTaskError::MaxSteps(v.clone()))?,
        };
        let response_model = match present("response_model") {
            None => None,
            Some(schema) => {
                jsonschema::validator_for(schema).map_err(|e| RunTaskError::ResponseModel(e.to_string()))?;
                Some(schema.clone())
            }
        };
        let metadata = match present("metadata") {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(v) => return Err(RunTaskError::Metadata(v.clone())),
        };
        let secrets = match present("secrets") {
            None => Vec::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(name, s)| secret(name, s))
                .collect::<Result<_, _>>()?,
            Some(v) => return Err(RunTaskError::Secrets(json_type(v))),
        };
        Ok(Self {
            task: task.to_string(),
            url: input.get("url").and_then(Value::as_str).map(str::to_string),
            max_steps,
            response_model,
            metadata,
            secrets,
        })
    }
}

/// What remains of a `run_task` event's payload once its secrets' values are gone (names and
/// `allowed_urls` stay, each value reads `<redacted>`), to store in place of the payload after
/// the run; None when the payload holds no secret.
pub fn redacted(payload: &Value) -> Option<Value> {
    let mut out = payload.clone();
    let secrets = out.get_mut("input")?.get_mut("secrets")?.as_object_mut()?;
    if secrets.is_empty() {
        return None;
    }
    for s in secrets.values_mut() {
        match s {
            Value::Object(o) => {
                o.insert("value".into(), Value::String(REDACTED.into()));
            }
            other => *other = Value::String(REDACTED.into()),
        }
    }
    Some(out)
}

/// A stored secret's value after its run.
pub const REDACTED: &str = "<redacted>";

/// The JSON type of `v`, for errors that must not quote it.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One entry of `secrets`: a string, or `{"value", "allowed_urls"}`. A value that is a TOTP
/// form (an `otpauth://totp/` URI, or `{"totp": "<base32>"}` as JSON text or, on the raw wire,
/// as an object) makes the secret a one-time code generator.
fn secret(name: &str, s: &Value) -> Result<SecretInput, RunTaskError> {
    let (value, urls) = match s {
        Value::String(v) => (v.clone(), Vec::new()),
        Value::Object(o) => (
            match o.get("value") {
                Some(Value::String(v)) => v.clone(),
                Some(v @ Value::Object(inner)) if inner.contains_key("totp") => v.to_string(),
                _ => return Err(RunTaskError::SecretValue(name.to_string())),
            },
            o.get("allowed_urls")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        ),
        _ => return Err(RunTaskError::Secret(name.to_string())),
    };
    let totp = totp::parse_value(&value)
        .transpose()
        .map_err(|error| RunTaskError::SecretTotp {
            name: name.to_string(),
            error,
        })?;
    let allowed_urls = urls
        .iter()
        .map(|u| {
            let p = u
                .as_str()
                .ok_or_else(|| RunTaskError::SecretUrlsNotStrings(name.to_string()))?;
            UrlPattern::parse(p).map_err(|error| RunTaskError::SecretUrl {
                name: name.to_string(),
                error,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(SecretInput {
        name: name.to_string(),
        value,
        allowed_urls,
        totp,
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn redacted_keeps_names_and_urls_but_no_value() {
        let payload = serde_json::json!({"name": "run_task", "input": {"task": "t", "secrets": {
            "pw": "hunter2",
            "otp": {"value": "otpauth://totp/x?secret=ABC", "allowed_urls": ["https://a.example/**"]},
        }}});
        let r = redacted(&payload).unwrap();
        let text = r.to_string();
        assert!(!text.contains("hunter2") && !text.contains("otpauth"), "{text}");
        assert_eq!(r["input"]["secrets"]["pw"], REDACTED);
        assert_eq!(r["input"]["secrets"]["otp"]["value"], REDACTED);
        assert_eq!(
            r["input"]["secrets"]["otp"]["allowed_urls"][0],
            "https://a.example/**"
        );
        assert_eq!(r["input"]["task"], "t");
        assert!(redacted(&serde_json::json!({"input": {"task": "t"}})).is_none());
        assert!(redacted(&serde_json::json!({"input": {"task": "t", "secrets": {}}})).is_none());
    }

    use serde_json::json;

    use super::*;

    fn err(input: Value) -> String {
        RunTaskInput::from_json(&input).unwrap_err().to_string()
    }

    #[test]
    fn defaults_and_secrets() {
        let i = RunTaskInput::from_json(&json!({
            "task": "log in", "max_steps": null, "url": "https://example.com",
            "secrets": {"pw": "hunter2", "otp": {"value": "1", "allowed_urls": ["example.com/*"]}},
        }))
        .unwrap();
        assert_eq!(
            (i.task.as_str(), i.max_steps, i.url.as_deref()),
            ("log in", 32, Some("https://example.com"))
        );
        let names: Vec<(&str, usize)> = i
            .secrets
            .iter()
            .map(|s| (s.name.as_str(), s.allowed_urls.len()))
            .collect();
        assert_eq!(names, [("otp", 1), ("pw", 0)]);
    }

    #[test]
    fn the_step_bounds_are_the_task_requests() {
        for n in [2, 128] {
            assert_eq!(
                RunTaskInput::from_json(&json!({"task": "x", "max_steps": n}))
                    .unwrap()
                    .max_steps,
                n
            );
        }
        for bad in [json!(1), json!(129), json!(2.5), json!(-3), json!("5")] {
            assert_eq!(
                err(json!({"task": "x", "max_steps": bad})),
                format!("run_task: input.max_steps must be an integer from 2 to 128, got {bad}")
            );
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            err(json!({"task": "  "})),
            "run_task: input.task (the instruction) is required"
        );
        assert!(
            err(json!({"task": "x", "response_model": {"type": 5}}))
                .starts_with("run_task: input.response_model")
        );
        assert_eq!(
            err(json!({"task": "x", "metadata": [1]})),
            "run_task: input.metadata must be an object, got [1]"
        );
        assert_eq!(
            err(json!({"task": "x", "secrets": 1})),
            "run_task: input.secrets must be an object, got a number"
        );
        assert_eq!(
            err(json!({"task": "x", "secrets": {"a": 1}})),
            "run_task: input.secrets.a must be an object with value and allowed_urls"
        );
        assert_eq!(
            err(json!({"task": "x", "secrets": {"a": {}}})),
            "run_task: input.secrets.a.value must be a string"
        );
        assert_eq!(
            err(json!({"task": "x", "secrets": {"a": {"value": "v", "allowed_urls": [1]}}})),
            "run_task: input.secrets.a.allowed_urls must be strings"
        );
        assert_eq!(
            err(json!({"task": "x", "secrets": {"a": {"value": "v", "allowed_urls": [""]}}})),
            "run_task: input.secrets.a.allowed_urls: empty pattern"
        );
    }

    #[test]
    fn totp_secrets_are_parsed_and_their_errors_name_the_field_not_the_value() {
        let key = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        let i = RunTaskInput::from_json(&json!({"task": "x", "secrets": {
            "uri": format!("otpauth://totp/Site:ada?secret={key}&issuer=Site"),
            "text": {"value": format!(r#"{{"totp": "{key}"}}"#), "allowed_urls": ["example.com/*"]},
            "object": {"value": {"totp": key, "digits": 8}},
            "pw": "hunter2",
        }}))
        .unwrap();
        let kinds: Vec<(&str, bool)> = i
            .secrets
            .iter()
            .map(|s| (s.name.as_str(), s.totp.is_some()))
            .collect();
        assert_eq!(
            kinds,
            [("object", true), ("pw", false), ("text", true), ("uri", true)]
        );
        let shown = format!("{i:?}");
        assert!(!shown.contains(key) && !shown.contains("hunter2"), "{shown}");
        for (value, want) in [
            (
                json!("otpauth://totp/x?secret=nope1"),
                "run_task: input.secrets.github_2fa: not a valid otpauth URI: the secret is not base32 (letters A-Z and digits 2-7)",
            ),
            (
                json!({"value": "otpauth://totp/x?secret=GEZDGNBV1Y3TQOJQ&digits=9"}),
                "run_task: input.secrets.github_2fa: not a valid otpauth URI: digits must be 6, 7 or 8",
            ),
            (
                json!({"value": {"totp": "GEZDGNBV"}}),
                "run_task: input.secrets.github_2fa: not a valid {\"totp\": \"<base32>\"} value: the secret is shorter than 80 bits (16 base32 characters)",
            ),
            (
                json!({"value": {"user": "x"}}),
                "run_task: input.secrets.github_2fa.value must be a string",
            ),
        ] {
            assert_eq!(err(json!({"task": "x", "secrets": {"github_2fa": value}})), want);
        }
        assert_eq!(
            err(json!({"task": "x", "secrets": "otpauth://totp/x?secret=GEZDGNBVGY3TQOJQ"})),
            "run_task: input.secrets must be an object, got a string"
        );
    }
}
