//! Running the agent: a task's whole run in a fresh browser, a session's `run_task` on the
//! session's browser, the [`Host`] the loop talks to (events, custom tools, traces, saved
//! files) over a [`TaskContext`], and the mapping from task requests to agent jobs.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use smoothd_agent::{
    Agent, CaptchaNotice, CustomTool, End, Finish, Host, Job, OneTimeCodes, Secret, ToolAnswer,
};
use smoothd_core::event::Event;
use smoothd_core::ids;
use smoothd_core::{Final, RunTaskError, RunTaskInput, StepTrace, TaskSpec};

use crate::actions::{self, Reply};
use crate::context::TaskContext;
use crate::replay;
use crate::services::{BROWSER_CRASHED, Services};
use crate::setup::Prepared;

/// A task: the agent's loop in a fresh browser. The first model request goes out while the
/// browser is being prepared when the task starts on a blank tab.
pub(crate) async fn run_task(services: &Services, ctx: &mut TaskContext, agent: &Agent) -> Option<Final> {
    let mut job = job_for_task(ctx).await;
    let path_key = match cap_and_plan(ctx, &mut job).await {
        Ok(k) => k,
        Err(why) => return Some(Final::failed(why)),
    };
    let mut run = agent.start(job);
    let stop = ctx.stop_token().clone();
    let (prepared, ()) = tokio::join!(services.open_browser(ctx, None), run.prefetch(&stop));
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => return Some(Final::failed(e.to_string())),
    };
    run.set_files(placed_files(&prepared));
    let finish = {
        let mut host = TaskHost {
            services,
            ctx,
            browser: &prepared,
        };
        // A browser that dies while the model thinks ends the task now, not at its next
        // action.
        tokio::select! {
            f = run.run(&mut host, &prepared.session, &stop) => Some(f),
            () = prepared.session.browser_gone() => None,
        }
    };
    let Some(finish) = finish else {
        tracing::warn!(task.id = %ctx.id(), "the browser crashed under an agent task");
        prepared.finish(ctx, &services.blobs).await;
        return Some(Final::failed(BROWSER_CRASHED));
    };
    tracing::info!(
        task.id = %ctx.id(), steps = finish.steps, prompt_tokens = finish.usage.prompt,
        completion_tokens = finish.usage.completion, model_retries = finish.model_retries,
        "agent finished"
    );
    smoothd_metrics::record_task_end(finish.steps);
    replay::keep(ctx.store(), path_key.as_ref(), finish.replay.as_ref()).await;
    prepared.finish(ctx, &services.blobs).await;
    final_of(finish)
}

/// A session's `run_task`: the same loop on the session's browser; answers
/// `{"output", "credits_used", "duration"}`, or 400 with why the agent failed.
pub(crate) async fn session_run_task(
    services: &Services,
    ctx: &mut TaskContext,
    browser: Option<&Prepared>,
    event: &Event,
    credits: &mut i64,
) -> Reply {
    let started = Instant::now();
    let agent = match services.agent_for(ctx) {
        Ok(a) => a,
        Err(why) => return Reply::internal(why),
    };
    let Some(prepared) = browser else {
        return Reply::internal("no browser available for run_task");
    };
    let input = event.payload.get("input").cloned().unwrap_or(Value::Null);
    // Numbering continues the session's steps; guessing 0 on a database error would write
    // step numbers that collide with the ones already stored.
    let first = match ctx.store().step_count(ctx.id()).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "run_task: the session's step count could not be read");
            return Reply::internal("run_task: the database could not be read; try again");
        }
    };
    let mut job = match job_for_run_task(&ctx.spec, &input, u32::try_from(first).unwrap_or(0)) {
        Ok(j) => j,
        Err(why) => return Reply::user(why.to_string()),
    };
    job.files = placed_files(prepared);
    let path_key = match cap_and_plan(ctx, &mut job).await {
        Ok(k) => k,
        Err(why) => return Reply::internal(why),
    };
    let stop = ctx.stop_token().clone();
    let finish = {
        let mut host = TaskHost {
            services,
            ctx,
            browser: prepared,
        };
        agent.start(job).run(&mut host, &prepared.session, &stop).await
    };
    *credits += finish.credits;
    replay::keep(ctx.store(), path_key.as_ref(), finish.replay.as_ref()).await;
    let duration = started.elapsed().as_secs_f64();
    match finish.end {
        End::Done(output) => Reply::ok(json!({
            "output": output, "credits_used": finish.credits, "duration": duration,
        })),
        End::Failed { error, .. } => Reply::user(error),
        End::Stopped => Reply::internal("the session was stopped"),
    }
}

