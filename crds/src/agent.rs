//! `spec.agent`: the agent behind the runtime, exactly one kind.

use kube::KubeSchema;
use kube::core::{Message, Reason, Rule};
use schemars::JsonSchema;
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

    /// URL the runtime POSTs `/chat/stream` requests to, `http://` or `https://`
    /// (`FASTAGENTIC_AGENT_STREAM_URL`); the agent answers with server-sent events. Unset: a
    /// stream gets the answer of `url` as one chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
        .message("spec.agent.http.streamUrl must start with http:// or https://")
        .reason(Reason::FieldValueInvalid))]
    pub stream_url: Option<String>,

    /// What the runtime's `/ready` checks before it reports the pod ready
    /// (`FASTAGENTIC_AGENT_READY_URL`): an `http://` or `https://` URL it GETs (ready on any
    /// 2xx answer), or `tcp://host:port` (ready when a TCP connection opens). Unset: the agent
    /// is not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://') || self.startsWith('tcp://')")
        .message("spec.agent.http.readyUrl must start with http://, https:// or tcp:// (tcp://host:port)")
        .reason(Reason::FieldValueInvalid))]
    pub ready_url: Option<String>,

    /// Shape of the requests and replies (`FASTAGENTIC_AGENT_FORMAT`): `json` or
    /// `chat-completions`. Unset: `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AgentFormat>,

    /// Where the reply text is in a `json` reply (`FASTAGENTIC_AGENT_REPLY_FIELD`): a dotted path
    /// of field names (letters, digits, `_` and `-`), for example `result` or `data.answer`.
    /// Unset: the first string among the fields `output`, `response` and `result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = reply_field_rule("spec.agent.http.replyField"))]
    pub reply_field: Option<String>,

    /// Seconds the runtime waits for the agent (`FASTAGENTIC_AGENT_TIMEOUT`, runtime default
    /// 60): the default of `spec.timeouts.agentFirstByteSeconds` and `streamIdleSeconds`.
    /// Unless `agentFirstByteSeconds` (or a shorter `runMaxSeconds`) is set, it must stay below
    /// the runtime's run stale-after (`FASTAGENTIC_RUN_STALE_AFTER`, 300 s unless set in
    /// `spec.env`), or the runtime does not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<i32>,
}

/// Shape of the requests the runtime sends to the agent and of its replies
/// (`FASTAGENTIC_AGENT_FORMAT`): `json` (the default: the request body as the client sent it,
/// and a JSON reply whose text is at `replyField`) or `chat-completions` (an OpenAI
/// chat-completions request and reply).
// This doc is the description `kubectl explain` shows for every `format` field: the CRD
// generator puts an optional enum's own doc in place of the field's.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum AgentFormat {
    /// The request body as the client sent it; the reply is a JSON object whose text is at
    /// `replyField`. The default.
    #[default]
    Json,
    /// An OpenAI chat-completions request; the reply is a chat completion.
    ChatCompletions,
}

impl AgentFormat {
    /// The value of `--agent-format` / `FASTAGENTIC_AGENT_FORMAT`.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentFormat::Json => "json",
            AgentFormat::ChatCompletions => "chat-completions",
        }
    }
}

/// The CEL rule of a `replyField`: a dotted path of field names. `field` names it in the message.
fn reply_field_rule(field: &str) -> Rule {
    Rule::new("self.matches('^[A-Za-z0-9_-]+([.][A-Za-z0-9_-]+)*$')")
        .message(Message::Message(format!(
            "{field} must be a dotted path of field names (letters, digits, '_' and '-'), for \
             example result or data.answer"
        )))
        .reason(Reason::FieldValueInvalid)
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
