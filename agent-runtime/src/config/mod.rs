//! Command line and environment configuration of `fastagentic`.
//!
//! Everything is parsed once, here, into typed values ([`RunArgs`]); the rest of the runtime
//! never reads the environment. Every option of the seed's CLI table is a flag and a
//! `FASTAGENTIC_*` variable (names and shared defaults from `fastagentic_contract`); clap gives
//! flag over variable over default. Value parsers ([`crate::parse`]) say what is accepted, and
//! [`parse_cli`] turns any clap error into a single line naming the flag and the variable (exit
//! status 2), never a panic.
//!
//! Other modules add their own options by defining a `#[derive(clap::Args)]` struct and
//! flattening it into [`RunArgs`] (`#[command(flatten)] pub store: crate::store::StoreArgs`).

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fastagentic_contract::{defaults, env};

use crate::parse;

/// Exit status for a configuration error (same as clap's usage errors).
pub const EXIT_USAGE: u8 = 2;

/// Upper bound for `--workers`: far above any useful pod size, low enough to catch typos.
pub const MAX_WORKERS: u32 = 512;

/// Default `--stream-heartbeat`, seconds: below the 30-60 s idle cut of common proxies and load
/// balancers.
pub const DEFAULT_STREAM_HEARTBEAT_SECS: u64 = 15;

/// The `fastagentic` command line.
#[derive(Debug, Parser)]
#[command(
    name = "fastagentic",
    version,
    about = "FastAgentic agent server: a pooled, concurrency-limited HTTP API for agents"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the agent API (every option can also be set by its FASTAGENTIC_* variable).
    Run(RunArgs),
    /// Internal: one pre-fork worker process, started by the `run` supervisor.
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// Server kind, as in the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServerKind {
    /// One server process (development default).
    Uvicorn,
    /// A pre-fork master with `--workers` worker processes.
    Gunicorn,
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerKind::Uvicorn => "uvicorn",
            ServerKind::Gunicorn => "gunicorn",
        })
    }
}

/// `--max-concurrent`: a positive limit per worker, or unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyLimit(pub Option<NonZeroU32>);

impl fmt::Display for ConcurrencyLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("unlimited"),
        }
    }
}

/// `--instance-id`: given, or `auto` (`<hostname>-<pid>`, resolved by [`RunArgs::instance_id`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceIdArg {
    /// `<hostname>-<pid>` of the process that resolves it (the supervisor in pre-fork mode).
    Auto,
    /// As given.
    Fixed(String),
}

