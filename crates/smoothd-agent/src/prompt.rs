//! What the model reads: the system rules, the task message, and the page view of each step.

use std::time::Duration;

use serde_json::{Map, Value};
use smoothd_browser::{PageView, Tab};
use smoothd_core::urlpattern::UrlPattern;

use crate::otp::{self, OneTimeCodes};

/// A secret the model may type by name on matching pages. `Debug` hides the value.
#[derive(Clone, Default)]
pub struct Secret {
    pub name: String,
    pub value: String,
    pub allowed_urls: Vec<UrlPattern>,
    /// A TOTP secret: typing it types the current one-time code, never `value`.
    pub totp: Option<OneTimeCodes>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("value", &"<hidden>")
            .field("allowed_urls", &self.allowed_urls)
            .field("totp", &self.totp)
            .finish()
    }
}

impl Secret {
    /// Whether the secret may be typed on `url` (no patterns: anywhere).
    fn allowed_on(&self, url: &str) -> bool {
        self.allowed_urls.is_empty()
            || url::Url::parse(url).is_ok_and(|u| smoothd_core::urlpattern::allowed(&self.allowed_urls, &u))
    }
}

pub const SYSTEM: &str = "You operate a web browser to complete the user's task. Each step you get the \
current page: URL, tabs, scroll position and the visible page as text, where every element you can use is \
one line `[N]<tag attributes>text` (N is valid for this step only; `*` marks elements new since the last \
step). Act with the tools; several calls in one reply run in order until the page changes. Use only what \
the page shows: never invent values. If something blocks you (a banner, a pop-up), deal with it first. When \
the task is complete, call done with the answer and success=true; if it cannot be completed, call done with \
what you found and success=false. Be brief in your own text.";

/// The first user message: the task and everything it comes with.
pub fn task_message(
    task: &str,
    url: Option<&str>,
    metadata: &Map<String, Value>,
    files: &[String],
    secrets: &[Secret],
    structured: bool,
) -> String {
    let mut s = format!("Task: {task}");
    if let Some(u) = url {
        s.push_str(&format!("\nStart URL: {u}"));
    }
    if !metadata.is_empty() {
        s.push_str("\nVariables:");
        for (k, v) in metadata {
            let v = match v {
                Value::String(t) => t.clone(),
                other => other.to_string(),
            };
            s.push_str(&format!("\n{k} = {v}"));
        }
    }
    if !files.is_empty() {
        s.push_str(&format!("\nFiles you can upload: {}", files.join(", ")));
    }
    if !secrets.is_empty() {
        s.push_str("\nSecrets (type them as <secret>NAME</secret>; values are hidden from you):");
        for sec in secrets {
            let urls: Vec<&str> = sec.allowed_urls.iter().map(UrlPattern::as_str).collect();
            let mut notes = Vec::new();
            if sec.totp.is_some() {
                notes.push("one-time code, typed fresh each time".to_string());
            }
            if !urls.is_empty() {
                notes.push(format!("allowed on {}", urls.join(", ")));
            }
            if notes.is_empty() {
                s.push_str(&format!("\n{}", sec.name));
            } else {
                s.push_str(&format!("\n{} ({})", sec.name, notes.join("; ")));
            }
        }
    }
    if structured {
        s.push_str("\nOutput: call done with output as a JSON value matching the schema of done.output.");
    }
    s
}

/// The page view of one step (see docs/agent-protocol.md).
pub fn render_view(step: u32, max_steps: u32, view: &PageView, tabs: &[Tab], current_tab: usize) -> String {
    let mut s = format!(
        "Step {step}/{max_steps}\nURL: {}\nTitle: {}\n",
        view.url, view.title
    );
    if tabs.len() > 1 {
        let list: Vec<String> = tabs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let title: String = t.title.chars().take(40).collect();
                if i == current_tab {
                    format!("[{i}] {title} (current)")
                } else {
                    format!("[{i}] {title}")
                }
            })
            .collect();
        s.push_str(&format!("Tabs: {}\n", list.join(", ")));
    }
    if view.url == "about:blank" || view.url.is_empty() {
        s.push_str("The tab is empty. Use goto to open a page.");
        return s;
    }
    s.push_str(&format!(
        "Viewport {}x{}; {} px above, {} px below\n",
        view.width, view.height, view.above, view.below
    ));
    if !view.downloads.is_empty() {
        s.push_str(&format!("Downloads started: {}\n", view.downloads.join(", ")));
    }
    if let Some(c) = &view.challenge {
        s.push_str(&format!(
            "A captcha is on this page ({}); you cannot solve captchas. If it blocks the task, call done with success=false and say a captcha is in the way.\n",
            c.description
        ));
    }
    if view.text.is_empty() {
        s.push_str("(nothing readable in view)");
    } else {
        s.push_str(&view.text);
    }
    if view.truncated > 0 {
        s.push_str(&format!(
            "\n({} more elements or text blocks in view were cut; scroll to see them)",
            view.truncated
        ));
    }
    s
}

/// The first view of a task that starts without a URL: no browser call is needed to know it.
pub fn blank_view(step: u32, max_steps: u32) -> String {
    format!("Step {step}/{max_steps}\nURL: about:blank\nTitle: \nThe tab is empty. Use goto to open a page.")
}

/// Replaces every secret value in `text`, and every one-time code typed for a TOTP secret, by
/// its `<secret>NAME</secret>` placeholder.
pub fn mask(text: &str, secrets: &[Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if !s.value.is_empty() && out.contains(&s.value) {
            out = out.replace(&s.value, &format!("<secret>{}</secret>", s.name));
        }
    }
    for s in secrets {
        if let Some(codes) = &s.totp {
            for code in codes.issued() {
                out = otp::replace_code(&out, &code, &format!("<secret>{}</secret>", s.name));
            }
        }
    }
    out
}

