//! `experimental_features.replay`: whether a task replays a recorded action path, and under
//! which cache key. Validated once at submit (errors name `experimental_features.replay.*`);
//! the default key is a short hash of what makes two tasks the same workflow.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::validation::{ValidationError, kind};

/// What a task does with its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReplayMode {
    /// Replay the path when one exists, else record one.
    #[default]
    Auto,
    /// Always run the model, and overwrite the path when the run succeeds.
    Record,
    /// Neither read nor write a path.
    Off,
}

/// A task's replay options, as validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ReplayOptions {
    /// The caller's cache key; `None` derives one with [`ReplayOptions::cache_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default)]
    pub mode: ReplayMode,
}

const FIELD: &str = "experimental_features.replay";

impl ReplayOptions {
    /// Reads `experimental_features.replay`: absent or null is `None` (no replay); an error
    /// names the bad field.
    pub fn from_features(features: &Map<String, Value>) -> Result<Option<Self>, ValidationError> {
        let obj = match features.get("replay") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(o)) => o,
            Some(v) => {
                return Err(ValidationError::invalid(
                    FIELD,
                    format!("must be an object like {{\"mode\": \"auto\"}}, got {}", kind(v)),
                ));
            }
        };
        if let Some(extra) = obj.keys().find(|k| !matches!(k.as_str(), "key" | "mode")) {
            return Err(ValidationError::invalid(
                format!("{FIELD}.{extra}"),
                "unknown option; expected key or mode",
            ));
        }
        let key = match obj.get("key") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) if crate::ids::is_valid_client_id(k) => Some(k.clone()),
            Some(Value::String(_)) => {
                return Err(ValidationError::invalid(
                    format!("{FIELD}.key"),
                    "must be 1-128 characters of A-Z a-z 0-9 . _ -",
                ));
            }
            Some(v) => {
                return Err(ValidationError::invalid(
                    format!("{FIELD}.key"),
                    format!("must be a string, got {}", kind(v)),
                ));
            }
        };
        let mode = match obj.get("mode") {
            None | Some(Value::Null) => ReplayMode::Auto,
            Some(Value::String(m)) => match m.as_str() {
                "auto" => ReplayMode::Auto,
                "record" => ReplayMode::Record,
                "off" => ReplayMode::Off,
                other => {
                    return Err(ValidationError::invalid(
                        format!("{FIELD}.mode"),
                        format!("must be \"auto\", \"record\" or \"off\", got {other:?}"),
                    ));
                }
            },
            Some(v) => {
                return Err(ValidationError::invalid(
                    format!("{FIELD}.mode"),
                    format!("must be \"auto\", \"record\" or \"off\", got {}", kind(v)),
                ));
            }
        };
        Ok(Some(Self { key, mode }))
    }

    /// The key the path is stored under: the caller's, else a hash of the task text, the start
    /// URL and the response model (as canonical JSON). Paths are also scoped to the API key,
    /// so two keys never share one.
    pub fn cache_key(&self, task: &str, url: Option<&str>, response_model: Option<&Value>) -> String {
        if let Some(k) = &self.key {
            return k.clone();
        }
        let mut h = Sha256::new();
        h.update(task.as_bytes());
        h.update([0]);
        h.update(url.unwrap_or("").as_bytes());
        h.update([0]);
        if let Some(schema) = response_model {
            h.update(canonical(schema).as_bytes());
        }
        let digest = h.finalize();
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("auto-{hex}")
    }
}

/// JSON with object keys sorted at every level, so equal schemas hash equally whatever their
/// key order.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&m[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<Option<ReplayOptions>, ValidationError> {
        ReplayOptions::from_features(v.as_object().unwrap())
    }

    #[test]
    fn options_default_to_auto_and_bad_values_name_the_field() {
        assert_eq!(parse(json!({})).unwrap(), None);
        assert_eq!(
            parse(json!({"replay": {}})).unwrap(),
            Some(ReplayOptions {
                key: None,
                mode: ReplayMode::Auto
            })
        );
        let r = parse(json!({"replay": {"key": "daily.report", "mode": "record"}})).unwrap();
        assert_eq!(r.unwrap().mode, ReplayMode::Record);
        assert_eq!(
            parse(json!({"replay": {"mode": "always"}})).unwrap_err().field,
            "experimental_features.replay.mode"
        );
        assert_eq!(
            parse(json!({"replay": {"key": "a/b"}})).unwrap_err().field,
            "experimental_features.replay.key"
        );
        assert_eq!(
            parse(json!({"replay": true})).unwrap_err().field,
            "experimental_features.replay"
        );
        assert_eq!(
            parse(json!({"replay": {"ttl": 3}})).unwrap_err().field,
            "experimental_features.replay.ttl"
        );
    }

    #[test]
    fn the_default_key_depends_on_task_url_and_schema_not_key_order() {
        let o = ReplayOptions::default();
        let a = o.cache_key(
            "t",
            Some("https://x/"),
            Some(&json!({"type": "object", "properties": {}})),
        );
        let b = o.cache_key(
            "t",
            Some("https://x/"),
            Some(&json!({"properties": {}, "type": "object"})),
        );
        assert_eq!(a, b);
        assert!(a.starts_with("auto-") && a.len() == 21, "{a}");
        assert_ne!(a, o.cache_key("t", Some("https://y/"), None));
        assert_ne!(o.cache_key("t", None, None), o.cache_key("u", None, None));
        let mine = ReplayOptions {
            key: Some("k1".into()),
            mode: ReplayMode::Auto,
        };
        assert_eq!(mine.cache_key("t", None, None), "k1");
    }
}
