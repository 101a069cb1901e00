//! Agent backends behind the [`crate::agent::Agent`] seam, and the option that picks one.
//!
//! - `echo` (default): [`crate::agent::EchoAgent`], answers with the message.
//! - `http`: [`HttpAgent`] forwards the request to the user's agent service
//!   (`FASTAGENTIC_AGENT_URL`).
//! - `openai`: [`OpenAiAgent`], an OpenAI-compatible chat-completions client (`OPENAI_BASE_URL`,
//!   `OPENAI_API_KEY`, `FASTAGENTIC_MODEL`), streaming over server-sent events.
//!
//! Every backend is built inside a [`Timed`] decorator, which enforces the time limits
//! (`--agent-first-byte-timeout`, `--stream-idle-timeout`, `--run-max-duration`; the first two
//! default to `--agent-timeout`) the same way for all three; a backend itself only bounds
//! connecting. Upstream failures map to HTTP statuses the same way for both remote backends:
//! unreachable or a bad answer → 502 (see [`upstream_error`]), a limit → 504. The API key lives
//! in an [`ApiKey`], whose `Debug` output is redacted and which has no `Display`, so it cannot
//! end up in a log line by accident.

pub mod event_stream;
pub mod http;
pub mod http_stream;
pub mod openai;
pub mod ready;
pub mod sse;
pub mod timed;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use fastagentic_contract::env;

use crate::parse;

use crate::agent::{Agent, AgentError, AgentErrorKind, EchoAgent};

pub use self::http::{HttpAgent, ReplyField};
pub use self::openai::OpenAiAgent;
pub use self::ready::{AgentReadyCheck, ReadyTarget};
pub use self::timed::{TimeLimits, Timed};

/// Default `--agent-timeout`, seconds.
pub const DEFAULT_AGENT_TIMEOUT_SECS: u64 = 60;
/// Default `OPENAI_BASE_URL`.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Default `FASTAGENTIC_MODEL`.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// A secret such as an API key: `Debug` prints `ApiKey(***)`, there is no `Display`, and the
/// value is only reachable through [`ApiKey::expose`] at the point it goes into a header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself; use only to build the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// `FASTAGENTIC_AGENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AgentKind {
    /// Answers with the message (built in; no upstream).
    Echo,
    /// Forwards to `FASTAGENTIC_AGENT_URL`.
    Http,
    /// OpenAI-compatible chat completions.
    Openai,
}

/// `FASTAGENTIC_AGENT_FORMAT`: the shape of the `http` backend's requests and replies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum AgentFormat {
    /// The request body as received; the reply text from a JSON field
    /// (`--agent-reply-field`).
    #[default]
    Json,
    /// OpenAI chat completions: `{"model", "messages"}` in, `choices[0].message.content` out,
    /// streamed as `choices[0].delta.content` events.
    ChatCompletions,
}

