//! The Redis pool: deadpool-redis with a bounded wait, named connections and counters.
//!
//! deadpool hands out multiplexed connections, one TCP connection per pool object, so Redis
//! never sees more than `max_size` connections from one worker. A broken connection fails its
//! recycle check (`PING`) and is replaced, which is how the pool recovers after a Redis restart.

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::{self, AsyncConnectionConfig};
use deadpool_redis::{
    Connection, Hook, HookError, Manager, Pool, PoolError as DpError, Runtime, Timeouts,
};

use super::config::RedisPoolConfig;
use super::{PoolCounters, PoolError, PoolMetrics, REDIS_POOL, redact_url};

/// One worker's Redis pool. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct RedisPool {
    pool: Pool,
    counters: Arc<PoolCounters>,
    wait_timeout: Duration,
    connection_name: String,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("metrics", &self.metrics())
            .field("wait_timeout", &self.wait_timeout)
            .field("connection_name", &self.connection_name)
            .finish()
    }
}

/// Builds the pool without connecting (`Ok(None)` when no URL is configured). A Redis server
/// that is down at startup is not an error: callers get [`PoolError::Unavailable`] until it is up.
pub fn build_redis_pool(cfg: &RedisPoolConfig) -> Result<Option<RedisPool>, PoolError> {
    let Some(url) = cfg.url.as_deref() else {
        return Ok(None);
    };
    cfg.validate()?;
    let config_error = |reason: String| PoolError::Config {
        pool: REDIS_POOL,
        reason,
    };
    let connection = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(cfg.wait_timeout))
        .set_response_timeout(Some(cfg.wait_timeout));
    let manager = Manager::new_with_config(url, connection)
        .map_err(|e| config_error(format!("REDIS_URL {}: {e}", redact_url(url))))?;
    let name = cfg.connection_name.clone();
    let pool = Pool::builder(manager)
        .max_size(cfg.max_size)
        .timeouts(Timeouts {
            wait: Some(cfg.wait_timeout),
            create: Some(cfg.wait_timeout),
            recycle: Some(cfg.wait_timeout),
        })
        .runtime(Runtime::Tokio1)
        .post_create(Hook::async_fn(move |conn, _| {
            let name = name.clone();
            Box::pin(async move {
                redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(&name)
                    .query_async::<()>(conn)
                    .await
                    .map_err(HookError::Backend)
            })
        }))
        .build()
        .map_err(|e| config_error(e.to_string()))?;
    Ok(Some(RedisPool {
        pool,
        counters: Arc::default(),
        wait_timeout: cfg.wait_timeout,
        connection_name: cfg.connection_name.clone(),
    }))
}

impl RedisPool {
    /// A connection, waiting at most the configured timeout for a free one.
    pub async fn get(&self) -> Result<Connection, PoolError> {
        match self.pool.get().await {
            Ok(conn) => Ok(conn),
            Err(DpError::Timeout(deadpool_redis::TimeoutType::Wait)) => {
                self.counters.timed_out();
                Err(PoolError::Exhausted {
                    pool: REDIS_POOL,
                    waited: self.wait_timeout,
                })
            }
            Err(DpError::Timeout(kind)) => Err(PoolError::Unavailable {
                pool: REDIS_POOL,
                reason: format!("timed out ({kind:?}) after {:?}", self.wait_timeout),
            }),
            Err(e) => Err(PoolError::Unavailable {
                pool: REDIS_POOL,
                reason: e.to_string(),
            }),
        }
    }

    /// Current numbers for `/metrics`.
    pub fn metrics(&self) -> PoolMetrics {
        let status = self.pool.status();
        PoolMetrics {
            max_size: status.max_size,
            size: status.size,
            in_use: status.size.saturating_sub(status.available),
            idle: status.available,
            waiters: status.waiting,
            timeouts: self.counters.timeouts(),
        }
    }

    /// The name every connection of this pool carries in `CLIENT LIST`.
    pub fn connection_name(&self) -> &str {
        &self.connection_name
    }

    /// The configured wait timeout.
    pub fn wait_timeout(&self) -> Duration {
        self.wait_timeout
    }
}

/// Readiness check: a connection from the pool answers `PING` within `timeout`.
pub async fn ping_redis(pool: &RedisPool, timeout: Duration) -> bool {
    let ping = async {
        let mut conn = pool.get().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    };
    matches!(tokio::time::timeout(timeout, ping).await, Ok(Some(pong)) if pong == "PONG")
}
