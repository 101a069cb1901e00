//! The desired state a user writes: `FastAgentic.spec`.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::api::core::v1::{
    Affinity, EnvFromSource, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::FastAgenticStatus;
use crate::agent::AgentSpec;
use crate::defaults::{
    DEFAULT_DB_MAX_OVERFLOW, DEFAULT_DB_POOL_RECYCLE_SECONDS, DEFAULT_DB_POOL_SIZE,
    DEFAULT_DB_POOL_TIMEOUT_SECONDS, DEFAULT_DRAIN_DELAY_SECONDS,
    DEFAULT_GRACEFUL_SHUTDOWN_SECONDS, DEFAULT_KEEP_ALIVE_SECONDS, DEFAULT_LIMIT_CPU,
    DEFAULT_LIMIT_MEMORY, DEFAULT_MIN_REPLICAS, DEFAULT_PORT, DEFAULT_REDIS_POOL_SIZE,
    DEFAULT_REDIS_POOL_TIMEOUT_SECONDS, DEFAULT_REQUEST_CPU, DEFAULT_REQUEST_MEMORY,
    DEFAULT_TARGET_CPU_PERCENT, DEFAULT_TARGET_MEMORY_PERCENT, DEFAULT_WORKERS,
};
use crate::network_policy::NetworkPolicySpec;

/// A FastAgentic agent server: the operator runs it as a Deployment of `fastagentic run` pods
/// with a Service, a HorizontalPodAutoscaler when `autoscaling` is set, a PodDisruptionBudget
/// when `disruptionBudget` is, and a NetworkPolicy when `networkPolicy` is.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "fastagentic.io",
    version = "v1alpha1",
    kind = "FastAgentic",
    plural = "fastagentics",
    shortname = "fa",
    category = "all",
    namespaced,
    status = "FastAgenticStatus",
    derive = "PartialEq",
    doc = "A FastAgentic agent server: a pooled, concurrency-limited HTTP API run as a Deployment, \
           a Service and (optionally) a HorizontalPodAutoscaler, a PodDisruptionBudget and a \
           NetworkPolicy.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Server", type_ = "string", json_path = ".spec.server", description = "Server mode"),
    printcolumn(name = "Workers", type_ = "integer", json_path = ".spec.workers", description = "Worker processes per pod"),
    printcolumn(name = "MaxConcurrent", type_ = "integer", json_path = ".spec.maxConcurrent", description = "In-flight request limit per worker"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas", description = "Pods wanted"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas", description = "Pods ready"),
    printcolumn(name = "Utilization", type_ = "integer", json_path = ".status.autoscaling.currentConcurrencyUtilizationPercentage", description = "Average concurrency utilization the autoscaler last saw, percent", priority = 1),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".status.autoscaling.desiredReplicas", description = "Pods the autoscaler last asked for", priority = 1),
    printcolumn(name = "LastScale", type_ = "date", json_path = ".status.autoscaling.lastScaleTime", description = "When the autoscaler last changed the replica count", priority = 1),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", description = "Reason of the Ready condition", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 63")
        .message("metadata.name must be at most 63 characters: it names the Service and is used as a label value")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must start with a letter and contain only lowercase letters, digits and '-' (it names the Service, an RFC 1035 label)")
        .reason(Reason::FieldValueInvalid),
)]
#[x_kube(
    validation = Rule::new("!(has(self.replicas) && has(self.autoscaling))")
        .message("set either spec.replicas or spec.autoscaling, not both: with autoscaling the HorizontalPodAutoscaler owns the replica count")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!self.reload || self.server == 'uvicorn'")
        .message("spec.reload is a development option and works only with server 'uvicorn', not 'gunicorn'")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.autoscaling) || !has(self.autoscaling.targetConcurrencyUtilizationPercentage) || has(self.maxConcurrent)")
        .message("spec.autoscaling.targetConcurrencyUtilizationPercentage needs spec.maxConcurrent: utilization is in-flight requests over the limit")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.durableStore) || self.durableStore != 'redis' || has(self.redis)")
        .message("spec.durableStore is redis, which needs spec.redis (its url or urlSecretRef)")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.agent) || !has(self.agent.container) || self.agent.container.port != self.port")
        .field_path(".agent.container.port")
        .message("spec.agent.container.port must differ from spec.port, the runtime's port: the agent's container and the runtime share the pod's network, and both ports default to 8000 (set spec.port, for example to 8080)")
        // Not FieldValueDuplicate: the API server reports that reason without the message.
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.durableStore) || self.durableStore != 'postgres' || has(self.database)")
        .message("spec.durableStore is postgres, which needs spec.database (its urlSecretRef)")
        .reason(Reason::FieldValueRequired),
)]
#[serde(rename_all = "camelCase")]
pub struct FastAgenticSpec {
    /// Container image that contains the `fastagentic` binary and your agent, for example
    /// `registry.example.com/my-agent:1.4.2`. With `spec.agent.container`, the runtime's image
    /// (`ghcr.io/fastagentic/fastagentic-runtime:<version>`); your agent's image goes there.
    #[x_kube(validation = Rule::new("self.size() > 0").message("spec.image must not be empty"))]
    pub image: String,

