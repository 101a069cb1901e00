//! One durable-run suite, one suite for stalled runs (takeover and fencing) and one for
//! heartbeats (a live attempt is not taken over), run against every store: memory, and real Redis and PostgreSQL servers (`REDIS_URL`, `DATABASE_URL`; see
//! `store_support.rs` for how they are found).

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "store_support.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use agent_runtime::error::ApiError;
use agent_runtime::pools::{
    DbPool, DbPoolConfig, RedisPool, RedisPoolConfig, build_pg_pool, build_redis_pool,
};
use agent_runtime::store::{
    Begin, DEFAULT_RUN_STALE_AFTER_SECS, DurableStoreKind, MEMORY_STORE_DEFAULT_MAX_BYTES,
    MemoryRunStore, Payload, PostgresRunStore, RedisRunStore, RunId, RunStatus, RunStore,
    StoreArgs, StoreError, TakenOver, build_run_store, migrate,
};
use serde_json::json;
use sqlx::Row;

const INSTANCE: &str = "test-instance";

/// The runtime's default stale-after: nothing in [`durable_run_suite`] gets near it.
const DEFAULT_STALE: Duration = Duration::from_secs(DEFAULT_RUN_STALE_AFTER_SECS);

/// The short stale-after of [`stalled_run_suite`].
const SHORT_STALE: Duration = Duration::from_secs(1);

fn run_id(name: &str) -> RunId {
    match RunId::parse(&support::unique(name)) {
        Ok(id) => id,
        Err(e) => panic!("test id must be valid: {e}"),
    }
}

/// A Redis pool for `test`, or `None` when no server is configured (the test then says so and
/// returns; with FASTAGENTIC_REQUIRE_SERVICES=1 it fails instead, see `store_support.rs`).
fn redis_pool(test: &str) -> Option<RedisPool> {
    let url = support::redis_url(test)?;
    match build_redis_pool(&RedisPoolConfig {
        max_size: 8,
        ..RedisPoolConfig::new(Some(url))
    }) {
        Ok(Some(pool)) => Some(pool),
        other => panic!("redis pool: {other:?}"),
    }
}

/// A PostgreSQL pool for `test`, or `None` as for [`redis_pool`].
fn pg_pool(test: &str) -> Option<DbPool> {
    let url = support::database_url(test)?;
    match build_pg_pool(&DbPoolConfig {
        min_connections: 2,
        max_overflow: 6,
        ..DbPoolConfig::new(Some(url))
    }) {
        Ok(Some(pool)) => Some(pool),
        other => panic!("pg pool: {other:?}"),
    }
}

/// Asserts that the Redis key expires about a week from now (the run store's retention).
async fn assert_expires_in_a_week(pool: &RedisPool, key: &str) {
    let mut conn = pool.get().await.expect("redis connection");
    let secs: i64 = deadpool_redis::redis::cmd("TTL")
        .arg(key)
        .query_async(&mut *conn)
        .await
        .expect("TTL");
    let week = i64::try_from(agent_runtime::store::redis::RUN_TTL_SECONDS).expect("fits");
    assert!(
        secs > week - 60 && secs <= week,
        "TTL of {key} is {secs} s, want about {week} s"
    );
}

/// Moves the run's `updated_at` an hour back, as if nothing had touched it since.
async fn backdate_an_hour(pool: &DbPool, id: &RunId) {
    let moved = sqlx::query(
        "UPDATE fastagentic_runs SET updated_at = now() - interval '1 hour' WHERE run_id = $1",
    )
    .bind(id.as_str())
    .execute(pool.pg())
    .await
    .expect("UPDATE");
    assert_eq!(moved.rows_affected(), 1);
}

/// The store options with `stale_after` and the defaults otherwise.
fn store_args(stale_after: Duration) -> StoreArgs {
    StoreArgs {
        durable_store: None,
        run_stale_after: stale_after.as_secs_f64(),
        memory_store_max_bytes: MEMORY_STORE_DEFAULT_MAX_BYTES,
        stream_events_max: 10_000,
        stream_events_ttl: 3600.0,
    }
}

