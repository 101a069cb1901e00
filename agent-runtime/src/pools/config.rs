//! Pool options: clap arguments (flag, `FASTAGENTIC_*` variable, default) and the plain validated
//! configuration values the pool builders take.
//!
//! `fastagentic run` already defines the pool sizes and the Redis wait timeout; [`PoolArgs`] adds
//! the rest and is flattened beside them. A caller that builds [`RedisPoolConfig`] /
//! [`DbPoolConfig`] by hand calls their `validate`; the `parse_*` value parsers are public so
//! every pool option reports bad values the same way.

use std::time::Duration;

use clap::{ArgAction, Args};
use fastagentic_contract::{defaults, env};

use crate::parse;

use super::{DB_POOL, PoolError, REDIS_POOL, redact_url};

/// Default `--redis-pool-size`.
pub const DEFAULT_REDIS_POOL_SIZE: usize = defaults::REDIS_POOL_SIZE as usize;
/// Default `--redis-pool-timeout`, seconds.
pub const DEFAULT_REDIS_POOL_TIMEOUT_SECS: f64 = defaults::REDIS_POOL_TIMEOUT_SECONDS;
/// Default `--db-pool-size` (connections kept open).
pub const DEFAULT_DB_POOL_SIZE: u32 = defaults::DB_POOL_SIZE;
/// Default `--db-max-overflow` (connections opened beyond the kept ones under load).
pub const DEFAULT_DB_MAX_OVERFLOW: u32 = defaults::DB_MAX_OVERFLOW;
/// Default `--db-pool-recycle`, seconds (30 minutes).
pub const DEFAULT_DB_POOL_RECYCLE_SECS: f64 = defaults::DB_POOL_RECYCLE_SECONDS as f64;
/// Default `--db-pool-timeout`, seconds.
pub const DEFAULT_DB_POOL_TIMEOUT_SECS: f64 = defaults::DB_POOL_TIMEOUT_SECONDS;
/// Overflow connections (beyond the kept minimum) that stay idle this long are closed, so the
/// pool shrinks back towards `--db-pool-size` after a burst.
pub const DB_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest accepted timeout or recycle period (one day); larger values are almost always a typo
/// for milliseconds.
pub const MAX_DURATION_SECS: f64 = crate::parse::MAX_SECONDS;
/// Name the runtime gives its connections (Redis `CLIENT SETNAME`, PostgreSQL
/// `application_name`) unless told otherwise, so operators can count them.
pub const DEFAULT_CONNECTION_NAME: &str = "fastagentic";

/// The pool options that `fastagentic run` does not define itself: the URLs and the PostgreSQL
/// pool's recycling, pre-ping and timeout. The sizes and the Redis wait timeout
/// (`--redis-pool-size`, `--redis-pool-timeout`, `--db-pool-size`, `--db-max-overflow`) belong to
/// the run command's own options and are passed to [`PoolArgs::redis_config`] /
/// [`PoolArgs::db_config`].
#[derive(Debug, Clone, Args)]
pub struct PoolArgs {
    /// Redis URL (`redis://[:password@]host:port/db`); without it there is no Redis pool.
    #[arg(
        long = "redis-url",
        env = env::REDIS_URL,
        hide_env_values = true,
        help_heading = "Pools"
    )]
    pub redis_url: Option<String>,

    /// PostgreSQL URL (`postgres://user:password@host:port/db`); without it there is no database pool.
    #[arg(
        long = "database-url",
        env = env::DATABASE_URL,
        hide_env_values = true,
        help_heading = "Pools"
    )]
    pub database_url: Option<String>,

    /// Seconds after which a database connection is closed and replaced.
    #[arg(
        long = "db-pool-recycle",
        allow_negative_numbers = true,
        env = env::DB_POOL_RECYCLE,
        default_value = defaults::DB_POOL_RECYCLE_SECONDS.to_string(),
        value_parser = parse::positive_seconds,
        help_heading = "Pools",
    )]
    pub db_pool_recycle: Duration,

    /// Test each idle database connection before handing it out.
    #[arg(
        long = "db-pool-pre-ping",
        env = env::DB_POOL_PRE_PING,
        default_value = "true",
        action = ArgAction::Set,
        value_parser = parse::switch(),
        ignore_case = true,
        help_heading = "Pools",
    )]
    pub db_pool_pre_ping: bool,

    /// Seconds a request waits for a database connection before it gets a 503.
    #[arg(
        long = "db-pool-timeout",
        allow_negative_numbers = true,
        env = env::DB_POOL_TIMEOUT,
        default_value = defaults::DB_POOL_TIMEOUT_SECONDS.to_string(),
        value_parser = parse::positive_seconds,
        help_heading = "Pools",
    )]
    pub db_pool_timeout: Duration,
}

