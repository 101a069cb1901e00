//! The time limits of every agent backend, as one decorator: [`Timed`] wraps the backend that
//! `--agent` picked, so `echo`, `http` and `openai` are bounded alike and no backend keeps a
//! timer of its own (they only bound connecting, see [`super::client`]).
//!
//! - first byte (`--agent-first-byte-timeout`, default `--agent-timeout`): from the call until
//!   the answer of `run`, or until the first chunk of a stream, opening the stream included;
//! - stream idle (`--stream-idle-timeout`, default `--agent-timeout`): between two chunks;
//! - run (`--run-max-duration`, 0 = unlimited): the whole call, a stream up to its last chunk.
//!
//! A limit that fires is an [`AgentError`] of kind [`AgentErrorKind::Timeout`] whose message
//! names the limit, its value and its flag: the HTTP edge answers 504 `agent_timeout` (or ends a
//! stream that already began with that `event: error`), and the run is recorded `failed` with
//! it. When the run limit ends no later than the wait it bounds, the run limit is the one named.
//!
//! Which deadline applies next is [`next_deadline`], a pure function of the limits and the
//! phase; the decorator only awaits it with tokio's `timeout_at`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::time::Instant;

use crate::agent::{Agent, AgentError, AgentErrorKind, AgentReply, AgentRequest, ChunkStream};

/// The limits [`Timed`] enforces, resolved from the options (defaults applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLimits {
    /// Until the answer, or a stream's first chunk (`--agent-first-byte-timeout`).
    pub first_byte: Duration,
    /// Between two chunks of a stream (`--stream-idle-timeout`).
    pub stream_idle: Duration,
    /// The whole run (`--run-max-duration`); `None`: unlimited.
    pub run_max: Option<Duration>,
}

/// Where a call is: waiting for its first byte, or streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No answer and no chunk yet.
    FirstByte,
    /// At least one chunk came; waiting for the next.
    Streaming,
}

/// One of the limits, as named in the error it gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `--agent-first-byte-timeout`.
    FirstByte,
    /// `--stream-idle-timeout`.
    StreamIdle,
    /// `--run-max-duration`.
    RunMax,
}

impl Limit {
    /// The flag that sets this limit.
    pub fn flag(self) -> &'static str {
        match self {
            Limit::FirstByte => "--agent-first-byte-timeout",
            Limit::StreamIdle => "--stream-idle-timeout",
            Limit::RunMax => "--run-max-duration",
        }
    }

    /// The error of this limit firing, naming it, its value (`limits`) and its flag.
    pub fn error(self, limits: &TimeLimits) -> AgentError {
        let seconds = |d: Duration| d.as_secs_f64();
        let message = match self {
            Limit::FirstByte => format!(
                "no first byte from the agent within {} s ({})",
                seconds(limits.first_byte),
                self.flag()
            ),
            Limit::StreamIdle => format!(
                "no chunk from the agent for {} s ({})",
                seconds(limits.stream_idle),
                self.flag()
            ),
            Limit::RunMax => format!(
                "the run did not finish within {} s ({})",
                seconds(limits.run_max.unwrap_or_default()),
                self.flag()
            ),
        };
        AgentError::new(AgentErrorKind::Timeout, message)
    }
}

/// The deadline of the next wait of a call that `started`, now that it is in `phase`, and the
/// limit that deadline belongs to. The run limit wins when it ends no later than the wait's.
pub fn next_deadline(
    limits: &TimeLimits,
    started: Instant,
    now: Instant,
    phase: Phase,
) -> (Instant, Limit) {
    let wait = match phase {
        Phase::FirstByte => (started + limits.first_byte, Limit::FirstByte),
        Phase::Streaming => (now + limits.stream_idle, Limit::StreamIdle),
    };
    match limits.run_max {
        Some(max) if started + max <= wait.0 => (started + max, Limit::RunMax),
        _ => wait,
    }
}

/// An agent backend under [`TimeLimits`] (see the module docs).
pub struct Timed {
    inner: Arc<dyn Agent>,
    limits: TimeLimits,
}

impl Timed {
    /// `inner` under `limits`.
    pub fn new(inner: Arc<dyn Agent>, limits: TimeLimits) -> Self {
        Self { inner, limits }
    }

    /// The limits enforced.
    pub fn limits(&self) -> TimeLimits {
        self.limits
    }
}

impl std::fmt::Debug for Timed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timed")
            .field("agent", &self.inner.name())
            .field("limits", &self.limits)
            .finish()
    }
}

/// A stream being watched: the backend's chunks, when the call started and where it is.
struct Watched {
    chunks: ChunkStream,
    limits: TimeLimits,
    started: Instant,
    phase: Phase,
    ended: bool,
}

impl Watched {
    /// The next chunk, the backend's end or error, or the error of the limit that fired (which
    /// ends the stream).
    async fn next(&mut self) -> Option<Result<String, AgentError>> {
        if self.ended {
            return None;
        }
        let (deadline, limit) =
            next_deadline(&self.limits, self.started, Instant::now(), self.phase);
        match tokio::time::timeout_at(deadline, self.chunks.next()).await {
            Ok(Some(item)) => {
                self.phase = Phase::Streaming;
                Some(item)
            }
            Ok(None) => None,
            Err(_) => {
                self.ended = true;
                Some(Err(limit.error(&self.limits)))
            }
        }
    }
}

#[async_trait]
impl Agent for Timed {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentReply, AgentError> {
        let started = Instant::now();
        let (deadline, limit) = next_deadline(&self.limits, started, started, Phase::FirstByte);
        tokio::time::timeout_at(deadline, self.inner.run(request))
            .await
            .map_err(|_| limit.error(&self.limits))?
    }

    async fn stream(&self, request: AgentRequest) -> Result<ChunkStream, AgentError> {
        let started = Instant::now();
        let (deadline, limit) = next_deadline(&self.limits, started, started, Phase::FirstByte);
        let chunks = tokio::time::timeout_at(deadline, self.inner.stream(request))
            .await
            .map_err(|_| limit.error(&self.limits))??;
        let watched = Watched {
            chunks,
            limits: self.limits,
            started,
            phase: Phase::FirstByte,
            ended: false,
        };
        Ok(Box::pin(futures::stream::unfold(
            watched,
            |mut w| async move { w.next().await.map(|item| (item, w)) },
        )))
    }
}

#[cfg(test)]
mod tests;
