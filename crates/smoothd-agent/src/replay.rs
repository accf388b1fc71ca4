//! Recorded action paths (`experimental_features.replay`): what a successful run did, step by
//! step, in a form another run can repeat without the model. Each action keeps a description
//! of its element (`Target`), never an element number; each step the shape of the page it
//! started on. Values typed that equal a `metadata` variable are kept as that variable, and
//! secrets only as `<secret>NAME</secret>`: a path never holds a secret's value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use smoothd_browser::{PageShape, Target};
use smoothd_core::replay::ReplayMode;

use crate::prompt::{self, Secret};

mod output;
pub use output::{OutputTemplate, PageWords};

/// The version of the path document this code writes and reads.
pub const PATH_VERSION: u32 = 1;

/// The shortest metadata value looked for inside a URL (shorter ones match by accident).
const MIN_TEMPLATE_VALUE: usize = 3;

/// A recorded run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ReplayPath {
    pub version: u32,
    pub steps: Vec<PathStep>,
    /// Whether the recorded run's `done` had an output: a replay then reads the answer from
    /// the page it reached (one model request); without one it ends with none.
    pub answer: bool,
    /// The answer when it is made of the run's downloads and nothing read from a page: a
    /// replay fills in its own downloads and asks no model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputTemplate>,
}

/// One step: the page it started on and what was done there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PathStep {
    pub url: String,
    pub shape: PageShape,
    pub actions: Vec<PathAction>,
}

/// One tool call of a step, without element numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PathAction {
    /// The model's tool-call id, so a healed run's history reads as the conversation it repeats.
    #[serde(default)]
    pub id: String,
    /// The tool (`click`, `type`, `goto`...).
    pub name: String,
    /// The arguments without element numbers; `text`, `url` and `option` are strings,
    /// `{"var": NAME}` (a metadata variable's value) or `{"template": "..{{NAME}}.."}` (a URL
    /// with a variable's value in it).
    pub args: Map<String, Value>,
    /// The elements the action used, by argument (`index`, or `from` and `to`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub targets: BTreeMap<String, Target>,
}

/// What a job does with replay: its mode, and the stored path (read only in `auto`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub mode: ReplayMode,
    pub path: Option<ReplayPath>,
}

/// What the worker does with the path after a successful run.
#[derive(Debug, Clone, PartialEq)]
pub enum PathOutcome {
    /// Store this path (a first recording, `record` mode, or a healed replay).
    Save(ReplayPath),
    /// The stored path ran to its end unchanged: count the replay.
    Replayed,
}

/// The arguments that name elements, and the ones that may hold a variable.
pub const ELEMENT_ARGS: [&str; 3] = ["index", "from", "to"];
const VALUE_ARGS: [&str; 3] = ["text", "url", "option"];

/// Why a stored path cannot be replayed here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarError {
    /// The path names a variable this run's `metadata` lacks.
    #[error("the variable {0:?} is not in this run's metadata")]
    Missing(String),
    /// A stored value is neither a string nor a variable.
    #[error("the recorded argument {0:?} is malformed")]
    Malformed(String),
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A recorded value: the variable it equals, a URL template when `in_urls` and a variable's
/// value is inside it, else the text (secrets masked).
fn to_var(text: &str, metadata: &Map<String, Value>, secrets: &[Secret], in_url: bool) -> Value {
    let text = prompt::mask(text, secrets);
    if text.is_empty() {
        return Value::String(text);
    }
    if let Some((k, _)) = metadata.iter().find(|(_, v)| text_of(v) == text) {
        return json!({"var": k});
    }
    if in_url {
        let mut vars: Vec<(&String, String)> = metadata
            .iter()
            .map(|(k, v)| (k, text_of(v)))
            .filter(|(_, v)| v.chars().count() >= MIN_TEMPLATE_VALUE && text.contains(v.as_str()))
            .collect();
        vars.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        if !vars.is_empty() {
            let mut t = text.clone();
            for (k, v) in vars {
                t = t.replace(&v, &format!("{{{{{k}}}}}"));
            }
            return json!({"template": t});
        }
    }
    Value::String(text)
}

/// A recorded value with this run's variables put back.
fn from_var(key: &str, v: &Value, metadata: &Map<String, Value>) -> Result<String, VarError> {
    let lookup = |name: &str| {
        metadata
            .get(name)
            .map(text_of)
            .ok_or_else(|| VarError::Missing(name.to_string()))
    };
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Object(o) => {
            if let Some(Value::String(name)) = o.get("var") {
                return lookup(name);
            }
            let Some(Value::String(t)) = o.get("template") else {
                return Err(VarError::Malformed(key.to_string()));
            };
            let mut out = String::new();
            let mut rest = t.as_str();
            while let Some(start) = rest.find("{{") {
                let Some(end) = rest[start..].find("}}") else {
                    break;
                };
                out.push_str(&rest[..start]);
                out.push_str(&lookup(&rest[start + 2..start + end])?);
                rest = &rest[start + end + 2..];
            }
            out.push_str(rest);
            Ok(out)
        }
        _ => Err(VarError::Malformed(key.to_string())),
    }
}

