//! What the operator and the `fastagentic` runtime agree on, in one place: the environment
//! variables the operator sets and the runtime reads ([`env`]), the HTTP headers and paths the
//! runtime answers with and the operator probes ([`header`], [`path`]), and every default that
//! the CRD, the operator and the runtime share ([`defaults`]). No dependencies; both sides
//! depend on it, so a renamed variable or a changed default is one edit and a compile error
//! wherever it is used.

/// Environment variables of `fastagentic run` (each is also a `--flag`; see the runtime's
/// `--help`). The operator renders them into the pod; the runtime's clap options read them.
pub mod env {
    /// `--server`: `uvicorn` or `gunicorn`.
    pub const SERVER: &str = "FASTAGENTIC_SERVER";
    /// `--host`.
    pub const HOST: &str = "FASTAGENTIC_HOST";
    /// `--port`.
    pub const PORT: &str = "FASTAGENTIC_PORT";
    /// `--workers`.
    pub const WORKERS: &str = "FASTAGENTIC_WORKERS";
    /// `--reload`.
    pub const RELOAD: &str = "FASTAGENTIC_RELOAD";
    /// `--max-concurrent`.
    pub const MAX_CONCURRENT: &str = "FASTAGENTIC_MAX_CONCURRENT";
    /// `--instance-id` (the pod name, from the downward API).
    pub const INSTANCE_ID: &str = "FASTAGENTIC_INSTANCE_ID";
    /// `--title`.
    pub const TITLE: &str = "FASTAGENTIC_TITLE";
    /// `--max-requests`.
    pub const MAX_REQUESTS: &str = "FASTAGENTIC_MAX_REQUESTS";
    /// `--max-requests-jitter`.
    pub const MAX_REQUESTS_JITTER: &str = "FASTAGENTIC_MAX_REQUESTS_JITTER";
    /// `--redis-pool-size`.
    pub const REDIS_POOL_SIZE: &str = "FASTAGENTIC_REDIS_POOL_SIZE";
    /// `--redis-pool-timeout`.
    pub const REDIS_POOL_TIMEOUT: &str = "FASTAGENTIC_REDIS_POOL_TIMEOUT";
    /// `--db-pool-size`.
    pub const DB_POOL_SIZE: &str = "FASTAGENTIC_DB_POOL_SIZE";
    /// `--db-max-overflow`.
    pub const DB_MAX_OVERFLOW: &str = "FASTAGENTIC_DB_MAX_OVERFLOW";
    /// `--db-pool-recycle`.
    pub const DB_POOL_RECYCLE: &str = "FASTAGENTIC_DB_POOL_RECYCLE";
    /// `--db-pool-pre-ping`.
    pub const DB_POOL_PRE_PING: &str = "FASTAGENTIC_DB_POOL_PRE_PING";
    /// `--db-pool-timeout`.
    pub const DB_POOL_TIMEOUT: &str = "FASTAGENTIC_DB_POOL_TIMEOUT";
    /// `--timeout-graceful`.
    pub const TIMEOUT_GRACEFUL_SHUTDOWN: &str = "FASTAGENTIC_TIMEOUT_GRACEFUL_SHUTDOWN";
    /// `--timeout-keep-alive`.
    pub const TIMEOUT_KEEP_ALIVE: &str = "FASTAGENTIC_TIMEOUT_KEEP_ALIVE";
    /// `--max-body-size`.
    pub const MAX_BODY_SIZE: &str = "FASTAGENTIC_MAX_BODY_SIZE";
    /// `--echo-delay-ms`.
    pub const ECHO_DELAY_MS: &str = "FASTAGENTIC_ECHO_DELAY_MS";
    /// `--log-level`.
    pub const LOG_LEVEL: &str = "FASTAGENTIC_LOG_LEVEL";
    /// `--durable-store`.
    pub const DURABLE_STORE: &str = "FASTAGENTIC_DURABLE_STORE";
    /// `--run-stale-after`.
    pub const RUN_STALE_AFTER: &str = "FASTAGENTIC_RUN_STALE_AFTER";
    /// `--memory-store-max-bytes`.
    pub const MEMORY_STORE_MAX_BYTES: &str = "FASTAGENTIC_MEMORY_STORE_MAX_BYTES";
    /// `--stream-events-max`.
    pub const STREAM_EVENTS_MAX: &str = "FASTAGENTIC_STREAM_EVENTS_MAX";
    /// `--stream-events-ttl`.
    pub const STREAM_EVENTS_TTL: &str = "FASTAGENTIC_STREAM_EVENTS_TTL";
    /// `--run-webhook-url`.
    pub const RUN_WEBHOOK_URL: &str = "FASTAGENTIC_RUN_WEBHOOK_URL";
    /// `--agent`.
    pub const AGENT: &str = "FASTAGENTIC_AGENT";
    /// `--agent-url`.
    pub const AGENT_URL: &str = "FASTAGENTIC_AGENT_URL";
    /// `--agent-stream-url`.
    pub const AGENT_STREAM_URL: &str = "FASTAGENTIC_AGENT_STREAM_URL";
    /// `--agent-format`.
    pub const AGENT_FORMAT: &str = "FASTAGENTIC_AGENT_FORMAT";
    /// `--agent-reply-field`.
    pub const AGENT_REPLY_FIELD: &str = "FASTAGENTIC_AGENT_REPLY_FIELD";
    /// `--agent-ready-url`.
    pub const AGENT_READY_URL: &str = "FASTAGENTIC_AGENT_READY_URL";
    /// `--agent-timeout`.
    pub const AGENT_TIMEOUT: &str = "FASTAGENTIC_AGENT_TIMEOUT";
    /// `--agent-first-byte-timeout`.
    pub const AGENT_FIRST_BYTE_TIMEOUT: &str = "FASTAGENTIC_AGENT_FIRST_BYTE_TIMEOUT";
    /// `--stream-idle-timeout`.
    pub const STREAM_IDLE_TIMEOUT: &str = "FASTAGENTIC_STREAM_IDLE_TIMEOUT";
    /// `--run-max-duration`.
    pub const RUN_MAX_DURATION: &str = "FASTAGENTIC_RUN_MAX_DURATION";
    /// `--stream-heartbeat`.
    pub const STREAM_HEARTBEAT: &str = "FASTAGENTIC_STREAM_HEARTBEAT";
    /// `--model`.
    pub const MODEL: &str = "FASTAGENTIC_MODEL";
    /// Testing aid (hidden flag `--enable-test-routes`).
    pub const ENABLE_TEST_ROUTES: &str = "FASTAGENTIC_ENABLE_TEST_ROUTES";
    /// `--redis-url` (the seed's name, without prefix).
    pub const REDIS_URL: &str = "REDIS_URL";
    /// `--database-url` (the seed's name, without prefix).
    pub const DATABASE_URL: &str = "DATABASE_URL";
    /// `--openai-base-url`.
    pub const OPENAI_BASE_URL: &str = "OPENAI_BASE_URL";
    /// `--openai-api-key`.
    pub const OPENAI_API_KEY: &str = "OPENAI_API_KEY";
}

