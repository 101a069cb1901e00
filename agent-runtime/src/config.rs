//! Command line and environment configuration of `fastagentic`.
//!
//! Everything is parsed once, here, into typed values ([`RunArgs`]); the rest of the runtime
//! never reads the environment. Every option of the seed's CLI table is a flag and a
//! `FASTAGENTIC_*` variable; clap gives flag over variable over default. Value parsers return
//! one-line messages saying what is accepted, and [`parse_cli`] turns any clap error into a
//! single line naming the flag and the variable (exit status 2), never a panic.
//!
//! Other modules add their own options by defining a `#[derive(clap::Args)]` struct and
//! flattening it into [`RunArgs`] (`#[command(flatten)] pub store: crate::store::StoreArgs`).

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand};

/// Exit status for a configuration error (same as clap's usage errors).
pub const EXIT_USAGE: u8 = 2;

/// Upper bound for `--workers`: far above any useful pod size, low enough to catch typos.
pub const MAX_WORKERS: u32 = 512;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    #[arg(long, env = "FASTAGENTIC_SERVER", default_value = "uvicorn",
          value_parser = parse_server, help_heading = "Server")]
    pub server: ServerKind,

    /// Host (IP address) to bind to; `localhost` means 127.0.0.1.
    #[arg(long, env = "FASTAGENTIC_HOST", default_value = "127.0.0.1",
          value_parser = parse_host, help_heading = "Server")]
    pub host: IpAddr,

    /// Port to bind to (1-65535).
    #[arg(long, allow_negative_numbers = true, env = "FASTAGENTIC_PORT", default_value = "8000",
          value_parser = parse_port, help_heading = "Server")]
    pub port: u16,

    /// Number of worker processes (1-512).
    #[arg(long, allow_negative_numbers = true, env = "FASTAGENTIC_WORKERS", default_value = "1",
          value_parser = parse_workers, help_heading = "Server")]
    pub workers: u32,

    /// Restart the server when a file in the working directory changes (development only;
    /// not with gunicorn or several workers).
    #[arg(long, env = "FASTAGENTIC_RELOAD", default_value = "false", num_args = 0..=1,
          default_missing_value = "true", value_parser = parse_bool,
          help_heading = "Server")]
    pub reload: bool,

    /// Max concurrent requests per worker (a positive integer, or `unlimited`); over it,
    /// HTTP 503 at once with Retry-After.
    #[arg(long, allow_negative_numbers = true, env = "FASTAGENTIC_MAX_CONCURRENT", default_value = "unlimited",
          value_parser = parse_limit, help_heading = "Server")]
    pub max_concurrent: ConcurrencyLimit,

    /// Instance ID for metrics, logs and the X-FastAgentic-Instance header (`auto`:
    /// `<hostname>-<pid>`).
    #[arg(long, env = "FASTAGENTIC_INSTANCE_ID", default_value = "auto",
          value_parser = parse_instance_id, help_heading = "Server")]
    pub instance_id: InstanceIdArg,

    /// Title reported by /health.
    #[arg(long, env = "FASTAGENTIC_TITLE", default_value = "FastAgentic",
          value_parser = parse_title, help_heading = "Server")]
    pub title: String,

    /// Recycle a worker after this many requests (0 = never).
    #[arg(long, allow_negative_numbers = true, env = "FASTAGENTIC_MAX_REQUESTS", default_value = "0",
          value_parser = parse_count, help_heading = "Workers")]
    pub max_requests: u64,

    /// Add a random 0..=N to each worker's --max-requests so workers do not recycle together.
    #[arg(long, allow_negative_numbers = true, env = "FASTAGENTIC_MAX_REQUESTS_JITTER", default_value = "0",
          value_parser = parse_count, help_heading = "Workers")]
    pub max_requests_jitter: u64,

    /// Redis connection pool size per worker.
    #[arg(long, allow_negative_numbers = true, env = "FASTAGENTIC_REDIS_POOL_SIZE", default_value = "10",
          value_parser = parse_pool_size, help_heading = "Pools")]
    pub redis_pool_size: u32,

    /// Seconds to wait for a Redis connection from the pool.
    #[arg(long, allow_negative_numbers = true, env = "FASTAGENTIC_REDIS_POOL_TIMEOUT", default_value = "5.0",
          value_parser = parse_positive_seconds, help_heading = "Pools")]
    pub redis_pool_timeout: Duration,

    /// Database connection pool size per worker (connections kept).
    #[arg(long, allow_negative_numbers = true, env = "FASTAGENTIC_DB_POOL_SIZE", default_value = "5",
          value_parser = parse_pool_size, help_heading = "Pools")]
    pub db_pool_size: u32,

    /// Additional database connections per worker under load.
    #[arg(long, allow_negative_numbers = true, env = "FASTAGENTIC_DB_MAX_OVERFLOW", default_value = "10",
          value_parser = parse_overflow, help_heading = "Pools")]
    pub db_max_overflow: u32,

    /// Graceful shutdown timeout in seconds: in-flight requests still running after it are cut.
    #[arg(long, allow_negative_numbers = true, env = "FASTAGENTIC_TIMEOUT_GRACEFUL_SHUTDOWN", default_value = "30",
          value_parser = parse_seconds, help_heading = "Timeouts")]
    pub timeout_graceful: Duration,

    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, allow_negative_numbers = true, env = "FASTAGENTIC_TIMEOUT_KEEP_ALIVE", default_value = "5",
          value_parser = parse_positive_seconds, help_heading = "Timeouts")]
    pub timeout_keep_alive: Duration,

    /// Largest accepted request body in bytes (larger: HTTP 413).
    #[arg(long, allow_negative_numbers = true, env = "FASTAGENTIC_MAX_BODY_SIZE", default_value = "1048576",
          value_parser = parse_body_size, help_heading = "Server")]
    pub max_body_size: usize,

    /// Milliseconds the built-in `echo` agent waits before answering (to show load without
    /// an LLM).
    #[arg(long, allow_negative_numbers = true, env = "FASTAGENTIC_ECHO_DELAY_MS", default_value = "0",
          value_parser = parse_delay_ms, help_heading = "Agent")]
    pub echo_delay_ms: u64,

    /// Log filter (tracing EnvFilter syntax, e.g. `info` or `agent_runtime=debug`).
    #[arg(long, env = "FASTAGENTIC_LOG_LEVEL", default_value = "info",
          value_parser = parse_log_filter, help_heading = "Server")]
    pub log_level: String,

    /// Redis and PostgreSQL URLs and the database pool's recycling, pre-ping and timeout.
    #[command(flatten)]
    pub pools: crate::pools::PoolArgs,

    /// Where runs are recorded.
    #[command(flatten)]
    pub store: crate::store::StoreArgs,

    /// The agent backend.
    #[command(flatten)]
    pub agent: crate::agents::AgentArgs,

    /// Testing aid: adds `POST /__test/panic`, a handler that panics, and the
    /// `POST /__test/hold/{pool}/{ms}` routes that hold a pooled connection.
    #[arg(long, env = "FASTAGENTIC_ENABLE_TEST_ROUTES", default_value = "false",
          num_args = 0..=1, default_missing_value = "true",
          value_parser = parse_bool, hide = true)]
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

    /// `--run-stale-after` must be longer than a live run may take (`--agent-timeout`, and the
    /// echo agent's `--echo-delay-ms`, which no timeout bounds), or a run that is merely slow
    /// would be taken over.
    fn stale_after_exceeds_run_time(&self) -> Result<(), String> {
        let stale = self.store.run_stale_after;
        let agent_timeout = self.agent.agent_timeout;
        if stale <= agent_timeout {
            return Err(format!(
                "invalid combination: --run-stale-after (FASTAGENTIC_RUN_STALE_AFTER) {stale} \
                 is not greater than --agent-timeout (FASTAGENTIC_AGENT_TIMEOUT) {agent_timeout}; \
                 accepted: --run-stale-after greater than --agent-timeout, so that a live run is \
                 never taken over"
            ));
        }
        let echo_delay = Duration::from_millis(self.echo_delay_ms).as_secs_f64();
        if stale <= echo_delay {
            return Err(format!(
                "invalid combination: --run-stale-after (FASTAGENTIC_RUN_STALE_AFTER) {stale} \
                 is not greater than --echo-delay-ms (FASTAGENTIC_ECHO_DELAY_MS) {} ({echo_delay} \
                 s); accepted: --run-stale-after greater than the echo delay, so that a live run \
                 is never taken over",
                self.echo_delay_ms
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
            "max_body_size": self.max_body_size,
            "echo_delay_ms": self.echo_delay_ms,
            "redis_configured": self.pools.redis_url.is_some(),
            "database_configured": self.pools.database_url.is_some(),
            "db_pool_recycle": self.pools.db_pool_recycle.as_secs_f64(),
            "db_pool_pre_ping": self.pools.db_pool_pre_ping,
            "db_pool_timeout": self.pools.db_pool_timeout.as_secs_f64(),
            "durable_store": self.durable_store().ok().map(|k| k.to_string()),
            "run_stale_after": self.store.run_stale_after,
            "agent": format!("{:?}", self.agent.agent).to_ascii_lowercase(),
            "agent_timeout": self.agent.agent_timeout,
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

/// What `main` should do after parsing.
#[derive(Debug)]
pub enum CliOutcome {
    /// Parsed and validated.
    Ok(Box<Cli>),
    /// Print to stdout and exit 0 (`--help`, `--version`).
    Print(String),
    /// Print this one line to stderr and exit with [`EXIT_USAGE`].
    Usage(String),
}

/// Parses and validates the command line (`args` includes the program name); the
/// environment supplies the `FASTAGENTIC_*` variables.
pub fn parse_cli<I, T>(args: I) -> CliOutcome
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => {
            let check = match &cli.command {
                Command::Run(run) => run.validate(),
                Command::Worker(w) => w.run.validate(),
            };
            match check {
                Ok(()) => CliOutcome::Ok(Box::new(cli)),
                Err(line) => CliOutcome::Usage(format!("fastagentic: {line}")),
            }
        }
        Err(err) => match err.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                CliOutcome::Print(err.render().to_string())
            }
            _ => CliOutcome::Usage(one_line(&err, &args)),
        },
    }
}