impl PoolArgs {
    /// The Redis pool configuration, with the run command's `--redis-pool-size` and
    /// `--redis-pool-timeout`; `name` is set on every connection (`CLIENT SETNAME`).
    pub fn redis_config(
        &self,
        pool_size: u32,
        wait_timeout: Duration,
        name: &str,
    ) -> RedisPoolConfig {
        RedisPoolConfig {
            url: self.redis_url.clone(),
            max_size: pool_size as usize,
            wait_timeout,
            connection_name: name.to_owned(),
        }
    }

    /// The PostgreSQL pool configuration, with the run command's `--db-pool-size` and
    /// `--db-max-overflow`; `name` becomes each connection's `application_name`.
    pub fn db_config(&self, pool_size: u32, max_overflow: u32, name: &str) -> DbPoolConfig {
        DbPoolConfig {
            url: self.database_url.clone(),
            min_connections: pool_size,
            max_overflow,
            recycle: self.db_pool_recycle,
            pre_ping: self.db_pool_pre_ping,
            acquire_timeout: self.db_pool_timeout,
            application_name: name.to_owned(),
        }
    }
}

/// What [`super::build_redis_pool`] needs.
#[derive(Clone, PartialEq)]
pub struct RedisPoolConfig {
    /// `None`: Redis is not configured and no pool is built.
    pub url: Option<String>,
    /// Most connections (`--redis-pool-size`).
    pub max_size: usize,
    /// How long a caller waits for a connection, and how long opening one may take.
    pub wait_timeout: Duration,
    /// Sent as `CLIENT SETNAME` on every connection.
    pub connection_name: String,
}

impl RedisPoolConfig {
    /// The defaults of `fastagentic run` for `url`.
    pub fn new(url: Option<String>) -> Self {
        Self {
            url,
            max_size: DEFAULT_REDIS_POOL_SIZE,
            wait_timeout: Duration::from_secs_f64(DEFAULT_REDIS_POOL_TIMEOUT_SECS),
            connection_name: DEFAULT_CONNECTION_NAME.to_owned(),
        }
    }

    /// Checks a configuration that was not built through the clap parsers.
    pub fn validate(&self) -> Result<(), PoolError> {
        let fail = |reason: String| PoolError::Config {
            pool: REDIS_POOL,
            reason,
        };
        if self.max_size == 0 {
            return Err(fail(
                "--redis-pool-size / FASTAGENTIC_REDIS_POOL_SIZE must be at least 1".into(),
            ));
        }
        check_duration(self.wait_timeout).map_err(|e| {
            fail(format!(
                "--redis-pool-timeout / FASTAGENTIC_REDIS_POOL_TIMEOUT {e}"
            ))
        })?;
        check_connection_name(&self.connection_name).map_err(fail)
    }
}

impl std::fmt::Debug for RedisPoolConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPoolConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("max_size", &self.max_size)
            .field("wait_timeout", &self.wait_timeout)
            .field("connection_name", &self.connection_name)
            .finish()
    }
}