    /// When the kubelet pulls the image: `Always`, `IfNotPresent` or `Never`. Kubernetes' default
    /// applies when unset (`Always` for `:latest`, otherwise `IfNotPresent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Overrides the container command (default `["fastagentic", "run"]`). The `FASTAGENTIC_*`
    /// environment is injected either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,

    /// Extra arguments appended to the command. Flags given here take precedence over the
    /// injected environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,

    /// Server mode (`--server`): `uvicorn` runs a single server process (development), `gunicorn`
    /// runs a pre-fork master with `workers` worker processes (production).
    #[serde(default)]
    pub server: ServerKind,

    /// Number of worker processes per pod (`--workers`). Each worker has its own connection pools
    /// and its own `maxConcurrent` limit.
    #[serde(default = "default_workers")]
    #[schemars(range(min = 1, max = 256))]
    pub workers: i32,

    /// Maximum number of requests in flight per worker (`--max-concurrent`). Requests over the
    /// limit get HTTP 503 with a `Retry-After` header at once; health checks bypass it. Unset
    /// means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrent: Option<i32>,

    /// Container port the server listens on (`--port`); the Service and the probes use it.
    /// With `spec.agent.container` it must differ from the agent's port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Restart the server when files change (`--reload`). For development only; not allowed with
    /// server `gunicorn`.
    #[serde(default)]
    pub reload: bool,

    /// Restart a worker after it has served this many requests (`--max-requests`), to contain
    /// memory leaks. 0 or unset never recycles. Applies to server `gunicorn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_requests: Option<i32>,

    /// Random extra requests (0..N) added to `maxRequests` per worker (`--max-requests-jitter`),
    /// so workers do not all restart at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_requests_jitter: Option<i32>,

    /// Fixed number of pods. Leave unset when `autoscaling` is set. `kubectl scale fa/NAME` writes
    /// this field. When neither is set, a new Deployment starts with 1 pod and an existing one
    /// keeps its current count (so removing `autoscaling` never scales running pods down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

    /// Scale the pods with a HorizontalPodAutoscaler (autoscaling/v2) on CPU and memory. The
    /// Deployment's replica count is then left to the autoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// Redis connection pool. The pod gets `REDIS_URL` and `FASTAGENTIC_REDIS_POOL_*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,

    /// PostgreSQL connection pool. The pod gets `DATABASE_URL` from the referenced Secret and
    /// `FASTAGENTIC_DB_*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseSpec>,

    /// The agent behind the runtime: exactly one of `echo` (built in), `http` (your agent
    /// service), `openai` (an OpenAI-compatible API, the key from a Secret) or `container` (your
    /// agent's image, run in every pod next to the runtime). Unset: the runtime's default
    /// (`echo`), or what `spec.env` sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentSpec>,

    /// Where runs are recorded (`FASTAGENTIC_DURABLE_STORE`): `memory` (each worker process's
    /// own, lost with the pod), `redis` (needs `spec.redis`) or `postgres` (needs
    /// `spec.database`). Unset: the store whose connection is configured when exactly one of
    /// `spec.redis` and `spec.database` is, `memory` otherwise. Idempotent replays across pods,
    /// resumable streams and background runs that survive pods need `redis` or `postgres`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable_store: Option<DurableStore>,

    /// How long the events of streamed and background runs are kept for resuming their
    /// streams (`GET /runs/{run_id}/stream` with `Last-Event-ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<StreamsSpec>,

    /// Server timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsSpec,

    /// CPU and memory for the `agent` container. Defaults to requests 250m CPU / 256Mi memory and
    /// limits 1000m CPU / 512Mi memory. The HPA's utilization targets are relative to the
    /// requests. Unless requests or limits name `ephemeral-storage`, the operator adds a request
    /// of 64Mi and a limit of 1Gi (logs, the writable layer and `/tmp`, itself limited to
    /// 256Mi), so a pod that fills its disk is evicted instead of the node.
    #[serde(default = "default_resources")]
    pub resources: ResourceRequirements,

