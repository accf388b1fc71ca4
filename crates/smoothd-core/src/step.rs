//! One agent step's trace, as stored and as `GET /v1/task/{id}/steps` returns it: built once
//! by the agent loop, read for metrics by the worker, serialised once by the store.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What one step saw, asked and did.
///
/// On the wire: `{"step", "url", "view_chars", "view", "model", "actions", "error"}`, plus the
/// [`StepCost`] keys when the model answered (`error` is then `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTrace {
    /// The step's number in the task (a session's steps continue across `run_task`s).
    pub step: u32,
    /// The page's URL when the step observed it.
    pub url: String,
    /// Characters of the page view sent to the model.
    pub view_chars: usize,
    /// The page view as the model saw it (secrets masked), cut to [`VIEW_KEPT_CHARS`]; absent in
    /// traces recorded before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
    /// The model asked.
    pub model: String,
    /// What the model's answer cost; absent when the model failed.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<StepCost>,
    /// The actions taken, in order (none when the model failed).
    pub actions: Vec<ActionTrace>,
    /// Why the model failed, or `null`.
    pub error: Option<String>,
    /// Where the step's actions came from: the model, or a recorded path (replay); absent in
    /// traces recorded before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<StepSource>,
    /// On the step where the model took over a replay: which recorded step did not match, and
    /// what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged: Option<String>,
}

/// Where a step's actions came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepSource {
    /// The model chose them.
    Model,
    /// A recorded path (`experimental_features.replay`) repeated them without a model request.
    Replay,
}

/// How much of a step's page view its trace keeps (the model saw `view_chars` in all).
pub const VIEW_KEPT_CHARS: usize = 32_000;

/// The page view to keep in a trace: at most [`VIEW_KEPT_CHARS`] characters, and a note when cut.
pub fn kept_view(view: &str) -> String {
    match view.char_indices().nth(VIEW_KEPT_CHARS) {
        None => view.to_string(),
        Some((at, _)) => format!(
            "{}\n… (cut: the model saw {} characters)",
            &view[..at],
            view.chars().count()
        ),
    }
}

/// The model's answer to a step and the time it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepCost {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Waiting for the model, retries included.
    pub llm_ms: u64,
    /// Carrying out the actions.
    pub act_ms: u64,
    /// The whole step, observation included.
    pub step_ms: u64,
    /// Model requests retried.
    pub retries: u32,
    /// From the claim to the first model request (the first step only, else `null`).
    pub first_request_ms: Option<u64>,
    /// The model's reasoning, cut and with secrets masked.
    pub reasoning: String,
    /// What this answer cost in US dollars at the model's price (`llm_prices`), or `null`
    /// without a price for the model.
    #[serde(default)]
    pub cost_usd: Option<f64>,
}

/// One action of a step: the tool, its arguments (secrets masked) and the result the model
/// was told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionTrace {
    pub name: String,
    pub args: Value,
    pub result: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn acted() -> StepTrace {
        StepTrace {
            step: 2,
            url: "https://example.com/".into(),
            view_chars: 120,
            view: Some("[0] <button> Go".into()),
            model: "m".into(),
            cost: Some(StepCost {
                prompt_tokens: 10,
                completion_tokens: 3,
                llm_ms: 40,
                act_ms: 5,
                step_ms: 50,
                retries: 1,
                first_request_ms: None,
                reasoning: "click it".into(),
                cost_usd: Some(0.25),
            }),
            actions: vec![ActionTrace {
                name: "click".into(),
                args: json!({"index": 0}),
                result: "ok".into(),
            }],
            error: None,
            source: None,
            diverged: None,
        }
    }

    #[test]
    fn a_step_the_model_answered_has_every_key() {
        assert_eq!(
            serde_json::to_value(acted()).unwrap(),
            json!({
                "step": 2, "url": "https://example.com/", "view_chars": 120,
                "view": "[0] <button> Go", "model": "m",
                "prompt_tokens": 10, "completion_tokens": 3, "llm_ms": 40, "act_ms": 5,
                "step_ms": 50, "retries": 1, "first_request_ms": null, "reasoning": "click it",
                "cost_usd": 0.25,
                "actions": [{"name": "click", "args": {"index": 0}, "result": "ok"}],
                "error": null,
            })
        );
    }

    #[test]
    fn a_failed_model_call_leaves_out_the_cost() {
        let failed = StepTrace {
            cost: None,
            actions: Vec::new(),
            error: Some("timed out".into()),
            ..acted()
        };
        let v = serde_json::to_value(&failed).unwrap();
        assert_eq!(
            v,
            json!({"step": 2, "url": "https://example.com/", "view_chars": 120,
                   "view": "[0] <button> Go", "model": "m", "actions": [], "error": "timed out"})
        );
        assert_eq!(serde_json::from_value::<StepTrace>(v).unwrap(), failed);
        let back: StepTrace = serde_json::from_value(serde_json::to_value(acted()).unwrap()).unwrap();
        assert_eq!(back, acted());
    }

    #[test]
    fn source_and_divergence_are_kept_when_set() {
        let healed = StepTrace {
            source: Some(StepSource::Model),
            diverged: Some("recorded step 2 of 3: no element matches".into()),
            ..acted()
        };
        let v = serde_json::to_value(&healed).unwrap();
        assert_eq!(v["source"], json!("model"));
        assert_eq!(serde_json::from_value::<StepTrace>(v).unwrap(), healed);
    }

    #[test]
    fn a_long_view_is_cut_on_a_character_boundary_with_a_note() {
        let short = "é".repeat(10);
        assert_eq!(kept_view(&short), short);
        let long = "é".repeat(VIEW_KEPT_CHARS + 5);
        let kept = kept_view(&long);
        assert!(kept.starts_with(&"é".repeat(VIEW_KEPT_CHARS)));
        assert!(
            kept.ends_with(&format!("the model saw {} characters)", VIEW_KEPT_CHARS + 5)),
            "{kept}"
        );
    }
}
