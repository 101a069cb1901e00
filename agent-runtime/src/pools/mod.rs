//! Per-worker connection pools for Redis and PostgreSQL.
//!
//! Each worker process builds its own pools (the seed's "pool per worker": total connections =
//! workers × pool size). Both pools connect lazily, so a worker starts even when a store is down;
//! it reports unready through [`ping_redis`] / [`ping_db`] and recovers on its own when the store
//! comes back, without rebuilding the pool.
//!
//! - [`config`]: the command-line/environment options ([`PoolArgs`]), their value parsers and the
//!   plain, validated [`RedisPoolConfig`] / [`DbPoolConfig`] the builders take.
//! - [`redis`]: [`build_redis_pool`] (deadpool-redis, bounded wait) and [`RedisPool`].
//! - [`postgres`]: [`build_pg_pool`] (sqlx: min/max connections, recycling, pre-ping) and [`DbPool`].
//!
//! Every way of not getting a connection is a [`PoolError`]; all of them map to HTTP 503 so a
//! request never hangs on a saturated or missing store.

pub mod config;
pub mod postgres;
pub mod redis;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;

pub use config::{DbPoolConfig, PoolArgs, RedisPoolConfig};
pub use postgres::{DbPool, build_pg_pool, ping_db};
pub use redis::{RedisPool, build_redis_pool, ping_redis};

/// Name of the Redis pool in errors and metrics.
pub const REDIS_POOL: &str = "redis";
/// Name of the PostgreSQL pool in errors and metrics.
pub const DB_POOL: &str = "database";

/// Why a connection could not be handed out.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every connection was in use for the whole wait timeout.
    #[error("the {pool} pool is exhausted: no connection became free within {waited:?}")]
    Exhausted {
        /// [`REDIS_POOL`] or [`DB_POOL`].
        pool: &'static str,
        /// The configured wait timeout.
        waited: Duration,
    },
    /// The server could not be reached or refused the connection.
    #[error("the {pool} server is unavailable: {reason}")]
    Unavailable {
        /// [`REDIS_POOL`] or [`DB_POOL`].
        pool: &'static str,
        /// What the client library reported (never contains a password).
        reason: String,
    },
    /// The configuration could not be turned into a pool (for example a malformed URL).
    #[error("invalid {pool} pool configuration: {reason}")]
    Config {
        /// [`REDIS_POOL`] or [`DB_POOL`].
        pool: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl PoolError {
    /// Stable machine-readable error code for JSON bodies and metric labels, e.g.
    /// `redis_pool_exhausted`, `database_unavailable`.
    pub fn code(&self) -> String {
        match self {
            PoolError::Exhausted { pool, .. } => format!("{pool}_pool_exhausted"),
            PoolError::Unavailable { pool, .. } => format!("{pool}_unavailable"),
            PoolError::Config { pool, .. } => format!("{pool}_config"),
        }
    }
}

/// A point-in-time view of one pool, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolMetrics {
    /// Most connections the pool may open.
    pub max_size: usize,
    /// Connections currently open (in use + idle).
    pub size: usize,
    /// Connections handed out right now.
    pub in_use: usize,
    /// Open connections waiting in the pool.
    pub idle: usize,
    /// Callers waiting for a connection right now.
    pub waiters: usize,
    /// Callers that gave up because no connection became free in time (since start).
    pub timeouts: u64,
}

/// Counters a pool wrapper keeps beside what the pool library reports.
#[derive(Debug, Default)]
struct PoolCounters {
    waiters: AtomicUsize,
    timeouts: AtomicU64,
}

impl PoolCounters {
    fn waiting(&self) -> WaiterGuard<'_> {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        WaiterGuard(&self.waiters)
    }

    fn timed_out(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    fn waiters(&self) -> usize {
        self.waiters.load(Ordering::Relaxed)
    }

    fn timeouts(&self) -> u64 {
        self.timeouts.load(Ordering::Relaxed)
    }
}

/// Decrements the waiter gauge when the wait ends, however it ends (including cancellation).
struct WaiterGuard<'a>(&'a AtomicUsize);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `scheme://user:password@host/...` with the password replaced, for logs and `Debug` output.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let redacted_userinfo = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        // `redis://secret@host` puts the password where a user name would be.
        None if url.starts_with("redis") => "***".to_owned(),
        None => userinfo.to_owned(),
    };
    format!("{}{}{}", &url[..rest_start], redacted_userinfo, &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_passwords_only() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/app?sslmode=disable"),
            "postgres://app:***@db:5432/app?sslmode=disable"
        );
        assert_eq!(
            redact_url("redis://:s3cret@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
        assert_eq!(
            redact_url("redis://s3cret@cache:6379"),
            "redis://***@cache:6379"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn error_codes() {
        let exhausted = PoolError::Exhausted {
            pool: REDIS_POOL,
            waited: Duration::from_secs(5),
        };
        assert_eq!(exhausted.code(), "redis_pool_exhausted");
        let down = PoolError::Unavailable {
            pool: DB_POOL,
            reason: "refused".into(),
        };
        assert_eq!(down.code(), "database_unavailable");
    }
}
