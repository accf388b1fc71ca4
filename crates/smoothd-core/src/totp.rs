//! One-time codes (RFC 6238) for secrets whose value is a TOTP key: an `otpauth://totp/...`
//! URI or the `{"totp": "<base32>"}` form. The key never leaves this type: its `Debug` and
//! every error hide it, so a `Totp` can travel in structs that are logged.

use std::time::Duration;

use serde_json::{Map, Value};
use totp_rs::{Algorithm, Secret as Key, TOTP};

/// The shortest key accepted, in bytes (80 bits: the shortest that authenticator apps issue).
pub const MIN_KEY_BYTES: usize = 10;
/// The longest period accepted, in seconds.
pub const MAX_PERIOD_SECS: u64 = 3600;

/// What is wrong with a TOTP value (never quoting it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The value does not parse as a URL.
    #[error("it does not parse as a URL")]
    NotUrl,
    /// An `otpauth://hotp/` URI (or another type): only time-based codes are generated.
    #[error("only otpauth://totp/ is supported (counter-based hotp is not)")]
    NotTotp,
    /// The key parameter is absent or empty.
    #[error("the secret parameter is missing")]
    NoKey,
    /// The key has characters outside base32 or an impossible length.
    #[error("the secret is not base32 (letters A-Z and digits 2-7)")]
    Base32,
    /// The key decodes to fewer than [`MIN_KEY_BYTES`].
    #[error("the secret is shorter than 80 bits (16 base32 characters)")]
    ShortKey,
    /// `algorithm` is not one of the three RFC 6238 hashes.
    #[error("algorithm must be SHA1, SHA256 or SHA512")]
    Algorithm,
    /// `digits` is not 6, 7 or 8.
    #[error("digits must be 6, 7 or 8")]
    Digits,
    /// `period` is not a whole number of seconds in range.
    #[error("period must be a whole number of seconds from 1 to 3600")]
    Period,
    /// The JSON form has a key other than totp, algorithm, digits and period.
    #[error("the only keys are totp, algorithm, digits and period")]
    UnknownKey,
}

/// Why a secret's value is not a usable TOTP generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    /// An `otpauth://` URI that cannot be used.
    #[error("not a valid otpauth URI: {0}")]
    Uri(Problem),
    /// A `{"totp": ...}` value that cannot be used.
    #[error("not a valid {{\"totp\": \"<base32>\"}} value: {0}")]
    Object(Problem),
}

/// A TOTP generator: key, hash, digits and period.
#[derive(Clone, PartialEq)]
pub struct Totp {
    generator: TOTP,
    algorithm: Algorithm,
    digits: u32,
    period: u64,
}

impl std::fmt::Debug for Totp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Totp")
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .field("period", &self.period)
            .field("key", &"<hidden>")
            .finish()
    }
}

/// Reads a secret's value as a TOTP generator: `None` when it is neither an `otpauth://` URI
/// nor a JSON object with a `totp` key (an ordinary secret), else the generator or why not.
pub fn parse_value(value: &str) -> Option<Result<Totp, TotpError>> {
    let v = value.trim();
    if v.get(..10).is_some_and(|p| p.eq_ignore_ascii_case("otpauth://")) {
        return Some(from_uri(v));
    }
    if v.starts_with('{')
        && let Ok(Value::Object(o)) = serde_json::from_str::<Value>(v)
        && o.contains_key("totp")
    {
        return Some(from_object(&o));
    }
    None
}

