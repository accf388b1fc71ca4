//! Settings that hold credentials: shown redacted in `Debug`, so the settings' derived
//! `Debug` can log everything else.

use serde::{Deserialize, Serialize};

/// A credential: read from settings as plain text, shown as `<hidden>` in `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

/// A URL that may carry a credential (a database password, a browser fleet's `?token=`):
/// `Debug` hides its password and query.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CredentialUrl(String);

impl CredentialUrl {
    /// The URL without its password and query, for messages and logs.
    pub fn redacted(u: &str) -> String {
        match url::Url::parse(u) {
            Ok(mut parsed) => {
                if parsed.password().is_some() {
                    let _ = parsed.set_password(Some("<hidden>"));
                }
                if parsed.query().is_some() {
                    parsed.set_query(Some("<hidden>"));
                }
                parsed.to_string()
            }
            Err(_) => "<not a URL>".into(),
        }
    }
}

impl std::ops::Deref for CredentialUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for CredentialUrl {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl std::fmt::Debug for CredentialUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&Self::redacted(&self.0))
    }
}
