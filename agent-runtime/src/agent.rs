//! The agent seam: what `POST /chat` and `POST /chat/stream` call.
//!
//! The HTTP layer only knows [`Agent`]; backends (the built-in [`EchoAgent`] here, real
//! backends elsewhere) implement it, and decorators (a durable run store, for one) can wrap
//! another `Agent`.

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use serde::{Deserialize, Serialize};

/// What a client asks an agent.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AgentRequest {
    /// The user's message.
    pub message: String,
    /// Client-chosen run id (idempotency key), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Any other fields of the request body, passed through to the backend.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// An agent's answer.
#[derive(Debug, Clone, Serialize)]
pub struct AgentReply {
    /// The agent's output text.
    pub output: String,
    /// Run id, when the backend (or a run store) assigned one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Backend-specific extra fields, merged into the response body.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// What went wrong talking to an agent backend; [`crate::error`] decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentErrorKind {
    /// The backend could not be reached or failed (`agent_unavailable`).
    Unavailable,
    /// The backend answered with an error status or an unusable body (`agent_bad_response`).
    BadResponse,
    /// The backend did not answer in time (`agent_timeout`).
    Timeout,
}

impl AgentErrorKind {
    /// The stable `error` code of this kind.
    pub fn code(self) -> &'static str {
        match self {
            AgentErrorKind::Unavailable => "agent_unavailable",
            AgentErrorKind::BadResponse => "agent_bad_response",
            AgentErrorKind::Timeout => "agent_timeout",
        }
    }
}

/// An agent backend's failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    /// What kind of failure.
    pub kind: AgentErrorKind,
    /// Human-readable detail (`message` field).
    pub message: String,
}

impl AgentError {
    /// Builds an error.
    pub fn new(kind: AgentErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The stable `error` code (`agent_timeout`, ...).
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }
}

/// A stream of output chunks.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<String, AgentError>> + Send + 'static>>;

/// An agent backend.
#[async_trait]
pub trait Agent: Send + Sync + 'static {
    /// Backend name (reported in responses and logs).
    fn name(&self) -> &'static str;

    /// Runs the agent to completion.
    async fn run(&self, request: AgentRequest) -> Result<AgentReply, AgentError>;

    /// Runs the agent, yielding output as it comes. The default runs [`Agent::run`] and
    /// yields its output as one chunk.
    async fn stream(&self, request: AgentRequest) -> Result<ChunkStream, AgentError> {
        let reply = self.run(request).await?;
        Ok(Box::pin(futures::stream::once(
            async move { Ok(reply.output) },
        )))
    }
}

/// The built-in agent: answers with the message, after an optional delay.
#[derive(Debug, Clone)]
pub struct EchoAgent {
    /// Wait before answering (for showing load and overload without an LLM).
    pub delay: Duration,
}

#[async_trait]
impl Agent for EchoAgent {
    fn name(&self) -> &'static str {
        "echo"
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentReply, AgentError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        Ok(AgentReply {
            output: request.message,
            run_id: request.run_id,
            extra: serde_json::Map::new(),
        })
    }

    /// Streams the message word by word, spreading the delay over the words.
    async fn stream(&self, request: AgentRequest) -> Result<ChunkStream, AgentError> {
        let words: Vec<String> = request
            .message
            .split_inclusive(' ')
            .map(str::to_owned)
            .collect();
        let per_word = if words.is_empty() {
            Duration::ZERO
        } else {
            self.delay / words.len() as u32
        };
        let stream = futures::stream::unfold(words.into_iter(), move |mut it| async move {
            let word = it.next()?;
            if !per_word.is_zero() {
                tokio::time::sleep(per_word).await;
            }
            Some((Ok(word), it))
        });
        Ok(Box::pin(stream))
    }
}
