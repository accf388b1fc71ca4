//! Replay inside a run (`experimental_features.replay`): repeating a recorded path step by step
//! through the same action code as the model's calls (so `allowed_urls`, secrets' URL checks,
//! cancel and `max_steps` hold), reading the answer with one small model request (none when it
//! names only the run's downloads, see [`crate::replay::OutputTemplate`]), and handing
//! over to the model, with the history so far, where the page no longer matches. While the
//! model drives, it records the path a successful run leaves.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use smoothd_browser::{ActError, Driver, PageShape, Settle, Target};
use smoothd_core::replay::ReplayMode;
use smoothd_core::{ActionTrace, StepCost, StepSource};
use tokio_util::sync::CancellationToken;

mod answer;

use answer::Answered;

use super::{Called, End, Finish, Host, Observation, Run, Step, cut, observe_page};
use crate::llm::{self, ToolCall, Usage};
use crate::prompt;
use crate::replay::{
    self, OutputTemplate, PATH_VERSION, PageWords, PathAction, PathOutcome, PathStep, Plan, ReplayPath,
};
use crate::tools::{self, Action};

/// The first line of the answer request's last user message.
pub const ANSWER_LINE: &str =
    "REPLAY: the recorded steps ran again; read the answer from the page below and call done.";

/// A run's replay state: the path to play, and the path being recorded.
#[derive(Debug, Default)]
pub(super) struct Replay {
    /// Replay is on for this job (mode auto or record).
    enabled: bool,
    /// The stored path still to play (mode auto).
    path: Option<ReplayPath>,
    /// The run used something a path cannot repeat (a custom tool's answer): nothing is stored.
    spoiled: bool,
    steps: Vec<PathStep>,
    current: Option<PathStep>,
    /// Set when the model takes over; the next model step's trace carries it.
    diverged: Option<String>,
    /// The stored path ran to its end and the answer was read without the model driving.
    replayed: bool,
    /// The words of the pages this run read (views and action results), and the files it had
    /// started downloading at its last view: whether its answer holds page content.
    pages: PageWords,
    downloads: Vec<String>,
}

impl Replay {
    pub(super) fn new(plan: Option<&Plan>) -> Self {
        let Some(plan) = plan.filter(|p| p.mode != ReplayMode::Off) else {
            return Self::default();
        };
        Self {
            enabled: true,
            path: match plan.mode {
                ReplayMode::Auto => plan.path.clone().filter(|p| p.version == PATH_VERSION),
                _ => None,
            },
            ..Self::default()
        }
    }

    /// Whether a stored path will be played first (so nothing may ask the model ahead of it).
    pub(super) fn will_play(&self) -> bool {
        self.path.is_some()
    }

    /// Notes what the run read (a page view's or an action's text).
    pub(super) fn saw(&mut self, text: &str) {
        if self.enabled {
            self.pages.add(text);
        }
    }

    /// Notes a page view the model was shown.
    pub(super) fn saw_view(&mut self, view: &smoothd_browser::PageView) {
        if self.enabled {
            self.pages.add(&view.url);
            self.pages.add(&view.title);
            self.pages.add(&view.text);
            self.downloads.clone_from(&view.downloads);
        }
    }

    /// What the worker does with the path, once the run ended with `end`.
    pub(super) fn outcome(&self, end: &End, job: &super::Job) -> Option<PathOutcome> {
        let End::Done(output) = end else { return None };
        if !self.enabled || self.spoiled {
            return None;
        }
        if self.replayed {
            return Some(PathOutcome::Replayed);
        }
        let mut steps = self.steps.clone();
        if let Some(c) = self.current.as_ref().filter(|c| !c.actions.is_empty()) {
            steps.push(c.clone());
        }
        let template = OutputTemplate::record(
            output,
            &self.downloads,
            &job.task,
            &job.metadata,
            &job.secrets,
            &self.pages,
        );
        Some(PathOutcome::Save(ReplayPath {
            version: PATH_VERSION,
            steps,
            answer: !output.is_null(),
            output: template,
        }))
    }

    /// The divergence note for the first model step after the model took over.
    pub(super) fn take_diverged(&mut self) -> Option<String> {
        self.diverged.take()
    }
}

