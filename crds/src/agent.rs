//! `spec.agent`: the agent behind the runtime, exactly one kind.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::SecretKeyRef;

/// The agent backend (`fastagentic run --agent`): exactly one kind.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("(has(self.echo) ? 1 : 0) + (has(self.http) ? 1 : 0) + (has(self.openai) ? 1 : 0) == 1")
        .message("spec.agent needs exactly one of echo, http or openai")
        .reason(Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// The built-in agent: answers with the message (`FASTAGENTIC_AGENT=echo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<EchoAgentSpec>,

    /// Your agent service: the runtime POSTs each request to `url`
    /// (`FASTAGENTIC_AGENT=http`, `FASTAGENTIC_AGENT_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpAgentSpec>,

    /// An OpenAI-compatible chat-completions API (`FASTAGENTIC_AGENT=openai`); the key comes
    /// from a Secret, never inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openai: Option<OpenAiAgentSpec>,
}

/// `spec.agent.echo`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EchoAgentSpec {
    /// Milliseconds the echo agent waits before answering, spread over the words of a stream
    /// (`FASTAGENTIC_ECHO_DELAY_MS`), to show load without a model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 600_000))]
    pub delay_ms: Option<i32>,
}

/// `spec.agent.http`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpAgentSpec {
    /// URL the runtime POSTs each request to, `http://` or `https://`
    /// (`FASTAGENTIC_AGENT_URL`).
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
        .message("spec.agent.http.url must start with http:// or https://")
        .reason(Reason::FieldValueInvalid))]
    pub url: String,
}

/// `spec.agent.openai`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OpenAiAgentSpec {
    /// Model name (`FASTAGENTIC_MODEL`; runtime default `gpt-4o-mini`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,

    /// Base URL of the API, `.../v1` (`OPENAI_BASE_URL`; runtime default
    /// `https://api.openai.com/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
        .message("spec.agent.openai.baseUrl must start with http:// or https://")
        .reason(Reason::FieldValueInvalid))]
    pub base_url: Option<String>,

    /// The Secret key holding the API key (`OPENAI_API_KEY`, injected by reference). The pods
    /// do not start without it; a missing Secret sets `Ready=False` naming this field.
    pub api_key_secret_ref: SecretKeyRef,
}
