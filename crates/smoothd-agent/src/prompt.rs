//! What the model reads: the system rules, the task message, and the page view of each step.

use serde_json::{Map, Value};
use smoothd_browser::{PageView, Tab};
use smoothd_core::urlpattern::UrlPattern;

/// A secret the model may type by name on matching pages.
#[derive(Debug, Clone)]
pub struct Secret {
    pub name: String,
    pub value: String,
    pub allowed_urls: Vec<UrlPattern>,
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
            if urls.is_empty() {
                s.push_str(&format!("\n{}", sec.name));
            } else {
                s.push_str(&format!("\n{} (allowed on {})", sec.name, urls.join(", ")));
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

/// Replaces every secret value in `text` by its `<secret>NAME</secret>` placeholder.
pub fn mask(text: &str, secrets: &[Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if !s.value.is_empty() && out.contains(&s.value) {
            out = out.replace(&s.value, &format!("<secret>{}</secret>", s.name));
        }
    }
    out
}

/// `text` with `<secret>NAME</secret>` replaced by values, if every secret named is allowed on
/// `url`; an error naming the first one that is not (or is unknown).
pub fn unmask(text: &str, secrets: &[Secret], url: &str) -> Result<String, String> {
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
        let ok = secret.allowed_urls.is_empty()
            || url::Url::parse(url)
                .is_ok_and(|u| smoothd_core::urlpattern::allowed(&secret.allowed_urls, &u));
        if !ok {
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
        out.push_str(&secret.value);
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
        }
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
