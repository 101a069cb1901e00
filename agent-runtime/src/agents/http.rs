//! The `http` backend: forwards each request to the user's agent service.
//!
//! Contract with the service: `POST FASTAGENTIC_AGENT_URL` with the request body as received
//! (`{"message": ..., "run_id"?: ..., ...}`); a 2xx answer with a JSON object holding a string
//! `output` (or `response`). Other fields of that object are passed through to the client.
//! Anything else is a bad answer (502). How long the answer may take is
//! [`super::Timed`]'s to bound; this backend only bounds connecting.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{AgentConfigError, bad_response, client, upstream_error};
use crate::agent::{Agent, AgentError, AgentReply, AgentRequest};

const UPSTREAM: &str = "the agent service";

/// See the module docs.
#[derive(Debug, Clone)]
pub struct HttpAgent {
    url: reqwest::Url,
    client: reqwest::Client,
}

impl HttpAgent {
    /// A backend posting to `url`, giving up connecting after `connect_timeout`.
    pub fn new(url: reqwest::Url, connect_timeout: Duration) -> Result<Self, AgentConfigError> {
        Ok(Self {
            url,
            client: client(connect_timeout)?,
        })
    }

    async fn call(&self, request: &AgentRequest) -> Result<AgentReply, AgentError> {
        let response = self
            .client
            .post(self.url.clone())
            .json(request)
            .send()
            .await
            .map_err(|e| upstream_error(UPSTREAM, &e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(bad_response(UPSTREAM, format!("HTTP {status}")));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| upstream_error(UPSTREAM, &e))?;
        reply_from(body, request.run_id.clone())
    }
}

/// Reads the service's answer (pure; see the module docs for the contract).
pub fn reply_from(body: Value, run_id: Option<String>) -> Result<AgentReply, AgentError> {
    let Value::Object(mut fields) = body else {
        return Err(bad_response(UPSTREAM, "the body is not a JSON object"));
    };
    let output = match fields
        .remove("output")
        .or_else(|| fields.remove("response"))
    {
        Some(Value::String(text)) => text,
        _ => {
            return Err(bad_response(
                UPSTREAM,
                "the body has no string field \"output\" or \"response\"",
            ));
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_read_or_rejected() {
        let ok = reply_from(
            json!({"output": "hi", "tokens": 3, "run_id": "x"}),
            Some("r".into()),
        );
        let Ok(ok) = ok else { panic!("{ok:?}") };
        assert_eq!(ok.output, "hi");
        assert_eq!(ok.run_id.as_deref(), Some("r"));
        assert_eq!(ok.extra.get("tokens"), Some(&json!(3)));
        assert!(!ok.extra.contains_key("run_id"));
        assert!(matches!(reply_from(json!({"response": "r"}), None), Ok(r) if r.output == "r"));
        for bad in [json!("text"), json!({"output": 1}), json!({"other": "x"})] {
            let err = reply_from(bad.clone(), None);
            assert!(
                matches!(&err, Err(e) if e.kind == crate::agent::AgentErrorKind::BadResponse),
                "{bad}: {err:?}"
            );
        }
    }
}