/// Agent backend options.
#[derive(Clone, Args)]
pub struct AgentArgs {
    /// Agent backend: echo, http (your agent service) or openai (an OpenAI-compatible API).
    #[arg(
        long = "agent",
        env = env::AGENT,
        value_enum,
        default_value = "echo",
        help_heading = "Agent"
    )]
    pub agent: AgentKind,

    /// URL the `http` backend POSTs each request to (http:// or https://).
    #[arg(long = "agent-url", env = env::AGENT_URL, value_parser = parse::http_url,
          help_heading = "Agent")]
    pub agent_url: Option<reqwest::Url>,

    /// Where the `http` backend sends `/chat/stream` requests; the service answers with
    /// server-sent events (`json` format). Unset: a stream is the reply in one chunk.
    #[arg(long = "agent-stream-url", env = env::AGENT_STREAM_URL, value_parser = parse::http_url,
          help_heading = "Agent")]
    pub agent_stream_url: Option<reqwest::Url>,

    /// Shape of the `http` backend's requests and replies: json (the request as received,
    /// the reply from a field) or chat-completions (OpenAI's).
    #[arg(long = "agent-format", env = env::AGENT_FORMAT, value_enum, default_value = "json",
          help_heading = "Agent")]
    pub agent_format: AgentFormat,

    /// Dotted path of the reply text in the `http` service's JSON answer (json format)
    /// [default: the first string among output, response and result].
    #[arg(long = "agent-reply-field", env = env::AGENT_REPLY_FIELD,
          value_parser = http::parse_reply_field, help_heading = "Agent")]
    pub agent_reply_field: Option<ReplyField>,

    /// The agent's readiness, checked by /ready: an http(s):// URL answering 2xx to GET, or
    /// tcp://host:port accepting connections.
    #[arg(long = "agent-ready-url", env = env::AGENT_READY_URL, value_parser = ready::parse_ready_url,
          help_heading = "Agent")]
    pub agent_ready_url: Option<ReadyTarget>,

    /// Seconds to wait for the agent backend (504 after that): the default of
    /// --agent-first-byte-timeout and --stream-idle-timeout.
    #[arg(long = "agent-timeout", allow_negative_numbers = true, env = env::AGENT_TIMEOUT,
          default_value_t = DEFAULT_AGENT_TIMEOUT_SECS as f64, value_parser = parse::positive_seconds_f64,
          help_heading = "Agent")]
    pub agent_timeout: f64,

    /// Seconds until the agent's answer, or the first chunk of a stream (504 after that)
    /// [default: --agent-timeout].
    #[arg(long = "agent-first-byte-timeout", allow_negative_numbers = true,
          env = env::AGENT_FIRST_BYTE_TIMEOUT, value_parser = parse::positive_seconds_f64,
          help_heading = "Agent")]
    pub agent_first_byte_timeout: Option<f64>,

    /// Longest wait, in seconds, between two chunks of a stream [default: --agent-timeout].
    #[arg(long = "stream-idle-timeout", allow_negative_numbers = true,
          env = env::STREAM_IDLE_TIMEOUT, value_parser = parse::positive_seconds_f64,
          help_heading = "Agent")]
    pub stream_idle_timeout: Option<f64>,

    /// Seconds a whole run may take, a stream included (0 = unlimited).
    #[arg(long = "run-max-duration", allow_negative_numbers = true, env = env::RUN_MAX_DURATION,
          default_value = "0", value_parser = parse::run_max_duration, help_heading = "Agent")]
    pub run_max_duration: f64,

    /// Base URL of the OpenAI-compatible API (`.../v1`).
    #[arg(long = "openai-base-url", env = env::OPENAI_BASE_URL, default_value = DEFAULT_OPENAI_BASE_URL,
          value_parser = parse::http_url, help_heading = "Agent")]
    pub openai_base_url: reqwest::Url,

    /// API key of the OpenAI-compatible API (prefer the variable: flags show up in `ps`).
    #[arg(long = "openai-api-key", env = env::OPENAI_API_KEY, hide_env_values = true,
          value_parser = parse_api_key, help_heading = "Agent")]
    pub openai_api_key: Option<ApiKey>,

    /// Model name sent to the OpenAI-compatible API.
    #[arg(long = "model", env = env::MODEL, default_value = DEFAULT_MODEL,
          help_heading = "Agent")]
    pub model: String,
}

impl fmt::Debug for AgentArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentArgs")
            .field("agent", &self.agent)
            .field(
                "agent_url",
                &self.agent_url.as_ref().map(reqwest::Url::as_str),
            )
            .field(
                "agent_stream_url",
                &self.agent_stream_url.as_ref().map(reqwest::Url::as_str),
            )
            .field("agent_format", &self.agent_format)
            .field("agent_reply_field", &self.agent_reply_field)
            .field("agent_ready_url", &self.agent_ready_url)
            .field("agent_timeout", &self.agent_timeout)
            .field("agent_first_byte_timeout", &self.agent_first_byte_timeout)
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .field("run_max_duration", &self.run_max_duration)
            .field("openai_base_url", &self.openai_base_url.as_str())
            .field("openai_api_key", &self.openai_api_key)
            .field("model", &self.model)
            .finish()
    }
}

/// The chosen backend cannot be built from the options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AgentConfigError(pub String);

