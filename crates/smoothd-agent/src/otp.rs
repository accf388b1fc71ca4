//! The one-time codes of a TOTP secret in one run: each code typed is remembered so that
//! [`crate::prompt::mask`] hides it wherever the page echoes it, like a secret's value.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use smoothd_core::Totp;

/// A TOTP secret's generator and the codes it issued. Clones share the issued codes (a
/// run's job and anything it hands the secrets to mask the same codes).
#[derive(Clone)]
pub struct OneTimeCodes {
    totp: Totp,
    issued: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for OneTimeCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneTimeCodes")
            .field("totp", &self.totp)
            .field("issued", &self.issued().len())
            .finish()
    }
}

impl OneTimeCodes {
    pub fn new(totp: Totp) -> Self {
        Self {
            totp,
            issued: Arc::default(),
        }
    }

    /// The code at `now` (since the epoch), remembered for masking.
    pub fn issue(&self, now: Duration) -> String {
        let code = self.totp.code_at(now.as_secs());
        let mut issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        if !issued.contains(&code) {
            issued.push(code.clone());
        }
        code
    }

    /// Every code issued so far.
    pub fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// See [`Totp::wait_before`].
    pub fn wait_before(&self, now: Duration, min_left: Duration) -> Duration {
        self.totp.wait_before(now, min_left)
    }
}

/// The wall clock as time since the epoch (zero if it is set before 1970).
pub fn now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// `text` with each whole-number occurrence of `code` (not inside a longer run of digits)
/// replaced by `with`.
pub fn replace_code(text: &str, code: &str, with: &str) -> String {
    if code.is_empty() || !text.contains(code) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut prev_digit = false;
    while let Some(at) = rest.find(code) {
        let before = &rest[..at];
        let after = &rest[at + code.len()..];
        let digit_before = before
            .chars()
            .next_back()
            .map_or(prev_digit, |c| c.is_ascii_digit());
        let digit_after = after.chars().next().is_some_and(|c| c.is_ascii_digit());
        out.push_str(before);
        if digit_before || digit_after {
            out.push_str(code);
        } else {
            out.push_str(with);
        }
        prev_digit = code.chars().next_back().is_some_and(|c| c.is_ascii_digit());
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_codes_are_replaced() {
        let r = |t: &str| replace_code(t, "123456", "<secret>OTP</secret>");
        assert_eq!(r("code 123456 sent"), "code <secret>OTP</secret> sent");
        assert_eq!(r("value=\"123456\""), "value=\"<secret>OTP</secret>\"");
        assert_eq!(r("id 91234567 and 1234560"), "id 91234567 and 1234560");
        assert_eq!(r("123456123456"), "123456123456");
        assert_eq!(
            r("123456 x 123456"),
            "<secret>OTP</secret> x <secret>OTP</secret>"
        );
    }

    #[test]
    fn issued_codes_are_shared_by_clones_and_kept_out_of_debug() {
        let totp =
            smoothd_core::totp::from_uri("otpauth://totp/x?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        let codes = OneTimeCodes::new(totp);
        let other = codes.clone();
        let code = codes.issue(Duration::from_secs(1_000_000));
        assert_eq!(other.issued(), std::slice::from_ref(&code));
        assert_eq!(codes.issue(Duration::from_secs(1_000_001)), code);
        assert_eq!(other.issued().len(), 1);
        let shown = format!("{codes:?}");
        assert!(!shown.contains(&code) && !shown.contains("GEZDGNBV"), "{shown}");
    }
}