/// How long to wait before typing `text` on `url` so that every one-time code in it stays
/// valid at least `min_left` after it is typed (see [`smoothd_core::Totp::wait_before`]).
pub fn code_wait(text: &str, secrets: &[Secret], url: &str, now: Duration, min_left: Duration) -> Duration {
    secrets
        .iter()
        .filter(|s| text.contains(&format!("<secret>{}</secret>", s.name)) && s.allowed_on(url))
        .filter_map(|s| s.totp.as_ref())
        .map(|codes| codes.wait_before(now, min_left))
        .max()
        .unwrap_or_default()
}

/// `text` with `<secret>NAME</secret>` replaced by values (a TOTP secret: its code now), if
/// every secret named is allowed on `url`; an error naming the first one that is not (or is
/// unknown).
pub fn unmask(text: &str, secrets: &[Secret], url: &str) -> Result<String, String> {
    unmask_at(text, secrets, url, otp::now())
}

/// [`unmask`] at `now` (since the epoch).
pub fn unmask_at(text: &str, secrets: &[Secret], url: &str, now: Duration) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<secret>") {
        let after = &rest[start + 8..];
        let Some(end) = after.find("</secret>") else { break };
        let name = after[..end].trim();
        let secret = secrets
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("there is no secret named {name:?}"))?;
        if !secret.allowed_on(url) {
            return Err(format!(
                "the secret {name} may not be typed on {url} (allowed on {})",
                secret
                    .allowed_urls
                    .iter()
                    .map(UrlPattern::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        out.push_str(&rest[..start]);
        match &secret.totp {
            Some(codes) => out.push_str(&codes.issue(now)),
            None => out.push_str(&secret.value),
        }
        rest = &after[end + 9..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret {
            name: "PW".into(),
            value: "hunter22".into(),
            allowed_urls: vec![UrlPattern::parse("http://127.0.0.1:*/login*").unwrap()],
            totp: None,
        }
    }

    const URI: &str = "otpauth://totp/Site:ada?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Site";

    fn otp() -> Secret {
        Secret {
            name: "OTP".into(),
            value: URI.into(),
            allowed_urls: vec![UrlPattern::parse("http://127.0.0.1:*/login*").unwrap()],
            totp: Some(OneTimeCodes::new(smoothd_core::totp::from_uri(URI).unwrap())),
        }
    }

    #[test]
    fn a_totp_secret_types_its_code_and_the_code_is_masked_after() {
        let s = [secret(), otp()];
        let now = Duration::from_secs(1_000_000_020);
        let code = smoothd_core::totp::from_uri(URI).unwrap().code_at(now.as_secs());
        let url = "http://127.0.0.1:8080/login-2fa";
        assert_eq!(unmask_at("<secret>OTP</secret>", &s, url, now).unwrap(), code);
        let err = unmask_at("<secret>OTP</secret>", &s, "http://evil.test/", now).unwrap_err();
        assert!(err.contains("may not be typed") && !err.contains(&code), "{err}");
        // The page echoes the code (and, say, the URI): the model sees the placeholder.
        let view = format!("[3]<input value={code}> from {URI}");
        assert_eq!(
            mask(&view, &s),
            "[3]<input value=<secret>OTP</secret>> from <secret>OTP</secret>"
        );
        let msg = task_message("t", None, &Map::new(), &[], &s, false);
        assert!(
            msg.contains(
                "\nOTP (one-time code, typed fresh each time; allowed on http://127.0.0.1:*/login*)"
            ),
            "{msg}"
        );
        assert!(
            !msg.contains("GEZDGNBV")
                && !format!("{s:?}").contains("GEZDGNBV")
                && !format!("{s:?}").contains("hunter22")
        );
    }

    #[test]
    fn a_code_about_to_expire_is_waited_for_only_where_it_will_be_typed() {
        let s = [secret(), otp()];
        let min = Duration::from_secs(3);
        let url = "http://127.0.0.1:8080/login";
        let at = Duration::from_millis(1_000_000_018_500); // 1.5 s before a 30 s boundary
        assert_eq!(
            code_wait("<secret>OTP</secret>", &s, url, at, min),
            Duration::from_millis(1500)
        );
        assert_eq!(code_wait("<secret>PW</secret>", &s, url, at, min), Duration::ZERO);
        assert_eq!(
            code_wait("<secret>OTP</secret>", &s, "http://evil.test/", at, min),
            Duration::ZERO
        );
        let early = Duration::from_secs(1_000_000_001);
        assert_eq!(
            code_wait("<secret>OTP</secret>", &s, url, early, min),
            Duration::ZERO
        );
    }

    #[test]
    fn secrets_are_masked_and_substituted_only_where_allowed() {
        let s = [secret()];
        assert_eq!(mask("value=hunter22 x", &s), "value=<secret>PW</secret> x");
        assert_eq!(
            unmask("a<secret>PW</secret>b", &s, "http://127.0.0.1:8080/login.html").unwrap(),
            "ahunter22b"
        );
        let err = unmask("<secret>PW</secret>", &s, "http://evil.test/").unwrap_err();
        assert!(
            err.contains("may not be typed") && !err.contains("hunter22"),
            "{err}"
        );
        assert!(unmask("<secret>NOPE</secret>", &s, "http://127.0.0.1:1/login").is_err());
        assert_eq!(unmask("plain", &s, "x").unwrap(), "plain");
    }
}
