//! Targets for replay: a recorded action's element described so a later run finds it again
//! ([`Target`], [`Driver::describe`], [`Driver::find`]), and a page described so a later run can
//! tell it is on the same kind of page ([`PageShape`], [`Driver::shape`]). The work is done by
//! page.js (`target`, `find`, `shape`) in the helper's isolated world, so the page sees nothing.
//!
//! Finding never guesses: a renamed element, or a tie that the position among look-alikes cannot
//! break, is not found, and the caller falls back to the model.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ActError, Driver, PAGE_JS};

/// How a recorded action's target is found again on a later run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Target {
    /// Lower-case tag name.
    pub tag: String,
    /// ARIA role (explicit or implicit).
    #[serde(default)]
    pub role: Option<String>,
    /// Accessible name (aria-labelledby, aria-label, label text, alt, title, placeholder, text).
    #[serde(default)]
    pub name: Option<String>,
    /// Visible text, trimmed, cut to 80 characters; None for fields (their text is their value).
    #[serde(default)]
    pub text: Option<String>,
    /// Stable attributes only: id (unless it looks generated), name, type, placeholder,
    /// aria-label, data-testid/data-test/data-qa/data-cy, a checkbox's or radio's value, href
    /// (path only; origin too when another site), a select's option values (`options`, `|`-joined).
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
    /// Position among the page's usable elements with the same tag, role, name, text and frame.
    #[serde(default)]
    pub nth: u32,
    /// For an element inside a frame: the frame's URL without query; None for the top document.
    #[serde(default)]
    pub frame: Option<String>,
}

/// What a page looked like just before an action: enough to tell it is the same page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PageShape {
    /// Origin and path (no query or fragment).
    pub url: String,
    pub title: String,
    /// Landmarks of the page's kind, not its data (at most 40): `h:` headings, `f:` field
    /// labels, `b:` buttons, `l:` links that a person sees, lower case, digits as `#`, rows of
    /// lists and tables left out.
    #[serde(default)]
    pub marks: Vec<String>,
}

/// How much a mark says about the page's kind: fields most, links (often content) least.
fn weight(mark: &str) -> f64 {
    match mark.split_once(':').map(|(k, _)| k) {
        Some("f") => 3.0,
        Some("h" | "b") => 2.0,
        _ => 1.0,
    }
}

