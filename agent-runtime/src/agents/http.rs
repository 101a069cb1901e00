//! The `http` backend in its `json` format: forwards each request to the user's agent service.
//!
//! Contract with the service (agent-runtime/README.md, "Bring your own agent"):
//!
//! - `POST FASTAGENTIC_AGENT_URL` with the request body as received (`{"message": ...,
//!   "run_id"?: ..., ...}`); a 2xx answer with a JSON object. The reply text is the string at
//!   `--agent-reply-field` (a dotted path), or by default the first string among `output`,
//!   `response` and `result` (`result` is what the Python FastAgentic package answers for an
//!   endpoint returning a plain value). The object's other top-level fields are passed through
//!   to the client.
//! - Streaming (`/chat/stream`), when `FASTAGENTIC_AGENT_STREAM_URL` is set: the same request
//!   POSTed there, answered with server-sent events (see [`super::http_stream`]). Without it a
//!   stream is the `json` answer in one chunk.
//! - Anything else is a bad answer (502, with the service's own error text when it gave one).
//!
//! How long the answer may take is [`super::Timed`]'s to bound; this backend only bounds
//! connecting.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::http_stream::stream_events;
use super::{AgentConfigError, bad_response, client, send, upstream_error};
use crate::agent::{Agent, AgentError, AgentReply, AgentRequest, ChunkStream};

pub(super) const UPSTREAM: &str = "the agent service";
/// The fields a reply is read from when `--agent-reply-field` is not given, in order.
pub const DEFAULT_REPLY_FIELDS: [&str; 3] = ["output", "response", "result"];
/// The most of an error answer's body quoted in the error.
const ERROR_DETAIL_MAX: usize = 200;

/// Where the reply text is in a `json` answer (`--agent-reply-field`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ReplyField {
    /// The first string among [`DEFAULT_REPLY_FIELDS`].
    #[default]
    Default,
    /// A dotted path of object keys (`data.answer`).
    Path(Vec<String>),
}

/// Value parser of `--agent-reply-field`.
pub fn parse_reply_field(s: &str) -> Result<ReplyField, String> {
    let segments: Vec<String> = s.split('.').map(str::to_owned).collect();
    let valid = segments.iter().all(|seg| {
        !seg.is_empty()
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    if valid {
        Ok(ReplyField::Path(segments))
    } else {
        Err(
            "accepted: a field name or a dotted path of them (letters, digits, _ and -), \
             such as result or data.answer"
                .to_owned(),
        )
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct HttpAgent {
    url: reqwest::Url,
    stream_url: Option<reqwest::Url>,
    reply: ReplyField,
    client: reqwest::Client,
}

impl HttpAgent {
    /// A backend posting to `url` (and streams to `stream_url`), reading replies at `reply`,
    /// giving up connecting after `connect_timeout`.
    pub fn new(
        url: reqwest::Url,
        stream_url: Option<reqwest::Url>,
        reply: ReplyField,
        connect_timeout: Duration,
    ) -> Result<Self, AgentConfigError> {
        Ok(Self {
            url,
            stream_url,
            reply,
            client: client(connect_timeout)?,
        })
    }

    async fn post(
        &self,
        url: &reqwest::Url,
        request: &AgentRequest,
    ) -> Result<reqwest::Response, AgentError> {
        let response = send(UPSTREAM, self.client.post(url.clone()).json(request)).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        Err(bad_response(UPSTREAM, status_detail(status, &body)))
    }

    async fn call(&self, request: &AgentRequest) -> Result<AgentReply, AgentError> {
        let response = self.post(&self.url, request).await?;
        let body: Value = response
            .json()
            .await
            .map_err(|e| upstream_error(UPSTREAM, &e))?;
        reply_from(body, request.run_id.clone(), &self.reply)
    }
}

/// `HTTP <status>`, with the error the service gave: the string `error`, `detail` or
/// `message` of a JSON body, or the start of any other body.
pub fn status_detail(status: impl std::fmt::Display, body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        ["error", "detail", "message"]
            .iter()
            .find_map(|k| v.get(k).and_then(Value::as_str).map(str::to_owned))
    });
    let detail = from_json.unwrap_or_else(|| body.trim().chars().take(ERROR_DETAIL_MAX).collect());
    if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    }
}

/// Reads the service's answer (pure; see the module docs for the contract).
pub fn reply_from(
    body: Value,
    run_id: Option<String>,
    reply: &ReplyField,
) -> Result<AgentReply, AgentError> {
    let Value::Object(mut fields) = body else {
        return Err(bad_response(UPSTREAM, "the body is not a JSON object"));
    };
    let output = match reply {
        ReplyField::Default => DEFAULT_REPLY_FIELDS
            .iter()
            .find(|name| fields.get(**name).is_some_and(Value::is_string))
            .and_then(|name| fields.remove(*name))
            .and_then(|v| v.as_str().map(str::to_owned))
            .ok_or_else(|| {
                bad_response(
                    UPSTREAM,
                    "the body has no string field \"output\", \"response\" or \"result\" \
                     (--agent-reply-field / FASTAGENTIC_AGENT_REPLY_FIELD names another)",
                )
            })?,
        ReplyField::Path(path) => {
            let found = path
                .iter()
                .skip(1)
                .fold(path.first().and_then(|key| fields.get(key)), |v, key| {
                    v.and_then(|v| v.get(key))
                })
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    bad_response(
                        UPSTREAM,
                        format!(
                            "the body has no string at \"{}\" (--agent-reply-field)",
                            path.join(".")
                        ),
                    )
                })?;
            if let Some(first) = path.first() {
                fields.remove(first);
            }
            found
        }
    };
    fields.remove("run_id");
    Ok(AgentReply {
        output,
        run_id,
        extra: fields,
    })
}