/// Options of `fastagentic run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Server type: `uvicorn` (one process) or `gunicorn` (pre-fork master and workers).
    #[arg(long, env = env::SERVER, default_value = "uvicorn",
          value_enum, ignore_case = true, hide_possible_values = true, help_heading = "Server")]
    pub server: ServerKind,

    /// Host (IP address) to bind to; `localhost` means 127.0.0.1.
    #[arg(long, env = env::HOST, default_value = "127.0.0.1",
          value_parser = parse::host, help_heading = "Server")]
    pub host: IpAddr,

    /// Port to bind to (1-65535).
    #[arg(long, allow_negative_numbers = true, env = env::PORT, default_value_t = defaults::PORT,
          value_parser = parse::port, help_heading = "Server")]
    pub port: u16,

    /// Number of worker processes (1-512).
    #[arg(long, allow_negative_numbers = true, env = env::WORKERS, default_value_t = defaults::WORKERS,
          value_parser = parse::workers, help_heading = "Server")]
    pub workers: u32,

    /// Restart the server when a file in the working directory changes (development only;
    /// not with gunicorn or several workers).
    #[arg(long, env = env::RELOAD, default_value = "false", num_args = 0..=1,
          default_missing_value = "true", value_parser = parse::switch(), ignore_case = true,
          help_heading = "Server")]
    pub reload: bool,

    /// Max concurrent requests per worker (a positive integer, or `unlimited`); over it,
    /// HTTP 503 at once with Retry-After.
    #[arg(long, allow_negative_numbers = true, env = env::MAX_CONCURRENT, default_value = "unlimited",
          value_parser = |s: &str| parse::limit(s).map(ConcurrencyLimit), help_heading = "Server")]
    pub max_concurrent: ConcurrencyLimit,

    /// Instance ID for metrics, logs and the X-FastAgentic-Instance header (`auto`:
    /// `<hostname>-<pid>`).
    #[arg(long, env = env::INSTANCE_ID, default_value = "auto",
          value_parser = parse_instance_id, help_heading = "Server")]
    pub instance_id: InstanceIdArg,

    /// Title reported by /health.
    #[arg(long, env = env::TITLE, default_value = "FastAgentic",
          value_parser = parse::title, help_heading = "Server")]
    pub title: String,

    /// Recycle a worker after this many requests (0 = never).
    #[arg(long, allow_negative_numbers = true, env = env::MAX_REQUESTS, default_value = "0",
          value_parser = parse::count, help_heading = "Workers")]
    pub max_requests: u64,

    /// Add a random 0..=N to each worker's --max-requests so workers do not recycle together.
    #[arg(long, allow_negative_numbers = true, env = env::MAX_REQUESTS_JITTER, default_value = "0",
          value_parser = parse::count, help_heading = "Workers")]
    pub max_requests_jitter: u64,

    /// Redis connection pool size per worker.
    #[arg(long, allow_negative_numbers = true, env = env::REDIS_POOL_SIZE, default_value_t = defaults::REDIS_POOL_SIZE,
          value_parser = parse::pool_size, help_heading = "Pools")]
    pub redis_pool_size: u32,

    /// Seconds to wait for a Redis connection from the pool.
    #[arg(long, allow_negative_numbers = true, env = env::REDIS_POOL_TIMEOUT,
          default_value = format!("{:?}", defaults::REDIS_POOL_TIMEOUT_SECONDS), // 5.0, as the seed writes it
          value_parser = parse::positive_seconds, help_heading = "Pools")]
    pub redis_pool_timeout: Duration,

    /// Database connection pool size per worker (connections kept).
    #[arg(long, allow_negative_numbers = true, env = env::DB_POOL_SIZE, default_value_t = defaults::DB_POOL_SIZE,
          value_parser = parse::pool_size, help_heading = "Pools")]
    pub db_pool_size: u32,

    /// Additional database connections per worker under load.
    #[arg(long, allow_negative_numbers = true, env = env::DB_MAX_OVERFLOW, default_value_t = defaults::DB_MAX_OVERFLOW,
          value_parser = parse::overflow, help_heading = "Pools")]
    pub db_max_overflow: u32,

    /// Graceful shutdown timeout in seconds: in-flight requests still running after it are cut.
    #[arg(long, allow_negative_numbers = true, env = env::TIMEOUT_GRACEFUL_SHUTDOWN,
          default_value = defaults::GRACEFUL_SHUTDOWN_SECONDS.to_string(),
          value_parser = parse::seconds, help_heading = "Timeouts")]
    pub timeout_graceful: Duration,

    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, allow_negative_numbers = true, env = env::TIMEOUT_KEEP_ALIVE,
          default_value = defaults::KEEP_ALIVE_SECONDS.to_string(),
          value_parser = parse::positive_seconds, help_heading = "Timeouts")]
    pub timeout_keep_alive: Duration,

    /// Seconds without an event after which `/chat/stream` sends an SSE comment
    /// (`: keep-alive`), so proxies do not cut a quiet stream (0 = off).
    #[arg(long, allow_negative_numbers = true, env = env::STREAM_HEARTBEAT,
          default_value = DEFAULT_STREAM_HEARTBEAT_SECS.to_string(),
          value_parser = parse::heartbeat, help_heading = "Timeouts")]
    pub stream_heartbeat: Duration,

    /// Largest accepted request body in bytes (larger: HTTP 413).
    #[arg(long, allow_negative_numbers = true, env = env::MAX_BODY_SIZE, default_value = "1048576",
          value_parser = parse::body_size, help_heading = "Server")]
    pub max_body_size: usize,

    /// Milliseconds the built-in `echo` agent waits before answering (to show load without
    /// an LLM).
    #[arg(long, allow_negative_numbers = true, env = env::ECHO_DELAY_MS, default_value = "0",
          value_parser = parse::delay_ms, help_heading = "Agent")]
    pub echo_delay_ms: u64,

    /// Log filter (tracing EnvFilter syntax, e.g. `info` or `agent_runtime=debug`).
    #[arg(long, env = env::LOG_LEVEL, default_value = "info",
          value_parser = parse::log_filter, help_heading = "Server")]
    pub log_level: String,

    /// Redis and PostgreSQL URLs and the database pool's recycling, pre-ping and timeout.
    #[command(flatten)]
    pub pools: crate::pools::PoolArgs,

    /// Where runs are recorded.
    #[command(flatten)]
    pub store: crate::store::StoreArgs,

    /// URL POSTed the record of each finished background run (`POST /runs`), retried 5 times
    /// over 15 s; unset: none.
    #[arg(long, env = env::RUN_WEBHOOK_URL, value_parser = parse::http_url,
          help_heading = "Runs")]
    pub run_webhook_url: Option<reqwest::Url>,

    /// The agent backend.
    #[command(flatten)]
    pub agent: crate::agents::AgentArgs,

    /// Testing aid: adds `POST /__test/panic`, a handler that panics, and the
    /// `POST /__test/hold/{pool}/{ms}` routes that hold a pooled connection.
    #[arg(long, env = env::ENABLE_TEST_ROUTES, default_value = "false",
          num_args = 0..=1, default_missing_value = "true",
          value_parser = parse::switch(), ignore_case = true, hide = true)]
    pub enable_test_routes: bool,
}