impl PathAction {
    /// Records a tool call: `arguments` as the model sent them, `targets` the elements its
    /// element numbers named. Variables replace `metadata` values; secrets are masked.
    pub fn record(
        id: &str,
        name: &str,
        arguments: &str,
        targets: BTreeMap<String, Target>,
        metadata: &Map<String, Value>,
        secrets: &[Secret],
    ) -> Self {
        let masked = prompt::mask(arguments, secrets);
        let mut args = match serde_json::from_str::<Value>(&masked) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        for k in ELEMENT_ARGS {
            if targets.contains_key(k) {
                args.remove(k);
            }
        }
        for k in VALUE_ARGS {
            if let Some(Value::String(s)) = args.get(k) {
                let v = to_var(s, metadata, secrets, k == "url");
                args.insert(k.to_string(), v);
            }
        }
        Self {
            id: id.to_string(),
            name: name.to_string(),
            args,
            targets,
        }
    }

    /// The tool call's arguments for this run: element numbers from `found`, this run's
    /// variables in place (secrets stay `<secret>NAME</secret>`, typed by the usual path).
    pub fn arguments(
        &self,
        found: &BTreeMap<String, u32>,
        metadata: &Map<String, Value>,
    ) -> Result<Value, VarError> {
        let mut args = self.args.clone();
        for k in VALUE_ARGS {
            if let Some(v) = args.get(k) {
                let s = from_var(k, v, metadata)?;
                args.insert(k.to_string(), Value::String(s));
            }
        }
        for (k, i) in found {
            args.insert(k.clone(), json!(i));
        }
        Ok(Value::Object(args))
    }
}

/// A target in a few words, for divergence notes.
pub fn describe(t: &Target) -> String {
    let label = t
        .name
        .as_deref()
        .or(t.text.as_deref())
        .map(|s| format!(" {:?}", prompt_cut(s, 60)))
        .unwrap_or_default();
    let role = t
        .role
        .as_deref()
        .map(|r| format!(" role={r}"))
        .unwrap_or_default();
    format!("<{}{role}>{label}", t.tag)
}

fn prompt_cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use smoothd_core::urlpattern::UrlPattern;

    use super::*;

    fn meta() -> Map<String, Value> {
        json!({"email": "ada@example.com", "sku": "AB-123", "n": 7})
            .as_object()
            .cloned()
            .unwrap()
    }

    fn secret() -> Secret {
        Secret {
            name: "PW".into(),
            value: "hunter22".into(),
            allowed_urls: vec![UrlPattern::parse("http://127.0.0.1:*/*").unwrap()],
            ..Default::default()
        }
    }

    fn button() -> Target {
        Target {
            tag: "button".into(),
            name: Some("Send".into()),
            ..Default::default()
        }
    }

    #[test]
    fn variables_and_secrets_are_recorded_by_name_only() {
        let targets = BTreeMap::from([("index".to_string(), button())]);
        let typed = PathAction::record(
            "call_1",
            "type",
            r#"{"index": 4, "text": "ada@example.com", "submit": true}"#,
            targets.clone(),
            &meta(),
            &[secret()],
        );
        assert_eq!(
            typed.args,
            *json!({"text": {"var": "email"}, "submit": true})
                .as_object()
                .unwrap()
        );
        let pw = PathAction::record(
            "call_2",
            "type",
            r#"{"index": 5, "text": "hunter22"}"#,
            targets,
            &meta(),
            &[secret()],
        );
        assert_eq!(pw.args["text"], json!("<secret>PW</secret>"));
        assert!(!serde_json::to_string(&pw).unwrap().contains("hunter22"));
        let url = PathAction::record(
            "call_3",
            "goto",
            r#"{"url": "https://shop.test/p/AB-123?n=7"}"#,
            BTreeMap::new(),
            &meta(),
            &[],
        );
        assert_eq!(
            url.args["url"],
            json!({"template": "https://shop.test/p/{{sku}}?n=7"})
        );
    }

    #[test]
    fn replayed_arguments_take_this_runs_values_and_element_numbers() {
        let mut other = meta();
        other.insert("email".into(), json!("bob@example.com"));
        other.insert("sku".into(), json!("ZZ-9"));
        let typed = PathAction {
            name: "type".into(),
            args: json!({"text": {"var": "email"}}).as_object().cloned().unwrap(),
            targets: BTreeMap::from([("index".to_string(), button())]),
            ..Default::default()
        };
        let found = BTreeMap::from([("index".to_string(), 9)]);
        assert_eq!(
            typed.arguments(&found, &other).unwrap(),
            json!({"index": 9, "text": "bob@example.com"})
        );
        let url = PathAction {
            name: "goto".into(),
            args: json!({"url": {"template": "https://shop.test/p/{{sku}}"}})
                .as_object()
                .cloned()
                .unwrap(),
            ..Default::default()
        };
        assert_eq!(
            url.arguments(&BTreeMap::new(), &other).unwrap()["url"],
            json!("https://shop.test/p/ZZ-9")
        );
        other.remove("sku");
        assert_eq!(
            url.arguments(&BTreeMap::new(), &other).unwrap_err(),
            VarError::Missing("sku".into())
        );
    }
}
