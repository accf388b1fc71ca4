//! The model endpoint: one chat-completion call with our own retries (counted), a hard timeout
//! per attempt, and a reply parsed tolerantly (OpenAI, vLLM, Ollama and llama.cpp differ in
//! small ways).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::ReqwestService;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// USD per million tokens, in and out, for one model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

/// How to reach the model.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
    /// One attempt's limit (connect, send, wait, read).
    pub timeout: Duration,
    /// Further attempts after a retryable failure (429, 5xx, timeout, unreadable reply).
    pub max_retries: u32,
    /// The first backoff; doubled per retry (a `Retry-After` is not read: the bound matters more).
    pub retry_base: Duration,
    /// Cap on the reply's length.
    pub max_completion_tokens: u32,
    /// Model name → price, for `credits_used`.
    pub prices: HashMap<String, Price>,
}

/// A model call failed for good (after retries).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("the model endpoint {endpoint} failed after {attempts} attempt(s): {last}")]
    Exhausted {
        endpoint: String,
        attempts: u32,
        last: String,
    },
    #[error("the model endpoint {endpoint} refused the request: {message}")]
    Refused { endpoint: String, message: String },
    #[error("stopped")]
    Stopped,
    /// The agent chose not to send the request: the spend cap or the loop guard ends the run
    /// (the text is the run's final error).
    #[error("{0}")]
    Withheld(String),
}

/// Token counts of one reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
}

/// One tool call the model asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The raw argument text (JSON when the model behaves).
    pub arguments: String,
}

/// What came back from one successful call.
#[derive(Debug, Clone)]
pub struct Reply {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    /// Time spent waiting for the endpoint, all attempts included.
    pub latency: Duration,
    pub retries: u32,
}

/// The OpenAI-compatible client.
#[derive(Clone)]
pub struct Llm {
    client: Client<OpenAIConfig>,
    config: LlmConfig,
}

impl std::fmt::Debug for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llm")
            .field("base_url", &self.config.base_url)
            .field("model", &self.config.model)
            .finish_non_exhaustive()
    }
}

enum Attempt {
    Retry(String),
    Fatal(String),
}

impl Llm {
    pub fn new(config: LlmConfig) -> Result<Self, String> {
        let http = reqwest013::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut oc = OpenAIConfig::new().with_api_base(config.base_url.trim_end_matches('/'));
        // Local servers (vLLM, Ollama, llama.cpp) accept any key; send one so the header is set.
        oc = oc.with_api_key(config.api_key.clone().unwrap_or_else(|| "none".into()));
        let client = Client::with_config(oc).with_http_service(ReqwestService::new(http));
        Ok(Self { client, config })
    }

    /// The same endpoint and settings with another model (`agent: "smooth-lite"`).
    pub fn with_model(&self, model: &str) -> Self {
        let mut other = self.clone();
        other.config.model = model.to_string();
        other
    }

    /// The model this client asks.
    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// The cap on a reply's length.
    pub fn max_completion_tokens(&self) -> u32 {
        self.config.max_completion_tokens
    }

    /// The model's price, if the table names it.
    pub fn price(&self) -> Option<Price> {
        self.config.prices.get(&self.config.model).copied()
    }

    /// Sends one chat request (`model` and `max_completion_tokens` are filled in), retrying
    /// retryable failures with exponential backoff, and stopping at once when `stop` fires.
    pub async fn chat(&self, mut request: Value, stop: &CancellationToken) -> Result<Reply, LlmError> {
        if let Value::Object(m) = &mut request {
            m.insert("model".into(), Value::String(self.config.model.clone()));
            m.insert("stream".into(), Value::Bool(false));
            m.entry("max_tokens")
                .or_insert(Value::from(self.config.max_completion_tokens));
        }
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let chat = self.client.chat();
            let outcome = tokio::select! {
                r = chat.create_byot::<_, Value>(&request) => r,
                () = stop.cancelled() => return Err(LlmError::Stopped),
            };
            let failure = match outcome {
                Ok(body) => match parse_reply(&body) {
                    Ok((content, tool_calls, usage)) => {
                        return Ok(Reply {
                            content,
                            tool_calls,
                            usage,
                            latency: started.elapsed(),
                            retries: attempts - 1,
                        });
                    }
                    Err(why) => Attempt::Retry(why),
                },
                Err(e) => classify(e),
            };
            let last = match failure {
                // Newer OpenAI models refuse `max_tokens` and want `max_completion_tokens`.
                Attempt::Fatal(message)
                    if message.contains("max_tokens") && request.get("max_tokens").is_some() =>
                {
                    if let Value::Object(m) = &mut request
                        && let Some(v) = m.remove("max_tokens")
                    {
                        m.insert("max_completion_tokens".into(), v);
                    }
                    attempts -= 1;
                    continue;
                }
                Attempt::Fatal(message) => {
                    return Err(LlmError::Refused {
                        endpoint: self.config.base_url.clone(),
                        message,
                    });
                }
                Attempt::Retry(why) => why,
            };
            if attempts > self.config.max_retries {
                return Err(LlmError::Exhausted {
                    endpoint: self.config.base_url.clone(),
                    attempts,
                    last,
                });
            }
            tracing::warn!(attempt = attempts, error = %last, "model call failed; retrying");
            let backoff = self.config.retry_base * 2u32.saturating_pow(attempts - 1);
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => return Err(LlmError::Stopped),
            }
        }
    }
}

