//! Random identifiers and secrets. Every id is a short prefix plus base62 characters drawn
//! from the operating system's generator, so ids are unguessable as well as unique.

use rand::Rng;
use rand::distr::Alphanumeric;

/// `len` random base62 characters.
pub fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Whether two secrets (live tokens, passwords) are equal, in time that does not depend on
/// where they first differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// A new task id, e.g. `tsk_3kTMd92jf0Q1xZ7aL5cB`.
pub fn task_id() -> String {
    format!("tsk_{}", random_token(20))
}

/// A new server-side event id.
pub fn event_id() -> String {
    format!("evt_{}", random_token(20))
}

/// A new uploaded-file id.
pub fn file_id() -> String {
    format!("file_{}", random_token(20))
}

/// A new extension id.
pub fn extension_id() -> String {
    format!("ext_{}", random_token(20))
}

/// A new generated profile id.
pub fn profile_id() -> String {
    format!("profile_{}", random_token(16))
}

/// A new artifact id.
pub fn artifact_id() -> String {
    format!("art_{}", random_token(20))
}

/// A new API key. Only its hash is ever stored.
pub fn api_key() -> String {
    format!("smd_{}", random_token(40))
}

/// A worker id: unique per worker process.
pub fn worker_id() -> String {
    format!("wrk_{}", random_token(12))
}

/// Whether a client-chosen id (profile ids) is acceptable: 1..=128 characters from
/// `[A-Za-z0-9._-]`, so it is safe in paths and URLs.
pub fn is_valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && id != "."
        && id != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_secret_compares_whole_values() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
        assert!(same_secret("", ""));
    }

    #[test]
    fn ids_are_distinct_and_prefixed() {
        let a = task_id();
        let b = task_id();
        assert_ne!(a, b);
        assert!(a.starts_with("tsk_") && a.len() == 24);
        assert!(api_key().starts_with("smd_"));
    }

    #[test]
    fn client_ids() {
        assert!(is_valid_client_id("my-profile_1.x"));
        assert!(!is_valid_client_id(""));
        assert!(!is_valid_client_id("a/b"));
        assert!(!is_valid_client_id(".."));
        assert!(!is_valid_client_id(&"x".repeat(129)));
    }
}