/// How playing the path went.
pub(super) enum Played {
    /// The run ended (done from the path, cancelled, crashed).
    Ended(Finish),
    /// The model goes on from this step number (1 when there was nothing to play).
    Continue(u32),
}

/// One recorded step, played.
enum StepPlayed {
    Done,
    /// The page or an element did not match; `acted` when some of its actions ran (the step
    /// then has a trace, and the model goes on from the next one).
    Diverged {
        why: String,
        acted: bool,
    },
    Stopped,
}

/// One recorded action, played.
enum ActionPlayed {
    Ok {
        args: Value,
        result: String,
        navigated: bool,
    },
    /// Its element is not on the page (yet): nothing was done.
    Missing(String),
    Diverged(String),
    Stopped,
}

/// How long a step whose page does not match yet, or an action whose element is not there yet,
/// is looked at again before the model takes over, and how often: the page may still be
/// drawing what the recording saw (an overlay shown a moment after the load, content from a
/// script), and a replayed action waits only briefly for the page to go quiet.
const LATE_FOR: Duration = Duration::from_millis(1000);
const LATE_EVERY: Duration = Duration::from_millis(50);

impl Run {
    /// Plays the stored path, if there is one.
    pub(super) async fn play(
        &mut self,
        host: &mut dyn Host,
        driver: &mut Driver<'_>,
        stop: &CancellationToken,
        max: u32,
    ) -> Played {
        let Some(path) = self.replay.path.take() else {
            return Played::Continue(1);
        };
        let total = path.steps.len();
        let played = self.play_steps(host, driver, stop, max, &path).await;
        // The model, and the answer's request, wait for the page as usual.
        driver.set_settle(Settle::Full);
        if let Some(played) = played {
            return played;
        }
        let n = u32::try_from(total).unwrap_or(u32::MAX - 1) + 1;
        if !path.answer {
            self.replay.replayed = true;
            return Played::Ended(self.finish(End::Done(Value::Null), n - 1));
        }
        if n > max {
            return Played::Continue(n);
        }
        if let Some(template) = &path.output
            && let Some(end) = self.answer_from_downloads(host, driver, stop, template, n).await
        {
            self.replay.replayed = true;
            return Played::Ended(self.finish(end, n));
        }
        match self.read_answer(host, driver, stop, n, max).await {
            Ok(Answered::Done(end, used)) => {
                self.replay.replayed = true;
                Played::Ended(self.finish(end, n + used - 1))
            }
            Ok(Answered::Not(why, used)) => {
                self.take_over(format!("after the {total} recorded steps: {why}"));
                Played::Continue(n + used)
            }
            Ok(Answered::Stopped) => Played::Ended(self.finish(End::Stopped, n)),
            Err(e) => Played::Ended(self.crashed(&e, n)),
        }
    }

    /// Plays the path's steps; None when all of them ran.
    async fn play_steps(
        &mut self,
        host: &mut dyn Host,
        driver: &mut Driver<'_>,
        stop: &CancellationToken,
        max: u32,
        path: &ReplayPath,
    ) -> Option<Played> {
        let total = path.steps.len();
        for (i, recorded) in path.steps.iter().enumerate() {
            let n = u32::try_from(i).unwrap_or(u32::MAX - 1) + 1;
            if n > max {
                return Some(Played::Continue(n));
            }
            if stop.is_cancelled() {
                return Some(Played::Ended(self.finish(End::Stopped, n - 1)));
            }
            let last = i + 1 == total;
            let mut played = self.play_step(host, driver, stop, n, max, recorded, last).await;
            // A step that did not match and did nothing is looked at again for a while before
            // the model takes over.
            let late = Instant::now() + LATE_FOR;
            while matches!(played, Ok(StepPlayed::Diverged { acted: false, .. })) && Instant::now() < late {
                tokio::select! {
                    () = tokio::time::sleep(LATE_EVERY) => {}
                    () = stop.cancelled() => break,
                }
                driver.forget_view();
                played = self.play_step(host, driver, stop, n, max, recorded, last).await;
            }
            match played {
                Ok(StepPlayed::Done) => {}
                Ok(StepPlayed::Diverged { why, acted }) => {
                    self.take_over(format!("recorded step {n} of {total}: {why}"));
                    return Some(Played::Continue(if acted { n + 1 } else { n }));
                }
                Ok(StepPlayed::Stopped) => return Some(Played::Ended(self.finish(End::Stopped, n))),
                Err(e) => return Some(Played::Ended(self.crashed(&e, n))),
            }
        }
        None
    }

