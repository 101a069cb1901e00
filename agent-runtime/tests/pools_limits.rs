//! Pool behaviour against real Redis and PostgreSQL servers (`REDIS_URL`, `DATABASE_URL`; see
//! `store_support.rs`): connection caps seen from the server side, exhaustion within the wait
//! timeout, recovery after the server drops or restarts.

#[path = "store_support.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agent_runtime::error::ApiError;
use agent_runtime::pools::{
    DbPoolConfig, PoolError, RedisPoolConfig, build_pg_pool, build_redis_pool, ping_db, ping_redis,
};
use deadpool_redis::redis;
use sqlx::Row;

/// Samples `probe` every 5 ms until told to stop; returns the highest value seen.
fn sample_max<F, Fut>(stop: Arc<AtomicBool>, probe: F) -> tokio::task::JoinHandle<usize>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = usize> + Send,
{
    tokio::spawn(async move {
        let mut max = 0;
        while !stop.load(Ordering::Relaxed) {
            max = max.max(probe().await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        max.max(probe().await)
    })
}

/// Connections named `name` in Redis' `CLIENT LIST`.
async fn redis_clients_named(url: &str, name: &str) -> usize {
    let count = async {
        let client = redis::Client::open(url).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .ok()?;
        let needle = format!(" name={name} ");
        Some(list.lines().filter(|l| l.contains(&needle)).count())
    };
    count.await.unwrap_or(0)
}

/// Backends with `application_name = name` in `pg_stat_activity`.
async fn pg_backends_named(admin: &sqlx::PgPool, name: &str) -> usize {
    sqlx::query("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1")
        .bind(name)
        .fetch_one(admin)
        .await
        .and_then(|row| row.try_get::<i64, _>("n"))
        .map(|n| n as usize)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_pool_of_3_never_opens_more_than_3_connections() {
    let Some(url) = support::redis_url("redis_pool_of_3_never_opens_more_than_3_connections")
    else {
        return;
    };
    let name = support::unique("fa-redis-cap");
    let pool = build_redis_pool(&RedisPoolConfig {
        max_size: 3,
        connection_name: name.clone(),
        ..RedisPoolConfig::new(Some(url.clone()))
    });
    let Ok(Some(pool)) = pool else {
        panic!("{pool:?}")
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (probe_url, probe_name) = (url.clone(), name.clone());
    let sampler = sample_max(Arc::clone(&stop), move || {
        let (url, name) = (probe_url.clone(), probe_name.clone());
        async move { redis_clients_named(&url, &name).await }
    });
    let max_waiters = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let pool = pool.clone();
        let max_waiters = Arc::clone(&max_waiters);
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.get().await?;
            max_waiters.fetch_max(pool.metrics().waiters, Ordering::Relaxed);
            let key = format!("{}:{i}", pool.connection_name());
            redis::cmd("SET")
                .arg(&key)
                .arg(i)
                .arg("PX")
                .arg(10_000)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| PoolError::Unavailable {
                    pool: "redis",
                    reason: e.to_string(),
                })?;
            tokio::time::sleep(Duration::from_millis(10)).await;
            let back: i64 = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(|e| PoolError::Unavailable {
                    pool: "redis",
                    reason: e.to_string(),
                })?;
            Ok::<_, PoolError>(back == i)
        }));
    }
    for task in tasks {
        let result = task.await;
        assert!(matches!(result, Ok(Ok(true))), "task: {result:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let max = sampler.await.unwrap_or(usize::MAX);
    assert_eq!(
        max, 3,
        "CLIENT LIST showed at most {max} connections named {name}; expected the cap of 3 to be reached and never exceeded"
    );
    let metrics = pool.metrics();
    assert_eq!(
        (metrics.max_size, metrics.size, metrics.in_use),
        (3, 3, 0),
        "{metrics:?}"
    );
    assert!(
        max_waiters.load(Ordering::Relaxed) > 0,
        "100 tasks on 3 connections must queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_pool_of_2_plus_1_never_opens_more_than_3_and_keeps_2() {
    let Some(url) =
        support::database_url("pg_pool_of_2_plus_1_never_opens_more_than_3_and_keeps_2")
    else {
        return;
    };
    let Ok(admin) = sqlx::PgPool::connect(&url).await else {
        panic!("admin connection to DATABASE_URL failed")
    };
    let name = support::unique("fa-pg-cap");
    let pool = build_pg_pool(&DbPoolConfig {
        min_connections: 2,
        max_overflow: 1,
        application_name: name.clone(),
        ..DbPoolConfig::new(Some(url))
    });
    let Ok(Some(pool)) = pool else {
        panic!("{pool:?}")
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (probe_admin, probe_name) = (admin.clone(), name.clone());
    let sampler = sample_max(Arc::clone(&stop), move || {
        let (admin, name) = (probe_admin.clone(), probe_name.clone());
        async move { pg_backends_named(&admin, &name).await }
    });
    let mut tasks = Vec::new();
    for i in 0..100_i32 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            let row = sqlx::query("SELECT $1::int4 AS n, pg_sleep(0.005)")
                .bind(i)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| pool.classify(e))?;
            Ok::<_, PoolError>(row.try_get::<i32, _>("n").ok() == Some(i))
        }));
    }
    for task in tasks {
        let result = task.await;
        assert!(matches!(result, Ok(Ok(true))), "task: {result:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let max = sampler.await.unwrap_or(usize::MAX);
    assert_eq!(
        max, 3,
        "pg_stat_activity showed at most {max} backends named {name}; expected the cap of 2 + 1 to be reached and never exceeded"
    );

    // After the burst the pool keeps (at least) its minimum open and idle.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = pool.metrics();
    assert!(
        metrics.idle >= 2 && metrics.size <= 3 && metrics.in_use == 0,
        "{metrics:?}"
    );
    let open = pg_backends_named(&admin, &name).await;
    assert!(
        (2..=3).contains(&open),
        "{open} backends open after the burst"
    );
}

#[tokio::test]
async fn redis_exhaustion_is_an_error_within_the_wait_timeout() {
    let Some(url) = support::redis_url("redis_exhaustion_is_an_error_within_the_wait_timeout")
    else {
        return;
    };
    let timeout = Duration::from_millis(300);
    let pool = build_redis_pool(&RedisPoolConfig {
        max_size: 1,
        wait_timeout: timeout,
        ..RedisPoolConfig::new(Some(url))
    });
    let Ok(Some(pool)) = pool else {
        panic!("{pool:?}")
    };
    let held = pool.get().await;
    assert!(held.is_ok(), "first connection: {:?}", held.err());
    let started = Instant::now();
    let second = pool.get().await.map(drop);
    let waited = started.elapsed();
    assert!(
        matches!(&second, Err(e @ PoolError::Exhausted { .. }) if ApiError::from(e).status == 503 && e.code() == "redis_pool_exhausted"),
        "{second:?}"
    );
    assert!(
        waited >= timeout - Duration::from_millis(20) && waited < timeout * 3,
        "waited {waited:?}"
    );
    assert_eq!(pool.metrics().timeouts, 1);
    drop(held);
    assert!(
        pool.get().await.is_ok(),
        "a released connection is handed out again"
    );
}

#[tokio::test]
async fn pg_exhaustion_is_an_error_within_the_acquire_timeout() {
    let Some(url) = support::database_url("pg_exhaustion_is_an_error_within_the_acquire_timeout")
    else {
        return;
    };
    let timeout = Duration::from_millis(300);
    let pool = build_pg_pool(&DbPoolConfig {
        min_connections: 1,
        max_overflow: 0,
        acquire_timeout: timeout,
        ..DbPoolConfig::new(Some(url))
    });
    let Ok(Some(pool)) = pool else {
        panic!("{pool:?}")
    };
    let held = pool.acquire().await;
    assert!(held.is_ok(), "first connection: {:?}", held.as_ref().err());
    let started = Instant::now();
    let second = pool.acquire().await.map(drop);
    let waited = started.elapsed();
    assert!(
        matches!(&second, Err(e @ PoolError::Exhausted { .. }) if ApiError::from(e).status == 503 && e.code() == "database_pool_exhausted"),
        "{second:?}"
    );
    assert!(
        waited >= timeout - Duration::from_millis(20) && waited < timeout * 3,
        "waited {waited:?}"
    );
    assert_eq!(pool.metrics().timeouts, 1);
    assert!(
        !ping_db(&pool, Duration::from_millis(200)).await,
        "an exhausted pool is not ready"
    );
    drop(held);
    assert!(ping_db(&pool, Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_pool_recovers_after_all_backends_are_terminated() {
    let Some(url) = support::database_url("pg_pool_recovers_after_all_backends_are_terminated")
    else {
        return;
    };
    let Ok(admin) = sqlx::PgPool::connect(&url).await else {
        panic!("admin connection to DATABASE_URL failed")
    };
    let name = support::unique("fa-pg-kill");
    let pool = build_pg_pool(&DbPoolConfig {
        min_connections: 2,
        max_overflow: 1,
        application_name: name.clone(),
        ..DbPoolConfig::new(Some(url))
    });
    let Ok(Some(pool)) = pool else {
        panic!("{pool:?}")
    };
    // Open connections and leave them idle in the pool.
    let (a, b) = (pool.acquire().await, pool.acquire().await);
    assert!(a.is_ok() && b.is_ok());
    drop((a, b));
    let before = pg_backends_named(&admin, &name).await;
    assert!(before >= 2, "{before} backends before");

    let killed = sqlx::query(
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&name)
    .fetch_one(&admin)
    .await
    .and_then(|row| row.try_get::<i64, _>("n"));
    assert!(matches!(killed, Ok(n) if n >= 2), "terminated {killed:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pg_backends_named(&admin, &name).await > 0 {
        assert!(Instant::now() < deadline, "backends did not go away");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Every next query succeeds: pre-ping drops the dead connections before handing them out.
    for i in 0..10_i32 {
        let result = async {
            let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
            sqlx::query("SELECT $1::int4 AS n")
                .bind(i)
                .fetch_one(&mut *conn)
                .await
                .and_then(|row| row.try_get::<i32, _>("n"))
                .map_err(|e| e.to_string())
        }
        .await;
        assert_eq!(result, Ok(i), "query {i} after pg_terminate_backend");
    }
}

/// A private redis-server on its own port, stopped when dropped.
struct PrivateRedis {
    child: Child,
}

impl PrivateRedis {
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Self { child })
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_ping_follows_a_server_restart_without_rebuilding_the_pool() {
    const TEST: &str = "redis_ping_follows_a_server_restart_without_rebuilding_the_pool";
    let port = support::free_port();
    let Some(server) = PrivateRedis::start(port) else {
        support::skip(
            TEST,
            "redis-server could not be started (is the redis-server package installed?)",
        );
        return;
    };
    let pool = build_redis_pool(&RedisPoolConfig {
        max_size: 2,
        wait_timeout: Duration::from_millis(500),
        ..RedisPoolConfig::new(Some(format!("redis://127.0.0.1:{port}/0")))
    });
    let Ok(Some(pool)) = pool else {
        panic!("{pool:?}")
    };
    let probe = Duration::from_millis(500);
    assert!(
        eventually(&pool, probe, true).await,
        "ready while redis runs"
    );

    server.stop();
    assert!(
        eventually(&pool, probe, false).await,
        "not ready once redis is gone"
    );

    let Some(_restarted) = PrivateRedis::start(port) else {
        panic!("redis-server could not be restarted on {port}")
    };
    assert!(
        eventually(&pool, probe, true).await,
        "ready again after the restart, same pool"
    );
}

/// Polls `ping_redis` for up to 5 s until it returns `want`.
async fn eventually(pool: &agent_runtime::pools::RedisPool, probe: Duration, want: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if ping_redis(pool, probe).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
