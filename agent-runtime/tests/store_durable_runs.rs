//! One durable-run suite, run against every store: memory, and real Redis and PostgreSQL
//! servers (`REDIS_URL`, `DATABASE_URL`; see `store_support.rs` for how they are found).

#[path = "store_support.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use agent_runtime::pools::{DbPoolConfig, RedisPoolConfig, build_pg_pool, build_redis_pool};
use agent_runtime::store::{
    Begin, DurableStoreKind, MemoryRunStore, PostgresRunStore, RedisRunStore, RunId, RunStatus,
    RunStore, StoreError, build_run_store, migrate,
};
use serde_json::json;
use sqlx::Row;

const INSTANCE: &str = "test-instance";

fn run_id(name: &str) -> RunId {
    match RunId::parse(&support::unique(name)) {
        Ok(id) => id,
        Err(e) => panic!("test id must be valid: {e}"),
    }
}

/// The behaviour every store must have.
async fn durable_run_suite(store: Arc<dyn RunStore>) {
    let kind = store.kind();
    store
        .ping()
        .await
        .unwrap_or_else(|e| panic!("{kind}: ping: {e}"));

    // begin → running; a second begin sees it running; complete; a third begin replays.
    let id = run_id("suite");
    let input = json!({"message": "hello", "n": 1});
    let started = store.begin(&id, &input, INSTANCE).await;
    let Ok(Begin::Started(record)) = started else {
        panic!("{kind}: first begin must start: {started:?}")
    };
    assert_eq!(record.run_id, id.as_str());
    assert_eq!(record.status, RunStatus::Running);
    assert_eq!(record.input, input);
    assert_eq!(record.instance_id, INSTANCE);
    assert_eq!(record.attempts, 1);
    assert_eq!(record.output, None);

    let again = store
        .begin(&id, &json!({"message": "other"}), "other-instance")
        .await;
    let Ok(Begin::StillRunning(running)) = again else {
        panic!("{kind}: begin while running must report it running: {again:?}")
    };
    assert_eq!(running.status, RunStatus::Running);
    assert_eq!(
        running.input, input,
        "{kind}: the running record must not be overwritten"
    );

    let output = json!({"output": "hello"});
    let completed = store.complete(&id, &output).await;
    let Ok(completed) = completed else {
        panic!("{kind}: complete: {completed:?}")
    };
    assert_eq!(completed.status, RunStatus::Completed);
    assert_eq!(completed.output.as_ref(), Some(&output));
    assert!(completed.updated_at >= completed.created_at);

    let replay = store
        .begin(&id, &json!({"message": "other"}), "other-instance")
        .await;
    let Ok(Begin::AlreadyCompleted(stored)) = replay else {
        panic!("{kind}: begin after completion must replay: {replay:?}")
    };
    assert_eq!(stored.output.as_ref(), Some(&output));
    assert_eq!(stored.input, input);
    assert_eq!(stored.instance_id, INSTANCE);

    let read = store.get(&id).await;
    assert!(
        matches!(&read, Ok(Some(r)) if r.status == RunStatus::Completed && r.output.as_ref() == Some(&output)),
        "{kind}: get: {read:?}"
    );

    // A finished run cannot be finished again.
    let twice = store.complete(&id, &json!({"output": "again"})).await;
    assert!(
        matches!(
            &twice,
            Err(StoreError::NotRunning {
                status: RunStatus::Completed,
                ..
            })
        ),
        "{kind}: second complete: {twice:?}"
    );

    // Unknown ids.
    let unknown = run_id("unknown");
    let missing = store.get(&unknown).await;
    assert!(
        matches!(missing, Ok(None)),
        "{kind}: unknown id: {missing:?}"
    );
    let missing = store.complete(&unknown, &output).await;
    assert!(
        matches!(&missing, Err(e @ StoreError::NotFound(_)) if e.status_code() == 404),
        "{kind}: complete of unknown id: {missing:?}"
    );

    // Failed runs are recorded and may be retried under the same id.
    let failing = run_id("fail");
    assert!(matches!(
        store.begin(&failing, &input, INSTANCE).await,
        Ok(Begin::Started(_))
    ));
    let failed = store.fail(&failing, "upstream timed out").await;
    assert!(
        matches!(&failed, Ok(r) if r.status == RunStatus::Failed && r.error.as_deref() == Some("upstream timed out")),
        "{kind}: fail: {failed:?}"
    );
    let retry = store.begin(&failing, &input, "retrying-instance").await;
    let Ok(Begin::Started(retried)) = retry else {
        panic!("{kind}: a failed run must be retryable: {retry:?}")
    };
    assert_eq!(retried.attempts, 2);
    assert_eq!(retried.error, None);
    assert_eq!(retried.instance_id, "retrying-instance");

    // Bad ids never reach the store.
    for bad in ["", "has space", "../etc", &"x".repeat(129)] {
        assert!(RunId::parse(bad).is_err(), "{bad:?} must be rejected");
    }

    // Concurrent begins of one id: exactly one starts.
    let contested = run_id("race");
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = Arc::clone(&store);
        let id = contested.clone();
        tasks.push(tokio::spawn(async move {
            store
                .begin(&id, &json!({"message": i}), &format!("instance-{i}"))
                .await
        }));
    }
    let mut started = 0;
    let mut running = 0;
    for task in tasks {
        match task.await {
            Ok(Ok(Begin::Started(_))) => started += 1,
            Ok(Ok(Begin::StillRunning(_))) => running += 1,
            other => panic!("{kind}: concurrent begin: {other:?}"),
        }
    }
    assert_eq!(
        (started, running),
        (1, 31),
        "{kind}: exactly one concurrent begin must start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_the_suite() {
    durable_run_suite(Arc::new(MemoryRunStore::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_passes_the_suite() {
    let Some(url) = support::redis_url("redis_store_passes_the_suite") else {
        return;
    };
    let pool = build_redis_pool(&RedisPoolConfig {
        max_size: 8,
        ..RedisPoolConfig::new(Some(url))
    });
    let Ok(Some(pool)) = pool else {
        panic!("redis pool: {pool:?}")
    };
    let store = build_run_store(DurableStoreKind::Redis, Some(&pool), None);
    let Ok(store) = store else {
        panic!("{store:?}")
    };
    durable_run_suite(store).await;
    // Through the concrete type as well, which the HTTP layer may hold.
    durable_run_suite(Arc::new(RedisRunStore::new(pool.clone()))).await;

    // Retention: a run's key expires a week after its last change, running or finished.
    let store = RedisRunStore::new(pool.clone());
    let id = run_id("ttl");
    store
        .begin(&id, &json!({"m": 1}), "i")
        .await
        .expect("begin");
    let key = format!("{}{id}", agent_runtime::store::redis::KEY_PREFIX);
    let ttl = |pool: agent_runtime::pools::RedisPool, key: String| async move {
        let mut conn = pool.get().await.expect("redis connection");
        let secs: i64 = deadpool_redis::redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut *conn)
            .await
            .expect("TTL");
        secs
    };
    let running = ttl(pool.clone(), key.clone()).await;
    store
        .complete(&id, &json!({"out": 1}))
        .await
        .expect("complete");
    let finished = ttl(pool.clone(), key).await;
    let week = i64::try_from(agent_runtime::store::redis::RUN_TTL_SECONDS).expect("fits");
    for secs in [running, finished] {
        assert!(
            secs > week - 60 && secs <= week,
            "TTL {secs} s, want about {week} s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_passes_the_suite() {
    let Some(url) = support::database_url("postgres_store_passes_the_suite") else {
        return;
    };
    let pool = build_pg_pool(&DbPoolConfig {
        min_connections: 2,
        max_overflow: 6,
        ..DbPoolConfig::new(Some(url))
    });
    let Ok(Some(pool)) = pool else {
        panic!("pg pool: {pool:?}")
    };
    let store = build_run_store(DurableStoreKind::Postgres, None, Some(&pool));
    let Ok(store) = store else {
        panic!("{store:?}")
    };
    durable_run_suite(store).await;
    durable_run_suite(Arc::new(PostgresRunStore::new(pool))).await;
}

/// Several workers starting at once each run the migrations: all succeed and each migration is
/// applied once. Runs in a fresh schema so the migrations really have work to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_migrations_are_safe_to_run_concurrently() {
    let Some(url) = support::database_url("postgres_migrations_are_safe_to_run_concurrently")
    else {
        return;
    };
    let schema = support::unique("mig").replace('-', "_");
    let admin = sqlx::PgPool::connect(&url).await;
    let Ok(admin) = admin else {
        panic!("connect: {admin:?}")
    };
    let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await;
    assert!(created.is_ok(), "{created:?}");

    let separator = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{separator}options=-c%20search_path%3D{schema}");
    let mut tasks = Vec::new();
    for i in 0..6 {
        let pool = build_pg_pool(&DbPoolConfig {
            min_connections: 1,
            max_overflow: 0,
            application_name: format!("fa-migrate-{i}"),
            ..DbPoolConfig::new(Some(scoped.clone()))
        });
        let Ok(Some(pool)) = pool else {
            panic!("pool: {pool:?}")
        };
        tasks.push(tokio::spawn(async move { migrate(&pool).await }));
    }
    for task in tasks {
        let result = task.await;
        assert!(
            matches!(result, Ok(Ok(()))),
            "concurrent migrate: {result:?}"
        );
    }
    let applied = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) AS n FROM {schema}._sqlx_migrations"
    )))
    .fetch_one(&admin)
    .await
    .and_then(|row| row.try_get::<i64, _>("n"));
    let migrations = agent_runtime::store::MIGRATOR.iter().count() as i64;
    assert_eq!(
        applied.ok(),
        Some(migrations),
        "each migration applied exactly once"
    );
    let table = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) AS n FROM {schema}.fastagentic_runs"
    )))
    .fetch_one(&admin)
    .await;
    assert!(
        table.is_ok(),
        "runs table must exist in the schema: {table:?}"
    );
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await;
    assert!(dropped.is_ok(), "{dropped:?}");
}

