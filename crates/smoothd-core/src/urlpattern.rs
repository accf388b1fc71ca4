//! `allowed_urls` wildcard patterns, as Smooth documents them: `https://**.example.com/**`,
//! `google.com/*`, `*mydomain.*/*`. `*` matches within one host label or path segment,
//! `**` matches anything; a pattern without a scheme matches http and https; `**.` before a
//! host also matches the bare domain.

use regex::Regex;

/// Why a pattern is unusable; the text is shown to the user after the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Nothing but whitespace.
    #[error("empty pattern")]
    Empty,
    /// Over 2048 characters.
    #[error("pattern longer than 2048 characters")]
    TooLong,
    /// Over 16 `*`.
    #[error("pattern has more than 16 wildcards")]
    TooManyWildcards,
    /// Whitespace inside.
    #[error("pattern contains whitespace")]
    Whitespace,
    /// The part before `://` is not a scheme.
    #[error("invalid scheme {0:?}")]
    Scheme(String),
    /// Nothing after the scheme.
    #[error("pattern has no host")]
    NoHost,
}

/// A compiled pattern: the scheme and the rest are each one anchored, case-insensitive regex,
/// so matching is linear in the URL's length whatever the wildcards (the intercepted-request
/// path runs it on every request). Serialised as the pattern's text, and parsed again (with
/// its errors) when read back.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct UrlPattern {
    source: String,
    /// `None`: http or https.
    scheme: Option<Regex>,
    rest: Regex,
}

impl PartialEq for UrlPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for UrlPattern {}

impl From<UrlPattern> for String {
    fn from(p: UrlPattern) -> String {
        p.source
    }
}

impl TryFrom<String> for UrlPattern {
    type Error = PatternError;

    fn try_from(s: String) -> Result<Self, PatternError> {
        UrlPattern::parse(&s)
    }
}

impl UrlPattern {
    /// Parses a pattern; errors say why it is unusable.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        if pattern.len() > 2048 {
            return Err(PatternError::TooLong);
        }
        if pattern.matches('*').count() > 16 {
            return Err(PatternError::TooManyWildcards);
        }
        if pattern.chars().any(char::is_whitespace) {
            return Err(PatternError::Whitespace);
        }
        let (scheme, rest) = match pattern.split_once("://") {
            Some((s, r)) => {
                if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '*') {
                    return Err(PatternError::Scheme(s.to_string()));
                }
                (Some(glob_regex(s, "")), r)
            }
            None => (None, pattern),
        };
        if rest.is_empty() {
            return Err(PatternError::NoHost);
        }
        // A bare host matches every path on it.
        let rest = if rest.contains('/') {
            rest.to_string()
        } else {
            format!("{rest}/**")
        };
        // `**.example.com` also covers the bare `example.com`.
        let rest = match rest.strip_prefix("**.") {
            Some(stripped) => glob_regex(stripped, "(?:.*\\.)?"),
            None => glob_regex(&rest, ""),
        };
        Ok(Self {
            source: pattern.to_string(),
            scheme,
            rest,
        })
    }

    /// The pattern as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `url` (absolute) is allowed by this pattern.
    pub fn matches(&self, url: &url::Url) -> bool {
        let scheme = url.scheme();
        match &self.scheme {
            Some(s) if !s.is_match(scheme) => return false,
            None if scheme != "http" && scheme != "https" => return false,
            _ => {}
        }
        let host = url.host_str().unwrap_or("");
        let mut target = String::with_capacity(host.len() + url.path().len() + 8);
        target.push_str(host);
        if let Some(port) = url.port() {
            target.push(':');
            target.push_str(&port.to_string());
        }
        target.push_str(url.path());
        if let Some(q) = url.query() {
            target.push('?');
            target.push_str(q);
        }
        self.rest.is_match(&target)
    }
}

/// Whether any of `patterns` allows `url`; no patterns allow everything.
pub fn allowed(patterns: &[UrlPattern], url: &url::Url) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| p.matches(url))
}

