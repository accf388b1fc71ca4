//! The observe-act loop: view the page, ask the model, run its tool calls, until `done` or
//! `max_steps`. Everything the task produces goes through a [`Host`] (events, traces, files),
//! so the loop knows nothing of the store.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use smoothd_browser::{ActError, Action as PageAction, ActionResult, BrowserSession, Driver, PageView};
use smoothd_core::{ActionTrace, StepCost, StepSource, StepTrace};
use tokio_util::sync::CancellationToken;

use crate::budget;
use crate::guard::{Guard, GuardConfig};
mod actions;
mod playback;
pub use playback::ANSWER_LINE;

use crate::llm::{self, Llm, LlmError, Reply, ToolCall, Usage};
use crate::prompt::{self, Secret};
use crate::tools::{self, CustomTool};

mod captcha;
pub use captcha::{CaptchaNotice, CaptchaState};

/// When the model gets a screenshot with the page view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Vision {
    /// Only when the text view cannot show the page (canvas, cross-origin frames, nothing readable).
    #[default]
    Auto,
    On,
    Off,
}

/// The client's answer to a custom tool call.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolAnswer {
    /// code 200
    Ok(Value),
    /// code 400: the model hears it and carries on.
    Error(String),
    /// code 500: the task fails.
    Fatal(String),
    TimedOut,
    Stopped,
}

/// What the loop needs from the worker running it.
#[async_trait]
pub trait Host: Send {
    /// Emits the `tool_call` event and waits (up to `timeout`) for the client's answer.
    async fn call_tool(&mut self, name: &str, input: Value, timeout: Duration) -> ToolAnswer;
    /// Stores one step's trace.
    async fn record_step(&mut self, trace: StepTrace);
    /// The latest step in one line, for the live view.
    async fn status(&mut self, text: &str);
    /// Adds a file to the task's downloads.
    async fn save_file(&mut self, name: &str, bytes: &[u8]) -> Result<(), String>;
    /// Called before every action that changes the page (cheap after the first); false if the
    /// task was lost.
    async fn acted(&mut self) -> bool;
    /// Tells the client about a captcha in the agent's way (the `captcha` event); false if the
    /// task was lost.
    async fn captcha(&mut self, _notice: &CaptchaNotice) -> bool {
        true
    }
}

/// One task for the loop.
#[derive(Debug, Clone, Default)]
pub struct Job {
    pub task: String,
    pub url: Option<String>,
    pub max_steps: u32,
    pub response_model: Option<Value>,
    pub metadata: Map<String, Value>,
    /// (original name, id, path on disk)
    pub files: Vec<(String, String, PathBuf)>,
    pub secrets: Vec<Secret>,
    pub additional_tools: Vec<String>,
    pub custom_tools: Vec<CustomTool>,
    /// Traces are numbered from here (a session's second `run_task` continues the count).
    pub first_step: u32,
    /// The task's spend cap in US dollars (`experimental_features.max_cost_usd`).
    pub max_cost_usd: Option<f64>,
    /// Pause for a person to solve a captcha in the live view (the request's
    /// `use_captcha_solver`); without it the model is told it cannot solve one.
    pub use_captcha_solver: bool,
    /// `experimental_features.replay`: the mode and the stored path (`None`: no replay).
    pub replay: Option<crate::replay::Plan>,
}

/// How the loop ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    Done(Value),
    Failed { error: String, output: Option<Value> },
    Stopped,
}

/// The loop's result with its cost.
#[derive(Debug, Clone)]
pub struct Finish {
    pub end: End,
    pub usage: Usage,
    pub credits: i64,
    pub steps: u32,
    pub model_retries: u32,
    /// What to do with the replay path after this run (`None`: nothing).
    pub replay: Option<crate::replay::PathOutcome>,
}

