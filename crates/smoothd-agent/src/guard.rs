//! The loop guard: notices when the agent stops making progress (the same action on an
//! unchanged page, two pages in alternation, steps that change nothing), warns the model once in
//! its next observation, and ends the run when it keeps going. Pure logic over the page views
//! and the actions taken; the loop in `run.rs` feeds it and acts on its [`Verdict`].
//!
//! A page's state is the page view the model saw without its step counter line: URL, title,
//! tabs, scroll position, elements and text. Element indices are per view, so an action's
//! target is named by its element's line in the view it was chosen from.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::Value;
use smoothd_core::ActionTrace;
use smoothd_core::request::RESERVED_TOOL_NAMES;

/// The thresholds (0 turns a detector off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// The same action on the same target with the page unchanged this many times in a row.
    pub repeats: u32,
    /// This many observations alternating between two page states (A, B, A, B).
    pub alternation: u32,
    /// This many steps in a row without any change to the page (URL, view or scroll).
    pub stall_steps: u32,
    /// Steps without progress after the warning before the run ends (0: warn only).
    pub grace: u32,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            repeats: 3,
            alternation: 4,
            stall_steps: 5,
            grace: 2,
        }
    }
}

/// What the guard says about the page the model is about to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to say.
    Clear,
    /// Prepend `line` to the view; `note` goes in the step's trace and event.
    Warn { line: String, note: String },
    /// End the run without asking the model; `reason` names the loop.
    Stop { reason: String },
}

/// One step as the guard remembers it.
#[derive(Debug, Clone)]
struct Record {
    state: u64,
    url: String,
    /// The actions, targets resolved (empty until the step acted, or when the model called none).
    actions: String,
    /// A custom tool or `done` ran: the model talked to the client or tried to finish, which the
    /// guard counts as progress (a `done` with a schema error has its own retry flow).
    neutral: bool,
}

/// The loop it warned about, while the model has not got past it.
#[derive(Debug, Clone)]
struct Warned {
    what: Loop,
    /// Steps without progress since the warning.
    stuck: u32,
    /// The states of the loop: being on one of them again is not progress.
    seen: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Loop {
    Repeat { actions: String },
    Alternation { a: String, b: String },
    Stall,
}

/// The guard of one run.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    config: GuardConfig,
    steps: Vec<Record>,
    /// The view of the latest observation (to resolve the indices of its actions).
    view: String,
    warned: Option<Warned>,
}