/// Options of the hidden `worker` subcommand: the supervisor's `run` options plus the
/// file descriptors it passes down.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Inherited listening socket.
    #[arg(long)]
    pub listen_fd: i32,
    /// Inherited shared metrics file (memfd).
    #[arg(long)]
    pub metrics_fd: i32,
    /// This worker's slot in the metrics file.
    #[arg(long)]
    pub slot: usize,
    /// Number of slots in the metrics file.
    #[arg(long)]
    pub slots: usize,
    /// Requests after which this worker asks to be recycled (0 = never).
    #[arg(long, default_value = "0")]
    pub request_budget: u64,
    /// Pid of the supervisor; the worker stops when it goes away.
    #[arg(long)]
    pub master_pid: i32,
    /// The supervisor's resolved instance id (shared by all workers of the pod).
    #[arg(long)]
    pub pod_instance_id: String,
    /// The `run` options.
    #[command(flatten)]
    pub run: RunArgs,
}

/// How the process serves, derived from [`RunArgs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One process serves (uvicorn, one worker, no reload, no recycling).
    Single,
    /// A supervisor owns the socket and runs worker processes (gunicorn, several workers,
    /// recycling, or reload).
    Supervised,
}

impl RunArgs {
    /// Checks that need several options together. Returns the one-line error.
    pub fn validate(&self) -> Result<(), String> {
        if self.reload && self.server == ServerKind::Gunicorn {
            return Err(
                "invalid combination: --reload (FASTAGENTIC_RELOAD) is for development \
                 and cannot be used with --server gunicorn (FASTAGENTIC_SERVER); accepted: \
                 --reload with --server uvicorn"
                    .to_owned(),
            );
        }
        self.durable_store()?;
        self.stale_after_exceeds_run_time()?;
        if let Some(url) = &self.pools.redis_url
            && deadpool_redis::redis::Client::open(url.as_str()).is_err()
        {
            return Err(format!(
                "invalid value '{}' for REDIS_URL (--redis-url): accepted: \
                 redis://[:password@]host[:port][/db], rediss://... or unix:///path",
                crate::pools::redact_url(url)
            ));
        }
        if let Some(url) = &self.pools.database_url
            && (!(url.starts_with("postgres://") || url.starts_with("postgresql://"))
                || <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(url).is_err())
        {
            return Err(format!(
                "invalid value '{}' for DATABASE_URL (--database-url): accepted: \
                 postgres://user[:password]@host[:port]/database",
                crate::pools::redact_url(url)
            ));
        }
        // The backend is built again per worker; building it here reports a missing URL or
        // key as a usage error before anything starts.
        self.agent
            .build(Duration::from_millis(self.echo_delay_ms))
            .map(drop)
            .map_err(|e| format!("invalid agent configuration: {e}"))?;
        if self.reload && self.workers > 1 {
            return Err(format!(
                "invalid combination: --reload (FASTAGENTIC_RELOAD) with --workers \
                 (FASTAGENTIC_WORKERS) {}; accepted: --reload with --workers 1",
                self.workers
            ));
        }
        Ok(())
    }

    /// `--run-stale-after` must be longer than a live run may go without a store update, or a
    /// run that is merely slow would be taken over: the wait for its first byte
    /// (`--agent-first-byte-timeout`, default `--agent-timeout`), or `--run-max-duration` when
    /// that is set and shorter (see [`crate::agents::AgentArgs::live_run_bound`]). Every backend,
    /// the echo agent and its `--echo-delay-ms` included, is bounded by these limits; a stream
    /// sends heartbeats once it has begun.
    fn stale_after_exceeds_run_time(&self) -> Result<(), String> {
        let stale = self.store.run_stale_after;
        let bound = self.agent.live_run_bound();
        if stale <= bound.seconds {
            let (flag, env, seconds) = (bound.flag, bound.env, bound.seconds);
            return Err(format!(
                "invalid combination: --run-stale-after (FASTAGENTIC_RUN_STALE_AFTER) {stale} \
                 is not greater than {flag} ({env}) {seconds}; accepted: --run-stale-after \
                 greater than {flag}, so that a live run is never taken over"
            ));
        }
        Ok(())
    }