/// Settings of the loop beyond the model.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub vision: Vision,
    pub custom_tool_timeout: Duration,
    /// A TOTP secret's code is typed only with at least this long left; else the next one.
    pub totp_min_validity: Duration,
    /// The loop guard's thresholds.
    pub guard: GuardConfig,
    /// The server's spend cap per task (a task's own cap can only lower it).
    pub max_cost_usd: Option<f64>,
    /// How long the agent waits for a person to solve a captcha.
    pub captcha_timeout: Duration,
}

/// The agent: a model client and its settings; cheap to clone, shared by all tasks.
#[derive(Debug, Clone)]
pub struct Agent {
    pub llm: Llm,
    pub config: AgentConfig,
    /// The model `agent: "smooth-lite"` tasks use (None: the default model).
    pub lite_model: Option<String>,
}

/// One running task's state.
pub struct Run {
    agent: Agent,
    job: Job,
    tools: Vec<Value>,
    offered: Vec<String>,
    history: Vec<Value>,
    task_message: String,
    usage: Usage,
    retries: u32,
    /// The first step's reply, asked before the browser was ready (tasks without a start URL).
    prefetched: Option<(String, Result<Reply, LlmError>)>,
    best_output: Option<Value>,
    started: Instant,
    /// From the start of the run (the claim) to the first model request going out.
    first_request: Option<Duration>,
    /// An obstacle the agent met and has not got past since (the proxy refusing the
    /// credentials): a failed run's final error says so.
    obstacle: Option<String>,
    guard: Guard,
    /// The smallest of the task's and the server's spend caps.
    cap: Option<f64>,
    /// This step's wait for a person to solve a captcha, for its trace.
    waited: Option<ActionTrace>,
    /// The path being replayed and the one being recorded.
    replay: playback::Replay,
}

/// Action errors that stop the agent whatever it does, and belong in the final error.
const OBSTACLES: &[&str] = &["the proxy refused the credentials"];

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

impl Agent {
    /// The agent a task's `agent` field asks for: `smooth-lite` runs on the lite model when
    /// one is configured; anything else (validated upstream) on the default model.
    pub fn for_task(&self, agent: &str) -> Agent {
        match (&self.lite_model, agent) {
            (Some(lite), "smooth-lite") => Agent {
                llm: self.llm.with_model(lite),
                ..self.clone()
            },
            _ => self.clone(),
        }
    }

    pub fn start(&self, job: Job) -> Run {
        let tools = tools::definitions(
            &job.additional_tools,
            &job.custom_tools,
            job.response_model.as_ref(),
        );
        let offered = tools::names(&tools);
        let names: Vec<String> = job.files.iter().map(|f| f.0.clone()).collect();
        let task_message = prompt::task_message(
            &job.task,
            job.url.as_deref(),
            &job.metadata,
            &names,
            &job.secrets,
            job.response_model.is_some(),
        );
        let replay = playback::Replay::new(job.replay.as_ref());
        Run {
            agent: self.clone(),
            replay,
            tools,
            offered,
            history: Vec::new(),
            task_message,
            usage: Usage::default(),
            retries: 0,
            prefetched: None,
            obstacle: None,
            waited: None,
            best_output: None,
            started: Instant::now(),
            first_request: None,
            guard: Guard::new(self.config.guard),
            cap: budget::smallest(job.max_cost_usd, self.config.max_cost_usd),
            job,
        }
    }