    fn take_over(&mut self, why: String) {
        let why = prompt::mask(&why, &self.job.secrets);
        tracing::info!(diverged = %why, "replay: the model takes over");
        self.replay.diverged = Some(why);
    }

    /// Observes the page as the model would see it, for a trace.
    async fn look(&mut self, driver: &mut Driver<'_>, n: u32, max: u32) -> Result<Observation, ActError> {
        let started = Instant::now();
        let view = observe_page(driver).await?;
        let tabs = driver.tabs().await.unwrap_or_default();
        let current = driver.current_tab(&tabs);
        let text = prompt::mask(
            &prompt::render_view(n, max, &view, &tabs, current),
            &self.job.secrets,
        );
        Ok(Observation {
            n,
            step: self.job.first_step + n,
            view: text,
            url: view.url,
            started,
            guard: None,
        })
    }

    /// A replayed step's page for its trace: no view is taken (the replay reads only the page's
    /// shape and finds its elements), so its URL, title and landmarks, said to be replayed.
    fn glance(&self, url: &str, n: u32, max: u32, shape: &PageShape, started: Instant) -> Observation {
        let text = format!(
            "Step {n}/{max} (replayed from the recorded path: no page view was taken)\nURL: {url}\nTitle: {}\nLandmarks: {}",
            shape.title,
            shape.marks.join(", ")
        );
        Observation {
            n,
            step: self.job.first_step + n,
            view: prompt::mask(&text, &self.job.secrets),
            url: prompt::mask(url, &self.job.secrets),
            started,
            guard: None,
        }
    }