/// How long a live run may go without a store update, and the option that says so (see
/// [`AgentArgs::live_run_bound`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveRunBound {
    /// Seconds.
    pub seconds: f64,
    /// The flag that set it.
    pub flag: &'static str,
    /// Its variable.
    pub env: &'static str,
}

impl AgentArgs {
    /// `--agent-first-byte-timeout`, or `--agent-timeout` when it is not given, in seconds.
    pub fn first_byte_secs(&self) -> f64 {
        self.agent_first_byte_timeout.unwrap_or(self.agent_timeout)
    }

    /// `--stream-idle-timeout`, or `--agent-timeout` when it is not given, in seconds.
    pub fn stream_idle_secs(&self) -> f64 {
        self.stream_idle_timeout.unwrap_or(self.agent_timeout)
    }

    /// The limits every backend runs under.
    pub fn limits(&self) -> TimeLimits {
        TimeLimits {
            first_byte: Duration::from_secs_f64(self.first_byte_secs()),
            stream_idle: Duration::from_secs_f64(self.stream_idle_secs()),
            run_max: (self.run_max_duration > 0.0)
                .then(|| Duration::from_secs_f64(self.run_max_duration)),
        }
    }

    /// The longest a live run goes without a store update: a run is one wait for its first byte
    /// (a stream then sends heartbeats), cut short by `--run-max-duration` when that is set and
    /// shorter. Names the option the value comes from, for the start-up check against
    /// `--run-stale-after`.
    pub fn live_run_bound(&self) -> LiveRunBound {
        let first_byte = match self.agent_first_byte_timeout {
            Some(seconds) => LiveRunBound {
                seconds,
                flag: "--agent-first-byte-timeout",
                env: env::AGENT_FIRST_BYTE_TIMEOUT,
            },
            None => LiveRunBound {
                seconds: self.agent_timeout,
                flag: "--agent-timeout",
                env: env::AGENT_TIMEOUT,
            },
        };
        if self.run_max_duration > 0.0 && self.run_max_duration < first_byte.seconds {
            LiveRunBound {
                seconds: self.run_max_duration,
                flag: "--run-max-duration",
                env: env::RUN_MAX_DURATION,
            }
        } else {
            first_byte
        }
    }

    /// Builds the chosen backend inside the [`Timed`] decorator; `echo_delay` is the run
    /// command's `--echo-delay-ms`. Checks the options that belong together (the `http` backend
    /// needs a URL, the OpenAI service itself needs a key) and says which variable is missing.
    pub fn build(&self, echo_delay: Duration) -> Result<Arc<dyn Agent>, AgentConfigError> {
        let limits = self.limits();
        Ok(Arc::new(Timed::new(
            self.backend(echo_delay, limits)?,
            limits,
        )))
    }

    /// The chosen backend itself; connecting is bounded by the first-byte limit.
    fn backend(
        &self,
        echo_delay: Duration,
        limits: TimeLimits,
    ) -> Result<Arc<dyn Agent>, AgentConfigError> {
        match self.agent {
            AgentKind::Echo => Ok(Arc::new(EchoAgent { delay: echo_delay })),
            AgentKind::Http => {
                let url = self.agent_url.clone().ok_or_else(|| {
                    AgentConfigError(
                        "--agent http (FASTAGENTIC_AGENT=http) needs --agent-url / \
                         FASTAGENTIC_AGENT_URL, the URL of your agent service"
                            .to_owned(),
                    )
                })?;
                match self.agent_format {
                    AgentFormat::Json => Ok(Arc::new(HttpAgent::new(
                        url,
                        self.agent_stream_url.clone(),
                        self.agent_reply_field.clone().unwrap_or_default(),
                        limits.first_byte,
                    )?)),
                    AgentFormat::ChatCompletions
                        if self.agent_reply_field.is_some() || self.agent_stream_url.is_some() =>
                    {
                        Err(AgentConfigError(
                            "--agent-reply-field (FASTAGENTIC_AGENT_REPLY_FIELD) and \
                             --agent-stream-url (FASTAGENTIC_AGENT_STREAM_URL) belong to \
                             --agent-format json; chat-completions reads \
                             choices[0].message.content and streams from --agent-url"
                                .to_owned(),
                        ))
                    }
                    AgentFormat::ChatCompletions => Ok(Arc::new(OpenAiAgent::at_endpoint(
                        url,
                        self.model.clone(),
                        limits.first_byte,
                    )?)),
                }
            }
            AgentKind::Openai => {
                if self.openai_api_key.is_none()
                    && self.openai_base_url.host_str() == Some("api.openai.com")
                {
                    return Err(AgentConfigError(
                        "--agent openai (FASTAGENTIC_AGENT=openai) with the OpenAI API needs \
                         OPENAI_API_KEY; set it, or point OPENAI_BASE_URL at a compatible \
                         server that needs no key"
                            .to_owned(),
                    ));
                }
                Ok(Arc::new(OpenAiAgent::new(
                    self.openai_base_url.clone(),
                    self.openai_api_key.clone(),
                    self.model.clone(),
                    limits.first_byte,
                )?))
            }
        }
    }
}