/// Which failures are worth another attempt: rate limits, server errors, timeouts and broken
/// connections are; a 4xx other than 429 (bad key, unknown model) is not.
fn classify(e: OpenAIError) -> Attempt {
    match e {
        OpenAIError::Reqwest(e) if e.is_timeout() => Attempt::Retry("timed out".into()),
        OpenAIError::Reqwest(e) => match e.status() {
            Some(s) if s.as_u16() == 429 || s.is_server_error() => Attempt::Retry(format!("HTTP {s}")),
            Some(s) => Attempt::Fatal(format!("HTTP {s}")),
            None => Attempt::Retry(e.to_string()),
        },
        OpenAIError::ApiError(api) => {
            let text = api.api_error.to_string();
            let status = api.status_code.as_u16();
            if status == 429 || status >= 500 {
                Attempt::Retry(format!("HTTP {status}: {text}"))
            } else {
                Attempt::Fatal(format!("HTTP {status}: {text}"))
            }
        }
        OpenAIError::JSONDeserialize(e, _) => Attempt::Retry(format!("unreadable reply: {e}")),
        other => Attempt::Retry(other.to_string()),
    }
}

/// Content, tool calls and usage out of a chat-completion body. Tool calls whose arguments are
/// not JSON are kept: the loop reports them to the model as an error to fix.
fn parse_reply(body: &Value) -> Result<(String, Vec<ToolCall>, Usage), String> {
    let message = body
        .pointer("/choices/0/message")
        .ok_or_else(|| "the reply has no choices[0].message".to_string())?;
    let content = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    };
    let mut tool_calls = Vec::new();
    for (i, tc) in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = tc
            .pointer("/function/name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("tool call {i} has no function name"))?;
        let arguments = match tc.pointer("/function/arguments") {
            Some(Value::String(s)) => s.clone(),
            Some(v @ Value::Object(_)) => v.to_string(), // Ollama sends an object
            _ => "{}".to_string(),
        };
        let id = tc
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map_or_else(|| format!("call_{i}"), str::to_string);
        tool_calls.push(ToolCall {
            id,
            name: name.to_string(),
            arguments,
        });
    }
    let usage = Usage {
        prompt: body
            .pointer("/usage/prompt_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        completion: body
            .pointer("/usage/completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    };
    Ok((content, tool_calls, usage))
}

/// What the tokens used cost in US dollars at `price`, or None without a price for the model.
pub fn usd(usage: Usage, price: Option<Price>) -> Option<f64> {
    let p = price?;
    Some(usage.prompt as f64 * p.input / 1e6 + usage.completion as f64 * p.output / 1e6)
}

/// Credits (1 credit = $0.01, rounded up) for the tokens used at `price`.
pub fn credits(usage: Usage, price: Option<Price>) -> i64 {
    let Some(usd) = usd(usage, price) else { return 0 };
    let cents = (usd * 100.0 - 1e-9).ceil();
    if cents.is_finite() && cents > 0.0 {
        cents as i64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_tool_calls_from_strings_and_objects() {
        let body = json!({"choices": [{"message": {"content": null, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "click", "arguments": "{\"index\": 3}"}},
            {"type": "function", "function": {"name": "done", "arguments": {"output": "x"}}}
        ]}}], "usage": {"prompt_tokens": 10, "completion_tokens": 2}});
        let (content, calls, usage) = parse_reply(&body).unwrap();
        assert_eq!(content, "");
        assert_eq!(calls[0].id, "a");
        assert_eq!(calls[1].id, "call_1");
        assert_eq!(calls[1].arguments, r#"{"output":"x"}"#);
        assert_eq!(
            usage,
            Usage {
                prompt: 10,
                completion: 2
            }
        );
        assert!(parse_reply(&json!({"nope": 1})).is_err());
    }

    #[test]
    fn credits_round_up_to_the_cent() {
        let p = Some(Price {
            input: 1.0,
            output: 2.0,
        });
        assert_eq!(
            credits(
                Usage {
                    prompt: 0,
                    completion: 0
                },
                p
            ),
            0
        );
        assert_eq!(
            credits(
                Usage {
                    prompt: 1,
                    completion: 0
                },
                p
            ),
            1
        );
        assert_eq!(
            credits(
                Usage {
                    prompt: 10_000,
                    completion: 0
                },
                p
            ),
            1
        );
        assert_eq!(
            credits(
                Usage {
                    prompt: 10_001,
                    completion: 0
                },
                p
            ),
            2
        );
        assert_eq!(
            credits(
                Usage {
                    prompt: 1_000_000,
                    completion: 1_000_000
                },
                p
            ),
            300
        );
        assert_eq!(
            credits(
                Usage {
                    prompt: 5,
                    completion: 5
                },
                None
            ),
            0
        );
    }
}