    /// Plays one recorded step: the page must match its shape, then each action's element is
    /// found by its description and the action runs. The actions wait briefly for the page
    /// (the next one, or the next step, checks it), except the path's `last` step's last
    /// action, after which the answer is read ([`Settle::Answer`]). `Err` only when the browser
    /// crashed.
    #[expect(
        clippy::too_many_arguments,
        reason = "the run's parts and the step's place in the path"
    )]
    async fn play_step(
        &mut self,
        host: &mut dyn Host,
        driver: &mut Driver<'_>,
        stop: &CancellationToken,
        n: u32,
        max: u32,
        recorded: &PathStep,
        last: bool,
    ) -> Result<StepPlayed, ActError> {
        let started = Instant::now();
        let shape = match driver.shape().await {
            Ok(s) => s,
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                return Ok(StepPlayed::Diverged {
                    why: format!("the page could not be read ({e})"),
                    acted: false,
                });
            }
        };
        if !shape.matches(&recorded.shape) {
            return Ok(StepPlayed::Diverged {
                why: format!(
                    "the page differs from the recording (recorded {:?} at {}, found {:?} at {})",
                    cut(&recorded.shape.title, 80),
                    recorded.shape.url,
                    cut(&shape.title, 80),
                    shape.url
                ),
                acted: false,
            });
        }
        let url = driver.url().await;
        let seen = self.glance(&url, n, max, &shape, started);
        self.rec_end();
        self.replay.current = Some(PathStep {
            url,
            shape,
            actions: Vec::new(),
        });
        let act_started = Instant::now();
        let mut traces = Vec::new();
        let mut calls = Vec::new();
        let mut results = Vec::new();
        let mut end = StepPlayed::Done;
        let count = recorded.actions.len();
        for (k, action) in recorded.actions.iter().enumerate() {
            if stop.is_cancelled() {
                end = StepPlayed::Stopped;
                break;
            }
            // The answer is read from the page the path's last action leaves, with no recorded
            // shape to check it against: that one waits at least as long as the model's unless
            // the page went idle (and for what it fetched). History and tab moves wait as the
            // model's do.
            let settle = if matches!(action.name.as_str(), "go_back" | "switch_tab") {
                Settle::Full
            } else if last && k + 1 == count {
                Settle::Answer
            } else {
                Settle::Brief
            };
            driver.set_settle(settle);
            let mut played = self.play_action(host, driver, stop, action).await?;
            // After an action of this step, its next element may still be on its way.
            let late = Instant::now() + LATE_FOR;
            while k > 0 && matches!(played, ActionPlayed::Missing(_)) && Instant::now() < late {
                tokio::select! {
                    () = tokio::time::sleep(LATE_EVERY) => {}
                    () = stop.cancelled() => break,
                }
                played = self.play_action(host, driver, stop, action).await?;
            }
            match played {
                ActionPlayed::Ok {
                    args,
                    result,
                    navigated,
                } => {
                    let id = if action.id.is_empty() {
                        format!("replay_{n}_{k}")
                    } else {
                        action.id.clone()
                    };
                    self.replay.saw(&result);
                    let shown = prompt::mask(&args.to_string(), &self.job.secrets);
                    calls.push(json!({"id": id, "type": "function",
                        "function": {"name": action.name, "arguments": shown}}));
                    results.push(json!({"role": "tool", "tool_call_id": id, "content": result}));
                    traces.push(ActionTrace {
                        name: action.name.clone(),
                        args: serde_json::from_str(&shown).unwrap_or(Value::Null),
                        result,
                    });
                    if let Some(c) = self.replay.current.as_mut() {
                        c.actions.push(action.clone());
                    }
                    if navigated && k + 1 < count {
                        end = StepPlayed::Diverged {
                            why: format!(
                                "the page changed after action {} of {count}, before the rest ran",
                                k + 1
                            ),
                            acted: true,
                        };
                        break;
                    }
                }
                ActionPlayed::Diverged(why) | ActionPlayed::Missing(why) => {
                    let what = action
                        .targets
                        .values()
                        .next()
                        .map(replay::describe)
                        .unwrap_or_default();
                    end = StepPlayed::Diverged {
                        why: format!("action {} of {count} ({} {what}): {why}", k + 1, action.name),
                        acted: !traces.is_empty(),
                    };
                    break;
                }
                ActionPlayed::Stopped => {
                    end = StepPlayed::Stopped;
                    break;
                }
            }
        }
        if !traces.is_empty() {
            self.history
                .push(json!({"role": "assistant", "content": null, "tool_calls": calls}));
            self.history.extend(results);
            let reasoning = format!("replayed step {n} of the recorded path");
            self.record_replayed(host, &seen, traces, act_started.elapsed(), reasoning)
                .await;
        }
        self.rec_end();
        Ok(end)
    }

    /// Records a step that asked no model: its trace (0 tokens, `source: replay`) and status.
    async fn record_replayed(
        &self,
        host: &mut dyn Host,
        seen: &Observation,
        actions: Vec<ActionTrace>,
        act: Duration,
        reasoning: String,
    ) {
        let cost = StepCost {
            prompt_tokens: 0,
            completion_tokens: 0,
            llm_ms: 0,
            act_ms: act.as_millis() as u64,
            step_ms: seen.started.elapsed().as_millis() as u64,
            retries: 0,
            first_request_ms: None,
            reasoning,
            cost_usd: llm::usd(Usage::default(), self.agent.llm.price()),
        };
        let mut trace = self.trace(seen, Some(cost), actions, None);
        trace.source = Some(StepSource::Replay);
        host.status(&format!("step {}: replayed", seen.step)).await;
        host.record_step(trace).await;
    }

    /// Plays one recorded action through the model's own action code. `Err` only when the
    /// browser crashed.
    async fn play_action(
        &mut self,
        host: &mut dyn Host,
        driver: &mut Driver<'_>,
        stop: &CancellationToken,
        action: &PathAction,
    ) -> Result<ActionPlayed, ActError> {
        let mut found = BTreeMap::new();
        for (arg, target) in &action.targets {
            match driver.find(target).await {
                Ok(Some(i)) => {
                    found.insert(arg.clone(), i);
                }
                Ok(None) => {
                    return Ok(ActionPlayed::Missing(
                        "no element on the page matches the recorded one".into(),
                    ));
                }
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    return Ok(ActionPlayed::Diverged(format!(
                        "the element could not be looked for ({e})"
                    )));
                }
            }
        }
        let args = match action.arguments(&found, &self.job.metadata) {
            Ok(a) => a,
            Err(e) => return Ok(ActionPlayed::Diverged(e.to_string())),
        };
        let parsed = match tools::parse(
            &action.name,
            &args.to_string(),
            &self.offered,
            &self.job.custom_tools,
        ) {
            Ok(Action::Done { .. } | Action::Custom { .. }) => {
                return Ok(ActionPlayed::Diverged(format!(
                    "{} cannot be replayed",
                    action.name
                )));
            }
            Ok(a) => a,
            Err(why) => return Ok(ActionPlayed::Diverged(why)),
        };
        let mut shot = None;
        Ok(match self.act(host, driver, parsed, stop, &mut shot).await {
            Step::Result(Ok(effect)) => ActionPlayed::Ok {
                args,
                result: if effect.note.is_empty() {
                    "ok".into()
                } else {
                    prompt::mask(&format!("ok: {}", effect.note), &self.job.secrets)
                },
                navigated: effect.navigated,
            },
            Step::Result(Err(e)) if e.is_fatal() => return Err(e),
            Step::Result(Err(e)) => ActionPlayed::Diverged(prompt::mask(
                &format!("the action failed: {e}"),
                &self.job.secrets,
            )),
            Step::End(End::Stopped) => ActionPlayed::Stopped,
            Step::End(_) | Step::Text(_) => ActionPlayed::Diverged("the action cannot be replayed".into()),
        })
    }

    // --- recording, while the model drives ---

    /// Starts recording a step on the page just observed.
    pub(super) async fn rec_begin(&mut self, driver: &mut Driver<'_>, url: &str) {
        if !self.replay.enabled || self.replay.spoiled {
            return;
        }
        self.rec_end();
        let shape = driver.shape().await.unwrap_or_default();
        self.replay.current = Some(PathStep {
            url: url.to_string(),
            shape,
            actions: Vec::new(),
        });
    }

    /// Closes the step being recorded.
    pub(super) fn rec_end(&mut self) {
        if let Some(c) = self.replay.current.take()
            && !c.actions.is_empty()
        {
            self.replay.steps.push(c);
        }
    }

    /// The elements an action is about to use, described before it runs (recording only).
    pub(super) async fn rec_targets(
        &mut self,
        driver: &mut Driver<'_>,
        action: &Action,
    ) -> BTreeMap<String, Target> {
        let mut targets = BTreeMap::new();
        if !self.replay.enabled || self.replay.spoiled {
            return targets;
        }
        let indexes: Vec<(&str, u32)> = match action {
            Action::Click { index }
            | Action::Type { index, .. }
            | Action::SelectOption { index, .. }
            | Action::UploadFile { index, .. }
            | Action::Hover { index } => vec![("index", *index)],
            Action::DragDrop { from, to } => vec![("from", *from), ("to", *to)],
            _ => Vec::new(),
        };
        for (arg, index) in indexes {
            if let Ok(t) = driver.describe(index).await {
                targets.insert(arg.to_string(), t);
            }
        }
        targets
    }

    /// Records a tool call that succeeded; a custom tool makes the run unrecordable.
    pub(super) fn rec_action(&mut self, call: &ToolCall, targets: BTreeMap<String, Target>, called: &Called) {
        if !self.replay.enabled || self.replay.spoiled || call.name == "done" {
            return;
        }
        if self.job.custom_tools.iter().any(|t| t.name == call.name) {
            self.replay.spoiled = true;
            return;
        }
        if !called.text.starts_with("ok") {
            return;
        }
        let needs = match call.name.as_str() {
            "drag_drop" => 2,
            "click" | "type" | "select_option" | "upload_file" | "hover" => 1,
            _ => 0,
        };
        if targets.len() < needs {
            // An element we could not describe: a path through it could not be replayed.
            self.replay.spoiled = true;
            return;
        }
        let action = PathAction::record(
            &call.id,
            &call.name,
            &call.arguments,
            targets,
            &self.job.metadata,
            &self.job.secrets,
        );
        if let Some(c) = self.replay.current.as_mut() {
            c.actions.push(action);
        }
    }
}
