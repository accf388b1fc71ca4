//! `allowed_urls` wildcard patterns, as Smooth documents them: `https://**.example.com/**`,
//! `google.com/*`, `*mydomain.*/*`. `*` matches within one host label or path segment,
//! `**` matches anything; a pattern without a scheme matches http and https; `**.` before a
//! host also matches the bare domain.

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPattern {
    source: String,
    scheme: Option<String>,
    rest: String,
}

impl UrlPattern {
    /// Parses a pattern; errors say why it is unusable.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err("empty pattern".into());
        }
        if pattern.len() > 2048 {
            return Err("pattern longer than 2048 characters".into());
        }
        if pattern.matches('*').count() > 16 {
            return Err("pattern has more than 16 wildcards".into());
        }
        if pattern.chars().any(char::is_whitespace) {
            return Err("pattern contains whitespace".into());
        }
        let (scheme, rest) = match pattern.split_once("://") {
            Some((s, r)) => {
                if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '*') {
                    return Err(format!("invalid scheme {s:?}"));
                }
                (Some(s.to_ascii_lowercase()), r)
            }
            None => (None, pattern),
        };
        if rest.is_empty() {
            return Err("pattern has no host".into());
        }
        // A bare host matches every path on it.
        let rest = if rest.contains('/') {
            rest.to_string()
        } else {
            format!("{rest}/**")
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
            Some(s) if s != "*" && !glob(s.as_bytes(), scheme.as_bytes()) => return false,
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
        if glob(self.rest.as_bytes(), target.as_bytes()) {
            return true;
        }
        // `**.example.com` also covers `example.com`.
        if let Some(stripped) = self.rest.strip_prefix("**.") {
            return glob(stripped.as_bytes(), target.as_bytes());
        }
        false
    }
}

/// Whether any of `patterns` allows `url`; no patterns allow everything.
pub fn allowed(patterns: &[UrlPattern], url: &url::Url) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| p.matches(url))
}

/// Glob match, case-insensitive: `*` matches any run of characters but `/`, `**` any run at all.
fn glob(p: &[u8], t: &[u8]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some(b'*') => {
            let double = p.get(1) == Some(&b'*');
            let rest = if double { &p[2..] } else { &p[1..] };
            for k in 0..=t.len() {
                if glob(rest, &t[k..]) {
                    return true;
                }
                if k < t.len() && !double && t[k] == b'/' {
                    return false;
                }
            }
            false
        }
        Some(c) => t.first().is_some_and(|x| x.eq_ignore_ascii_case(c)) && glob(&p[1..], &t[1..]),
    }
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
    fn no_patterns_allow_all() {
        assert!(allowed(&[], &url::Url::parse("https://x.y/").unwrap()));
    }
}