/// Gives `job` its spend cap and its replay plan (a stored path to play, or one to record);
/// returns where the path is kept after the run. `Err` when the cap cannot be read.
async fn cap_and_plan(ctx: &TaskContext, job: &mut Job) -> Result<Option<replay::PathKey>, String> {
    job.max_cost_usd = ctx.max_cost_usd().await?;
    let (plan, path_key) = replay::plan(
        ctx.store(),
        &ctx.task.owner,
        ctx.spec.replay.as_ref(),
        &job.task,
        job.url.as_deref(),
        job.response_model.as_ref(),
    )
    .await;
    job.replay = plan;
    Ok(path_key)
}

/// The agent's link to its task while it runs.
struct TaskHost<'a> {
    services: &'a Services,
    ctx: &'a mut TaskContext,
    browser: &'a Prepared,
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "no message".into(),
        other => other.to_string(),
    }
}

#[async_trait]
impl Host for TaskHost<'_> {
    async fn call_tool(&mut self, name: &str, input: Value, timeout: Duration) -> ToolAnswer {
        let id = ids::event_id();
        if self
            .ctx
            .emit(&id, "tool_call", json!({"name": name, "input": input}))
            .await
            .is_err()
        {
            return ToolAnswer::Stopped;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return ToolAnswer::TimedOut;
            }
            let Some(event) = self.ctx.next_client_event(left).await else {
                return if self.ctx.stop_reason().is_some() {
                    ToolAnswer::Stopped
                } else {
                    ToolAnswer::TimedOut
                };
            };
            if event.name == "tool_call" && event.id == id {
                let code = event.payload.get("code").and_then(Value::as_u64).unwrap_or(200);
                let output = event.payload.get("output").cloned().unwrap_or(Value::Null);
                return match code {
                    200 => ToolAnswer::Ok(output),
                    400 => ToolAnswer::Error(text_of(&output)),
                    _ => ToolAnswer::Fatal(text_of(&output)),
                };
            }
            // A tool may drive the browser itself (`task.exec_js`) while we wait for it.
            if event.name == "browser_action" {
                let action = actions::action_name(&event);
                let reply = actions::handle(
                    self.services,
                    self.ctx,
                    Some(self.browser),
                    &event,
                    &action,
                    Instant::now(),
                )
                .await;
                if self.ctx.reply(&event, reply.code, reply.output).await.is_err() {
                    return ToolAnswer::Stopped;
                }
            }
        }
    }

    async fn record_step(&mut self, trace: StepTrace) {
        match &trace.cost {
            Some(cost) if trace.error.is_none() => smoothd_metrics::record_step(
                Duration::from_millis(cost.step_ms),
                cost.prompt_tokens,
                cost.completion_tokens,
                cost.retries,
            ),
            _ => smoothd_metrics::record_model_error(),
        }
        let task = &self.ctx.task;
        let store = self.ctx.store();
        let (lease, margin) = self.ctx.lease();
        let recorded = crate::context::retry_unavailable("step trace", lease, margin, || {
            store.record_step(&task.id, task.attempt, &trace)
        })
        .await;
        if let Err(e) = recorded {
            tracing::warn!(task.id = %task.id, error = %e, "could not store a step trace");
        }
        // Progress for clients that read events (the SDK ignores unknown names): the step's
        // actions, its cost and the run's so far, what the loop guard said, and whether it was
        // replayed (and where a replay diverged).
        let mut payload = json!({"step": trace.step, "actions": trace.actions, "source": trace.source});
        let cost = trace.cost.as_ref().and_then(|c| c.cost_usd);
        for (k, v) in [
            ("cost_usd", cost.map(Value::from)),
            ("total_cost_usd", trace.total_cost_usd.map(Value::from)),
            ("guard", trace.guard.clone().map(Value::from)),
            ("diverged", trace.diverged.clone().map(Value::from)),
        ] {
            if let (Some(v), Value::Object(m)) = (v, &mut payload) {
                m.insert(k.into(), v);
            }
        }
        let _ = self.ctx.notify("step", payload).await;
    }

    async fn status(&mut self, text: &str) {
        self.browser.set_status(text);
    }

    async fn save_file(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        // Files in the downloads folder join the task's downloads archive.
        let dir = self
            .browser
            .downloads_dir()
            .ok_or("this task does not capture downloads")?;
        let path = dir.join(name);
        tokio::fs::write(&path, bytes)
            .await
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    async fn acted(&mut self) -> bool {
        self.ctx.mark_effects().await.is_ok()
    }

    async fn captcha(&mut self, notice: &CaptchaNotice) -> bool {
        /// The `captcha` event's payload: the notice and where a person takes over.
        #[derive(serde::Serialize)]
        struct Payload<'a> {
            #[serde(flatten)]
            notice: &'a CaptchaNotice,
            /// The interactive live view (`null` when this process has no public URL).
            live_url: Option<String>,
        }
        let live_url = self
            .services
            .media
            .as_ref()
            .and_then(|m| m.config.public_url.as_deref())
            .map(|base| interactive_live_url(base, &self.ctx.task.id, &self.ctx.task.live_token));
        let payload = serde_json::to_value(Payload { notice, live_url }).unwrap_or_default();
        self.ctx.notify("captcha", payload).await.is_ok()
    }
}

