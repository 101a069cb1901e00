//! The `openai` backend: an OpenAI-compatible chat-completions client.
//!
//! `POST {OPENAI_BASE_URL}/chat/completions` with `{"model", "messages": [{"role": "user",
//! "content": message}]}`; the answer is `choices[0].message.content`. Streaming sets
//! `"stream": true` and reads server-sent events: each `data:` line holds a chunk whose
//! `choices[0].delta.content` is the next piece of text, and `data: [DONE]` ends the stream.
//!
//! How long the answer and the chunks may take is [`super::Timed`]'s to bound; this backend only
//! bounds connecting.
//!
//! The API key is an [`ApiKey`]: it goes into the `Authorization` header and nowhere else
//! (no log field, no error message, redacted in `Debug`).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::event_stream::{EventReader, Step, chunks};
use super::sse::SseEvent;
use super::{AgentConfigError, ApiKey, bad_response, client, upstream_error};
use crate::agent::{Agent, AgentError, AgentReply, AgentRequest, ChunkStream};

const UPSTREAM: &str = "the OpenAI-compatible API";
/// The event that ends a chat-completions stream.
pub const DONE: &str = "[DONE]";

/// See the module docs.
#[derive(Debug, Clone)]
pub struct OpenAiAgent {
    name: &'static str,
    endpoint: reqwest::Url,
    api_key: Option<ApiKey>,
    model: String,
    client: reqwest::Client,
}

impl OpenAiAgent {
    /// A client of the API at `base_url` (ending in `/v1` for OpenAI itself), giving up
    /// connecting after `connect_timeout`.
    pub fn new(
        base_url: reqwest::Url,
        api_key: Option<ApiKey>,
        model: String,
        connect_timeout: Duration,
    ) -> Result<Self, AgentConfigError> {
        let base = base_url.as_str().trim_end_matches('/');
        let endpoint = reqwest::Url::parse(&format!("{base}/chat/completions"))
            .map_err(|e| AgentConfigError(format!("OPENAI_BASE_URL {base:?}: {e}")))?;
        Ok(Self {
            name: "openai",
            endpoint,
            api_key,
            model,
            client: client(connect_timeout)?,
        })
    }

    /// The `http` backend in its `chat-completions` format: the same client, POSTing to the
    /// whole `endpoint` URL the user gave (`FASTAGENTIC_AGENT_URL`), without a key.
    pub fn at_endpoint(
        endpoint: reqwest::Url,
        model: String,
        connect_timeout: Duration,
    ) -> Result<Self, AgentConfigError> {
        Ok(Self {
            name: "http",
            endpoint,
            api_key: None,
            model,
            client: client(connect_timeout)?,
        })
    }

    fn request(&self, request: &AgentRequest, stream: bool) -> reqwest::RequestBuilder {
        let mut body = json!({
            "model": self.model,
            "messages": [{"role": "user", "content": request.message}],
        });
        if stream {
            body["stream"] = Value::Bool(true);
        }
        let builder = self.client.post(self.endpoint.clone()).json(&body);
        match &self.api_key {
            Some(key) => builder.bearer_auth(key.expose()),
            None => builder,
        }
    }

    async fn send(
        &self,
        request: &AgentRequest,
        stream: bool,
    ) -> Result<reqwest::Response, AgentError> {
        tracing::debug!(endpoint = %self.endpoint, model = %self.model, stream, "calling chat completions");
        let response = super::send(UPSTREAM, self.request(request, stream)).await?;
        let status = response.status();
        if status.is_success() {
            Ok(response)
        } else {
            let detail = response
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_default();
            Err(bad_response(
                UPSTREAM,
                format!("HTTP {status} {detail}").trim_end(),
            ))
        }
    }

    async fn complete(&self, request: AgentRequest) -> Result<AgentReply, AgentError> {
        let response = self.send(&request, false).await?;
        let body: Value = response
            .json()
            .await
            .map_err(|e| upstream_error(UPSTREAM, &e))?;
        reply_from(body, request.run_id)
    }
}

/// Reads a chat-completions answer (pure).
pub fn reply_from(body: Value, run_id: Option<String>) -> Result<AgentReply, AgentError> {
    let Some(output) = body["choices"][0]["message"]["content"].as_str() else {
        return Err(bad_response(
            UPSTREAM,
            "no string at choices[0].message.content",
        ));
    };
    let mut extra = serde_json::Map::new();
    for field in ["model", "usage"] {
        if let Some(value) = body.get(field) {
            extra.insert(field.to_owned(), value.clone());
        }
    }
    Ok(AgentReply {
        output: output.to_owned(),
        run_id,
        extra,
    })
}

/// What one streamed event means (pure).
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// The next piece of text.
    Text(String),
    /// An event without text (role announcement, finish reason).
    Empty,
    /// `[DONE]`.
    Done,
}

/// Reads one `data:` payload of a chat-completions stream.
pub fn parse_stream_event(data: &str) -> Result<StreamEvent, AgentError> {
    if data.trim() == DONE {
        return Ok(StreamEvent::Done);
    }
    let chunk: Value = serde_json::from_str(data)
        .map_err(|e| bad_response(UPSTREAM, format!("unreadable stream event: {e}")))?;
    if let Some(message) = chunk["error"]["message"].as_str() {
        return Err(bad_response(UPSTREAM, format!("stream error: {message}")));
    }
    Ok(match chunk["choices"][0]["delta"]["content"].as_str() {
        Some(text) if !text.is_empty() => StreamEvent::Text(text.to_owned()),
        _ => StreamEvent::Empty,
    })
}

/// The events of a chat-completions stream, for [`chunks`].
struct CompletionEvents;

impl EventReader for CompletionEvents {
    fn on_event(&mut self, event: &SseEvent) -> Result<Step, AgentError> {
        Ok(match parse_stream_event(&event.data)? {
            StreamEvent::Text(text) => Step::Text(text),
            StreamEvent::Empty => Step::Skip,
            StreamEvent::Done => Step::Done(None),
        })
    }
}

#[async_trait]
impl Agent for OpenAiAgent {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentReply, AgentError> {
        self.complete(request).await
    }

    async fn stream(&self, request: AgentRequest) -> Result<ChunkStream, AgentError> {
        let response = self.send(&request, true).await?;
        Ok(chunks(UPSTREAM, response, CompletionEvents))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_are_read() {
        let body = json!({"model": "m", "usage": {"total_tokens": 3},
                          "choices": [{"message": {"role": "assistant", "content": "hi"}}]});
        let reply = reply_from(body, None);
        assert!(
            matches!(&reply, Ok(r) if r.output == "hi" && r.extra["model"] == "m"),
            "{reply:?}"
        );
        let err = reply_from(json!({"choices": []}), None);
        assert!(
            matches!(&err, Err(e) if e.kind == crate::agent::AgentErrorKind::BadResponse),
            "{err:?}"
        );
    }

    #[test]
    fn stream_events_are_read() {
        assert_eq!(
            parse_stream_event(r#"{"choices":[{"delta":{"content":"Hel"}}]}"#).ok(),
            Some(StreamEvent::Text("Hel".into()))
        );
        assert_eq!(
            parse_stream_event(r#"{"choices":[{"delta":{"role":"assistant"}}]}"#).ok(),
            Some(StreamEvent::Empty)
        );
        assert_eq!(parse_stream_event("[DONE]").ok(), Some(StreamEvent::Done));
        assert!(parse_stream_event("{not json").is_err());
        assert!(parse_stream_event(r#"{"error":{"message":"overloaded"}}"#).is_err());
    }
}