/// What [`super::build_pg_pool`] needs.
#[derive(Clone, PartialEq)]
pub struct DbPoolConfig {
    /// `None`: PostgreSQL is not configured and no pool is built.
    pub url: Option<String>,
    /// Connections kept open (`--db-pool-size`).
    pub min_connections: u32,
    /// Connections allowed beyond the minimum (`--db-max-overflow`).
    pub max_overflow: u32,
    /// Connection lifetime (`FASTAGENTIC_DB_POOL_RECYCLE`).
    pub recycle: Duration,
    /// Test idle connections before use (`FASTAGENTIC_DB_POOL_PRE_PING`).
    pub pre_ping: bool,
    /// How long a caller waits for a connection (`FASTAGENTIC_DB_POOL_TIMEOUT`).
    pub acquire_timeout: Duration,
    /// `application_name` of every connection.
    pub application_name: String,
}

impl DbPoolConfig {
    /// The defaults of `fastagentic run` for `url`.
    pub fn new(url: Option<String>) -> Self {
        Self {
            url,
            min_connections: DEFAULT_DB_POOL_SIZE,
            max_overflow: DEFAULT_DB_MAX_OVERFLOW,
            recycle: Duration::from_secs_f64(DEFAULT_DB_POOL_RECYCLE_SECS),
            pre_ping: true,
            acquire_timeout: Duration::from_secs_f64(DEFAULT_DB_POOL_TIMEOUT_SECS),
            application_name: DEFAULT_CONNECTION_NAME.to_owned(),
        }
    }

    /// Most connections: pool size + overflow.
    pub fn max_connections(&self) -> u32 {
        self.min_connections.saturating_add(self.max_overflow)
    }

    /// Checks a configuration that was not built through the clap parsers.
    pub fn validate(&self) -> Result<(), PoolError> {
        let fail = |reason: String| PoolError::Config {
            pool: DB_POOL,
            reason,
        };
        if self.min_connections == 0 {
            return Err(fail(
                "--db-pool-size / FASTAGENTIC_DB_POOL_SIZE must be at least 1".into(),
            ));
        }
        check_duration(self.recycle).map_err(|e| {
            fail(format!(
                "--db-pool-recycle / FASTAGENTIC_DB_POOL_RECYCLE {e}"
            ))
        })?;
        check_duration(self.acquire_timeout).map_err(|e| {
            fail(format!(
                "--db-pool-timeout / FASTAGENTIC_DB_POOL_TIMEOUT {e}"
            ))
        })?;
        check_connection_name(&self.application_name).map_err(fail)
    }
}

impl std::fmt::Debug for DbPoolConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbPoolConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("min_connections", &self.min_connections)
            .field("max_overflow", &self.max_overflow)
            .field("recycle", &self.recycle)
            .field("pre_ping", &self.pre_ping)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("application_name", &self.application_name)
            .finish()
    }
}

fn check_duration(d: Duration) -> Result<(), String> {
    if d.is_zero() || d.as_secs_f64() > MAX_DURATION_SECS {
        Err(format!(
            "must be more than 0 and at most {MAX_DURATION_SECS} seconds, got {d:?}"
        ))
    } else {
        Ok(())
    }
}

// Redis client names may not contain spaces or newlines; keep both names to a safe alphabet.
fn check_connection_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        Ok(())
    } else {
        Err(format!(
            "connection name {name:?} must be 1-64 characters of A-Z a-z 0-9 - _ . :"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_configs_are_validated() {
        let mut redis = RedisPoolConfig::new(None);
        assert!(redis.validate().is_ok());
        redis.max_size = 0;
        assert!(redis.validate().is_err());
        let mut redis = RedisPoolConfig::new(None);
        redis.connection_name = "has space".into();
        assert!(redis.validate().is_err());
        let mut db = DbPoolConfig::new(None);
        assert!(db.validate().is_ok());
        db.acquire_timeout = Duration::ZERO;
        let err = db.validate().map_err(|e| e.to_string());
        assert!(
            matches!(&err, Err(e) if e.contains("FASTAGENTIC_DB_POOL_TIMEOUT")),
            "{err:?}"
        );
    }

    #[test]
    fn debug_output_hides_passwords() {
        let redis = RedisPoolConfig::new(Some("redis://:hunter2@cache:6379".into()));
        let db = DbPoolConfig::new(Some("postgres://u:hunter2@db/app".into()));
        let text = format!("{redis:?} {db:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("cache:6379") && text.contains("db/app"),
            "{text}"
        );
    }
}