/// Startup never fails because a store is down: the stores build, `ping` fails fast and
/// operations answer with a 503-mapped error instead of hanging.
#[tokio::test]
async fn stores_on_unreachable_servers_fail_fast_with_503() {
    let timeout = Duration::from_millis(500);
    let redis = build_redis_pool(&RedisPoolConfig {
        wait_timeout: timeout,
        ..RedisPoolConfig::new(Some(format!(
            "redis://127.0.0.1:{}/0",
            support::free_port()
        )))
    });
    let Ok(Some(redis)) = redis else {
        panic!("lazy redis pool must build: {redis:?}")
    };
    let db = build_pg_pool(&DbPoolConfig {
        acquire_timeout: timeout,
        ..DbPoolConfig::new(Some(format!(
            "postgres://u:p@127.0.0.1:{}/d",
            support::free_port()
        )))
    });
    let Ok(Some(db)) = db else {
        panic!("lazy pg pool must build: {db:?}")
    };
    for store in [
        build_run_store(DurableStoreKind::Redis, Some(&redis), None),
        build_run_store(DurableStoreKind::Postgres, None, Some(&db)),
    ] {
        let Ok(store) = store else {
            panic!("{store:?}")
        };
        let started = std::time::Instant::now();
        let ping = store.ping().await;
        assert!(ping.is_err(), "{}: ping must fail", store.kind());
        let begun = store.begin(&run_id("down"), &json!({}), INSTANCE).await;
        assert!(
            matches!(&begun, Err(e) if e.status_code() == 503),
            "{}: begin on a down store: {begun:?}",
            store.kind()
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{}: took {:?}",
            store.kind(),
            started.elapsed()
        );
    }
}