/// The store of `kind` on the given pools, as the runtime builds it.
fn store_on(
    kind: DurableStoreKind,
    redis: Option<&RedisPool>,
    db: Option<&DbPool>,
    stale_after: Duration,
) -> Arc<dyn RunStore> {
    match build_run_store(kind, redis, db, &store_args(stale_after)) {
        Ok(store) => store,
        Err(e) => panic!("{kind} store: {e:?}"),
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
    let Ok(Begin::Started(record, None)) = started else {
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
    let completed = store.complete(&id, record.attempts, &output).await;
    let Ok(completed) = completed else {
        panic!("{kind}: complete: {completed:?}")
    };
    assert_eq!(completed.status, RunStatus::Completed);
    assert_eq!(
        completed.output.as_ref().map(Payload::to_value),
        Some(output.clone())
    );
    assert!(completed.updated_at >= completed.created_at);

    let replay = store
        .begin(&id, &json!({"message": "other"}), "other-instance")
        .await;
    let Ok(Begin::AlreadyCompleted(stored)) = replay else {
        panic!("{kind}: begin after completion must replay: {replay:?}")
    };
    assert_eq!(
        stored.output.as_ref().map(Payload::to_value),
        Some(output.clone())
    );
    assert_eq!(stored.input, input);
    assert_eq!(stored.instance_id, INSTANCE);

    let read = store.get(&id).await;
    assert!(
        matches!(&read, Ok(Some(r)) if r.status == RunStatus::Completed && r.output.as_ref().map(Payload::to_value).as_ref() == Some(&output)),
        "{kind}: get: {read:?}"
    );

    // A finished run cannot be finished again.
    let twice = store.complete(&id, 1, &json!({"output": "again"})).await;
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
    let missing = store.complete(&unknown, 1, &output).await;
    assert!(
        matches!(&missing, Err(e @ StoreError::NotFound(_)) if ApiError::from(e).status == 404),
        "{kind}: complete of unknown id: {missing:?}"
    );

    // Failed runs are recorded and may be retried under the same id.
    let failing = run_id("fail");
    assert!(matches!(
        store.begin(&failing, &input, INSTANCE).await,
        Ok(Begin::Started(_, None))
    ));
    let failed = store.fail(&failing, 1, "upstream timed out").await;
    assert!(
        matches!(&failed, Ok(r) if r.status == RunStatus::Failed && r.error.as_deref() == Some("upstream timed out")),
        "{kind}: fail: {failed:?}"
    );
    let retry = store.begin(&failing, &input, "retrying-instance").await;
    let Ok(Begin::Started(retried, None)) = retry else {
        panic!("{kind}: a failed run must be retryable (and is no takeover): {retry:?}")
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
            Ok(Ok(Begin::Started(_, None))) => started += 1,
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

/// Stalled runs: `store` takes over runs left running for longer than [`SHORT_STALE`].
async fn stalled_run_suite(store: Arc<dyn RunStore>) {
    let kind = store.kind();
    let input = json!({"message": "long one"});

    // A running run younger than the threshold is still running.
    let id = run_id("stall");
    let t0 = std::time::Instant::now();
    let first = store.begin(&id, &input, "instance-a").await;
    let Ok(Begin::Started(first, None)) = first else {
        panic!("{kind}: first begin must start: {first:?}")
    };
    assert_eq!(first.attempts, 1);
    let young = store
        .begin(&id, &json!({"message": "retry"}), "instance-b")
        .await;
    assert!(
        t0.elapsed() < SHORT_STALE,
        "{kind}: the machine is too slow for this check ({:?})",
        t0.elapsed()
    );
    let Ok(Begin::StillRunning(running)) = young else {
        panic!("{kind}: a run younger than the threshold must be running: {young:?}")
    };
    assert_eq!(running.instance_id, "instance-a");
    assert_eq!(running.attempts, 1);

    // Older than the threshold: the next begin takes it over, exactly like a failed run.
    tokio::time::sleep(SHORT_STALE + Duration::from_millis(300)).await;
    let retry_input = json!({"message": "retry"});
    let taken = store.begin(&id, &retry_input, "instance-b").await;
    let Ok(Begin::Started(taken, Some(previous))) = taken else {
        panic!("{kind}: a stalled run must be taken over: {taken:?}")
    };
    assert_eq!(
        previous,
        TakenOver {
            instance_id: "instance-a".to_owned(),
            attempts: 1
        },
        "{kind}"
    );
    assert_eq!(taken.status, RunStatus::Running);
    assert_eq!(taken.attempts, 2);
    assert_eq!(taken.instance_id, "instance-b");
    assert_eq!(taken.input, retry_input);
    assert_eq!((taken.output.as_ref(), taken.error.as_ref()), (None, None));
    assert_eq!(taken.created_at, first.created_at, "{kind}: same run");
    assert!(taken.updated_at > first.updated_at, "{kind}: {taken:?}");
    // Taken over just now: not stale any more.
    let again = store.begin(&id, &input, "instance-c").await;
    assert!(
        matches!(&again, Ok(Begin::StillRunning(r)) if r.attempts == 2 && r.instance_id == "instance-b"),
        "{kind}: {again:?}"
    );

    // The old attempt was slow, not dead: its finish is refused and changes nothing.
    let before = store.get(&id).await.ok().flatten();
    let late = store.complete(&id, 1, &json!({"output": "late"})).await;
    assert!(
        matches!(&late, Err(e @ StoreError::Superseded { attempt: 1, .. }) if ApiError::from(e).status == 409),
        "{kind}: complete of the superseded attempt: {late:?}"
    );
    let late = store.fail(&id, 1, "late failure").await;
    assert!(
        matches!(&late, Err(StoreError::Superseded { attempt: 1, .. })),
        "{kind}: fail of the superseded attempt: {late:?}"
    );
    let after = store.get(&id).await.ok().flatten();
    assert_eq!(after, before, "{kind}: a superseded finish changes nothing");
    assert_eq!(after.map(|r| r.status), Some(RunStatus::Running));

    // The new attempt finishes normally; the old one is still refused afterwards.
    let output = json!({"output": "retry"});
    let done = store.complete(&id, 2, &output).await;
    assert!(
        matches!(&done, Ok(r) if r.status == RunStatus::Completed && r.attempts == 2 && r.output.as_ref().map(Payload::to_value).as_ref() == Some(&output)),
        "{kind}: complete of the new attempt: {done:?}"
    );
    let late = store.complete(&id, 1, &json!({"output": "late"})).await;
    assert!(
        matches!(&late, Err(StoreError::Superseded { .. })),
        "{kind}: {late:?}"
    );
    let replay = store.begin(&id, &input, "instance-d").await;
    assert!(
        matches!(&replay, Ok(Begin::AlreadyCompleted(r)) if r.output.as_ref().map(Payload::to_value).as_ref() == Some(&output) && r.instance_id == "instance-b"),
        "{kind}: completed runs are never taken over: {replay:?}"
    );

    // A failed run older than the threshold is retried, not taken over.
    let failing = run_id("stall-fail");
    assert!(matches!(
        store.begin(&failing, &input, "instance-a").await,
        Ok(Begin::Started(_, None))
    ));
    let failed = store.fail(&failing, 1, "upstream timed out").await;
    assert!(
        matches!(&failed, Ok(r) if r.status == RunStatus::Failed),
        "{kind}: {failed:?}"
    );
    tokio::time::sleep(SHORT_STALE + Duration::from_millis(300)).await;
    let retry = store.begin(&failing, &input, "instance-b").await;
    assert!(
        matches!(&retry, Ok(Begin::Started(r, None)) if r.attempts == 2 && r.error.is_none()),
        "{kind}: a failed run is retried as before: {retry:?}"
    );
    let done = store.complete(&failing, 2, &output).await;
    assert!(
        matches!(&done, Ok(r) if r.status == RunStatus::Completed),
        "{kind}: {done:?}"
    );

    // Concurrent begins of a stalled run: exactly one takes it over.
    let contested = run_id("stall-race");
    assert!(matches!(
        store.begin(&contested, &input, "instance-dead").await,
        Ok(Begin::Started(_, None))
    ));
    tokio::time::sleep(SHORT_STALE + Duration::from_millis(300)).await;
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
    let mut winners = Vec::new();
    let mut running = 0;
    for task in tasks {
        match task.await {
            Ok(Ok(Begin::Started(record, Some(previous)))) => winners.push((record, previous)),
            Ok(Ok(Begin::StillRunning(_))) => running += 1,
            other => panic!("{kind}: concurrent begin of a stalled run: {other:?}"),
        }
    }
    assert_eq!(
        (winners.len(), running),
        (1, 31),
        "{kind}: exactly one concurrent begin must take the stalled run over"
    );
    let (record, previous) = &winners[0];
    assert_eq!(record.attempts, 2, "{kind}");
    assert_eq!(previous.instance_id, "instance-dead", "{kind}");
    assert_eq!(previous.attempts, 1, "{kind}");
    let stored = store.get(&contested).await.ok().flatten();
    assert_eq!(
        stored.map(|r| (r.attempts, r.instance_id)),
        Some((2, record.instance_id.clone())),
        "{kind}: the winner's record is the stored one"
    );
}

/// How often [`heartbeat_suite`] heartbeats, and for how long: well past [`SHORT_STALE`].
const BEAT_EVERY: Duration = Duration::from_millis(300);
const BEAT_FOR: Duration = Duration::from_secs(2);

/// Heartbeats: `store` takes over runs left running for longer than [`SHORT_STALE`]; a run whose
/// attempt heartbeats is not taken over however long it runs, and is once the heartbeats stop.
async fn heartbeat_suite(store: Arc<dyn RunStore>) {
    let kind = store.kind();
    assert_eq!(store.stale_after(), SHORT_STALE, "{kind}");
    let input = json!({"message": "a long stream"});
    let id = run_id("beat");
    let first = store.begin(&id, &input, "instance-a").await;
    let Ok(Begin::Started(first, None)) = first else {
        panic!("{kind}: first begin must start: {first:?}")
    };

    // Heartbeats every 0.3 s for 2 s (twice the threshold), while another instance keeps
    // trying to begin the run: it stays attempt 1's.
    let heartbeats = {
        let (store, id) = (Arc::clone(&store), id.clone());
        tokio::spawn(async move {
            let t0 = std::time::Instant::now();
            let mut sent = 0;
            while t0.elapsed() < BEAT_FOR {
                tokio::time::sleep(BEAT_EVERY).await;
                let beat = store.heartbeat(&id, 1).await;
                assert!(
                    beat.is_ok(),
                    "{kind}: heartbeat of the live attempt: {beat:?}"
                );
                sent += 1;
            }
            sent
        })
    };
    let t0 = std::time::Instant::now();
    let mut refused = 0;
    let mut last_update = first.updated_at;
    while t0.elapsed() < BEAT_FOR {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let other = store
            .begin(&id, &json!({"message": "retry"}), "instance-b")
            .await;
        let Ok(Begin::StillRunning(running)) = other else {
            panic!(
                "{kind}: a heartbeating run must not be taken over ({:?} in): {other:?}",
                t0.elapsed()
            )
        };
        assert_eq!(
            (running.attempts, running.instance_id.as_str()),
            (1, "instance-a"),
            "{kind}"
        );
        assert_eq!(
            running.input, input,
            "{kind}: a heartbeat changes nothing else"
        );
        assert!(running.updated_at >= last_update, "{kind}: {running:?}");
        last_update = running.updated_at;
        refused += 1;
    }
    let sent = heartbeats.await.unwrap_or_else(|e| panic!("{kind}: {e}"));
    assert!(sent >= 5, "{kind}: only {sent} heartbeats");
    assert!(refused >= 8, "{kind}: only {refused} begins");
    let record = store.get(&id).await.ok().flatten();
    let Some(record) = record else {
        panic!("{kind}: the record must exist")
    };
    assert!(
        record.updated_at - first.updated_at
            >= chrono::Duration::from_std(BEAT_FOR - BEAT_EVERY).unwrap_or_default(),
        "{kind}: heartbeats move updated_at: {} then {}",
        first.updated_at,
        record.updated_at
    );
    assert_eq!(
        (record.status, record.attempts, record.created_at),
        (RunStatus::Running, 1, first.created_at),
        "{kind}"
    );

    // The heartbeats stopped (the process died): once stale, the run is taken over.
    tokio::time::sleep(SHORT_STALE + Duration::from_millis(300)).await;
    let taken = store
        .begin(&id, &json!({"message": "retry"}), "instance-b")
        .await;
    let Ok(Begin::Started(taken, Some(previous))) = taken else {
        panic!("{kind}: once the heartbeats stop the run is taken over: {taken:?}")
    };
    assert_eq!((taken.attempts, previous.attempts), (2, 1), "{kind}");

    // The superseded attempt's heartbeat is refused and changes nothing.
    let before = store.get(&id).await.ok().flatten();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let late = store.heartbeat(&id, 1).await;
    assert!(
        matches!(&late, Err(e @ StoreError::Superseded { attempt: 1, .. }) if ApiError::from(e).status == 409),
        "{kind}: heartbeat of the superseded attempt: {late:?}"
    );
    // Nor does a heartbeat of an attempt the run has not reached.
    let ahead = store.heartbeat(&id, 3).await;
    assert!(
        matches!(&ahead, Err(StoreError::Superseded { attempt: 3, .. })),
        "{kind}: {ahead:?}"
    );
    assert_eq!(
        store.get(&id).await.ok().flatten(),
        before,
        "{kind}: a refused heartbeat changes nothing"
    );
    // The new attempt heartbeats and finishes; then its own heartbeat is refused too.
    let beat = store.heartbeat(&id, 2).await;
    assert!(beat.is_ok(), "{kind}: {beat:?}");
    let done = store.complete(&id, 2, &json!({"output": "done"})).await;
    assert!(done.is_ok(), "{kind}: {done:?}");
    let finished = store.get(&id).await.ok().flatten();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after_finish = store.heartbeat(&id, 2).await;
    assert!(
        matches!(
            &after_finish,
            Err(StoreError::NotRunning {
                status: RunStatus::Completed,
                ..
            })
        ),
        "{kind}: heartbeat of a finished run: {after_finish:?}"
    );
    assert_eq!(
        store.get(&id).await.ok().flatten(),
        finished,
        "{kind}: a heartbeat does not touch a finished run"
    );

    // Unknown ids: NotFound, and no record appears.
    let unknown = run_id("beat-unknown");
    let missing = store.heartbeat(&unknown, 1).await;
    assert!(
        matches!(&missing, Err(e @ StoreError::NotFound(_)) if ApiError::from(e).status == 404),
        "{kind}: heartbeat of an unknown id: {missing:?}"
    );
    let read = store.get(&unknown).await;
    assert!(
        matches!(read, Ok(None)),
        "{kind}: a heartbeat creates nothing: {read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_the_suite() {
    durable_run_suite(Arc::new(MemoryRunStore::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_takes_over_stalled_runs() {
    stalled_run_suite(Arc::new(MemoryRunStore::new(SHORT_STALE))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_heartbeats_keep_live_runs() {
    heartbeat_suite(Arc::new(MemoryRunStore::new(SHORT_STALE))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_passes_the_suite() {
    let Some(pool) = redis_pool("redis_store_passes_the_suite") else {
        return;
    };
    let store = store_on(DurableStoreKind::Redis, Some(&pool), None, DEFAULT_STALE);
    durable_run_suite(store).await;
    // Through the concrete type as well, which the HTTP layer may hold.
    durable_run_suite(Arc::new(RedisRunStore::new(pool.clone(), DEFAULT_STALE))).await;

    // Retention: a run's key expires a week after its last change, running or finished.
    let store = RedisRunStore::new(pool.clone(), DEFAULT_STALE);
    let id = run_id("ttl");
    store
        .begin(&id, &json!({"m": 1}), "i")
        .await
        .expect("begin");
    let key = format!("{}{id}", agent_runtime::store::redis::KEY_PREFIX);
    assert_expires_in_a_week(&pool, &key).await;
    store
        .complete(&id, 1, &json!({"out": 1}))
        .await
        .expect("complete");
    assert_expires_in_a_week(&pool, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_passes_the_suite() {
    let Some(pool) = pg_pool("postgres_store_passes_the_suite") else {
        return;
    };
    let store = store_on(DurableStoreKind::Postgres, None, Some(&pool), DEFAULT_STALE);
    durable_run_suite(store).await;
    durable_run_suite(Arc::new(PostgresRunStore::new(pool, DEFAULT_STALE))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_takes_over_stalled_runs() {
    let Some(pool) = redis_pool("redis_store_takes_over_stalled_runs") else {
        return;
    };
    let store = store_on(DurableStoreKind::Redis, Some(&pool), None, SHORT_STALE);
    stalled_run_suite(store).await;

    let mut conn = pool.get().await.expect("redis connection");
    let key = |id: &RunId| format!("{}{id}", agent_runtime::store::redis::KEY_PREFIX);
    let store = RedisRunStore::new(pool.clone(), Duration::from_secs(60));

    // Every state change stamps `updated_ms` with the server's clock.
    let id = run_id("stamp");
    store.begin(&id, &json!({}), "i").await.expect("begin");
    let (secs, micros): (u64, u64) = deadpool_redis::redis::cmd("TIME")
        .query_async(&mut *conn)
        .await
        .expect("TIME");
    let now = secs * 1000 + micros / 1000;
    let stamp: u64 = deadpool_redis::redis::cmd("HGET")
        .arg(key(&id))
        .arg("updated_ms")
        .query_async(&mut *conn)
        .await
        .expect("updated_ms is a number");
    assert!(
        now.abs_diff(stamp) < 5_000,
        "updated_ms {stamp}, TIME {now}"
    );

    // Staleness is `updated_ms` against the server's TIME: an hour old is stalled at once.
    let _: () = deadpool_redis::redis::cmd("HSET")
        .arg(key(&id))
        .arg("updated_ms")
        .arg(now - 3_600_000)
        .query_async(&mut *conn)
        .await
        .expect("HSET");
    let taken = store.begin(&id, &json!({}), "j").await;
    assert!(
        matches!(&taken, Ok(Begin::Started(r, Some(_))) if r.attempts == 2 && r.instance_id == "j"),
        "{taken:?}"
    );
    let done = store.complete(&id, 2, &json!({"output": "x"})).await;
    assert!(done.is_ok(), "{done:?}");
    let stamp2: u64 = deadpool_redis::redis::cmd("HGET")
        .arg(key(&id))
        .arg("updated_ms")
        .query_async(&mut *conn)
        .await
        .expect("updated_ms is a number");
    assert!(
        stamp2 >= now,
        "complete stamps updated_ms too: {stamp2} < {now}"
    );

    // A running record written by an older version (no `updated_ms`) is never taken over, however
    // old its `updated_at`; it still expires by TTL.
    let legacy = run_id("legacy");
    let _: () = deadpool_redis::redis::cmd("HSET")
        .arg(key(&legacy))
        .arg(&[
            ("run_id", legacy.as_str()),
            ("status", "running"),
            ("input", "{}"),
            ("instance_id", "old-version"),
            ("created_at", "2020-01-01T00:00:00+00:00"),
            ("updated_at", "2020-01-01T00:00:00+00:00"),
            ("attempts", "1"),
        ])
        .query_async(&mut *conn)
        .await
        .expect("HSET legacy record");
    let _: () = deadpool_redis::redis::cmd("EXPIRE")
        .arg(key(&legacy))
        .arg(600)
        .query_async(&mut *conn)
        .await
        .expect("EXPIRE");
    let begun = store.begin(&legacy, &json!({}), "new-version").await;
    assert!(
        matches!(&begun, Ok(Begin::StillRunning(r)) if r.instance_id == "old-version"),
        "{begun:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_takes_over_stalled_runs() {
    let Some(pool) = pg_pool("postgres_store_takes_over_stalled_runs") else {
        return;
    };
    let store = store_on(DurableStoreKind::Postgres, None, Some(&pool), SHORT_STALE);
    stalled_run_suite(store).await;

    // Staleness is `updated_at` against the database's `now()`: an hour old is stalled at once.
    let store = PostgresRunStore::new(pool.clone(), Duration::from_secs(60));
    let id = run_id("db-clock");
    store.begin(&id, &json!({}), "i").await.expect("begin");
    let young = store.begin(&id, &json!({}), "j").await;
    assert!(matches!(young, Ok(Begin::StillRunning(_))), "{young:?}");
    backdate_an_hour(&pool, &id).await;
    let taken = store.begin(&id, &json!({}), "j").await;
    assert!(
        matches!(&taken, Ok(Begin::Started(r, Some(p))) if r.attempts == 2 && p.instance_id == "i"),
        "{taken:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_heartbeats_keep_live_runs() {
    let Some(pool) = redis_pool("redis_store_heartbeats_keep_live_runs") else {
        return;
    };
    let store = store_on(DurableStoreKind::Redis, Some(&pool), None, SHORT_STALE);
    heartbeat_suite(store).await;

    // A heartbeat stamps `updated_ms` with the server's clock and renews the week's expiry.
    let store = RedisRunStore::new(pool.clone(), Duration::from_secs(60));
    let mut conn = pool.get().await.expect("redis connection");
    let id = run_id("beat-stamp");
    let key = format!("{}{id}", agent_runtime::store::redis::KEY_PREFIX);
    store.begin(&id, &json!({}), "i").await.expect("begin");
    let _: () = deadpool_redis::redis::cmd("HSET")
        .arg(&key)
        .arg("updated_ms")
        .arg(1_000u64)
        .query_async(&mut *conn)
        .await
        .expect("HSET");
    let _: () = deadpool_redis::redis::cmd("EXPIRE")
        .arg(&key)
        .arg(100)
        .query_async(&mut *conn)
        .await
        .expect("EXPIRE");
    let beat = store.heartbeat(&id, 1).await;
    assert!(beat.is_ok(), "{beat:?}");
    let (secs, micros): (u64, u64) = deadpool_redis::redis::cmd("TIME")
        .query_async(&mut *conn)
        .await
        .expect("TIME");
    let now = secs * 1000 + micros / 1000;
    let stamp: u64 = deadpool_redis::redis::cmd("HGET")
        .arg(&key)
        .arg("updated_ms")
        .query_async(&mut *conn)
        .await
        .expect("updated_ms is a number");
    assert!(
        now.abs_diff(stamp) < 5_000,
        "updated_ms {stamp}, TIME {now}"
    );
    assert_expires_in_a_week(&pool, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_heartbeats_keep_live_runs() {
    let Some(pool) = pg_pool("postgres_store_heartbeats_keep_live_runs") else {
        return;
    };
    let store = store_on(DurableStoreKind::Postgres, None, Some(&pool), SHORT_STALE);
    heartbeat_suite(store).await;

    // A heartbeat sets `updated_at` from the database's clock: an hour-old row is fresh again.
    let store = PostgresRunStore::new(pool.clone(), Duration::from_secs(60));
    let id = run_id("beat-db-clock");
    store.begin(&id, &json!({}), "i").await.expect("begin");
    backdate_an_hour(&pool, &id).await;
    let beat = store.heartbeat(&id, 1).await;
    assert!(beat.is_ok(), "{beat:?}");
    let age: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - updated_at)::float8 FROM fastagentic_runs \
         WHERE run_id = $1",
    )
    .bind(id.as_str())
    .fetch_one(pool.pg())
    .await
    .expect("SELECT");
    assert!(
        age.abs() < 5.0,
        "updated_at is {age} s old after a heartbeat"
    );
    let young = store.begin(&id, &json!({}), "j").await;
    assert!(matches!(young, Ok(Begin::StillRunning(_))), "{young:?}");
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
        build_run_store(
            DurableStoreKind::Redis,
            Some(&redis),
            None,
            &store_args(DEFAULT_STALE),
        ),
        build_run_store(
            DurableStoreKind::Postgres,
            None,
            Some(&db),
            &store_args(DEFAULT_STALE),
        ),
    ] {
        let Ok(store) = store else {
            panic!("{store:?}")
        };
        let started = std::time::Instant::now();
        let ping = store.ping().await;
        assert!(ping.is_err(), "{}: ping must fail", store.kind());
        let begun = store.begin(&run_id("down"), &json!({}), INSTANCE).await;
        assert!(
            matches!(&begun, Err(e) if ApiError::from(e).status == 503),
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