/// The anchored, case-insensitive regex of a glob: `*` matches any run of characters but `/`,
/// `**` any run at all; everything else is literal. `prefix` is raw regex put before it.
fn glob_regex(glob: &str, prefix: &str) -> Regex {
    let mut re = String::with_capacity(glob.len() * 2 + 16);
    re.push_str("(?is)^");
    re.push_str(prefix);
    let mut rest = glob;
    while let Some(i) = rest.find('*') {
        re.push_str(&regex::escape(&rest[..i]));
        if rest[i..].starts_with("**") {
            re.push_str(".*");
            rest = &rest[i + 2..];
        } else {
            re.push_str("[^/]*");
            rest = &rest[i + 1..];
        }
    }
    re.push_str(&regex::escape(rest));
    re.push('$');
    // Literals are escaped and the wildcards are fixed fragments, so the regex is always valid;
    // the size limit cannot be reached with 2048 characters. Should it fail anyway, a regex
    // that matches nothing keeps the pattern closed rather than open.
    Regex::new(&re).unwrap_or_else(|_| never())
}

#[expect(clippy::unwrap_used, reason = "a constant regex")]
fn never() -> Regex {
    Regex::new("[^\\s\\S]").unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str, u: &str) -> bool {
        UrlPattern::parse(p)
            .unwrap()
            .matches(&url::Url::parse(u).unwrap())
    }

    #[test]
    fn documented_examples() {
        assert!(ok("https://**.example.com/**", "https://www.example.com/a/b"));
        assert!(ok("https://**.example.com/**", "https://example.com/"));
        assert!(!ok("https://**.example.com/**", "https://example.org/"));
        assert!(!ok("https://**.example.com/**", "http://www.example.com/"));
        assert!(ok("google.com/*", "https://google.com/search"));
        assert!(!ok("google.com/*", "https://google.com/a/b"));
        assert!(ok("*mydomain.*/*", "http://shop.mydomain.io/x"));
        assert!(ok("127.0.0.1:8080", "http://127.0.0.1:8080/any/path?q=1"));
        assert!(!ok("127.0.0.1:8080", "http://127.0.0.1:9090/"));
    }

    #[test]
    fn rejects_nonsense() {
        assert!(UrlPattern::parse("").is_err());
        assert!(UrlPattern::parse("https://").is_err());
        assert!(UrlPattern::parse("a b").is_err());
    }

    #[test]
    fn many_wildcards_match_in_linear_time() {
        // 16 wildcards against URLs that almost match: exponential in the URL's length for a
        // backtracking glob, linear for the compiled regex. Compared as a ratio of two sizes
        // measured in the same run (10x the length must cost far less than 1000x the time).
        let p = UrlPattern::parse(&format!("{}/x", "**a".repeat(8))).unwrap();
        let time = |n: usize| {
            let url = url::Url::parse(&format!("https://a.example/{}", "a".repeat(n))).unwrap();
            let start = std::time::Instant::now();
            for _ in 0..50 {
                assert!(!p.matches(&url));
            }
            start.elapsed().as_secs_f64()
        };
        let short = time(400).max(1e-6);
        let long = time(4000);
        assert!(long / short < 1000.0, "{long} s against {short} s");
    }

    #[test]
    fn literals_are_not_regex() {
        assert!(!ok("a.c/*", "https://abc/x"));
        assert!(ok("a.c/(x)+", "https://a.c/(x)+"));
        assert!(ok("EXAMPLE.com/*", "https://example.COM/p"));
    }

    #[test]
    fn no_patterns_allow_all() {
        assert!(allowed(&[], &url::Url::parse("https://x.y/").unwrap()));
    }

    #[test]
    fn serialised_as_its_text_and_checked_when_read_back() {
        let p = UrlPattern::parse("https://**.example.com/**").unwrap();
        let text = serde_json::to_value(&p).unwrap();
        assert_eq!(text, serde_json::json!("https://**.example.com/**"));
        let back: UrlPattern = serde_json::from_value(text).unwrap();
        assert!(back.matches(&url::Url::parse("https://example.com/a").unwrap()));
        assert_eq!(back, p);
        let bad = serde_json::from_value::<UrlPattern>(serde_json::json!("ftp://"));
        assert!(bad.is_err_and(|e| e.to_string().contains("no host")));
    }
}
