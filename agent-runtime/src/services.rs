//! What a worker process serves besides the built-in routes: the agent backend, its pools, the
//! durable run store, readiness checks and extra routes. [`build_services`] is the one place
//! that wires backends in.
//!
//! Nothing here connects at start-up: the pools connect lazily, so a worker whose Redis or
//! PostgreSQL is down still starts, answers `/health`, reports itself unready on `/ready` and
//! recovers by itself when the store comes back.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::StatusCode;

use crate::agent::Agent;
use crate::config::RunArgs;
use crate::error::ApiError;
use crate::pools::{DbPool, PoolMetrics, RedisPool, build_pg_pool, build_redis_pool};
use crate::store::{DurableStoreKind, RunStore, build_run_store};

/// Time limit of one store ping made by `/ready` (well inside a typical probe period).
pub const STORE_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest hold the test-only `/__test/hold/...` routes accept, milliseconds.
const MAX_TEST_HOLD_MS: u64 = 60_000;

/// A dependency `/ready` checks (a store ping, for one). `/ready` answers 503 when any
/// check returns `false` or takes longer than [`crate::server::http::READY_CHECK_TIMEOUT`].
#[async_trait]
pub trait ReadinessCheck: Send + Sync + 'static {
    /// Key in the `checks` object of `/ready`.
    fn name(&self) -> &'static str;
    /// Whether the dependency is usable now.
    async fn check(&self) -> bool;
}

/// `agent` in `/ready`: `--agent-ready-url`.
struct AgentCheck(crate::agents::AgentReadyCheck);

#[async_trait]
impl ReadinessCheck for AgentCheck {
    fn name(&self) -> &'static str {
        "agent"
    }

    async fn check(&self) -> bool {
        self.0.check().await
    }
}

/// Where this worker's connections are named from.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    /// The pod's instance id.
    pub instance_id: String,
    /// Index of the worker (its metrics slot in pre-fork mode, 0 for a single process).
    pub worker: usize,
}

impl WorkerContext {
    /// Name of this worker's connections: Redis `CLIENT SETNAME` and PostgreSQL
    /// `application_name` (`fastagentic:<instance id>:w<worker>`), so an operator can count
    /// the connections of one pod or one worker.
    pub fn connection_name(&self) -> String {
        format!(
            "{}:{}:w{}",
            crate::pools::config::DEFAULT_CONNECTION_NAME,
            self.instance_id,
            self.worker
        )
    }
}

/// This worker's pools (each `None` when its URL is not configured).
#[derive(Debug, Clone, Default)]
pub struct Pools {
    /// Redis pool (`REDIS_URL`).
    pub redis: Option<RedisPool>,
    /// PostgreSQL pool (`DATABASE_URL`).
    pub db: Option<DbPool>,
}

impl Pools {
    /// Current numbers, in [`crate::metrics::POOLS`] order.
    pub fn metrics(&self) -> [Option<PoolMetrics>; 2] {
        [
            self.redis.as_ref().map(RedisPool::metrics),
            self.db.as_ref().map(DbPool::metrics),
        ]
    }
}

/// The per-worker services the HTTP layer is built from.
pub struct Services {
    /// Backend behind `POST /chat` and `POST /chat/stream`.
    pub agent: Arc<dyn Agent>,
    /// Where runs are recorded.
    pub runs: Arc<dyn RunStore>,
    /// The worker's pools (for metrics).
    pub pools: Pools,
    /// Checks reported by `/ready`.
    pub checks: Vec<Arc<dyn ReadinessCheck>>,
    /// Extra routes, served behind the concurrency limit and body limit like `/chat`.
    pub routes: axum::Router,
}

/// `checks.redis`: a pooled connection answers `PING`.
#[derive(Debug)]
pub struct RedisCheck(pub RedisPool);

#[async_trait]
impl ReadinessCheck for RedisCheck {
    fn name(&self) -> &'static str {
        "redis"
    }
    async fn check(&self) -> bool {
        crate::pools::ping_redis(&self.0, STORE_PING_TIMEOUT).await
    }
}

/// `checks.database`: a pooled connection answers `SELECT 1`.
#[derive(Debug)]
pub struct DatabaseCheck(pub DbPool);

#[async_trait]
impl ReadinessCheck for DatabaseCheck {
    fn name(&self) -> &'static str {
        "database"
    }
    async fn check(&self) -> bool {
        crate::pools::ping_db(&self.0, STORE_PING_TIMEOUT).await
    }
}