#[async_trait]
impl Agent for HttpAgent {
    fn name(&self) -> &'static str {
        "http"
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentReply, AgentError> {
        tracing::debug!(url = %self.url, "forwarding to the agent service");
        self.call(&request).await
    }

    async fn stream(&self, request: AgentRequest) -> Result<ChunkStream, AgentError> {
        let Some(url) = &self.stream_url else {
            let reply = self.call(&request).await?;
            return Ok(Box::pin(futures::stream::once(
                async move { Ok(reply.output) },
            )));
        };
        tracing::debug!(url = %url, "streaming from the agent service");
        let response = self.post(url, &request).await?;
        Ok(stream_events(response, self.reply.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(body: Value, reply: &ReplyField) -> Result<AgentReply, AgentError> {
        reply_from(body, Some("r".into()), reply)
    }

    #[test]
    fn answers_are_read_or_rejected() {
        let ok = read(
            json!({"output": "hi", "tokens": 3, "run_id": "x"}),
            &ReplyField::Default,
        );
        let Ok(ok) = ok else { panic!("{ok:?}") };
        assert_eq!(ok.output, "hi");
        assert_eq!(ok.run_id.as_deref(), Some("r"));
        assert_eq!(ok.extra.get("tokens"), Some(&json!(3)));
        assert!(!ok.extra.contains_key("run_id"));
        let d = ReplyField::Default;
        assert!(matches!(read(json!({"response": "r"}), &d), Ok(r) if r.output == "r"));
        // The Python package's answer for a plain return value.
        assert!(matches!(read(json!({"result": "p"}), &d), Ok(r) if r.output == "p"));
        // A non-string earlier field does not hide a later string one.
        assert!(
            matches!(read(json!({"output": 1, "result": "s"}), &d), Ok(r) if r.output == "s" && r.extra["output"] == 1)
        );
        for bad in [json!("text"), json!({"output": 1}), json!({"other": "x"})] {
            let err = read(bad.clone(), &d);
            assert!(
                matches!(&err, Err(e) if e.kind == crate::agent::AgentErrorKind::BadResponse),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn a_reply_field_path_is_followed() {
        let path = parse_reply_field("data.answer").expect("valid path");
        let ok = read(json!({"data": {"answer": "a"}, "cost": 2}), &path);
        assert!(
            matches!(&ok, Ok(r) if r.output == "a" && r.extra.get("cost") == Some(&json!(2)) && !r.extra.contains_key("data")),
            "{ok:?}"
        );
        let err = read(json!({"data": {"answer": 3}}), &path);
        assert!(
            matches!(&err, Err(e) if e.message.contains("\"data.answer\"") && e.message.contains("--agent-reply-field")),
            "{err:?}"
        );
        assert!(read(json!({"output": "o"}), &path).is_err());
        for bad in ["", ".", "a..b", "a.", "a b", "a/b"] {
            assert!(parse_reply_field(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_reply_field("result"),
            Ok(ReplyField::Path(vec!["result".into()]))
        );
    }

    #[test]
    fn error_statuses_quote_the_service() {
        let status = "500 Internal Server Error";
        assert_eq!(
            status_detail(status, r#"{"error": "Internal server error"}"#),
            "HTTP 500 Internal Server Error: Internal server error"
        );
        assert_eq!(
            status_detail(
                "401 Unauthorized",
                r#"{"detail": "Authentication required"}"#
            ),
            "HTTP 401 Unauthorized: Authentication required"
        );
        assert_eq!(status_detail(status, ""), "HTTP 500 Internal Server Error");
        let long = "x".repeat(1000);
        assert_eq!(
            status_detail(status, &long).len(),
            "HTTP 500 Internal Server Error: ".len() + 200
        );
    }
}
