//! An answer a replay gives without asking the model: the recorded output, kept only when it is
//! made of the run's own downloads and nothing read from a page. "Download the Q3 report and
//! tell me the file's name" answers "Downloaded the Q3 report as q3.csv": the file name comes
//! from the download the run started, the other words from the task or from the model's own
//! phrasing. A replay puts in the names of the files it downloaded itself (and this run's
//! `metadata` values), so a file named otherwise today is named as it is today; anything that
//! might have come from a page (a word of a page that the task does not say, a number, a yes
//! or no) keeps the answer request.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::prompt::{self, Secret};

/// Download names shorter than this are not looked for in an output (they match by accident).
const MIN_NAME: usize = 3;

/// Words that carry no answer on their own: a page having them ("as", "the") does not make an
/// output that uses them page content.
const FUNCTION_WORDS: &[&str] = &[
    "a", "an", "the", "as", "at", "by", "for", "from", "in", "into", "of", "on", "to", "with", "and", "it",
    "its", "is", "was", "has", "been", "this", "i", "here", "under",
];

/// The words (lowercase runs of letters and digits) of the pages a run read: page views and
/// action results.
#[derive(Debug, Default)]
pub struct PageWords(HashSet<String>);

impl PageWords {
    pub fn add(&mut self, text: &str) {
        self.0.extend(words(text));
    }

    fn has(&self, word: &str) -> bool {
        self.0.contains(word)
    }
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// A recorded output whose only run-dependent parts are the names of the files the run
/// downloaded and its `metadata` values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputTemplate {
    /// The output with each downloaded file's name as `{{download:N}}` (N: its place among the
    /// run's downloads) and each variable's value as `{{var:NAME}}`.
    pub output: Value,
    /// How many files the run had started downloading when it answered; a replay that started
    /// another number asks the model.
    pub downloads: usize,
    /// The task text the output's other words were checked against; a replay of another task
    /// text under the same key asks the model.
    pub task: String,
}

/// What may stand in an output besides its slots.
struct Allowed<'a> {
    /// The task text's words.
    given: HashSet<String>,
    /// The variables' words: never the model's own phrasing (a value of another run would
    /// differ).
    variables: HashSet<String>,
    pages: &'a PageWords,
}

impl Allowed<'_> {
    /// A word the task gave, or the model's own phrasing: never seen on a page (or a function
    /// word), no digit in it (a count or a date is read or worked out from something), and no
    /// part of a variable's value.
    fn word(&self, w: &str) -> bool {
        self.given.contains(w)
            || (!w.chars().any(|c| c.is_ascii_digit())
                && !self.variables.contains(w)
                && (FUNCTION_WORDS.contains(&w) || !self.pages.has(w)))
    }
}

/// The texts an output's slots stand for: `{{download:N}}` and `{{var:NAME}}`.
fn slots(downloads: &[String], metadata: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = downloads
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("{{{{download:{i}}}}}"), n.clone()))
        .collect();
    out.extend(
        metadata
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (format!("{{{{var:{k}}}}}"), s.to_string()))),
    );
    out
}