    /// Answers `prompt` about the current page with data matching `schema` (session `extract`).
    /// Its model requests stay within `max_cost_usd` (and the server's cap).
    pub async fn extract(
        &self,
        session: &BrowserSession,
        schema: Option<&Value>,
        request: &str,
        max_cost_usd: Option<f64>,
        stop: &CancellationToken,
    ) -> Result<(Value, Usage), String> {
        let cap = budget::smallest(max_cost_usd, self.config.max_cost_usd);
        let driver = Driver::new(session);
        let text = driver.page_text(40_000).await.map_err(|e| e.to_string())?;
        let url = driver.url().await;
        let schema = schema.cloned().unwrap_or_else(|| json!({}));
        let tool = json!({"type": "function", "function": {
            "name": "extract_result",
            "description": "Return the extracted data.",
            "parameters": {"type": "object", "properties": {"output": schema}, "required": ["output"]},
        }});
        let mut messages = vec![
            json!({"role": "system", "content": "Extract data from the web page below. Use only what the page says. Answer by calling extract_result."}),
            json!({"role": "user", "content": format!("URL: {url}\nPage text:\n{text}\n\nExtract: {request}")}),
        ];
        let validator = jsonschema::validator_for(&schema).map_err(|e| format!("invalid schema: {e}"))?;
        let mut usage = Usage::default();
        for _ in 0..2 {
            let req = json!({
                "messages": messages,
                "tools": [tool],
                "tool_choice": {"type": "function", "function": {"name": "extract_result"}},
            });
            let (model, price) = (self.llm.model(), self.llm.price());
            let tokens = self.llm.max_completion_tokens();
            budget::check(cap, model, price, usage, req.to_string().len(), 0, tokens)?;
            let reply = self.llm.chat(req, stop).await.map_err(|e| e.to_string())?;
            usage.prompt += reply.usage.prompt;
            usage.completion += reply.usage.completion;
            let Some(call) = reply.tool_calls.first() else {
                return Err("the model did not return extracted data".into());
            };
            let args: Value = serde_json::from_str(&call.arguments)
                .map_err(|e| format!("the model's extraction is not JSON: {e}"))?;
            let output = unstringify(args.get("output").cloned().unwrap_or(Value::Null), &schema);
            let errors: Vec<String> = validator
                .iter_errors(&output)
                .map(|e| e.to_string())
                .take(3)
                .collect();
            if errors.is_empty() {
                return Ok((output, usage));
            }
            messages.push(json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": call.id, "type": "function",
                "function": {"name": "extract_result", "arguments": call.arguments}}]}));
            messages.push(json!({"role": "tool", "tool_call_id": call.id,
                "content": format!("error: the output does not match the schema: {}", errors.join("; "))}));
        }
        Err("the model's extraction did not match the schema".into())
    }
}

/// A model that sends a JSON document as a string where the schema wants an object or array.
fn unstringify(v: Value, schema: &Value) -> Value {
    let wants_structure = matches!(
        schema.get("type").and_then(Value::as_str),
        Some("object" | "array")
    );
    match v {
        Value::String(s) if wants_structure => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        other => other,
    }
}