/// The task's live view with input on: the API's `GET /live/{id}` (routes/live.rs) under the
/// public URL, as `live_url` in task responses has it, plus `interactive=true`.
fn interactive_live_url(base: &str, task_id: &str, token: &str) -> String {
    format!(
        "{}/live/{task_id}?token={token}&interactive=true",
        base.trim_end_matches('/')
    )
}

/// A task request as an agent job (files get their paths once the browser is prepared).
async fn job_for_task(ctx: &TaskContext) -> Job {
    let spec = &ctx.spec;
    let mut files = Vec::new();
    for id in &spec.files {
        let name = match ctx.store().get_file(&ctx.task.owner, id).await {
            Ok(Some(f)) => f.name,
            _ => id.clone(),
        };
        files.push((name, id.clone(), std::path::PathBuf::new()));
    }
    Job {
        task: spec.task.clone().unwrap_or_default(),
        url: spec.url.clone(),
        max_steps: spec.max_steps,
        response_model: spec.response_model.clone(),
        metadata: spec.metadata.clone(),
        files,
        secrets: Vec::new(),
        additional_tools: spec.additional_tools.keys().cloned().collect(),
        custom_tools: custom_tools(spec),
        first_step: 0,
        max_cost_usd: spec.max_cost_usd(),
        use_captcha_solver: spec.use_captcha_solver,
        replay: None,
    }
}

fn custom_tools(spec: &TaskSpec) -> Vec<CustomTool> {
    spec.custom_tools
        .iter()
        .map(|t| CustomTool {
            name: t.name.clone(),
            description: t.description.clone(),
            inputs: Value::Object(t.inputs.clone()),
        })
        .collect()
}

/// The files of a prepared browser, for the job.
fn placed_files(p: &Prepared) -> Vec<(String, String, std::path::PathBuf)> {
    p.files
        .iter()
        .map(|f| (f.name.clone(), f.id.clone(), f.path.clone()))
        .collect()
}

/// A session's `run_task` input as a job; an error names the bad field.
fn job_for_run_task(spec: &TaskSpec, input: &Value, first_step: u32) -> Result<Job, RunTaskError> {
    let input = RunTaskInput::from_json(input)?;
    let secrets = input
        .secrets
        .into_iter()
        .map(|s| Secret {
            name: s.name,
            value: s.value,
            allowed_urls: s.allowed_urls,
            totp: s.totp.map(OneTimeCodes::new),
        })
        .collect();
    Ok(Job {
        task: input.task,
        url: input.url,
        max_steps: input.max_steps,
        response_model: input.response_model,
        metadata: input.metadata,
        files: Vec::new(),
        secrets,
        additional_tools: spec.additional_tools.keys().cloned().collect(),
        custom_tools: custom_tools(spec),
        first_step,
        max_cost_usd: spec.max_cost_usd(),
        use_captcha_solver: spec.use_captcha_solver,
        replay: None,
    })
}

/// How the task ended, from the loop's end (`None`: it was stopped).
fn final_of(finish: Finish) -> Option<Final> {
    match finish.end {
        End::Done(output) => Some(Final::Done {
            output,
            credits_used: finish.credits,
        }),
        End::Failed { error, output } => Some(Final::Failed {
            error,
            output,
            credits_used: finish.credits,
        }),
        End::Stopped => None,
    }
}
