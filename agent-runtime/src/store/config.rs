//! Which durable store a worker uses: `--durable-store`, `--run-stale-after`, and building
//! the store on the worker's pools.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::{
    DEFAULT_RUN_STALE_AFTER_SECS, EventLimits, MAX_RUN_STALE_AFTER_SECS, MemoryRunStore,
    PostgresRunStore, RedisRunStore, RunStore,
};
use crate::pools::{DbPool, RedisPool};

/// `FASTAGENTIC_DURABLE_STORE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DurableStoreKind {
    /// In the worker's memory; lost on restart, not shared between workers.
    Memory,
    /// In Redis (`REDIS_URL`).
    Redis,
    /// In PostgreSQL (`DATABASE_URL`).
    #[value(alias = "postgresql")]
    Postgres,
}

impl fmt::Display for DurableStoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DurableStoreKind::Memory => "memory",
            DurableStoreKind::Redis => "redis",
            DurableStoreKind::Postgres => "postgres",
        })
    }
}

/// Durable store options.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Where runs are recorded: memory, redis or postgres. Default: the store whose URL is set
    /// when exactly one of REDIS_URL and DATABASE_URL is set, memory otherwise.
    #[arg(long = "durable-store", env = fastagentic_contract::env::DURABLE_STORE, value_enum)]
    pub durable_store: Option<DurableStoreKind>,

    /// Seconds after its last update a run still recorded `running` counts as stalled (its
    /// process died), so a retry with its run id runs it again instead of answering 409. Must be
    /// greater than --agent-first-byte-timeout (default --agent-timeout), or than a shorter
    /// --run-max-duration; streams send a heartbeat every third.
    #[arg(long = "run-stale-after", allow_negative_numbers = true,
          env = fastagentic_contract::env::RUN_STALE_AFTER,
          default_value_t = DEFAULT_RUN_STALE_AFTER_SECS as f64,
          value_parser = parse_run_stale_after)]
    pub run_stale_after: f64,

    /// Bytes of run records the memory store keeps per worker (estimated; Kubernetes quantity
    /// suffixes such as 4Mi are accepted). The oldest finished runs are forgotten first; running
    /// runs always stay. Only for --durable-store memory.
    #[arg(long = "memory-store-max-bytes",
          env = fastagentic_contract::env::MEMORY_STORE_MAX_BYTES,
          default_value = "4Mi", value_parser = crate::parse::byte_size)]
    pub memory_store_max_bytes: u64,

    /// Events of a streamed or background run kept for resuming its stream (the oldest are
    /// dropped beyond it; a resume from before them gets 410).
    #[arg(long = "stream-events-max", allow_negative_numbers = true,
          env = fastagentic_contract::env::STREAM_EVENTS_MAX,
          default_value_t = super::events::DEFAULT_MAX_EVENTS,
          value_parser = parse_stream_events_max)]
    pub stream_events_max: u64,

    /// Seconds a run's events are kept after its last event (Redis; PostgreSQL: after each
    /// event; the memory store keeps them as long as the run's record).
    #[arg(long = "stream-events-ttl", allow_negative_numbers = true,
          env = fastagentic_contract::env::STREAM_EVENTS_TTL,
          default_value_t = super::events::DEFAULT_EVENTS_TTL_SECS as f64,
          value_parser = parse_run_stale_after)]
    pub stream_events_ttl: f64,
}

impl StoreArgs {
    /// `--run-stale-after` as a duration.
    pub fn stale_after(&self) -> Duration {
        Duration::from_secs_f64(self.run_stale_after)
    }

    /// `--stream-events-max` and `--stream-events-ttl`.
    pub fn event_limits(&self) -> EventLimits {
        EventLimits {
            max_events: self.stream_events_max,
            ttl: Duration::from_secs_f64(self.stream_events_ttl),
        }
    }
}

/// Value parser of `--stream-events-max` (1 to 1,000,000).
fn parse_stream_events_max(value: &str) -> Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err("accepted: an integer from 1 to 1000000".to_owned()),
    }
}

/// Value parser of `--run-stale-after` (seconds > 0, at most a week).
fn parse_run_stale_after(value: &str) -> Result<f64, String> {
    crate::parse::seconds_f64(value, false, MAX_RUN_STALE_AFTER_SECS as f64)
}

/// The durable store that was asked for cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FASTAGENTIC_DURABLE_STORE={kind} needs {missing} to be set")]
pub struct StoreConfigError {
    /// What was asked for.
    pub kind: DurableStoreKind,
    /// The missing variable.
    pub missing: &'static str,
}

/// Decides which store to use from the option and which URLs are configured.
pub fn resolve_store_kind(
    requested: Option<DurableStoreKind>,
    redis_configured: bool,
    database_configured: bool,
) -> Result<DurableStoreKind, StoreConfigError> {
    match requested {
        Some(DurableStoreKind::Redis) if !redis_configured => Err(StoreConfigError {
            kind: DurableStoreKind::Redis,
            missing: "REDIS_URL",
        }),
        Some(DurableStoreKind::Postgres) if !database_configured => Err(StoreConfigError {
            kind: DurableStoreKind::Postgres,
            missing: "DATABASE_URL",
        }),
        Some(kind) => Ok(kind),
        None => Ok(match (redis_configured, database_configured) {
            (true, false) => DurableStoreKind::Redis,
            (false, true) => DurableStoreKind::Postgres,
            // Neither, or both: both is ambiguous, so the explicit option is required to pick.
            _ => DurableStoreKind::Memory,
        }),
    }
}

/// Builds the store for `kind` on the worker's pools (see [`resolve_store_kind`]), taking over
/// runs that stayed `running` longer than `args`' stale-after. Connects nothing: the Postgres
/// schema is migrated on first use or first `ping`.
pub fn build_run_store(
    kind: DurableStoreKind,
    redis: Option<&RedisPool>,
    db: Option<&DbPool>,
    args: &StoreArgs,
) -> Result<Arc<dyn RunStore>, StoreConfigError> {
    let stale_after = args.stale_after();
    let events = args.event_limits();
    Ok(match kind {
        DurableStoreKind::Memory => Arc::new(
            MemoryRunStore::with_limits(args.memory_store_max_bytes, stale_after)
                .with_event_limits(events),
        ),
        DurableStoreKind::Redis => Arc::new(
            RedisRunStore::new(
                redis.cloned().ok_or(StoreConfigError {
                    kind,
                    missing: "REDIS_URL",
                })?,
                stale_after,
            )
            .with_event_limits(events),
        ),
        DurableStoreKind::Postgres => Arc::new(
            PostgresRunStore::new(
                db.cloned().ok_or(StoreConfigError {
                    kind,
                    missing: "DATABASE_URL",
                })?,
                stale_after,
            )
            .with_event_limits(events),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_kind_resolution() {
        use DurableStoreKind::*;
        assert_eq!(resolve_store_kind(None, false, false), Ok(Memory));
        assert_eq!(resolve_store_kind(None, true, false), Ok(Redis));
        assert_eq!(resolve_store_kind(None, false, true), Ok(Postgres));
        assert_eq!(resolve_store_kind(None, true, true), Ok(Memory));
        assert_eq!(resolve_store_kind(Some(Postgres), true, true), Ok(Postgres));
        assert_eq!(resolve_store_kind(Some(Memory), true, true), Ok(Memory));
        let err = resolve_store_kind(Some(Redis), false, true);
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("FASTAGENTIC_DURABLE_STORE=redis needs REDIS_URL to be set".to_owned())
        );
        assert!(resolve_store_kind(Some(Postgres), true, false).is_err());
    }
}