/// The `otpauth://totp/LABEL?secret=...&algorithm=...&digits=...&period=...` form (Google's
/// Key URI format); absent parameters default to SHA1, 6 digits, 30 s.
pub fn from_uri(uri: &str) -> Result<Totp, TotpError> {
    let bad = TotpError::Uri;
    let u = url::Url::parse(uri.trim()).map_err(|_| bad(Problem::NotUrl))?;
    if !u.scheme().eq_ignore_ascii_case("otpauth") {
        return Err(bad(Problem::NotUrl));
    }
    if !u.host_str().is_some_and(|h| h.eq_ignore_ascii_case("totp")) {
        return Err(bad(Problem::NotTotp));
    }
    let param = |k: &str| {
        u.query_pairs()
            .find(|(name, _)| name.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.into_owned())
    };
    let key = param("secret")
        .filter(|s| !s.trim().is_empty())
        .ok_or(bad(Problem::NoKey))?;
    build(
        &key,
        param("algorithm").as_deref(),
        param("digits").as_deref(),
        param("period").as_deref(),
    )
    .map_err(bad)
}

/// The `{"totp": "<base32>", "algorithm"?, "digits"?, "period"?}` form (numbers as JSON
/// numbers or strings).
pub fn from_object(o: &Map<String, Value>) -> Result<Totp, TotpError> {
    let bad = TotpError::Object;
    if o.keys()
        .any(|k| !["totp", "algorithm", "digits", "period"].contains(&k.as_str()))
    {
        return Err(bad(Problem::UnknownKey));
    }
    let key = match o.get("totp") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => return Err(bad(Problem::NoKey)),
        Some(_) => return Err(bad(Problem::Base32)),
    };
    let text = |k: &str, problem: Problem| match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(bad(problem)),
    };
    build(
        &key,
        text("algorithm", Problem::Algorithm)?.as_deref(),
        text("digits", Problem::Digits)?.as_deref(),
        text("period", Problem::Period)?.as_deref(),
    )
    .map_err(bad)
}

fn build(
    key: &str,
    algorithm: Option<&str>,
    digits: Option<&str>,
    period: Option<&str>,
) -> Result<Totp, Problem> {
    let algorithm = match algorithm.map(|a| a.trim().to_ascii_uppercase()).as_deref() {
        None | Some("SHA1") => Algorithm::SHA1,
        Some("SHA256") => Algorithm::SHA256,
        Some("SHA512") => Algorithm::SHA512,
        Some(_) => return Err(Problem::Algorithm),
    };
    let digits = match digits.map(str::trim) {
        None => 6,
        Some(d) => d
            .parse::<u32>()
            .ok()
            .filter(|d| (6..=8).contains(d))
            .ok_or(Problem::Digits)?,
    };
    let period = match period.map(str::trim) {
        None => 30,
        Some(p) => p
            .parse::<u64>()
            .ok()
            .filter(|p| (1..=MAX_PERIOD_SECS).contains(p))
            .ok_or(Problem::Period)?,
    };
    let bytes = decode_base32(key)?;
    Ok(Totp {
        generator: TOTP::new_unchecked(algorithm, digits as usize, 0, period, bytes),
        algorithm,
        digits,
        period,
    })
}

/// Base32 as people paste it: any case, spaces or dashes between groups, optional padding.
fn decode_base32(key: &str) -> Result<Vec<u8>, Problem> {
    let clean: String = key
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect::<String>()
        .trim_end_matches('=')
        .to_ascii_uppercase();
    let alphabet = |c: char| c.is_ascii_uppercase() || ('2'..='7').contains(&c);
    // 1, 3 and 6 leftover characters cannot end a base32 string.
    if clean.is_empty() || !clean.chars().all(alphabet) || matches!(clean.len() % 8, 1 | 3 | 6) {
        return Err(Problem::Base32);
    }
    let bytes = Key::Encoded(clean).to_bytes().map_err(|_| Problem::Base32)?;
    if bytes.len() < MIN_KEY_BYTES {
        return Err(Problem::ShortKey);
    }
    Ok(bytes)
}

impl Totp {
    /// The code at `unix_secs` seconds since the epoch.
    pub fn code_at(&self, unix_secs: u64) -> String {
        self.generator.generate(unix_secs)
    }

