//! The one model request of a replay: the answer, read from the page the recorded steps reached,
//! through `done` only (validated like the model's `done`). Never the recorded output.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use smoothd_browser::{ActError, Driver};
use smoothd_core::{ActionTrace, StepSource};
use tokio_util::sync::CancellationToken;

use super::super::{End, Host, Observation, Run, Step, cut};
use super::{ANSWER_LINE, LATE_EVERY, LATE_FOR};
use crate::llm::{LlmError, ToolCall};
use crate::replay::OutputTemplate;
use crate::tools::{self, Action};
use crate::{budget, prompt};

const ANSWER_SYSTEM: &str = "You read the answer to a web task from the page a browser reached. Use only \
what the page shows. Call done with the answer and success=true, or success=false if the page does not \
show it.";

/// The answer request's end.
pub(super) enum Answered {
    Done(End, u32),
    /// The model found no valid answer on the page; it takes over after `u32` steps.
    Not(String, u32),
    Stopped,
}

impl Run {
    /// The one model request of a replay: the answer, read from the page reached, through
    /// `done` only (validated like the model's `done`; one retry on an invalid output).
    /// Each request is a step with its own trace. `Err` only when the browser crashed.
    pub(super) async fn read_answer(
        &mut self,
        host: &mut dyn Host,
        driver: &mut Driver<'_>,
        stop: &CancellationToken,
        n: u32,
        max: u32,
    ) -> Result<Answered, ActError> {
        let seen = self.look(driver, n, max).await?;
        let done_tool: Vec<Value> = self
            .tools
            .iter()
            .filter(|t| t.pointer("/function/name").and_then(Value::as_str) == Some("done"))
            .cloned()
            .collect();
        let mut intro = format!("{ANSWER_LINE}\nTask: {}", self.job.task);
        if !self.job.metadata.is_empty() {
            intro.push_str("\nVariables:");
            for (k, v) in &self.job.metadata {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                intro.push_str(&format!("\n{k} = {v}"));
            }
        }
        intro.push_str(&format!("\n\n{}", seen.view));
        let mut messages = vec![
            json!({"role": "system", "content": ANSWER_SYSTEM}),
            json!({"role": "user", "content": intro}),
        ];
        let offered = vec!["done".to_string()];
        for attempt in 0..2u32 {
            if attempt > 0 && n + attempt > max {
                return Ok(Answered::Not(
                    "the answer did not match the response model".into(),
                    attempt,
                ));
            }
            if self.first_request.is_none() {
                self.first_request = Some(self.started.elapsed());
            }
            let request = json!({
                "messages": messages,
                "tools": done_tool,
                "tool_choice": {"type": "function", "function": {"name": "done"}},
            });
            // The spend cap holds here too; withheld, the model's turn after it is withheld
            // the same way and ends the run "budget reached".
            if self.cap.is_some() {
                let llm = &self.agent.llm;
                let check = budget::check(
                    self.cap,
                    llm.model(),
                    llm.price(),
                    self.usage,
                    request.to_string().len(),
                    0,
                    llm.max_completion_tokens(),
                );
                if let Err(why) = check {
                    return Ok(Answered::Not(why, attempt));
                }
            }
            let reply = match self.agent.llm.chat(request, stop).await {
                Ok(r) => r,
                Err(LlmError::Stopped) => return Ok(Answered::Stopped),
                Err(e) => return Ok(Answered::Not(format!("the answer request failed: {e}"), attempt)),
            };
            self.usage.prompt += reply.usage.prompt;
            self.usage.completion += reply.usage.completion;
            self.retries += reply.retries;
            let act_started = Instant::now();
            let call = reply.tool_calls.iter().find(|c| c.name == "done");
            let (result, verdict) = self.judge_answer(call, &offered);
            let actions = call
                .map(|c| {
                    vec![ActionTrace {
                        name: "done".into(),
                        args: serde_json::from_str(&prompt::mask(&c.arguments, &self.job.secrets))
                            .unwrap_or(Value::Null),
                        result: result.clone(),
                    }]
                })
                .unwrap_or_default();
            let reasoning = prompt::mask(&cut(reply.content.trim(), 600), &self.job.secrets);
            let this = Observation {
                n: n + attempt,
                step: seen.step + attempt,
                view: seen.view.clone(),
                url: seen.url.clone(),
                started: seen.started,
                guard: None,
            };
            let cost = self.cost(&this, &reply, reasoning, act_started);
            let mut trace = self.trace(&this, Some(cost), actions, None);
            trace.source = Some(StepSource::Replay);
            host.record_step(trace).await;
            match verdict {
                Some(Ok(end)) => return Ok(Answered::Done(end, attempt + 1)),
                Some(Err(why)) => return Ok(Answered::Not(why, attempt + 1)),
                None => {
                    let id = call.map_or_else(|| format!("answer_{attempt}"), |c| c.id.clone());
                    let args = call.map_or_else(String::new, |c| c.arguments.clone());
                    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [{
                        "id": id, "type": "function", "function": {"name": "done", "arguments": args}}]}));
                    messages.push(json!({"role": "tool", "tool_call_id": id, "content": result}));
                }
            }
        }
        Ok(Answered::Not(
            "the answer did not match the response model".into(),
            2,
        ))
    }

    /// The answer of a path whose recorded output was made of its run's downloads (see
    /// [`OutputTemplate`]): this run's downloads put in, with no model request, once as many
    /// have started as the recording's (waited for up to [`LATE_FOR`]). `None` when they did not,
    /// or the output does not validate: the answer request reads it instead.
    pub(super) async fn answer_from_downloads(
        &mut self,
        host: &mut dyn Host,
        driver: &mut Driver<'_>,
        stop: &CancellationToken,
        template: &OutputTemplate,
        n: u32,
    ) -> Option<End> {
        let started = Instant::now();
        let late = started + LATE_FOR;
        let mut downloads = driver.downloads().await;
        while downloads.len() < template.downloads && Instant::now() < late {
            tokio::select! {
                () = tokio::time::sleep(LATE_EVERY) => {}
                () = stop.cancelled() => return None,
            }
            downloads = driver.downloads().await;
        }
        let output = template.fill(&downloads, &self.job.task, &self.job.metadata)?;
        let Step::End(End::Done(output)) = self.done(output, true) else {
            return None;
        };
        let url = driver.url().await;
        let view = format!(
            "Step {n}/{} (replayed: the recorded answer names the files the run downloaded and \
             nothing read from a page, so this run's downloads are put in; no page view was taken)\n\
             URL: {url}\nDownloads started: {}",
            self.job.max_steps.max(1),
            downloads.join(", ")
        );
        let seen = Observation {
            n,
            step: self.job.first_step + n,
            view: prompt::mask(&view, &self.job.secrets),
            url: prompt::mask(&url, &self.job.secrets),
            started,
            guard: None,
        };
        let action = ActionTrace {
            name: "done".into(),
            args: json!({"output": output, "success": true}),
            result: "ok".into(),
        };
        let reasoning = "the answer, from this run's downloads (no model request)".to_string();
        self.record_replayed(host, &seen, vec![action], Duration::ZERO, reasoning)
            .await;
        Some(End::Done(output))
    }

    /// What the answer's `done` call says: (result told to the model, verdict); no verdict
    /// means ask again.
    fn judge_answer(
        &mut self,
        call: Option<&ToolCall>,
        offered: &[String],
    ) -> (String, Option<Result<End, String>>) {
        let Some(call) = call else {
            return ("error: call done with the answer".into(), None);
        };
        match tools::parse("done", &call.arguments, offered, &[]) {
            Ok(Action::Done { output, success }) => match self.done(output, success) {
                Step::End(End::Done(out)) => ("ok".into(), Some(Ok(End::Done(out)))),
                Step::End(_) => (
                    "ok".into(),
                    Some(Err("the model found no answer on the page reached".into())),
                ),
                Step::Text(t) => (t, None),
                Step::Result(_) => ("error: call done".into(), None),
            },
            Ok(_) => ("error: call done".into(), None),
            Err(why) => (format!("error: {why}"), None),
        }
    }
}
