//! The PostgreSQL pool: sqlx with the seed's SQLAlchemy-style knobs.
//!
//! | seed / SQLAlchemy | sqlx                                                     |
//! |-------------------|----------------------------------------------------------|
//! | `pool_size`       | `min_connections` (kept open, topped up in background)   |
//! | `max_overflow`    | `max_connections = pool_size + max_overflow`             |
//! | `pool_recycle`    | `max_lifetime`                                           |
//! | `pool_pre_ping`   | `test_before_acquire`                                    |
//! | `pool_timeout`    | `acquire_timeout`                                        |
//!
//! SQLAlchemy closes an overflow connection as soon as it is returned; sqlx closes idle
//! connections above the minimum after [`DB_IDLE_TIMEOUT`] instead, which avoids reconnect churn
//! under bursty load while still shrinking back to the kept size.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row};

use super::config::{DB_IDLE_TIMEOUT, DbPoolConfig};
use super::{DB_POOL, PoolCounters, PoolError, PoolMetrics, redact_url};

/// One worker's PostgreSQL pool. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct DbPool {
    pool: PgPool,
    counters: Arc<PoolCounters>,
    max_connections: u32,
    acquire_timeout: Duration,
    application_name: String,
}

impl std::fmt::Debug for DbPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbPool")
            .field("metrics", &self.metrics())
            .field("acquire_timeout", &self.acquire_timeout)
            .field("application_name", &self.application_name)
            .finish()
    }
}

/// Builds the pool without connecting (`Ok(None)` when no URL is configured). Must be called
/// inside a tokio runtime: sqlx starts its maintenance task (keeping `min_connections` open and
/// reaping idle or expired connections) right away.
pub fn build_pg_pool(cfg: &DbPoolConfig) -> Result<Option<DbPool>, PoolError> {
    let Some(url) = cfg.url.as_deref() else {
        return Ok(None);
    };
    cfg.validate()?;
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| PoolError::Config {
            pool: DB_POOL,
            reason: format!("DATABASE_URL {}: {e}", redact_url(url)),
        })?
        .application_name(&cfg.application_name);
    let pool = PgPoolOptions::new()
        .min_connections(cfg.min_connections)
        .max_connections(cfg.max_connections())
        .max_lifetime(cfg.recycle)
        .idle_timeout(DB_IDLE_TIMEOUT)
        .test_before_acquire(cfg.pre_ping)
        .acquire_timeout(cfg.acquire_timeout)
        .connect_lazy_with(options);
    Ok(Some(DbPool {
        pool,
        counters: Arc::default(),
        max_connections: cfg.max_connections(),
        acquire_timeout: cfg.acquire_timeout,
        application_name: cfg.application_name.clone(),
    }))
}

impl DbPool {
    /// A connection, waiting at most the configured acquire timeout.
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, PoolError> {
        let waiting = self.counters.waiting();
        let result = self.pool.acquire().await;
        drop(waiting);
        result.map_err(|e| self.classify(e))
    }

    /// Maps an sqlx error met while acquiring or querying to a [`PoolError`].
    pub fn classify(&self, error: sqlx::Error) -> PoolError {
        match error {
            // sqlx reports both "all connections busy" and "could not connect in time" as a
            // pool timeout; a full pool tells them apart.
            sqlx::Error::PoolTimedOut if self.pool.size() >= self.max_connections => {
                self.counters.timed_out();
                PoolError::Exhausted {
                    pool: DB_POOL,
                    waited: self.acquire_timeout,
                }
            }
            sqlx::Error::PoolTimedOut => {
                self.counters.timed_out();
                PoolError::Unavailable {
                    pool: DB_POOL,
                    reason: format!(
                        "no connection could be opened within {:?}",
                        self.acquire_timeout
                    ),
                }
            }
            other => PoolError::Unavailable {
                pool: DB_POOL,
                reason: other.to_string(),
            },
        }
    }

    /// The underlying sqlx pool, for queries that do not need the counters.
    pub fn pg(&self) -> &PgPool {
        &self.pool
    }

    /// Current numbers for `/metrics`.
    pub fn metrics(&self) -> PoolMetrics {
        let size = self.pool.size() as usize;
        let idle = self.pool.num_idle();
        PoolMetrics {
            max_size: self.max_connections as usize,
            size,
            in_use: size.saturating_sub(idle),
            idle,
            waiters: self.counters.waiters(),
            timeouts: self.counters.timeouts(),
        }
    }

    /// The `application_name` of this pool's connections in `pg_stat_activity`.
    pub fn application_name(&self) -> &str {
        &self.application_name
    }

    /// The configured acquire timeout.
    pub fn acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }
}

/// Readiness check: a connection from the pool answers `SELECT 1` within `timeout`.
pub async fn ping_db(pool: &DbPool, timeout: Duration) -> bool {
    let ping = async {
        let mut conn = pool.acquire().await.ok()?;
        let row = sqlx::query("SELECT 1::int4 AS one")
            .fetch_one(&mut *conn)
            .await
            .ok()?;
        row.try_get::<i32, _>("one").ok()
    };
    matches!(tokio::time::timeout(timeout, ping).await, Ok(Some(1)))
}
