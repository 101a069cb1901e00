//! Agent backends behind the [`crate::agent::Agent`] seam, and the option that picks one.
//!
//! - `echo` (default): [`crate::agent::EchoAgent`], answers with the message.
//! - `http`: [`HttpAgent`] forwards the request to the user's agent service
//!   (`FASTAGENTIC_AGENT_URL`).
//! - `openai`: [`OpenAiAgent`], an OpenAI-compatible chat-completions client (`OPENAI_BASE_URL`,
//!   `OPENAI_API_KEY`, `FASTAGENTIC_MODEL`), streaming over server-sent events.
//!
//! Upstream failures map to HTTP statuses the same way for both remote backends: unreachable or
//! a bad answer → 502, no answer within `--agent-timeout` → 504 (see [`upstream_error`]). The
//! API key lives in an [`ApiKey`], whose `Debug` output is redacted and which has no `Display`,
//! so it cannot end up in a log line by accident.

pub mod http;
pub mod openai;
pub mod sse;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::agent::{Agent, AgentError, AgentErrorKind, EchoAgent};

pub use self::http::HttpAgent;
pub use self::openai::OpenAiAgent;

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

/// Agent backend options.
#[derive(Clone, Args)]
pub struct AgentArgs {
    /// Agent backend: echo, http (your agent service) or openai (an OpenAI-compatible API).
    #[arg(
        long = "agent",
        env = "FASTAGENTIC_AGENT",
        value_enum,
        default_value = "echo",
        help_heading = "Agent"
    )]
    pub agent: AgentKind,

    /// URL the `http` backend POSTs each request to (http:// or https://).
    #[arg(long = "agent-url", env = "FASTAGENTIC_AGENT_URL", value_parser = parse_http_url,
          help_heading = "Agent")]
    pub agent_url: Option<reqwest::Url>,

    /// Seconds to wait for the agent backend (504 after that; for streams, between chunks).
    #[arg(long = "agent-timeout", allow_negative_numbers = true, env = "FASTAGENTIC_AGENT_TIMEOUT",
          default_value_t = DEFAULT_AGENT_TIMEOUT_SECS as f64, value_parser = parse_agent_timeout,
          help_heading = "Agent")]
    pub agent_timeout: f64,

    /// Base URL of the OpenAI-compatible API (`.../v1`).
    #[arg(long = "openai-base-url", env = "OPENAI_BASE_URL", default_value = DEFAULT_OPENAI_BASE_URL,
          value_parser = parse_http_url, help_heading = "Agent")]
    pub openai_base_url: reqwest::Url,

    /// API key of the OpenAI-compatible API (prefer the variable: flags show up in `ps`).
    #[arg(long = "openai-api-key", env = "OPENAI_API_KEY", hide_env_values = true,
          value_parser = parse_api_key, help_heading = "Agent")]
    pub openai_api_key: Option<ApiKey>,

    /// Model name sent to the OpenAI-compatible API.
    #[arg(long = "model", env = "FASTAGENTIC_MODEL", default_value = DEFAULT_MODEL,
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
            .field("agent_timeout", &self.agent_timeout)
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

impl AgentArgs {
    /// `--agent-timeout` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.agent_timeout)
    }

    /// Builds the chosen backend; `echo_delay` is the run command's `--echo-delay-ms`.
    /// Checks the options that belong together (the `http` backend needs a URL, the OpenAI
    /// service itself needs a key) and says which variable is missing.
    pub fn build(&self, echo_delay: Duration) -> Result<Arc<dyn Agent>, AgentConfigError> {
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
                Ok(Arc::new(HttpAgent::new(url, self.timeout())?))
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
                    self.timeout(),
                )?))
            }
        }
    }
}

/// Value parser of URLs: absolute http(s) URLs only.
pub fn parse_http_url(value: &str) -> Result<reqwest::Url, String> {
    match reqwest::Url::parse(value.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        _ => Err(format!(
            "{value:?} is not a valid URL: expected an absolute http:// or https:// URL"
        )),
    }
}

/// Value parser of `--agent-timeout` (seconds > 0, at most a day).
pub fn parse_agent_timeout(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => Ok(secs),
        _ => Err(format!(
            "{value:?} is not a valid timeout (FASTAGENTIC_AGENT_TIMEOUT): expected seconds, \
             a number > 0 and <= 86400"
        )),
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

/// `upstream` did not answer within the timeout.
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

fn client(timeout: Duration) -> Result<reqwest::Client, AgentConfigError> {
    reqwest::Client::builder()
        .connect_timeout(timeout)
        .build()
        .map_err(|e| AgentConfigError(format!("cannot build the HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn parse(args: &[&str]) -> Result<AgentArgs, String> {
        let mut argv = vec!["x"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .map(|c| c.agent)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn command_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[tokio::test]
    async fn default_is_echo_and_builds() {
        let args = parse(&[]);
        let Ok(args) = args else { panic!("{args:?}") };
        assert_eq!(args.agent, AgentKind::Echo);
        assert_eq!(args.timeout(), Duration::from_secs(60));
        let agent = args.build(Duration::ZERO).map(|a| a.name());
        assert_eq!(agent, Ok("echo"));
    }

    #[test]
    fn bad_values_name_the_option() {
        for (args, needles) in [
            (
                &["--agent", "gpt"][..],
                &["--agent", "gpt", "echo", "http", "openai"][..],
            ),
            (
                &["--agent-url", "localhost:8080"][..],
                &["--agent-url", "localhost:8080", "http://"][..],
            ),
            (
                &["--agent-timeout", "0"][..],
                &["--agent-timeout", "FASTAGENTIC_AGENT_TIMEOUT", "> 0"][..],
            ),
            (
                &["--openai-base-url", "ftp://x"][..],
                &["--openai-base-url", "ftp://x"][..],
            ),
        ] {
            let err = parse(args).map(|_| ());
            let Err(err) = err else {
                panic!("{args:?} must be rejected")
            };
            for needle in needles {
                assert!(
                    err.contains(needle),
                    "{args:?}: {needle:?} missing in {err:?}"
                );
            }
        }
    }

    #[test]
    fn missing_companions_are_reported() {
        let Ok(http) = parse(&["--agent", "http"]) else {
            panic!("parses")
        };
        let err = http
            .build(Duration::ZERO)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(
            matches!(&err, Err(e) if e.contains("FASTAGENTIC_AGENT_URL")),
            "{err:?}"
        );
        let Ok(openai) = parse(&["--agent", "openai"]) else {
            panic!("parses")
        };
        let err = openai
            .build(Duration::ZERO)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(
            matches!(&err, Err(e) if e.contains("OPENAI_API_KEY")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn api_key_never_shows_in_debug_output() {
        let args = parse(&["--agent", "openai", "--openai-api-key", " sk-very-secret\n"]);
        let Ok(args) = args else { panic!("{args:?}") };
        assert_eq!(
            args.openai_api_key.as_ref().map(ApiKey::expose),
            Some("sk-very-secret")
        );
        let debug = format!("{args:?}");
        assert!(
            !debug.contains("sk-very-secret") && debug.contains("ApiKey(***)"),
            "{debug}"
        );
        let built = args.build(Duration::ZERO);
        let Ok(agent) = built else { panic!("builds") };
        assert_eq!(agent.name(), "openai");
    }
}