impl Run {
    fn request(&self, view: &str, screenshot: Option<&[u8]>) -> Value {
        let mut messages = vec![
            json!({"role": "system", "content": prompt::SYSTEM}),
            json!({"role": "user", "content": self.task_message}),
        ];
        messages.extend(self.history.iter().cloned());
        let content = match screenshot {
            Some(jpeg) => {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD.encode(jpeg);
                json!([
                    {"type": "text", "text": view},
                    {"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{b64}")}},
                ])
            }
            None => Value::String(view.to_string()),
        };
        messages.push(json!({"role": "user", "content": content}));
        json!({
            "messages": messages,
            "tools": self.tools,
            "tool_choice": "auto",
            "parallel_tool_calls": true,
        })
    }

    async fn ask(
        &mut self,
        view: &str,
        shot: Option<&[u8]>,
        stop: &CancellationToken,
    ) -> Result<Reply, LlmError> {
        if self.cap.is_some() {
            let chars = self.request(view, None).to_string().len();
            let llm = &self.agent.llm;
            let tokens = llm.max_completion_tokens();
            let images = usize::from(shot.is_some());
            budget::check(
                self.cap,
                llm.model(),
                llm.price(),
                self.usage,
                chars,
                images,
                tokens,
            )
            .map_err(LlmError::Withheld)?;
        }
        if self.first_request.is_none() {
            self.first_request = Some(self.started.elapsed());
        }
        let r = self.agent.llm.chat(self.request(view, shot), stop).await;
        if let Ok(reply) = &r {
            self.usage.prompt += reply.usage.prompt;
            self.usage.completion += reply.usage.completion;
            self.retries += reply.retries;
        }
        r
    }

    /// Gives the job its files' paths (known once the browser is prepared).
    pub fn set_files(&mut self, files: Vec<(String, String, PathBuf)>) {
        self.job.files = files;
    }

    /// Asks the first step before the browser is ready, when the task starts on a blank tab.
    /// Its answer, or its failure (after the retries), is the first step's.
    pub async fn prefetch(&mut self, stop: &CancellationToken) {
        if self.job.url.is_some() || self.job.first_step > 0 || self.replay.will_play() {
            return;
        }
        let view = prompt::blank_view(1, self.job.max_steps);
        let reply = self.ask(&view, None, stop).await;
        self.prefetched = Some((view, reply));
    }

    fn finish(&self, end: End, steps: u32) -> Finish {
        let end = match (end, &self.obstacle) {
            (End::Failed { error, output }, Some(why)) if !error.contains(why.as_str()) => End::Failed {
                error: format!("{error} (it could not get past: {why})"),
                output,
            },
            (end, _) => end,
        };
        let replay = self.replay.outcome(&end, &self.job);
        Finish {
            replay,
            end,
            usage: self.usage,
            credits: llm::credits(self.usage, self.agent.llm.price()),
            steps,
            model_retries: self.retries,
        }
    }

    /// Runs the loop on `session` until the task ends. Each step observes the page and asks the
    /// model, carries out the reply's tool calls, records the step's trace, then decides
    /// whether the run ends.
    pub async fn run(
        mut self,
        host: &mut dyn Host,
        session: &BrowserSession,
        stop: &CancellationToken,
    ) -> Finish {
        let max = self.job.max_steps.max(1);
        let llm = &self.agent.llm;
        if let Some(error) = budget::unenforceable(self.cap, llm.model(), llm.price()) {
            return self.finish(End::Failed { error, output: None }, 0);
        }
        let mut driver = Driver::new(session);
        if let Err(finish) = self.open_start(host, &mut driver).await {
            return finish;
        }
        let first = match self.play(host, &mut driver, stop, max).await {
            playback::Played::Ended(finish) => return finish,
            playback::Played::Continue(n) => n,
        };
        let mut pending_shot: Option<Vec<u8>> = None;
        for n in first..=max {
            if stop.is_cancelled() {
                return self.finish(End::Stopped, n - 1);
            }
            if let Err(finish) = self.wait_for_human(host, &mut driver, n, stop).await {
                return finish;
            }
            let (seen, reply) = match self
                .observe_and_ask(&mut driver, n, max, &mut pending_shot, stop)
                .await
            {
                Ok(asked) => asked,
                Err(e) => return self.crashed(&e, n - 1),
            };
            self.rec_begin(&mut driver, &seen.url).await;
            let reply = match reply {
                Ok(r) => r,
                Err(LlmError::Stopped) => return self.finish(End::Stopped, n - 1),
                Err(LlmError::Withheld(error)) => {
                    let output = self.best_output.clone();
                    return self.finish(End::Failed { error, output }, n - 1);
                }
                Err(e) => return self.model_failed(host, &seen, &e).await,
            };
            let reasoning = prompt::mask(&cut(reply.content.trim(), 600), &self.job.secrets);
            host.status(&status_line(seen.step, &reasoning)).await;
            let acted = match self
                .carry_out(host, &mut driver, &reply, &reasoning, stop, &mut pending_shot)
                .await
            {
                Ok(acted) => acted,
                Err(e) => return self.crashed(&e, n),
            };
            self.guard.acted(&acted.actions);
            let cost = self.cost(&seen, &reply, reasoning, acted.started);
            let mut trace = self.trace(&seen, Some(cost), acted.actions, None);
            trace.diverged = self.replay.take_diverged();
            host.record_step(trace).await;
            if let Some(end) = acted.outcome {
                return self.finish(end, n);
            }
            if stop.is_cancelled() {
                return self.finish(End::Stopped, n);
            }
        }
        let output = self.best_output.clone();
        self.finish(
            End::Failed {
                error: format!(
                    "reached max_steps ({max}) before the task was done; raise max_steps or simplify the task"
                ),
                output,
            },
            max,
        )
    }

    /// Prepares the page and opens the start URL; `Err` is how the run ends when it cannot.
    async fn open_start(&self, host: &mut dyn Host, driver: &mut Driver<'_>) -> Result<(), Finish> {
        if let Err(e) = driver.install().await
            && e.is_fatal()
        {
            return Err(self.crashed(&e, 0));
        }
        let Some(url) = self.job.url.clone() else {
            return Ok(());
        };
        if !host.acted().await {
            return Err(self.finish(End::Stopped, 0));
        }
        if let Err(e) = driver.act(PageAction::Goto { url }).await {
            return Err(self.finish(
                End::Failed {
                    error: format!("could not open the start URL: {e}"),
                    output: None,
                },
                0,
            ));
        }
        Ok(())
    }

    /// Step `n`'s observation and the model's reply to it (asked before the browser was ready
    /// for the first step of a task without a start URL). `Err` only when the browser crashed.
    async fn observe_and_ask(
        &mut self,
        driver: &mut Driver<'_>,
        n: u32,
        max: u32,
        pending_shot: &mut Option<Vec<u8>>,
        stop: &CancellationToken,
    ) -> Result<(Observation, Result<Reply, LlmError>), ActError> {
        let started = Instant::now();
        let step = self.job.first_step + n;
        if let Some((view, reply)) = self.prefetched.take()
            && n == 1
        {
            let url = "about:blank".to_string();
            self.guard.observe(&url, &view);
            return Ok((
                Observation {
                    n,
                    step,
                    view,
                    url,
                    started,
                    guard: None,
                },
                reply,
            ));
        }
        let view = observe_page(driver).await?;
        self.replay.saw_view(&view);
        let tabs = driver.tabs().await.unwrap_or_default();
        let current = driver.current_tab(&tabs);
        let text = prompt::mask(
            &prompt::render_view(n, max, &view, &tabs, current),
            &self.job.secrets,
        );
        let (text, guard, halt) = self.guard.screen(&view.url, text, n, max);
        let shot = match pending_shot.take() {
            Some(s) if halt.is_none() => Some(s),
            None if halt.is_none() && self.wants_shot(&view) => driver.screenshot(false, true).await.ok(),
            _ => None,
        };
        let reply = match halt {
            Some(why) => Err(LlmError::Withheld(why)),
            None => self.ask(&text, shot.as_deref(), stop).await,
        };
        let seen = Observation {
            n,
            step,
            view: text,
            url: view.url,
            started,
            guard,
        };
        Ok((seen, reply))
    }

    /// Whether the model gets a screenshot with this view.
    fn wants_shot(&self, view: &PageView) -> bool {
        match self.agent.config.vision {
            Vision::On => true,
            Vision::Off => false,
            Vision::Auto => {
                view.canvas > 0
                    || view.cross_origin > 0
                    || (view.elements == 0 && view.text.len() < 200 && view.url != "about:blank")
            }
        }
    }

    /// Records the failed step and ends the run: the model could not answer (after its retries).
    async fn model_failed(&self, host: &mut dyn Host, seen: &Observation, e: &LlmError) -> Finish {
        host.record_step(self.trace(seen, None, Vec::new(), Some(e.to_string())))
            .await;
        self.finish(
            End::Failed {
                error: format!("the model failed: {e}"),
                output: self.best_output.clone(),
            },
            seen.n,
        )
    }

    /// Carries out the reply's tool calls in order, each result going back to the model. After
    /// one that navigates, ends the run or is cancelled, the rest are skipped. `Err` only when
    /// the browser crashed.
    async fn carry_out(
        &mut self,
        host: &mut dyn Host,
        driver: &mut Driver<'_>,
        reply: &Reply,
        reasoning: &str,
        stop: &CancellationToken,
        pending_shot: &mut Option<Vec<u8>>,
    ) -> Result<Acted, ActError> {
        let mut acted = Acted {
            actions: Vec::new(),
            outcome: None,
            started: Instant::now(),
        };
        if reply.tool_calls.is_empty() {
            self.history
                .push(json!({"role": "assistant", "content": reasoning}));
            self.history.push(json!({"role": "user", "content": "Call one of the tools. When the task is complete, call done."}));
            if !reasoning.is_empty() {
                self.best_output = Some(Value::String(reasoning.to_string()));
            }
            return Ok(acted);
        }
        let calls: Vec<Value> = reply
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": prompt::mask(&c.arguments, &self.job.secrets)}}))
            .collect();
        self.history.push(json!({"role": "assistant", "content": if reasoning.is_empty() { Value::Null } else { Value::String(reasoning.to_string()) }, "tool_calls": calls}));
        let mut page_changed = false;
        for call in &reply.tool_calls {
            if stop.is_cancelled() && acted.outcome.is_none() {
                acted.outcome = Some(End::Stopped);
            }
            let result = if acted.outcome == Some(End::Stopped) {
                "skipped: the task was cancelled".to_string()
            } else if acted.outcome.is_some() || page_changed {
                "skipped: the page changed before this action ran; look at the new page and issue it again if still needed".to_string()
            } else {
                let called = self.call(host, driver, call, stop, pending_shot).await?;
                page_changed = called.navigated;
                acted.outcome = called.end;
                called.text
            };
            let result = prompt::mask(&cut(&result, 2000), &self.job.secrets);
            self.replay.saw(&result);
            acted.actions.push(ActionTrace {
                name: call.name.clone(),
                args: serde_json::from_str::<Value>(&prompt::mask(&call.arguments, &self.job.secrets))
                    .unwrap_or(Value::Null),
                result: result.clone(),
            });
            self.history
                .push(json!({"role": "tool", "tool_call_id": call.id, "content": result}));
        }
        Ok(acted)
    }

    /// Parses and runs one tool call. `Err` only when the browser crashed.
    async fn call(
        &mut self,
        host: &mut dyn Host,
        driver: &mut Driver<'_>,
        call: &ToolCall,
        stop: &CancellationToken,
        pending_shot: &mut Option<Vec<u8>>,
    ) -> Result<Called, ActError> {
        let text = |text: String| Called {
            text,
            navigated: false,
            end: None,
        };
        let action = match tools::parse(&call.name, &call.arguments, &self.offered, &self.job.custom_tools) {
            Err(why) => return Ok(text(format!("error: {why}"))),
            Ok(action) => action,
        };
        let targets = self.rec_targets(driver, &action).await;
        let called = match self.act(host, driver, action, stop, pending_shot).await {
            Step::Result(Ok(effect)) => {
                if effect.navigated {
                    self.obstacle = None;
                }
                Called {
                    text: if effect.note.is_empty() {
                        "ok".into()
                    } else {
                        format!("ok: {}", effect.note)
                    },
                    navigated: effect.navigated,
                    end: None,
                }
            }
            Step::Result(Err(e)) if e.is_fatal() => return Err(e),
            Step::Result(Err(e)) => {
                let why = e.to_string();
                if OBSTACLES.iter().any(|o| why.contains(o)) {
                    self.obstacle = Some(why.clone());
                }
                text(format!("error: {why}"))
            }
            Step::Text(t) => text(t),
            Step::End(end) => Called {
                text: "ok".into(),
                navigated: false,
                end: Some(end),
            },
        };
        self.rec_action(call, targets, &called);
        Ok(called)
    }

    /// The cost and timings of a step the model answered.
    fn cost(&self, seen: &Observation, reply: &Reply, reasoning: String, act_started: Instant) -> StepCost {
        StepCost {
            prompt_tokens: reply.usage.prompt,
            completion_tokens: reply.usage.completion,
            llm_ms: reply.latency.as_millis() as u64,
            act_ms: act_started.elapsed().as_millis() as u64,
            step_ms: seen.started.elapsed().as_millis() as u64,
            retries: reply.retries,
            first_request_ms: if seen.n == 1 {
                self.first_request.map(|d| d.as_millis() as u64)
            } else {
                None
            },
            reasoning,
            cost_usd: llm::usd(reply.usage, self.agent.llm.price()),
        }
    }

    /// One step's trace, as stored.
    fn trace(
        &self,
        seen: &Observation,
        cost: Option<StepCost>,
        actions: Vec<ActionTrace>,
        error: Option<String>,
    ) -> StepTrace {
        StepTrace {
            step: seen.step,
            url: seen.url.clone(),
            view_chars: seen.view.len(),
            view: Some(smoothd_core::step::kept_view(&seen.view)),
            model: self.agent.llm.model().to_string(),
            cost,
            actions: self.waited.iter().cloned().chain(actions).collect(),
            error,
            guard: seen.guard.clone(),
            total_cost_usd: llm::usd(self.usage, self.agent.llm.price()),
            source: Some(StepSource::Model),
            diverged: None,
        }
    }

    fn crashed(&self, e: &ActError, steps: u32) -> Finish {
        self.finish(
            End::Failed {
                error: format!("the browser crashed: {e}"),
                output: self.best_output.clone(),
            },
            steps,
        )
    }
}