impl OutputTemplate {
    /// The template of a successful run's `output`, or `None` when a replay must ask the model:
    /// the output names none of `downloads` (the files the run started downloading, in order),
    /// or holds a word of a page that `task` and `metadata` do not, a number, a yes or no, or a
    /// secret.
    pub fn record(
        output: &Value,
        downloads: &[String],
        task: &str,
        metadata: &Map<String, Value>,
        secrets: &[Secret],
        pages: &PageWords,
    ) -> Option<Self> {
        if downloads.is_empty() {
            return None;
        }
        let output_text = output.to_string();
        if prompt::mask(&output_text, secrets) != output_text {
            return None;
        }
        let variables = metadata
            .values()
            .flat_map(|v| {
                words(&v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect::<Vec<_>>()
            })
            .collect();
        let allowed = Allowed {
            given: words(task).collect(),
            variables,
            pages,
        };
        // Longest first, so a name inside another is not slotted inside it.
        let mut texts: Vec<(String, String)> = slots(downloads, metadata)
            .into_iter()
            .filter(|(_, text)| text.chars().count() >= MIN_NAME)
            .collect();
        texts.sort_by_key(|(_, text)| std::cmp::Reverse(text.len()));
        let mut named = 0;
        let templated = slot(output, &texts, &allowed, &mut named)?;
        (named > 0).then(|| Self {
            output: templated,
            downloads: downloads.len(),
            task: task.to_string(),
        })
    }

    /// This run's output: the template with the names of the files this run downloaded and its
    /// variables' values, or `None` when the model must be asked: another number of downloads
    /// than the recording, another task text, or a variable this run lacks.
    pub fn fill(&self, downloads: &[String], task: &str, metadata: &Map<String, Value>) -> Option<Value> {
        if downloads.len() != self.downloads || task != self.task {
            return None;
        }
        fill(&self.output, &slots(downloads, metadata))
    }
}

/// `v` with download names and variables' values as slots (`named` counts the downloads);
/// `None` if anything else in it may have come from a page.
fn slot(v: &Value, texts: &[(String, String)], allowed: &Allowed, named: &mut usize) -> Option<Value> {
    match v {
        Value::String(s) => {
            if s.contains("{{") {
                return None;
            }
            // One pass, longest text first at each place, so no text is looked for inside a
            // slot or inside a longer text.
            let mut t = String::new();
            let mut rest = String::new();
            let mut at = 0;
            while at < s.len() {
                let here = &s[at..];
                if let Some((slot, text)) = texts.iter().find(|(_, text)| here.starts_with(text.as_str())) {
                    if slot.starts_with("{{download:") {
                        *named += 1;
                    }
                    t.push_str(slot);
                    rest.push(' ');
                    at += text.len();
                } else {
                    let c = here.chars().next()?;
                    t.push(c);
                    rest.push(c);
                    at += c.len_utf8();
                }
            }
            words(&rest).all(|w| allowed.word(&w)).then_some(Value::String(t))
        }
        Value::Array(a) => a
            .iter()
            .map(|x| slot(x, texts, allowed, named))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        Value::Object(o) => o
            .iter()
            .map(|(k, x)| slot(x, texts, allowed, named).map(|x| (k.clone(), x)))
            .collect::<Option<Map<_, _>>>()
            .map(Value::Object),
        // A number is a count or an amount; true or false a judgement; null an absence: each
        // may come from a page.
        Value::Number(_) | Value::Bool(_) | Value::Null => None,
    }
}

/// The template with its slots' texts put in; `None` if a slot has no text in this run.
fn fill(v: &Value, texts: &[(String, String)]) -> Option<Value> {
    match v {
        Value::String(s) => {
            // One pass, so a text that looks like a slot is never filled in turn.
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("{{") {
                let end = rest[start..].find("}}")? + start + 2;
                let (_, text) = texts.iter().find(|(slot, _)| *slot == rest[start..end])?;
                out.push_str(&rest[..start]);
                out.push_str(text);
                rest = &rest[end..];
            }
            out.push_str(rest);
            Some(Value::String(out))
        }
        Value::Array(a) => a
            .iter()
            .map(|x| fill(x, texts))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        Value::Object(o) => o
            .iter()
            .map(|(k, x)| fill(x, texts).map(|x| (k.clone(), x)))
            .collect::<Option<Map<_, _>>>()
            .map(Value::Object),
        other => Some(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TASK: &str =
        "On the reports page, download the Q3 sales report CSV and tell me the name of the downloaded file.";

    fn pages(text: &str) -> PageWords {
        let mut p = PageWords::default();
        p.add(text);
        p
    }

    fn record(output: Value, downloads: &[&str], page: &str) -> Option<OutputTemplate> {
        let downloads: Vec<String> = downloads.iter().map(|s| s.to_string()).collect();
        OutputTemplate::record(&output, &downloads, TASK, &Map::new(), &[], &pages(page))
    }

    fn fill(t: &OutputTemplate, downloads: &[&str]) -> Option<Value> {
        let downloads: Vec<String> = downloads.iter().map(|s| s.to_string()).collect();
        t.fill(&downloads, TASK, &Map::new())
    }

    const PAGE: &str =
        "Q3 sales summary Jul-Sep CSV Download Q3 CSV. The export is generated as a Blob; 31 stores.";

    #[test]
    fn an_answer_naming_the_download_in_the_tasks_words_is_filled_with_this_runs_file() {
        let t = record(
            json!("Downloaded the Q3 sales report as q3-sales-report.csv."),
            &["q3-sales-report.csv"],
            PAGE,
        )
        .unwrap();
        assert_eq!(
            t.output,
            json!("Downloaded the Q3 sales report as {{download:0}}.")
        );
        assert_eq!(
            fill(&t, &["q3-sales-report-v2.csv"]),
            Some(json!("Downloaded the Q3 sales report as q3-sales-report-v2.csv."))
        );
        // Another number of downloads than recorded, or another task text: the model is asked.
        assert_eq!(fill(&t, &[]), None);
        assert_eq!(fill(&t, &["a.csv", "b.csv"]), None);
        assert_eq!(
            t.fill(&["a.csv".into()], "Download the Q4 report", &Map::new()),
            None
        );
        let structured = record(json!({"file": "q3.csv"}), &["q3.csv"], PAGE).unwrap();
        assert_eq!(fill(&structured, &["q4.csv"]), Some(json!({"file": "q4.csv"})));
    }

    #[test]
    fn anything_that_may_come_from_a_page_keeps_the_answer_request() {
        // No download named, or no download at all.
        assert_eq!(
            record(json!("Downloaded the Q3 sales report."), &["q3.csv"], PAGE),
            None
        );
        assert_eq!(record(json!("q3.csv"), &[], PAGE), None);
        // A word of the page the task does not say ("summary"), a number, a judgement.
        assert_eq!(
            record(json!("q3.csv: the Q3 sales summary"), &["q3.csv"], PAGE),
            None
        );
        assert_eq!(record(json!("q3.csv, 31 rows"), &["q3.csv"], PAGE), None);
        assert_eq!(
            record(json!({"file": "q3.csv", "rows": 4}), &["q3.csv"], PAGE),
            None
        );
        assert_eq!(
            record(json!({"file": "q3.csv", "ok": true}), &["q3.csv"], PAGE),
            None
        );
        // Words never on a page are the model's own; "as" is on this page but says nothing.
        assert!(record(json!("Saved as q3.csv"), &["q3.csv"], PAGE).is_some());
        assert_eq!(
            record(json!("Saved as q3.csv"), &["q3.csv"], "Saved 12 files").map(|t| t.output),
            None
        );
        // A secret, or text that looks like a slot already.
        let secret = Secret {
            name: "PW".into(),
            value: "hunter22".into(),
            ..Default::default()
        };
        let downloads = vec!["q3.csv".to_string()];
        assert_eq!(
            OutputTemplate::record(
                &json!("q3.csv hunter22"),
                &downloads,
                TASK,
                &Map::new(),
                &[secret],
                &pages(PAGE)
            ),
            None
        );
        assert_eq!(record(json!("q3.csv {{download:0}}"), &["q3.csv"], PAGE), None);
    }

    #[test]
    fn the_longest_name_is_slotted_first_and_variables_take_this_runs_values() {
        let t = record(json!("report.csv.zip"), &["report.csv", "report.csv.zip"], PAGE).unwrap();
        assert_eq!(t.output, json!("{{download:1}}"));
        let meta = |who: &str| json!({"who": who}).as_object().cloned().unwrap();
        let downloads = vec!["q3.csv".to_string()];
        let t = OutputTemplate::record(
            &json!("q3.csv for Ada Lovelace"),
            &downloads,
            TASK,
            &meta("Ada Lovelace"),
            &[],
            &pages("Ada Lovelace's reports"),
        )
        .unwrap();
        assert_eq!(t.output, json!("{{download:0}} for {{var:who}}"));
        assert_eq!(
            t.fill(&downloads, TASK, &meta("Bob")),
            Some(json!("q3.csv for Bob"))
        );
        assert_eq!(t.fill(&downloads, TASK, &Map::new()), None);
        // A part of a variable's value is no phrasing of the model's: another run's differs.
        assert_eq!(
            OutputTemplate::record(
                &json!("q3.csv for Ada"),
                &downloads,
                TASK,
                &meta("Ada Lovelace"),
                &[],
                &pages("")
            ),
            None
        );
    }
}