/// Renders a clap error as one line naming the flag, its variable, the value and what is
/// accepted.
fn one_line(err: &clap::Error, args: &[OsString]) -> String {
    let arg = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    if let (Some(arg), Some(value), ErrorKind::ValueValidation | ErrorKind::InvalidValue) =
        (&arg, &value, err.kind())
    {
        let long = arg.split_whitespace().next().unwrap_or(arg).to_owned();
        let env = env_of(&long);
        let accepted = match err.kind() {
            ErrorKind::ValueValidation => std::error::Error::source(err)
                .map(|s| s.to_string())
                .unwrap_or_else(|| "see --help".to_owned()),
            _ => match err.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(v)) => format!("one of {}", v.join(", ")),
                _ => "see --help".to_owned(),
            },
        };
        let on_command_line = args.iter().any(|a| {
            let a = a.to_string_lossy();
            a == long || a.starts_with(&format!("{long}="))
        });
        let origin = match (&env, on_command_line) {
            (Some(env), false) => format!("{env} (for {long})"),
            (Some(env), true) => format!("{long} (env {env})"),
            (None, _) => long.clone(),
        };
        return format!("fastagentic: invalid value '{value}' for {origin}: {accepted}");
    }
    // Anything else (unknown option, missing subcommand, ...): clap's first line.
    let rendered = err.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid command line")
        .trim()
        .trim_start_matches("error: ");
    format!("fastagentic: {first} (see 'fastagentic run --help')")
}

