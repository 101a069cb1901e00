//! Default values, taken from the scaling guide (`fastagentic run` defaults and its Kubernetes
//! manifests). They are used both as schema defaults (so the API server fills them in) and by the
//! operator when a partially written object leaves a field out. The ones `fastagentic run` has
//! too come from [`fastagentic_contract::defaults`], so the three cannot drift apart.

use fastagentic_contract::defaults as shared;

/// `--port`.
pub const DEFAULT_PORT: i32 = shared::PORT as i32;
/// `--workers`.
pub const DEFAULT_WORKERS: i32 = shared::WORKERS as i32;
/// `--redis-pool-size`.
pub const DEFAULT_REDIS_POOL_SIZE: i32 = shared::REDIS_POOL_SIZE as i32;
/// `FASTAGENTIC_REDIS_POOL_TIMEOUT`, seconds.
pub const DEFAULT_REDIS_POOL_TIMEOUT_SECONDS: f64 = shared::REDIS_POOL_TIMEOUT_SECONDS;
/// `--db-pool-size`.
pub const DEFAULT_DB_POOL_SIZE: i32 = shared::DB_POOL_SIZE as i32;
/// `--db-max-overflow`.
pub const DEFAULT_DB_MAX_OVERFLOW: i32 = shared::DB_MAX_OVERFLOW as i32;
/// `FASTAGENTIC_DB_POOL_RECYCLE`, seconds (30 minutes).
pub const DEFAULT_DB_POOL_RECYCLE_SECONDS: i32 = shared::DB_POOL_RECYCLE_SECONDS as i32;
/// `FASTAGENTIC_DB_POOL_TIMEOUT`, seconds.
pub const DEFAULT_DB_POOL_TIMEOUT_SECONDS: f64 = shared::DB_POOL_TIMEOUT_SECONDS;
/// `FASTAGENTIC_TIMEOUT_KEEP_ALIVE`, seconds.
pub const DEFAULT_KEEP_ALIVE_SECONDS: i32 = shared::KEEP_ALIVE_SECONDS as i32;
/// `--timeout-graceful`, seconds.
pub const DEFAULT_GRACEFUL_SHUTDOWN_SECONDS: i32 = shared::GRACEFUL_SHUTDOWN_SECONDS as i32;
/// Seconds a deleted pod keeps serving before its runtime gets SIGTERM (a preStop sleep), so that
/// kube-proxy and load balancers stop sending it new connections first. Measured on the real-node
/// e2e (a rolling update under load): without it, connections reach a pod that already closed its
/// listener; see the README's "Draining" section.
pub const DEFAULT_DRAIN_DELAY_SECONDS: i32 = 5;
/// Port of the agent's container (`spec.agent.container.port`): the usual port of a Python
/// agent server. It must differ from `spec.port`, so a resource with a container agent sets one
/// of the two.
pub const DEFAULT_AGENT_CONTAINER_PORT: i32 = 8000;
/// Path the runtime POSTs requests to on the agent's container (`spec.agent.container.path`).
pub const DEFAULT_AGENT_CONTAINER_PATH: &str = "/chat";
/// HPA CPU target, percent.
pub const DEFAULT_TARGET_CPU_PERCENT: i32 = 70;
/// HPA memory target, percent.
pub const DEFAULT_TARGET_MEMORY_PERCENT: i32 = 80;
/// HPA lower bound when `autoscaling.minReplicas` is left out.
pub const DEFAULT_MIN_REPLICAS: i32 = 1;

/// Container resource requests and limits.
pub const DEFAULT_REQUEST_MEMORY: &str = "256Mi";
/// Container CPU request.
pub const DEFAULT_REQUEST_CPU: &str = "250m";
/// Container memory limit.
pub const DEFAULT_LIMIT_MEMORY: &str = "512Mi";
/// Container CPU limit.
pub const DEFAULT_LIMIT_CPU: &str = "1000m";
/// Container ephemeral-storage request, added by the operator unless `resources` sets one: the
/// writable layer, the `/tmp` volume and the container's logs (the kubelet keeps at most 5 x
/// 10 MiB of them by default) count against it.
pub const DEFAULT_REQUEST_EPHEMERAL_STORAGE: &str = "64Mi";
/// Container ephemeral-storage limit, added unless `resources` sets one: a pod writing more is
/// evicted instead of filling the node's disk.
pub const DEFAULT_LIMIT_EPHEMERAL_STORAGE: &str = "1Gi";
/// `sizeLimit` of the `/tmp` emptyDir (the root filesystem is read-only; the runtime itself
/// writes nothing there).
pub const TMP_SIZE_LIMIT: &str = "256Mi";

/// Liveness probe path (the runtime's `GET /health`).
pub const LIVENESS_PATH: &str = fastagentic_contract::path::HEALTH;
/// Readiness probe path (the runtime's `GET /ready`).
pub const READINESS_PATH: &str = fastagentic_contract::path::READY;
/// Liveness probe: initial delay and period, seconds.
pub const LIVENESS_INITIAL_DELAY_SECONDS: i32 = 10;
/// Liveness probe period, seconds.
pub const LIVENESS_PERIOD_SECONDS: i32 = 10;
/// Readiness probe initial delay, seconds.
pub const READINESS_INITIAL_DELAY_SECONDS: i32 = 5;
/// Readiness probe period, seconds.
pub const READINESS_PERIOD_SECONDS: i32 = 5;
/// Startup probe: checked every 2 s, up to 30 times (one minute to start) before liveness
/// takes over.
pub const STARTUP_PERIOD_SECONDS: i32 = 2;
/// Startup probe failure threshold.
pub const STARTUP_FAILURE_THRESHOLD: i32 = 30;
/// Probe timeout, seconds (Kubernetes' own default).
pub const PROBE_TIMEOUT_SECONDS: i32 = 1;
/// Probe failure threshold (Kubernetes' own default).
pub const PROBE_FAILURE_THRESHOLD: i32 = 3;

/// Name of the per-pod metric the operator serves on `custom.metrics.k8s.io` and the HPA reads
/// for `autoscaling.targetConcurrencyUtilizationPercentage`: in-flight requests over what the
/// pod admits, in percent.
pub const CONCURRENCY_METRIC: &str = "fastagentic_concurrency_utilization";
/// Default scale-up with a concurrency target: no stabilization; per 15 s at most doubling
/// the pods or adding this many, whichever is more.
pub const DEFAULT_SCALE_UP_PODS: i32 = 4;
/// Default scale-down with a concurrency target: the highest recommendation of this many
/// seconds wins (a burst's pods stay through a short lull).
pub const DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS: i32 = 300;
/// Default scale-down: at most this percentage of the pods removed per minute.
pub const DEFAULT_SCALE_DOWN_PERCENT_PER_MINUTE: i32 = 50;