    /// Liveness, readiness and startup probe settings. Each probe can be tuned or turned off; the
    /// paths default to the runtime's `/health` and `/ready`.
    #[serde(default)]
    pub probes: ProbesSpec,

    /// Extra environment variables for the `agent` container, added after the operator's own
    /// (a variable set here overrides an injected one of the same name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,

    /// Extra environment sources (ConfigMaps, Secrets) for the `agent` container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from: Option<Vec<EnvFromSource>>,

    /// The Service in front of the pods.
    #[serde(default)]
    pub service: ServiceSpec,

    /// Create a PodDisruptionBudget so voluntary disruptions (node drains) keep enough pods up.
    /// Only created when at least 2 replicas are possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption_budget: Option<DisruptionBudgetSpec>,

    /// Create a NetworkPolicy that admits traffic to the agent port only from the sources
    /// listed here (and from the operator when it scrapes the pods for concurrency
    /// autoscaling); probes need no rule. Unset: no NetworkPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,

    /// Extra labels for the pods (the operator's `app.kubernetes.io/*` labels cannot be
    /// overridden).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,

    /// Extra annotations for the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,

    /// Node labels the pods must run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Pod affinity and anti-affinity rules. Setting it also turns off the default spread of
    /// the pods (see topologySpreadConstraints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// How the pods spread across zones and nodes. Default, when neither this nor affinity is
    /// set: a soft spread (ScheduleAnyway, maxSkew 1) across nodes (kubernetes.io/hostname) and
    /// zones (topology.kubernetes.io/zone) among the pods of the same rollout
    /// (matchLabelKeys pod-template-hash), so one node or zone going away does not take every
    /// replica; it never keeps a pod from being scheduled. Set it (an empty list means no
    /// constraint) or set affinity to choose otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,

    /// ServiceAccount the pods run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Secrets used to pull the image from a private registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,

    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Server mode of `fastagentic run --server`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// One server process; the default, meant for development.
    #[default]
    Uvicorn,
    /// A pre-fork master with `workers` worker processes; meant for production.
    Gunicorn,
}

impl ServerKind {
    /// The value of `--server` / `FASTAGENTIC_SERVER`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerKind::Uvicorn => "uvicorn",
            ServerKind::Gunicorn => "gunicorn",
        }
    }
}

/// Where runs are recorded: `fastagentic run --durable-store`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DurableStore {
    /// In each worker process's memory; lost with the pod, not shared between pods.
    Memory,
    /// In Redis (`spec.redis`).
    Redis,
    /// In PostgreSQL (`spec.database`).
    Postgres,
}

impl DurableStore {
    /// The value of `--durable-store` / `FASTAGENTIC_DURABLE_STORE`.
    pub fn as_str(self) -> &'static str {
        match self {
            DurableStore::Memory => "memory",
            DurableStore::Redis => "redis",
            DurableStore::Postgres => "postgres",
        }
    }
}

/// The event logs of streamed and background runs. Fields left out take the runtime's
/// defaults.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StreamsSpec {
    /// Events kept per run (`FASTAGENTIC_STREAM_EVENTS_MAX`, runtime default 10000); the oldest
    /// are dropped beyond it, and a resume from before them is answered 410.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub events_max: Option<i32>,

    /// Seconds a run's events are kept after its last event (`FASTAGENTIC_STREAM_EVENTS_TTL`,
    /// runtime default 3600; at most a week).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604_800))]
    pub events_ttl_seconds: Option<i32>,
}

/// When the kubelet pulls the image: `Always`, `IfNotPresent` or `Never`. Unset: Kubernetes'
/// default (`Always` for a `:latest` tag, otherwise `IfNotPresent`).
// This doc is the description `kubectl explain` shows for every `imagePullPolicy` field: the CRD
// generator puts an optional enum's own doc in place of the field's.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePullPolicy {
    /// Pull on every start.
    Always,
    /// Pull when the image is not on the node.
    IfNotPresent,
    /// Never pull; the image must be on the node.
    Never,
}

