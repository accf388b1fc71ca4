//! How a refused request says what is wrong: the field, the message and the status; shared by
//! every part of the request's validation.

use serde_json::Value;

/// A request the server refuses, with the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// HTTP status to answer with: 422 for a bad value, 400 for a bad reference.
    pub status: u16,
    /// The field, as a path (`metadata.user`, `files[2]`).
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl ValidationError {
    /// A bad value (422).
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: 422,
            field: field.into(),
            message: message.into(),
        }
    }

    /// A reference to something that does not exist (400).
    pub fn unknown(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A word for a JSON value's type, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number with a fraction",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