/// The variable of a `run` flag (`--workers` → `FASTAGENTIC_WORKERS`).
fn env_of(long: &str) -> Option<String> {
    let cmd = Cli::command();
    let name = long.trim_start_matches("--");
    cmd.get_subcommands()
        .flat_map(|s| s.get_arguments())
        .find(|a| a.get_long() == Some(name))
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
}

// ---- value parsers: each error says what is accepted ----

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "on" => Ok(true),
        "false" | "0" | "no" | "n" | "off" => Ok(false),
        _ => Err("accepted: true, false, 1, 0, yes, no, on, off".to_owned()),
    }
}

fn parse_server(s: &str) -> Result<ServerKind, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "uvicorn" => Ok(ServerKind::Uvicorn),
        "gunicorn" => Ok(ServerKind::Gunicorn),
        _ => Err("accepted: uvicorn, gunicorn".to_owned()),
    }
}

fn parse_host(s: &str) -> Result<IpAddr, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    s.parse()
        .map_err(|_| "accepted: an IPv4 or IPv6 address (e.g. 0.0.0.0, ::) or localhost".into())
}

fn int_in<T>(s: &str, lo: T, hi: T, what: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    match s.trim().parse::<T>() {
        Ok(v) if v >= lo && v <= hi => Ok(v),
        _ => Err(format!("accepted: {what}, an integer from {lo} to {hi}")),
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    int_in(s, 1, u16::MAX, "a TCP port")
}

fn parse_workers(s: &str) -> Result<u32, String> {
    int_in(s, 1, MAX_WORKERS, "a number of worker processes")
}

fn parse_pool_size(s: &str) -> Result<u32, String> {
    int_in(s, 1, 10_000, "a pool size")
}

fn parse_overflow(s: &str) -> Result<u32, String> {
    int_in(s, 0, 10_000, "a number of overflow connections")
}

fn parse_count(s: &str) -> Result<u64, String> {
    int_in(s, 0, u64::MAX, "a number of requests (0 = never)")
}

fn parse_body_size(s: &str) -> Result<usize, String> {
    int_in(s, 1, 1 << 32, "a size in bytes")
}

fn parse_delay_ms(s: &str) -> Result<u64, String> {
    int_in(s, 0, 600_000, "milliseconds")
}

fn parse_limit(s: &str) -> Result<ConcurrencyLimit, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("none") {
        return Ok(ConcurrencyLimit(None));
    }
    match t.parse::<u32>().ok().and_then(NonZeroU32::new) {
        Some(n) => Ok(ConcurrencyLimit(Some(n))),
        None => Err("accepted: a positive integer or 'unlimited'".to_owned()),
    }
}

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