    /// How long one code lasts.
    pub fn period(&self) -> Duration {
        Duration::from_secs(self.period)
    }

    /// How long to wait, at `now` (since the epoch), before generating a code that stays valid
    /// at least `min_left`: zero when the current one has that long left, else until the next
    /// period starts (never, if `min_left` is not shorter than a period).
    pub fn wait_before(&self, now: Duration, min_left: Duration) -> Duration {
        let period = self.period();
        if min_left >= period {
            return Duration::ZERO;
        }
        let into = now.as_nanos() % period.as_nanos();
        let left = period.saturating_sub(Duration::from_nanos(u64::try_from(into).unwrap_or(0)));
        if left < min_left { left } else { Duration::ZERO }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b32(raw: &[u8]) -> String {
        match Key::Raw(raw.to_vec()).to_encoded() {
            Key::Encoded(ref s) => s.clone(),
            Key::Raw(_) => unreachable!(),
        }
    }

    /// RFC 6238 appendix B: the seeds and the 8-digit codes at each time, through both forms.
    #[test]
    fn rfc_6238_test_vectors() {
        let seeds = [
            ("SHA1", b"12345678901234567890".to_vec()),
            ("SHA256", b"12345678901234567890123456789012".to_vec()),
            (
                "SHA512",
                b"1234567890123456789012345678901234567890123456789012345678901234".to_vec(),
            ),
        ];
        let vectors: [(u64, [&str; 3]); 6] = [
            (59, ["94287082", "46119246", "90693936"]),
            (1_111_111_109, ["07081804", "68084774", "25091201"]),
            (1_111_111_111, ["14050471", "67062674", "99943326"]),
            (1_234_567_890, ["89005924", "91819424", "93441116"]),
            (2_000_000_000, ["69279037", "90698825", "38618901"]),
            (20_000_000_000, ["65353130", "77737706", "47863826"]),
        ];
        for (i, (alg, seed)) in seeds.iter().enumerate() {
            let key = b32(seed);
            let uri = format!("otpauth://totp/Example:alice?secret={key}&algorithm={alg}&digits=8&period=30");
            let json = format!(
                r#"{{"totp": "{}", "algorithm": "{alg}", "digits": 8}}"#,
                key.to_lowercase()
            );
            for value in [uri, json] {
                let totp = parse_value(&value).unwrap().unwrap();
                for (t, codes) in &vectors {
                    assert_eq!(totp.code_at(*t), codes[i], "{alg} at {t}");
                }
            }
        }
    }

    #[test]
    fn defaults_are_sha1_six_digits_thirty_seconds() {
        let key = b32(b"12345678901234567890");
        let totp = parse_value(&format!("otpauth://totp/x?secret={key}"))
            .unwrap()
            .unwrap();
        assert_eq!(totp.period(), Duration::from_secs(30));
        // The RFC's SHA1 code at 59 s, cut to 6 digits.
        assert_eq!(totp.code_at(59), "287082");
        assert_eq!(
            totp,
            parse_value(&format!(r#"{{"totp": "{key}"}}"#)).unwrap().unwrap()
        );
    }

    #[test]
    fn ordinary_secrets_are_not_totp() {
        for v in [
            "hunter2",
            "{not json",
            r#"{"user": "x"}"#,
            "otpauth:/",
            "",
            "ötpauth://x",
        ] {
            assert!(parse_value(v).is_none(), "{v}");
        }
    }

    #[test]
    fn bad_values_say_why_without_the_key() {
        let key = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        let cases = [
            (
                "otpauth://hotp/x?secret=GEZDGNBVGY3TQOJQ&counter=1".to_string(),
                TotpError::Uri(Problem::NotTotp),
            ),
            ("otpauth://totp/x".into(), TotpError::Uri(Problem::NoKey)),
            ("otpauth://totp/x?secret=".into(), TotpError::Uri(Problem::NoKey)),
            (
                "otpauth://totp/x?secret=GEZDGNBV1Y3TQOJQ".into(),
                TotpError::Uri(Problem::Base32),
            ),
            (
                "otpauth://totp/x?secret=GEZDGN".into(),
                TotpError::Uri(Problem::Base32),
            ),
            (
                "otpauth://totp/x?secret=GEZDGNBVGY".into(),
                TotpError::Uri(Problem::ShortKey),
            ),
            (
                format!("otpauth://totp/x?secret={key}&algorithm=MD5"),
                TotpError::Uri(Problem::Algorithm),
            ),
            (
                format!("otpauth://totp/x?secret={key}&digits=9"),
                TotpError::Uri(Problem::Digits),
            ),
            (
                format!("otpauth://totp/x?secret={key}&digits=5"),
                TotpError::Uri(Problem::Digits),
            ),
            (
                format!("otpauth://totp/x?secret={key}&period=0"),
                TotpError::Uri(Problem::Period),
            ),
            (
                format!("otpauth://totp/x?secret={key}&period=1.5"),
                TotpError::Uri(Problem::Period),
            ),
            ("otpauth://[".into(), TotpError::Uri(Problem::NotUrl)),
            (r#"{"totp": 5}"#.into(), TotpError::Object(Problem::Base32)),
            (r#"{"totp": ""}"#.into(), TotpError::Object(Problem::NoKey)),
            (
                format!(r#"{{"totp": "{key}", "issuer": "x"}}"#),
                TotpError::Object(Problem::UnknownKey),
            ),
            (
                format!(r#"{{"totp": "{key}", "digits": [6]}}"#),
                TotpError::Object(Problem::Digits),
            ),
        ];
        for (value, want) in cases {
            let got = parse_value(&value).unwrap().unwrap_err();
            assert_eq!(got, want, "{value}");
            assert!(!got.to_string().contains("GEZDGN"), "{got}");
        }
        assert!(
            format!(
                "{:?}",
                from_uri(&format!("otpauth://totp/x?secret={key}")).unwrap()
            )
            .contains("<hidden>")
        );
        assert!(
            !format!(
                "{:?}",
                from_uri(&format!("otpauth://totp/x?secret={key}")).unwrap()
            )
            .contains(key)
        );
    }

    #[test]
    fn pasted_keys_are_normalised() {
        let plain = from_uri("otpauth://totp/x?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        let pasted = parse_value(r#"{"totp": "gezd gnbv gy3t qojq gezd-gnbv gy3t qojq===="}"#)
            .unwrap()
            .unwrap();
        assert_eq!(plain.code_at(1_000_000), pasted.code_at(1_000_000));
    }

    /// A code with less than `min_left` to live is not typed: the wait runs to the next period.
    #[test]
    fn a_code_about_to_expire_waits_for_the_next() {
        let totp = from_uri("otpauth://totp/x?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        let min = Duration::from_secs(3);
        let at = |s: f64| Duration::from_secs_f64(s);
        assert_eq!(totp.wait_before(at(60.0), min), Duration::ZERO);
        assert_eq!(totp.wait_before(at(86.9), min), Duration::ZERO);
        assert_eq!(totp.wait_before(at(87.0), min), Duration::ZERO);
        assert_eq!(totp.wait_before(at(87.5), min), at(2.5));
        assert_eq!(totp.wait_before(at(89.999), min).as_millis(), 1);
        // After the wait the code is the next period's.
        let waited = at(88.0) + totp.wait_before(at(88.0), min);
        assert_eq!(waited, at(90.0));
        assert_ne!(totp.code_at(88), totp.code_at(waited.as_secs()));
        // A margin as long as the period would wait forever: it is not applied.
        assert_eq!(
            totp.wait_before(at(89.0), Duration::from_secs(30)),
            Duration::ZERO
        );
        assert_eq!(totp.wait_before(at(89.0), Duration::ZERO), Duration::ZERO);
    }
}
