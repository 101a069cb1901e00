//! `spec.agent`: the agent behind the runtime, exactly one kind.

use k8s_openapi::api::core::v1::{EnvVar, Probe, ResourceRequirements, SecurityContext};
use kube::KubeSchema;
use kube::core::{Message, Reason, Rule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::defaults::{DEFAULT_AGENT_CONTAINER_PATH, DEFAULT_AGENT_CONTAINER_PORT};
use crate::{ImagePullPolicy, SecretKeyRef};

/// The agent backend (`fastagentic run --agent`): exactly one kind.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("(has(self.echo) ? 1 : 0) + (has(self.http) ? 1 : 0) + (has(self.openai) ? 1 : 0) + (has(self.container) ? 1 : 0) == 1")
        .message("spec.agent needs exactly one of echo, http, openai or container")
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

    /// Your agent as a container of every pod, next to the runtime, which calls it on
    /// `127.0.0.1` (`FASTAGENTIC_AGENT=http`). It runs as a Kubernetes native sidecar (an init
    /// container named `agent-app` with `restartPolicy: Always`; Kubernetes 1.29 or later):
    /// started before the runtime, and on shutdown stopped only after the runtime has drained
    /// and exited, so the requests still in flight reach it. The runtime's `/ready` checks the
    /// agent, so the pod is ready only while the agent is. Only the runtime's port is in the
    /// Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerAgentSpec>,
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
#[x_kube(
    validation = Rule::new("!has(self.format) || self.format != 'chat-completions' || (!has(self.replyField) && !has(self.streamUrl))")
        .message("spec.agent.http.replyField and streamUrl belong to the json format: chat-completions reads choices[0].message.content and streams from url")
        .reason(Reason::FieldValueInvalid),
)]
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