/// What one action came to.
enum Step {
    Result(Result<ActionResult, ActError>),
    Text(String),
    End(End),
}

/// One step's look at the page: what the model was shown, and where.
struct Observation {
    /// The step's number in this run, from 1.
    n: u32,
    /// The step's number in the trace (continuing a session's count).
    step: u32,
    /// The page view as the model got it (secrets masked).
    view: String,
    url: String,
    started: Instant,
    /// What the loop guard said about this step.
    guard: Option<String>,
}

/// A reply's tool calls, carried out.
struct Acted {
    actions: Vec<ActionTrace>,
    /// How the run ends, when one of the calls ended it.
    outcome: Option<End>,
    started: Instant,
}

/// One tool call's result as the model hears it.
struct Called {
    text: String,
    navigated: bool,
    end: Option<End>,
}

/// The latest step in one line, for the live view.
fn status_line(step: u32, reasoning: &str) -> String {
    let what = if reasoning.is_empty() { "acting" } else { reasoning };
    format!("step {step}: {}", cut(what, 120))
}

/// The page view; a page mid-navigation can refuse once, so it looks again, and then shows
/// the model why it cannot read the page. `Err` only when the browser crashed.
async fn observe_page(driver: &mut Driver<'_>) -> Result<PageView, ActError> {
    match driver.observe().await {
        Ok(v) => Ok(v),
        Err(e) if e.is_fatal() => Err(e),
        Err(e) => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            driver.forget_view();
            Ok(match driver.observe().await {
                Ok(v) => v,
                Err(_) => PageView {
                    url: "unknown".into(),
                    text: format!("(the page could not be read: {e})"),
                    ..Default::default()
                },
            })
        }
    }
}

#[cfg(test)]
mod agent_choice_tests {
    use super::*;

    fn agent(lite: Option<&str>) -> Agent {
        let llm = Llm::new(llm::LlmConfig {
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key: None,
            model: "big".into(),
            timeout: Duration::from_secs(1),
            max_retries: 0,
            retry_base: Duration::from_millis(1),
            max_completion_tokens: 16,
            prices: std::collections::HashMap::new(),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        Agent {
            llm,
            config: AgentConfig {
                vision: Vision::Off,
                custom_tool_timeout: Duration::from_secs(1),
                totp_min_validity: Duration::from_secs(3),
                guard: GuardConfig::default(),
                max_cost_usd: None,
                captcha_timeout: Duration::from_secs(1),
            },
            lite_model: lite.map(str::to_string),
        }
    }

    #[test]
    fn smooth_lite_runs_on_the_lite_model_or_else_the_default_one() {
        assert_eq!(agent(Some("small")).for_task("smooth-lite").llm.model(), "small");
        assert_eq!(agent(Some("small")).for_task("smooth").llm.model(), "big");
        assert_eq!(agent(None).for_task("smooth-lite").llm.model(), "big");
    }
}