impl AgentArgs {
    /// The `agent` check of `/ready`, when `--agent-ready-url` is set.
    pub fn ready_check(&self) -> Result<Option<AgentReadyCheck>, AgentConfigError> {
        self.agent_ready_url
            .clone()
            .map(AgentReadyCheck::new)
            .transpose()
    }
}

/// Value parser of the API key. Never fails, so clap never echoes a key in an error message;
/// surrounding whitespace (a stray newline from a mounted Secret) is dropped.
pub fn parse_api_key(value: &str) -> Result<ApiKey, String> {
    Ok(ApiKey::new(value.trim()))
}

/// Classifies a transport failure talking to `upstream`.
pub fn upstream_error(upstream: &str, error: &reqwest::Error) -> AgentError {
    if error.is_timeout() {
        timeout_error(upstream)
    } else if error.is_connect() {
        AgentError::new(
            AgentErrorKind::Unavailable,
            format!("{upstream} is unreachable: {}", error_chain(error)),
        )
    } else if error.is_decode() {
        bad_response(
            upstream,
            format!("unreadable answer: {}", error_chain(error)),
        )
    } else {
        AgentError::new(
            AgentErrorKind::Unavailable,
            format!("{upstream} failed: {}", error_chain(error)),
        )
    }
}

/// Sends `request` to `upstream`. A request whose connection fails before any answer came
/// (most often a pooled keep-alive connection the server closed a moment before, as uvicorn
/// does after a 500) is sent once more, on another connection. The agent may then see a
/// request twice, as it does when a run is taken over; an answer that began is never retried.
pub async fn send(
    upstream: &str,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, AgentError> {
    let again = request.try_clone();
    match request.send().await {
        Ok(response) => Ok(response),
        Err(e) if !e.is_timeout() && (e.is_connect() || e.is_request()) => {
            let Some(again) = again else {
                return Err(upstream_error(upstream, &e));
            };
            tracing::debug!(upstream, error = %error_chain(&e), "sending again on another connection");
            again.send().await.map_err(|e| upstream_error(upstream, &e))
        }
        Err(e) => Err(upstream_error(upstream, &e)),
    }
}

/// `upstream` could not be connected to within the connect timeout.
pub fn timeout_error(upstream: &str) -> AgentError {
    AgentError::new(
        AgentErrorKind::Timeout,
        format!("{upstream} did not answer in time"),
    )
}

/// `upstream` answered, but not usefully.
pub fn bad_response(upstream: &str, detail: impl fmt::Display) -> AgentError {
    AgentError::new(
        AgentErrorKind::BadResponse,
        format!("{upstream} answered badly: {detail}"),
    )
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The HTTP client of a remote backend: it bounds connecting only; every other wait is
/// [`Timed`]'s.
fn client(connect_timeout: Duration) -> Result<reqwest::Client, AgentConfigError> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .build()
        .map_err(|e| AgentConfigError(format!("cannot build the HTTP client: {e}")))
}