/// `spec.agent.container`: your agent's container. The kubelet starts it first; the runtime
/// starts once it has started (once its `startupProbe` succeeds, when it has one). On shutdown
/// the kubelet stops the runtime first (preStop delay, then SIGTERM: it drains within
/// `spec.timeouts.gracefulShutdownSeconds`) and this container only after the runtime has
/// exited, within the pod's `terminationGracePeriodSeconds`. The runtime's `/ready` checks the
/// agent (`FASTAGENTIC_AGENT_READY_URL`), so the pod is ready only while the agent is. (`kubectl explain` shows the doc of `AgentSpec::container`,
/// not this one.)
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.format) || self.format != 'chat-completions' || (!has(self.replyField) && !has(self.streamPath))")
        .message("spec.agent.container.replyField and streamPath belong to the json format: chat-completions reads choices[0].message.content and streams from path")
        .reason(Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct ContainerAgentSpec {
    /// Image of your agent, for example `registry.example.com/my-agent:1.2.2`. (`spec.image` is
    /// then the runtime's image, `ghcr.io/fastagentic/fastagentic-runtime`.)
    #[x_kube(validation = Rule::new("self.size() > 0").message("spec.agent.container.image must not be empty"))]
    pub image: String,

    /// When the kubelet pulls the agent's image: `Always`, `IfNotPresent` or `Never`.
    /// Kubernetes' default applies when unset (`Always` for `:latest`, otherwise
    /// `IfNotPresent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// The agent's command (the image's entrypoint when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,

    /// Arguments of the command (the image's default arguments when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,

    /// Environment variables of the agent's container (it does not get the runtime's
    /// `FASTAGENTIC_*` variables). Secrets named in `valueFrom.secretKeyRef` are checked and
    /// watched as the runtime's are: a missing one sets `Ready=False` naming the entry, and a
    /// change rolls the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,

    /// Port the agent listens on (the container port named `agent`); it must differ from
    /// `spec.port`, the runtime's. The runtime calls `127.0.0.1:<port>`: an agent listening on
    /// `127.0.0.1` only is out of reach of every other pod. Probes of your own on this port
    /// connect to the pod's IP, so an agent with such probes must listen on `0.0.0.0`;
    /// `spec.networkPolicy` then keeps its port closed (it admits only the runtime's). The
    /// Service does not expose this port.
    #[serde(default = "default_agent_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Path the runtime POSTs each request to (`FASTAGENTIC_AGENT_URL` is
    /// `http://127.0.0.1:<port><path>`).
    #[serde(default = "default_agent_path")]
    #[x_kube(validation = path_rule("spec.agent.container.path", "/chat"))]
    pub path: String,

    /// Path the runtime POSTs `/chat/stream` requests to; the agent answers with server-sent
    /// events (`FASTAGENTIC_AGENT_STREAM_URL`). Unset: a stream gets the answer of `path` as
    /// one chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = path_rule("spec.agent.container.streamPath", "/chat/stream"))]
    pub stream_path: Option<String>,

    /// Path that answers 2xx once the agent can serve, for example `/ready`: the runtime's
    /// `/ready` GETs it on `127.0.0.1` (`FASTAGENTIC_AGENT_READY_URL`). Unset: it checks that the
    /// port accepts TCP connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = path_rule("spec.agent.container.readyPath", "/ready"))]
    pub ready_path: Option<String>,

    /// Shape of the requests and replies (`FASTAGENTIC_AGENT_FORMAT`): `json` or
    /// `chat-completions`. Unset: `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AgentFormat>,

    /// Where the reply text is in a `json` reply (`FASTAGENTIC_AGENT_REPLY_FIELD`): a dotted path
    /// of field names (letters, digits, `_` and `-`), for example `result` or `data.answer`.
    /// Unset: the first string among the fields `output`, `response` and `result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = reply_field_rule("spec.agent.container.replyField"))]
    pub reply_field: Option<String>,

    /// CPU, memory and ephemeral storage of the agent's container. Unless requests or limits
    /// name `ephemeral-storage`, the operator adds a request of 64Mi and a limit of 1Gi, as for
    /// the runtime. With `spec.autoscaling` on CPU or memory, set cpu and memory requests: the
    /// utilization targets are percentages of the pod's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Readiness probe of the agent's container; it counts toward the pod's readiness. Default:
    /// `GET /ready` on the runtime's port, after 5 s, every 5 s: the runtime's `/ready` checks
    /// the agent on the pod's loopback (see `readyPath`), so the agent can listen on
    /// `127.0.0.1` alone, and after a restart the container is not ready until the agent
    /// answers. A probe of the agent's own port connects to the pod's IP: the agent must then
    /// listen on `0.0.0.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,

    /// Liveness probe of the agent's container: the kubelet restarts it when the probe fails.
    /// Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,

    /// Startup probe of the agent's container. The kubelet starts the runtime only once it has
    /// succeeded, so make it generous enough for your agent's start-up (for example `GET
    /// /ready` every 2 s, up to 60 times). Unset: none; the runtime starts as soon as the
    /// agent's process has, and reports not ready until the agent answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,

    /// Security context of the agent's container. Default: the runtime's (non-root, no
    /// privilege escalation, read-only root filesystem, every capability dropped; the pod runs
    /// as user and group 65532 with the RuntimeDefault seccomp profile). Setting it replaces
    /// that default as a whole. `/tmp` is a writable emptyDir of its own (256Mi at most).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
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

/// The CEL rule of a path the runtime calls on the agent's container: it starts with `/`.
fn path_rule(field: &str, example: &str) -> Rule {
    Rule::new("self.startsWith('/')")
        .message(Message::Message(format!(
            "{field} must start with '/', for example {example}"
        )))
        .reason(Reason::FieldValueInvalid)
}

fn default_agent_port() -> i32 {
    DEFAULT_AGENT_CONTAINER_PORT
}

fn default_agent_path() -> String {
    DEFAULT_AGENT_CONTAINER_PATH.to_string()
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
