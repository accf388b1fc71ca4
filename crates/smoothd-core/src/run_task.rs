//! A session's `run_task` input (`session_action` event, `payload.input`), validated beside
//! the task request and with its step bounds. Each error names the field it is about; its text
//! is the 400 answer the client reads.

use serde_json::{Map, Value};

use crate::request::{DEFAULT_MAX_STEPS, MAX_STEPS_RANGE};
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
    /// `secrets` is not an object.
    #[error("run_task: input.secrets must be an object, got {0}")]
    Secrets(Value),
    /// A secret is neither a string nor an object.
    #[error("run_task: input.secrets.{0} must be an object with value and allowed_urls")]
    Secret(String),
    /// A secret object's `value` is not a string.
    #[error("run_task: input.secrets.{0}.value must be a string")]
    SecretValue(String),
    /// A secret's `allowed_urls` holds something other than strings.
    #[error("run_task: input.secrets.{0}.allowed_urls must be strings")]
    SecretUrlsNotStrings(String),
    /// A secret's `allowed_urls` holds an unusable pattern.
    #[error("run_task: input.secrets.{name}.allowed_urls: {error}")]
    SecretUrl { name: String, error: PatternError },
}

/// A secret the agent may type, only on pages its patterns allow (none: any page).
#[derive(Debug, Clone, PartialEq)]
pub struct SecretInput {
    pub name: String,
    pub value: String,
    pub allowed_urls: Vec<UrlPattern>,
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
            Some(v) => return Err(RunTaskError::Secrets(v.clone())),
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

/// One entry of `secrets`: a string, or `{"value", "allowed_urls"}`.
fn secret(name: &str, s: &Value) -> Result<SecretInput, RunTaskError> {
    let (value, urls) = match s {
        Value::String(v) => (v.clone(), Vec::new()),
        Value::Object(o) => (
            o.get("value")
                .and_then(Value::as_str)
                .ok_or_else(|| RunTaskError::SecretValue(name.to_string()))?
                .to_string(),
            o.get("allowed_urls")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        ),
        _ => return Err(RunTaskError::Secret(name.to_string())),
    };
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
    })
}

#[cfg(test)]
mod tests {
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
            "run_task: input.secrets must be an object, got 1"
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
}