impl ImagePullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// HorizontalPodAutoscaler settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.minReplicas <= self.maxReplicas")
        .message("spec.autoscaling.minReplicas must be less than or equal to spec.autoscaling.maxReplicas")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("self.targetCPUUtilizationPercentage > 0 || self.targetMemoryUtilizationPercentage > 0 || has(self.targetConcurrencyUtilizationPercentage)")
        .message("spec.autoscaling needs a target: targetCPUUtilizationPercentage, targetMemoryUtilizationPercentage or targetConcurrencyUtilizationPercentage")
        .reason(Reason::FieldValueRequired),
)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Fewest pods the autoscaler keeps.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,

    /// Most pods the autoscaler creates. Also the multiplier of the connection budget reported
    /// in status.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,

    /// Average CPU utilization, in percent of the CPU request, the autoscaler aims for. Set to 0
    /// to leave CPU out (an agent waiting on a model API uses little CPU however busy it is:
    /// scale it on `targetConcurrencyUtilizationPercentage`).
    #[serde(default = "default_target_cpu")]
    #[serde(rename = "targetCPUUtilizationPercentage")]
    #[schemars(range(min = 0, max = 1000))]
    pub target_cpu_utilization_percentage: i32,

    /// Average memory utilization, in percent of the memory request, the autoscaler aims for.
    /// Set to 0 to scale on CPU only.
    #[serde(default = "default_target_memory")]
    #[schemars(range(min = 0, max = 1000))]
    pub target_memory_utilization_percentage: i32,

    /// Average concurrency utilization, in percent, the autoscaler aims for: requests in flight
    /// in a pod over what it admits (`maxConcurrent` x accepting workers), as the operator
    /// scrapes it from the pods every few seconds and serves it on the `custom.metrics.k8s.io`
    /// API (metric `fastagentic_concurrency_utilization`). Needs `spec.maxConcurrent`. Works
    /// alone or with the CPU and memory targets (the autoscaler follows whichever asks for the
    /// most pods). Unless `behavior` is given, scale-up reacts at once (no stabilization; at
    /// most doubling, or +4 pods, per 15 s) and scale-down waits 5 minutes of lower
    /// recommendations, then removes at most half of the pods per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_concurrency_utilization_percentage: Option<i32>,

    /// Scale-up and scale-down behavior, passed to the HorizontalPodAutoscaler as is (with
    /// `targetConcurrencyUtilizationPercentage`, it replaces the operator's default behavior).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

/// A key of a Secret in the FastAgentic's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[x_kube(validation = Rule::new("self.size() > 0").message("the Secret name must not be empty"))]
    pub name: String,
    /// Key in the Secret whose value is the URL.
    #[x_kube(validation = Rule::new("self.size() > 0").message("the Secret key must not be empty"))]
    pub key: String,
}

/// Redis connection pool (one pool per worker process).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.url) != has(self.urlSecretRef)")
        .message("set exactly one of spec.redis.url and spec.redis.urlSecretRef")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.url) || !self.url.contains('@')")
        .message("spec.redis.url must not contain credentials; put the URL in a Secret and use spec.redis.urlSecretRef")
        .reason(Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// Redis URL without credentials, for example `redis://redis:6379/0`. Injected as `REDIS_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// Secret key holding the Redis URL (use this when the URL carries a password). Injected as
    /// `REDIS_URL` by reference; the operator never copies the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,

    /// Connections per worker (`--redis-pool-size`). A pod opens at most `workers x poolSize`.
    #[serde(default = "default_redis_pool_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub pool_size: i32,

    /// Seconds a request waits for a free Redis connection before it gets HTTP 503
    /// (`FASTAGENTIC_REDIS_POOL_TIMEOUT`).
    #[serde(default = "default_redis_pool_timeout")]
    #[x_kube(validation = Rule::new("self > 0.0").message("spec.redis.poolTimeoutSeconds must be greater than 0"))]
    pub pool_timeout_seconds: f64,
}