impl Guard {
    pub fn new(config: GuardConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Takes the view the model is about to see (`Step n/max` first line included) and says
    /// whether to warn it, or to end the run.
    pub fn observe(&mut self, url: &str, view: &str) -> Verdict {
        let state = state_of(view);
        self.view = view.to_string();
        self.steps.push(Record {
            state,
            url: url.to_string(),
            actions: String::new(),
            neutral: false,
        });
        let last_neutral = self.steps.len() >= 2 && self.steps[self.steps.len() - 2].neutral;
        if let Some(w) = &mut self.warned {
            let progressed = last_neutral || !w.seen.contains(&state);
            if progressed {
                self.warned = None;
                // A fresh start: what came before the progress does not count again.
                self.steps.drain(..self.steps.len() - 1);
                return Verdict::Clear;
            }
            w.stuck += 1;
            let what = w.what.clone();
            let stuck = w.stuck;
            if self.config.grace > 0 && stuck >= self.config.grace {
                return Verdict::Stop {
                    reason: format!("the agent was in a loop ({})", self.summary(&what)),
                };
            }
            let left = self.config.grace.saturating_sub(stuck);
            let line = if self.config.grace == 0 {
                format!(
                    "WARNING: still no progress: {}. Change your approach.",
                    self.summary(&what)
                )
            } else {
                format!(
                    "WARNING: still no progress: {}. The task will be stopped after {left} more step(s) without progress. Change your approach now.",
                    self.summary(&what)
                )
            };
            return Verdict::Warn {
                line,
                note: format!(
                    "loop, {stuck} step(s) without progress since the warning: {}",
                    self.summary(&what)
                ),
            };
        }
        if last_neutral {
            self.steps.drain(..self.steps.len() - 1);
            return Verdict::Clear;
        }
        let Some(what) = self.detect() else {
            return Verdict::Clear;
        };
        let n = self.steps.len();
        let seen = match &what {
            Loop::Alternation { .. } => vec![self.steps[n - 1].state, self.steps[n - 2].state],
            _ => vec![state],
        };
        let line = format!(
            "WARNING: you have {}. Change your approach: use a different element or action, go to another page, or call done (with success false if the task cannot be completed).",
            self.warning(&what)
        );
        let note = format!("loop detected, warned: {}", self.summary(&what));
        self.warned = Some(Warned { what, stuck: 0, seen });
        Verdict::Warn { line, note }
    }

    /// The view of step `n` (of `max`) after the guard's look: with its warning first, and its
    /// note for the trace; or, when the guard ends the run, the run's final error (as the note
    /// too).
    pub fn screen(
        &mut self,
        url: &str,
        view: String,
        n: u32,
        max: u32,
    ) -> (String, Option<String>, Option<String>) {
        match self.observe(url, &view) {
            Verdict::Clear => (view, None, None),
            Verdict::Warn { line, note } => (format!("{line}\n{view}"), Some(note), None),
            Verdict::Stop { reason } => {
                let saved = max.saturating_sub(n.saturating_sub(1));
                let why = format!("stopped: {reason}; {saved} of max_steps {max} steps saved");
                (view, Some(why.clone()), Some(why))
            }
        }
    }

    /// Takes the actions the model took on the latest observation (secrets already masked).
    pub fn acted(&mut self, actions: &[ActionTrace]) {
        let described: Vec<String> = actions.iter().map(|a| describe(a, &self.view)).collect();
        // Custom tools (not among the agent's own, reserved names) talk to the client, and
        // `done` ends the run: neither says anything about the page.
        let neutral = actions
            .iter()
            .any(|a| a.name == "done" || !RESERVED_TOOL_NAMES.contains(&a.name.as_str()));
        if let Some(last) = self.steps.last_mut() {
            last.actions = described.join(", then ");
            last.neutral = neutral;
        }
    }

    /// The first detector that fires on the steps so far (the latest has not acted yet).
    fn detect(&self) -> Option<Loop> {
        let c = self.config;
        let (done, now) = self.steps.split_at(self.steps.len().saturating_sub(1));
        let now = now.first()?;
        if c.repeats > 0 && repeated(done, now.state) >= c.repeats as usize {
            let actions = done.last().map(|r| r.actions.clone()).unwrap_or_default();
            return Some(Loop::Repeat { actions });
        }
        if c.stall_steps > 0 && unchanged(done, now.state) >= c.stall_steps as usize {
            return Some(Loop::Stall);
        }
        if c.alternation >= 3 && alternating(&self.steps) >= c.alternation as usize {
            let b = now.url.clone();
            let a = done.last().map(|r| r.url.clone()).unwrap_or_default();
            return Some(Loop::Alternation { a, b });
        }
        None
    }

    /// What the model is told, the first time.
    fn warning(&self, what: &Loop) -> String {
        let n = self.steps.len() - 1;
        match what {
            Loop::Repeat { actions } => format!(
                "repeated {actions} {} times on the same page without any change",
                repeated(&self.steps[..n], self.steps[n].state)
            ),
            Loop::Stall => format!(
                "taken {} steps without any change to the page (URL, content or scroll position)",
                unchanged(&self.steps[..n], self.steps[n].state)
            ),
            Loop::Alternation { a, b } => format!(
                "gone back and forth between the same two page states ({a} and {b}) for {} steps",
                alternating(&self.steps)
            ),
        }
    }

    /// The loop as it stands, for the trace and the final error.
    fn summary(&self, what: &Loop) -> String {
        let n = self.steps.len() - 1;
        match what {
            Loop::Repeat { actions } => {
                // Counting on from the warning: the page stayed as it was.
                let times = repeated_any(&self.steps[..n], self.steps[n].state);
                format!("{actions} {times} times, page unchanged")
            }
            Loop::Stall => format!(
                "{} steps without any change to the page",
                unchanged(&self.steps[..n], self.steps[n].state)
            ),
            Loop::Alternation { a, b } => format!(
                "alternating between two page states ({a} and {b}) for {} steps",
                alternating(&self.steps)
            ),
        }
    }
}

/// Steps at the end of `done` that took the same actions on the same state, which is also
/// the state now (the actions changed nothing).
fn repeated(done: &[Record], now: u64) -> usize {
    let Some(last) = done.last() else { return 0 };
    if last.state != now || last.actions.is_empty() {
        return 0;
    }
    done.iter()
        .rev()
        .take_while(|r| r.state == now && r.actions == last.actions)
        .count()
}

/// Like [`repeated`], counting every action of the last one's kind and target since the
/// state stopped changing, for the final count (the model may have varied in between).
fn repeated_any(done: &[Record], now: u64) -> usize {
    let Some(last) = done.last() else { return 0 };
    done.iter()
        .rev()
        .take_while(|r| r.state == now)
        .filter(|r| r.actions == last.actions)
        .count()
}

/// Steps at the end of `done` taken on the state that is still the state now.
fn unchanged(done: &[Record], now: u64) -> usize {
    done.iter().rev().take_while(|r| r.state == now).count()
}

/// Observations at the end alternating between two distinct states (A, B, A, B, ...).
fn alternating(steps: &[Record]) -> usize {
    let n = steps.len();
    if n < 2 || steps[n - 1].state == steps[n - 2].state {
        return 0;
    }
    let mut len = 2;
    while len < n && steps[n - 1 - len].state == steps[n - 1 - len + 2].state {
        len += 1;
    }
    len
}

/// A page state: the view without its first line (`Step n/max` changes every step) and
/// without the marks of elements new since the last view (`*[3]`), which differ between two
/// looks at the same page.
fn state_of(view: &str) -> u64 {
    let body = match view.split_once('\n') {
        Some((first, rest)) if first.starts_with("Step ") => rest,
        _ => view,
    };
    let mut h = DefaultHasher::new();
    for line in body.lines() {
        let t = line.trim_start();
        match t.strip_prefix('*') {
            Some(rest) if rest.starts_with('[') => rest.hash(&mut h),
            _ => line.hash(&mut h),
        }
    }
    h.finish()
}

/// One action with its target resolved: `click on <button id=next>Next`.
fn describe(a: &ActionTrace, view: &str) -> String {
    let mut parts = Vec::new();
    if let Value::Object(args) = &a.args {
        for (k, v) in args {
            let target = match (k.as_str(), v.as_u64()) {
                ("index" | "from" | "to", Some(i)) => element_line(view, i),
                _ => None,
            };
            match target {
                Some(line) if k == "index" => parts.insert(0, format!("on {line}")),
                Some(line) => parts.push(format!("{k} {line}")),
                None => parts.push(format!("{k}={}", short(&v.to_string(), 40))),
            }
        }
    }
    if parts.is_empty() {
        a.name.clone()
    } else {
        format!("{} {}", a.name, parts.join(" "))
    }
}

/// The line of element `[i]` in the view, without its index: `<button id=next>Next`.
fn element_line(view: &str, i: u64) -> Option<String> {
    let tag = format!("[{i}]");
    view.lines().find_map(|l| {
        let l = l.trim_start();
        let l = l.strip_prefix('*').unwrap_or(l);
        l.strip_prefix(tag.as_str()).map(|rest| short(rest.trim(), 80))
    })
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