    /// The durable store to use: `--durable-store` when given (its URL must be set),
    /// otherwise the store whose URL is set when exactly one of `REDIS_URL` and `DATABASE_URL`
    /// is, otherwise memory (with both set the choice is ambiguous, so it stays memory until
    /// `--durable-store` picks one).
    pub fn durable_store(&self) -> Result<crate::store::DurableStoreKind, String> {
        crate::store::resolve_store_kind(
            self.store.durable_store,
            self.pools.redis_url.is_some(),
            self.pools.database_url.is_some(),
        )
        .map_err(|e| {
            format!(
                "invalid combination: --durable-store {kind} ({e}); accepted: memory, or \
                 redis with REDIS_URL, or postgres with DATABASE_URL",
                kind = e.kind
            )
        })
    }

    /// Which process model serves these options.
    pub fn mode(&self) -> Mode {
        if self.server == ServerKind::Uvicorn
            && self.workers == 1
            && !self.reload
            && self.max_requests == 0
        {
            Mode::Single
        } else {
            Mode::Supervised
        }
    }

    /// The instance id: as given, or `<hostname>-<pid>` of this process.
    pub fn instance_id(&self) -> String {
        match &self.instance_id {
            InstanceIdArg::Fixed(id) => id.clone(),
            InstanceIdArg::Auto => format!("{}-{}", hostname(), std::process::id()),
        }
    }

    /// The effective configuration as reported by `/metrics`.
    pub fn effective_json(&self) -> serde_json::Value {
        serde_json::json!({
            "server": self.server.to_string(),
            "host": self.host.to_string(),
            "port": self.port,
            "workers": self.workers,
            "reload": self.reload,
            "max_concurrent": self.max_concurrent.0.map(NonZeroU32::get),
            "title": self.title,
            "max_requests": self.max_requests,
            "max_requests_jitter": self.max_requests_jitter,
            "redis_pool_size": self.redis_pool_size,
            "redis_pool_timeout": self.redis_pool_timeout.as_secs_f64(),
            "db_pool_size": self.db_pool_size,
            "db_max_overflow": self.db_max_overflow,
            "timeout_graceful": self.timeout_graceful.as_secs_f64(),
            "timeout_keep_alive": self.timeout_keep_alive.as_secs_f64(),
            "stream_heartbeat": self.stream_heartbeat.as_secs_f64(),
            "max_body_size": self.max_body_size,
            "echo_delay_ms": self.echo_delay_ms,
            "redis_configured": self.pools.redis_url.is_some(),
            "database_configured": self.pools.database_url.is_some(),
            "db_pool_recycle": self.pools.db_pool_recycle.as_secs_f64(),
            "db_pool_pre_ping": self.pools.db_pool_pre_ping,
            "db_pool_timeout": self.pools.db_pool_timeout.as_secs_f64(),
            "durable_store": self.durable_store().ok().map(|k| k.to_string()),
            "run_stale_after": self.store.run_stale_after,
            "memory_store_max_bytes": self.store.memory_store_max_bytes,
            "agent": format!("{:?}", self.agent.agent).to_ascii_lowercase(),
            "agent_format": match self.agent.agent_format {
                crate::agents::AgentFormat::Json => "json",
                crate::agents::AgentFormat::ChatCompletions => "chat-completions",
            },
            "agent_streams": self.agent.agent_stream_url.is_some(),
            "agent_ready_check": self.agent.agent_ready_url.is_some(),
            "agent_timeout": self.agent.agent_timeout,
            "agent_first_byte_timeout": self.agent.first_byte_secs(),
            "stream_idle_timeout": self.agent.stream_idle_secs(),
            "run_max_duration": self.agent.run_max_duration,
            "model": self.agent.model,
        })
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `--instance-id`: `auto`, or 1-253 visible ASCII characters.
fn parse_instance_id(s: &str) -> Result<InstanceIdArg, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("auto") {
        return Ok(InstanceIdArg::Auto);
    }
    let ok = !t.is_empty() && t.len() <= 253 && t.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(InstanceIdArg::Fixed(t.to_owned()))
    } else {
        Err("accepted: 'auto' or 1-253 visible ASCII characters without spaces".to_owned())
    }
}

mod cli;
#[cfg(test)]
mod tests;

pub use cli::{CliOutcome, parse_cli};