/// PostgreSQL connection pool (one pool per worker process).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Secret key holding the database URL (`postgres://user:password@host:5432/db`). Injected
    /// as `DATABASE_URL` by reference; the operator never copies the value.
    pub url_secret_ref: SecretKeyRef,

    /// Connections each worker keeps open (`--db-pool-size`).
    #[serde(default = "default_db_pool_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub pool_size: i32,

    /// Extra connections each worker may open under load (`--db-max-overflow`). A pod opens at
    /// most `workers x (poolSize + maxOverflow)`.
    #[serde(default = "default_db_max_overflow")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_overflow: i32,

    /// Seconds after which a connection is closed and replaced (`FASTAGENTIC_DB_POOL_RECYCLE`).
    #[serde(default = "default_db_pool_recycle")]
    #[schemars(range(min = 1))]
    pub pool_recycle_seconds: i32,

    /// Test each connection before use (`FASTAGENTIC_DB_POOL_PRE_PING`), so connections dropped
    /// by the server are replaced instead of failing a request.
    #[serde(default = "default_true")]
    pub pre_ping: bool,

    /// Seconds a request waits for a free database connection before it fails
    /// (`FASTAGENTIC_DB_POOL_TIMEOUT`).
    #[serde(default = "default_db_pool_timeout")]
    #[x_kube(validation = Rule::new("self > 0.0").message("spec.database.poolTimeoutSeconds must be greater than 0"))]
    pub pool_timeout_seconds: f64,
}

/// Server timeouts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutsSpec {
    /// Seconds an idle keep-alive connection stays open (`FASTAGENTIC_TIMEOUT_KEEP_ALIVE`).
    #[serde(default = "default_keep_alive")]
    #[schemars(range(min = 1, max = 3600))]
    pub keep_alive_seconds: i32,

    /// Seconds in-flight requests get to finish after SIGTERM (`--timeout-graceful`). The pod's
    /// `terminationGracePeriodSeconds` is set above it.
    #[serde(default = "default_graceful")]
    #[schemars(range(min = 1, max = 3600))]
    pub graceful_shutdown_seconds: i32,

    /// Seconds a deleted pod keeps serving before the runtime is sent SIGTERM (a preStop sleep),
    /// so that kube-proxy, ingress controllers and load balancers stop sending it new
    /// connections before it closes its listener. 0 turns it off. `terminationGracePeriodSeconds`
    /// covers it and the graceful timeout.
    #[serde(default = "default_drain_delay")]
    #[schemars(range(min = 0, max = 300))]
    pub drain_delay_seconds: i32,

    /// Seconds the runtime waits for the agent's answer, or for the first chunk of a stream
    /// (`FASTAGENTIC_AGENT_FIRST_BYTE_TIMEOUT`); past it the request answers 504 `agent_timeout`.
    /// Unset: the runtime's agent timeout (`FASTAGENTIC_AGENT_TIMEOUT`, 60 s). It must stay below
    /// the runtime's run stale-after (`FASTAGENTIC_RUN_STALE_AFTER`, 300 s unless set in
    /// `spec.env`), unless `runMaxSeconds` is below that, or the runtime does not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub agent_first_byte_seconds: Option<i32>,

    /// Longest wait, in seconds, between two chunks of a streamed answer
    /// (`FASTAGENTIC_STREAM_IDLE_TIMEOUT`); past it the stream ends with an `agent_timeout`
    /// error event. Unset: the runtime's agent timeout (60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub stream_idle_seconds: Option<i32>,

    /// Seconds a whole run may take, a stream included (`FASTAGENTIC_RUN_MAX_DURATION`); 0 is
    /// unlimited. Unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub run_max_seconds: Option<i32>,

    /// Seconds without an event after which a stream sends an SSE comment (`: keep-alive`), so
    /// proxies and load balancers do not cut a quiet stream (`FASTAGENTIC_STREAM_HEARTBEAT`); 0
    /// turns it off. Unset: 15.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub stream_heartbeat_seconds: Option<i32>,
}

impl Default for TimeoutsSpec {
    fn default() -> Self {
        Self {
            keep_alive_seconds: DEFAULT_KEEP_ALIVE_SECONDS,
            graceful_shutdown_seconds: DEFAULT_GRACEFUL_SHUTDOWN_SECONDS,
            drain_delay_seconds: DEFAULT_DRAIN_DELAY_SECONDS,
            agent_first_byte_seconds: None,
            stream_idle_seconds: None,
            run_max_seconds: None,
            stream_heartbeat_seconds: None,
        }
    }
}

/// Probe settings. Fields left out take the operator's defaults for that probe.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbesSpec {
    /// Liveness probe (`GET /health`, after 10 s, every 10 s): restarts a hung container. It
    /// does not check Redis or PostgreSQL, so a store outage never restarts pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<ProbeSpec>,

    /// Readiness probe (`GET /ready`, after 5 s, every 5 s): takes the pod out of the Service
    /// while a store is unreachable or the server is draining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ProbeSpec>,

    /// Startup probe (`GET /health`, every 2 s, up to 30 times): holds liveness off while the
    /// server starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<ProbeSpec>,
}