fn parse_title(s: &str) -> Result<String, String> {
    if s.trim().is_empty() || s.len() > 200 {
        Err("accepted: a non-empty title of at most 200 bytes".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

fn seconds(s: &str, allow_zero: bool) -> Result<Duration, String> {
    let accepted = if allow_zero {
        "accepted: a number of seconds >= 0 (e.g. 30 or 0.5)"
    } else {
        "accepted: a number of seconds > 0 (e.g. 5 or 0.5)"
    };
    let v: f64 = s.trim().parse().map_err(|_| accepted.to_owned())?;
    if !v.is_finite() || v < 0.0 || (!allow_zero && v == 0.0) || v > 86_400.0 {
        return Err(accepted.to_owned());
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    seconds(s, true)
}

fn parse_positive_seconds(s: &str) -> Result<Duration, String> {
    seconds(s, false)
}

fn parse_log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|_| "accepted: a tracing filter such as info, warn or agent_runtime=debug".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> CliOutcome {
        let mut v = vec!["fastagentic", "run"];
        v.extend_from_slice(args);
        parse_cli(v)
    }

    #[test]
    fn defaults_follow_the_seed() {
        let CliOutcome::Ok(cli) = run(&[]) else {
            panic!("defaults must parse")
        };
        let Command::Run(r) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(r.server, ServerKind::Uvicorn);
        assert_eq!(r.host.to_string(), "127.0.0.1");
        assert_eq!(r.port, 8000);
        assert_eq!(r.workers, 1);
        assert!(!r.reload);
        assert_eq!(r.max_concurrent, ConcurrencyLimit(None));
        assert_eq!(r.redis_pool_size, 10);
        assert_eq!(r.redis_pool_timeout, Duration::from_secs(5));
        assert_eq!(r.db_pool_size, 5);
        assert_eq!(r.db_max_overflow, 10);
        assert_eq!(r.timeout_graceful, Duration::from_secs(30));
        assert_eq!(r.timeout_keep_alive, Duration::from_secs(5));
        assert_eq!(r.store.stale_after(), Duration::from_secs(300));
        assert_eq!(r.mode(), Mode::Single);
    }

    #[test]
    fn stale_after_must_exceed_agent_timeout_and_echo_delay() {
        for (args, other) in [
            (&["--run-stale-after", "60"][..], "--agent-timeout"),
            (
                &["--run-stale-after", "2", "--agent-timeout", "3"][..],
                "--agent-timeout",
            ),
            (
                &[
                    "--run-stale-after",
                    "2",
                    "--agent-timeout",
                    "1",
                    "--echo-delay-ms",
                    "2000",
                ][..],
                "--echo-delay-ms",
            ),
        ] {
            let CliOutcome::Usage(line) = run(args) else {
                panic!("{args:?} must be rejected")
            };
            assert!(
                line.contains("--run-stale-after") && line.contains(other),
                "{line}"
            );
            assert_eq!(line.lines().count(), 1, "{line}");
        }
        let CliOutcome::Ok(cli) = run(&[
            "--run-stale-after",
            "2.5",
            "--agent-timeout",
            "2",
            "--echo-delay-ms",
            "2000",
        ]) else {
            panic!("must parse")
        };
        let Command::Run(r) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(r.store.stale_after(), Duration::from_millis(2500));
        assert_eq!(r.effective_json()["run_stale_after"], 2.5);
    }

    #[test]
    fn bad_values_are_one_line_naming_the_flag() {
        for (args, flag) in [
            (&["--workers", "0"][..], "--workers"),
            (&["--port", "70000"][..], "--port"),
            (&["--server", "daphne"][..], "--server"),
            (&["--timeout-graceful", "-1"][..], "--timeout-graceful"),
            (&["--run-stale-after", "0"][..], "--run-stale-after"),
            (&["--run-stale-after", "-1"][..], "--run-stale-after"),
            (&["--run-stale-after", "abc"][..], "--run-stale-after"),
        ] {
            let CliOutcome::Usage(line) = run(args) else {
                panic!("{args:?} must be rejected")
            };
            assert!(line.contains(flag), "{line}");
            assert!(line.contains("accepted"), "{line}");
            assert_eq!(line.lines().count(), 1, "{line}");
        }
    }

    #[test]
    fn reload_with_gunicorn_is_rejected() {
        let CliOutcome::Usage(line) = run(&["--reload", "--server", "gunicorn"]) else {
            panic!("must be rejected")
        };
        assert!(line.contains("--reload"), "{line}");
    }

    #[test]
    fn gunicorn_is_supervised() {
        let CliOutcome::Ok(cli) = run(&["--server", "gunicorn", "--workers", "3"]) else {
            panic!("must parse")
        };
        let Command::Run(r) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(r.mode(), Mode::Supervised);
        assert_eq!(r.workers, 3);
    }
}