/// HTTP headers of the runtime's API (lower case, as `http::HeaderName` wants them).
pub mod header {
    /// On every response: the answering instance (the pod name in Kubernetes).
    pub const INSTANCE: &str = "x-fastagentic-instance";
    /// `true` on an answer served from the durable store without running the agent.
    pub const REPLAYED: &str = "x-fastagentic-replayed";
    /// Request header accepted as the run id.
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
}

/// Paths of the runtime's probes, which the operator points the pod's probes at.
pub mod path {
    /// Liveness: `GET /health`.
    pub const HEALTH: &str = "/health";
    /// Readiness: `GET /ready`.
    pub const READY: &str = "/ready";
    /// Metrics: `GET /metrics`.
    pub const METRICS: &str = "/metrics";
}

/// Defaults shared by the CRD's schema, the operator's builders and `fastagentic run`.
pub mod defaults {
    /// `--port`.
    pub const PORT: u16 = 8000;
    /// `--workers`.
    pub const WORKERS: u32 = 1;
    /// `--redis-pool-size`.
    pub const REDIS_POOL_SIZE: u32 = 10;
    /// `--redis-pool-timeout`, seconds.
    pub const REDIS_POOL_TIMEOUT_SECONDS: f64 = 5.0;
    /// `--db-pool-size`.
    pub const DB_POOL_SIZE: u32 = 5;
    /// `--db-max-overflow`.
    pub const DB_MAX_OVERFLOW: u32 = 10;
    /// `--db-pool-recycle`, seconds (30 minutes).
    pub const DB_POOL_RECYCLE_SECONDS: u32 = 1800;
    /// `--db-pool-timeout`, seconds.
    pub const DB_POOL_TIMEOUT_SECONDS: f64 = 30.0;
    /// `--timeout-keep-alive`, seconds.
    pub const KEEP_ALIVE_SECONDS: u32 = 5;
    /// `--timeout-graceful`, seconds.
    pub const GRACEFUL_SHUTDOWN_SECONDS: u32 = 30;
}