/// One HTTP probe on the agent port.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// Turn the probe off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,

    /// HTTP path to probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("a probe path must start with '/'"))]
    pub path: Option<String>,

    /// Seconds after the container starts before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub initial_delay_seconds: Option<i32>,

    /// Seconds between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub period_seconds: Option<i32>,

    /// Seconds after which a probe times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<i32>,

    /// Consecutive failures before the probe counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub failure_threshold: Option<i32>,
}

/// The Service in front of the pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,

    /// Port the Service exposes (its port named `http`); defaults to `spec.port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// Extra annotations for the Service (for example load-balancer settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,

    /// Extra labels for the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Kubernetes Service type.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Also through a cloud load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// PodDisruptionBudget settings. Set at most one of the two fields; with neither,
/// `maxUnavailable: 1` is used.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!(has(self.maxUnavailable) && has(self.minAvailable))")
    .message("set at most one of spec.disruptionBudget.maxUnavailable and spec.disruptionBudget.minAvailable")
    .reason(Reason::FieldValueForbidden))]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudgetSpec {
    /// Pods (number or percentage) that may be down during a voluntary disruption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,

    /// Pods (number or percentage) that must stay up during a voluntary disruption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
}

fn default_workers() -> i32 {
    DEFAULT_WORKERS
}
fn default_port() -> i32 {
    DEFAULT_PORT
}
fn default_min_replicas() -> i32 {
    DEFAULT_MIN_REPLICAS
}
fn default_target_cpu() -> i32 {
    DEFAULT_TARGET_CPU_PERCENT
}
fn default_target_memory() -> i32 {
    DEFAULT_TARGET_MEMORY_PERCENT
}
fn default_redis_pool_size() -> i32 {
    DEFAULT_REDIS_POOL_SIZE
}
fn default_redis_pool_timeout() -> f64 {
    DEFAULT_REDIS_POOL_TIMEOUT_SECONDS
}
fn default_db_pool_size() -> i32 {
    DEFAULT_DB_POOL_SIZE
}
fn default_db_max_overflow() -> i32 {
    DEFAULT_DB_MAX_OVERFLOW
}
fn default_db_pool_recycle() -> i32 {
    DEFAULT_DB_POOL_RECYCLE_SECONDS
}
fn default_db_pool_timeout() -> f64 {
    DEFAULT_DB_POOL_TIMEOUT_SECONDS
}
fn default_keep_alive() -> i32 {
    DEFAULT_KEEP_ALIVE_SECONDS
}
fn default_graceful() -> i32 {
    DEFAULT_GRACEFUL_SHUTDOWN_SECONDS
}
fn default_drain_delay() -> i32 {
    DEFAULT_DRAIN_DELAY_SECONDS
}
fn default_true() -> bool {
    true
}

/// The seed's container resources: requests 250m / 256Mi, limits 1000m / 512Mi.
pub fn default_resources() -> ResourceRequirements {
    let pair = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory.to_string())),
        ])
    };
    ResourceRequirements {
        requests: Some(pair(DEFAULT_REQUEST_CPU, DEFAULT_REQUEST_MEMORY)),
        limits: Some(pair(DEFAULT_LIMIT_CPU, DEFAULT_LIMIT_MEMORY)),
        ..Default::default()
    }
}

impl FastAgenticSpec {
    /// Most pods this resource can run: `autoscaling.maxReplicas`, else `replicas`, else 1.
    pub fn max_pods(&self) -> i32 {
        match (&self.autoscaling, self.replicas) {
            (Some(a), _) => a.max_replicas,
            (None, Some(r)) => r,
            (None, None) => 1,
        }
    }

    /// Upper bound of Redis connections all pods together can open:
    /// `maxReplicas x workers x poolSize`. `None` when Redis is not configured.
    pub fn max_redis_connections(&self) -> Option<i64> {
        self.redis
            .as_ref()
            .map(|r| i64::from(self.max_pods()) * i64::from(self.workers) * i64::from(r.pool_size))
    }

    /// Upper bound of PostgreSQL connections all pods together can open:
    /// `maxReplicas x workers x (poolSize + maxOverflow)`. `None` when no database is configured.
    pub fn max_database_connections(&self) -> Option<i64> {
        self.database.as_ref().map(|d| {
            i64::from(self.max_pods())
                * i64::from(self.workers)
                * (i64::from(d.pool_size) + i64::from(d.max_overflow))
        })
    }
}
