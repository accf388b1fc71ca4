//! The loop's actions: one parsed tool call carried out on the page or for the client
//! (uploads, screenshots, PDFs, custom tools, `done` and its output check).

use std::time::Duration;

use serde_json::Value;
use smoothd_browser::{ActError, Action as PageAction, ActionResult, Driver};
use tokio_util::sync::CancellationToken;

use super::{End, Host, Run, Step, ToolAnswer, cut, unstringify};
use crate::prompt;
use crate::tools::Action;

impl Run {
    /// Runs one parsed action; the page-changing ones first tell the host (which may stop the task).
    pub(super) async fn act(
        &mut self,
        host: &mut dyn Host,
        d: &mut Driver<'_>,
        action: Action,
        stop: &CancellationToken,
        pending_shot: &mut Option<Vec<u8>>,
    ) -> Step {
        let changes_page = !matches!(
            action,
            Action::Done { .. } | Action::Custom { .. } | Action::Wait { .. } | Action::Screenshot { .. }
        );
        if changes_page && !host.acted().await {
            return Step::End(End::Stopped);
        }
        Step::Result(match action {
            Action::Goto { url } => d.act(PageAction::Goto { url }).await,
            Action::Click { index } => d.act(PageAction::Click { index }).await,
            Action::Type { index, text, submit } => {
                let url = d.url().await;
                let min_left = self.agent.config.totp_min_validity;
                let wait = prompt::code_wait(&text, &self.job.secrets, &url, crate::otp::now(), min_left);
                if !wait.is_zero() {
                    // Past the period's boundary by a little, so the code is the next one.
                    tokio::select! {
                        () = tokio::time::sleep(wait + Duration::from_millis(50)) => {}
                        () = stop.cancelled() => return Step::End(End::Stopped),
                    }
                }
                match prompt::unmask(&text, &self.job.secrets, &url) {
                    Ok(text) => d.act(PageAction::Type { index, text, submit }).await,
                    Err(why) => Err(ActError::Model(why)),
                }
            }
            Action::SelectOption { index, option } => d.act(PageAction::SelectOption { index, option }).await,
            Action::Scroll { down, pages } => d.act(PageAction::Scroll { down, pages }).await,
            Action::PressKey { key } => d.act(PageAction::PressKey { key }).await,
            Action::GoBack => d.act(PageAction::GoBack).await,
            Action::SwitchTab { tab } => d.act(PageAction::SwitchTab { tab }).await,
            Action::UploadFile { index, file } => self.upload(d, index, &file).await,
            Action::Wait { seconds } => {
                tokio::select! {
                    e = d.act(PageAction::Wait { seconds }) => e,
                    () = stop.cancelled() => return Step::End(End::Stopped),
                }
            }
            Action::Hover { index } => d.act(PageAction::Hover { index }).await,
            Action::DragDrop { from, to } => d.act(PageAction::DragDrop { from, to }).await,
            Action::Screenshot { full_page } => self.screenshot(host, d, full_page, pending_shot).await,
            Action::PrintPage => self.print_page(host, d).await,
            Action::Custom { name, input } => return self.custom_tool(host, name, input).await,
            Action::Done { output, success } => return self.done(output, success),
        })
    }

    /// Uploads one of the task's files (by name, id or a path ending in its name).
    pub(super) async fn upload(
        &self,
        d: &mut Driver<'_>,
        index: u32,
        file: &str,
    ) -> Result<ActionResult, ActError> {
        let found = self
            .job
            .files
            .iter()
            .find(|(name, id, _)| *name == file || *id == file || file.ends_with(&format!("/{name}")));
        if let Some((_, _, path)) = found {
            return d
                .act(PageAction::Upload {
                    index,
                    path: path.clone(),
                })
                .await;
        }
        let names: Vec<&str> = self.job.files.iter().map(|f| f.0.as_str()).collect();
        Err(ActError::Model(if names.is_empty() {
            "this task has no files to upload".into()
        } else {
            format!("no file {file:?}; the task's files are: {}", names.join(", "))
        }))
    }

    /// Saves a screenshot to the task's files and shows it to the model with the next view.
    pub(super) async fn screenshot(
        &self,
        host: &mut dyn Host,
        d: &mut Driver<'_>,
        full_page: bool,
        pending_shot: &mut Option<Vec<u8>>,
    ) -> Result<ActionResult, ActError> {
        let png = d.screenshot(full_page, false).await?;
        let name = format!("screenshot-{}.png", self.started.elapsed().as_millis());
        let saved = host.save_file(&name, &png).await;
        *pending_shot = d.screenshot(false, true).await.ok();
        Ok(ActionResult {
            navigated: false,
            note: match saved {
                Ok(()) => format!("saved {name}; you see it with the next view"),
                Err(e) => format!("taken (not saved: {e}); you see it with the next view"),
            },
        })
    }

    /// Saves the page as a PDF to the task's files.
    pub(super) async fn print_page(
        &self,
        host: &mut dyn Host,
        d: &mut Driver<'_>,
    ) -> Result<ActionResult, ActError> {
        let pdf = d.pdf().await?;
        let name = format!("page-{}.pdf", self.started.elapsed().as_millis());
        match host.save_file(&name, &pdf).await {
            Ok(()) => Ok(ActionResult {
                navigated: false,
                note: format!("saved {name}"),
            }),
            Err(e) => Err(ActError::Model(format!("could not save the PDF: {e}"))),
        }
    }

    /// A round trip to the client for a custom tool.
    pub(super) async fn custom_tool(&self, host: &mut dyn Host, name: String, input: Value) -> Step {
        let timeout = self.agent.config.custom_tool_timeout;
        match host.call_tool(&name, input, timeout).await {
            ToolAnswer::Ok(v) => Step::Text(format!(
                "ok: {}",
                match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                }
            )),
            ToolAnswer::Error(e) => Step::Text(format!("error: {e}")),
            ToolAnswer::Fatal(e) => Step::End(End::Failed {
                error: format!("the custom tool {name} failed: {e}"),
                output: self.best_output.clone(),
            }),
            ToolAnswer::TimedOut => Step::Text(format!(
                "error: the tool {name} did not answer within {} s",
                timeout.as_secs()
            )),
            ToolAnswer::Stopped => Step::End(End::Stopped),
        }
    }

    pub(super) fn done(&mut self, output: Value, success: bool) -> Step {
        if !success {
            let text = match &output {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            return Step::End(End::Failed {
                error: format!("the agent could not complete the task: {}", cut(&text, 500)),
                output: Some(output),
            });
        }
        let Some(schema) = &self.job.response_model else {
            return Step::End(End::Done(output));
        };
        let output = unstringify(output, schema);
        self.best_output = Some(output.clone());
        let validator = match jsonschema::validator_for(schema) {
            Ok(v) => v,
            // The schema was checked at submit; accept rather than loop forever.
            Err(_) => return Step::End(End::Done(output)),
        };
        let errors: Vec<String> = validator
            .iter_errors(&output)
            .take(5)
            .map(|e| {
                let at = e.instance_path.to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if errors.is_empty() {
            Step::End(End::Done(output))
        } else {
            Step::Text(format!(
                "error: output does not match the response model: {}. Call done again with a corrected output.",
                errors.join("; ")
            ))
        }
    }
}