/// A title without its data (digits), for comparing.
fn plain_title(t: &str) -> String {
    let mut out = String::new();
    for c in t.trim().to_lowercase().chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl PageShape {
    /// Same page kind: same url, and the marks mostly agree both ways (data such as prices or
    /// list items may differ; a page that shows mostly other things, such as an interstitial
    /// notice on the same URL, does not match).
    pub fn matches(&self, recorded: &PageShape) -> bool {
        if self.url != recorded.url {
            return false;
        }
        let same_title = plain_title(&self.title) == plain_title(&recorded.title);
        if recorded.marks.is_empty() {
            return self.marks.is_empty() || same_title;
        }
        let rec: BTreeSet<&str> = recorded.marks.iter().map(String::as_str).collect();
        let cur: BTreeSet<&str> = self.marks.iter().map(String::as_str).collect();
        let title = if same_title { 1.0 } else { 0.0 };
        let common = rec.intersection(&cur).map(|m| weight(m)).sum::<f64>() + title;
        let of_rec = rec.iter().map(|m| weight(m)).sum::<f64>() + 1.0;
        let of_cur = cur.iter().map(|m| weight(m)).sum::<f64>() + 1.0;
        common / of_rec >= 0.6 && common / of_cur >= 0.5
    }
}

/// A URL without its query and fragment.
fn bare(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

impl Driver<'_> {
    /// The element numbered `index` in the last `observe()`'s view, described. Call before
    /// acting on it.
    pub async fn describe(&mut self, index: u32) -> Result<Target, ActError> {
        let v = self.helper_at(index, &format!("target({index})")).await?;
        serde_json::from_value(v).map_err(|e| ActError::Model(format!("unreadable target: {e}")))
    }

    /// The index of the element that matches `target`, for acting on it; None when nothing
    /// matches well enough or two candidates match equally (never guess). No `observe()` is
    /// needed first.
    ///
    /// An element of the top document that is on screen and not covered (what a new view would
    /// show) is found with no new view: it keeps the number the last view gave it (a replayed
    /// step after an action that did not navigate), and with no view of the page (a new
    /// document) it is numbered after the last numbering's elements. Otherwise the page is
    /// observed first: an element of the top document (or a same-origin frame) found out of
    /// view is scrolled into view and the view observed again, so the index is that of the new
    /// last view. One in a cross-origin frame is found only when it is in view.
    pub async fn find(&mut self, target: &Target) -> Result<Option<u32>, ActError> {
        let arg = serde_json::to_string(target).map_err(|e| ActError::Model(e.to_string()))?;
        // An element of a frame is looked for in every frame of a new view.
        if target.frame.is_none() {
            let adopt = self.last.is_none();
            let r = self.helper(&format!("find({arg}, false, true, {adopt})")).await?;
            if let Some(i) = index_in(&r) {
                return Ok(Some(i));
            }
            if r.get("stale").and_then(Value::as_bool) != Some(true) {
                return Ok(None);
            }
        }
        self.observe().await?;
        let mut hits = Vec::new();
        let mut r = self.helper(&format!("find({arg}, true)")).await?;
        if r.get("scrolled").and_then(Value::as_bool) == Some(true) {
            self.observe().await?;
            r = self.helper(&format!("find({arg}, false)")).await?;
        }
        hits.extend(index_in(&r));
        if let Some(frame) = &target.frame {
            let frames: Vec<usize> = self
                .xframes
                .iter()
                .enumerate()
                .filter(|(_, x)| x.failed.is_none() && bare(&x.url) == frame)
                .map(|(n, _)| n)
                .collect();
            for n in frames {
                let call = format!("{PAGE_JS}\nwindow.__smoothd.find({arg}, false)");
                match self.frame_eval(n, &call, true).await {
                    Ok(v) => hits.extend(index_in(&v)),
                    Err(e) => tracing::debug!(error = %e, "a cross-origin frame could not be searched"),
                }
            }
        }
        Ok(match hits.as_slice() {
            [one] => Some(*one),
            _ => None,
        })
    }

    /// The current page's shape, in one evaluation.
    pub async fn shape(&mut self) -> Result<PageShape, ActError> {
        let v = self.helper("shape()").await?;
        serde_json::from_value(v).map_err(|e| ActError::Model(format!("unreadable page shape: {e}")))
    }
}

/// The view index page.js's `find` answered, if it found one.
fn index_in(v: &Value) -> Option<u32> {
    v.get("index")
        .and_then(Value::as_u64)
        .and_then(|i| u32::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(url: &str, title: &str, marks: &[&str]) -> PageShape {
        PageShape {
            url: url.into(),
            title: title.into(),
            marks: marks.iter().map(|m| (*m).to_string()).collect(),
        }
    }

    #[test]
    fn same_kind_of_page_matches_and_another_does_not() {
        let rec = shape(
            "http://x/list",
            "Results (page 1 of 3)",
            &[
                "h:catalogue",
                "h:# results for lamp",
                "f:search",
                "b:search",
                "l:next page",
            ],
        );
        // Other data (another count, another query's heading): still the page.
        let other = shape(
            "http://x/list",
            "Results (page 2 of 3)",
            &["h:catalogue", "h:# results for kettle", "f:search", "b:search"],
        );
        assert!(other.matches(&rec));
        // Another URL is another page.
        let mut moved = rec.clone();
        moved.url = "http://x/other".into();
        assert!(!moved.matches(&rec));
        // A notice on the same URL, keeping the search box of the header.
        let notice = shape(
            "http://x/list",
            "Results (page 1 of 3)",
            &[
                "h:before you continue",
                "f:search",
                "b:accept all",
                "b:reject all",
                "l:privacy",
            ],
        );
        assert!(!notice.matches(&rec));
        // An empty recording matches an empty page, or one with its title.
        let blank = shape("http://x/list", "Loading", &[]);
        assert!(blank.matches(&blank));
        assert!(!rec.matches(&blank));
    }
}