/// `checks.durable_store`: the run store answers (for PostgreSQL, with its schema in place).
#[derive(Debug)]
pub struct DurableStoreCheck(pub Arc<dyn RunStore>);

#[async_trait]
impl ReadinessCheck for DurableStoreCheck {
    fn name(&self) -> &'static str {
        "durable_store"
    }
    async fn check(&self) -> bool {
        matches!(
            tokio::time::timeout(STORE_PING_TIMEOUT, self.0.ping()).await,
            Ok(Ok(()))
        )
    }
}

/// Builds the services of one worker process (called once per process, inside its
/// runtime, so pools created here are per worker).
pub async fn build_services(args: &RunArgs, worker: &WorkerContext) -> anyhow::Result<Services> {
    let name = worker.connection_name();
    let redis = build_redis_pool(&args.pools.redis_config(
        args.redis_pool_size,
        args.redis_pool_timeout,
        &name,
    ))?;
    let db = build_pg_pool(
        &args
            .pools
            .db_config(args.db_pool_size, args.db_max_overflow, &name),
    )?;
    let kind = args.durable_store().map_err(anyhow::Error::msg)?;
    let runs = build_run_store(kind, redis.as_ref(), db.as_ref(), &args.store)?;
    let agent = args
        .agent
        .build(Duration::from_millis(args.echo_delay_ms))?;

    if kind == DurableStoreKind::Postgres {
        // Create the schema now rather than on the first request (the store also does it on
        // first use, so a database that is down now only delays it).
        let store = runs.clone();
        tokio::spawn(async move {
            if let Err(e) = store.ping().await {
                tracing::warn!(event = "durable_store_not_ready", store = "postgres", error = %e);
            }
        });
    }

    let mut checks: Vec<Arc<dyn ReadinessCheck>> = Vec::new();
    if let Some(p) = &redis {
        checks.push(Arc::new(RedisCheck(p.clone())));
    }
    if let Some(p) = &db {
        checks.push(Arc::new(DatabaseCheck(p.clone())));
    }
    checks.push(Arc::new(DurableStoreCheck(runs.clone())));
    if let Some(check) = args.agent.ready_check()? {
        checks.push(Arc::new(AgentCheck(check)));
    }

    let pools = Pools { redis, db };
    let mut routes = axum::Router::new();
    if args.enable_test_routes {
        routes = routes.merge(
            axum::Router::new()
                .route("/__test/hold/{pool}/{ms}", post(hold_connection))
                .with_state(pools.clone()),
        );
    }
    tracing::info!(
        event = "services_built",
        instance_id = %worker.instance_id,
        worker = worker.worker,
        durable_store = %kind,
        agent = agent.name(),
        redis = pools.redis.is_some(),
        database = pools.db.is_some(),
        connection_name = %name,
    );
    Ok(Services {
        agent,
        runs,
        pools,
        checks,
        routes,
    })
}

/// Test-only (`FASTAGENTIC_ENABLE_TEST_ROUTES`): takes a connection from the `redis` or
/// `database` pool and keeps it for `ms` milliseconds, so tests can exhaust a tiny pool.
async fn hold_connection(
    State(pools): State<Pools>,
    Path((pool, ms)): Path<(String, u64)>,
) -> Response {
    let hold = Duration::from_millis(ms.min(MAX_TEST_HOLD_MS));
    let result = match (pool.as_str(), &pools.redis, &pools.db) {
        ("redis", Some(p), _) => match p.get().await {
            Ok(conn) => {
                tokio::time::sleep(hold).await;
                drop(conn);
                Ok(())
            }
            Err(e) => Err(e),
        },
        ("database", _, Some(p)) => match p.acquire().await {
            Ok(conn) => {
                tokio::time::sleep(hold).await;
                drop(conn);
                Ok(())
            }
            Err(e) => Err(e),
        },
        _ => {
            return ApiError::plain(
                StatusCode::NOT_FOUND,
                format!("no {pool} pool is configured"),
            )
            .into_response();
        }
    };
    match result {
        Ok(()) => {
            axum::Json(serde_json::json!({"held_ms": hold.as_millis() as u64})).into_response()
        }
        Err(e) => ApiError::from(&e).into_response(),
    }
}
