//! The event log of every store (memory, and real Redis and PostgreSQL servers: `REDIS_URL`,
//! `DATABASE_URL`, see `store_support.rs`): numbering, reading from a number, the count and
//! age bounds, concurrent and superseded writers, releasing a run, and the list of stalled
//! background runs.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "store_support.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use agent_runtime::pools::{
    DbPool, DbPoolConfig, RedisPool, RedisPoolConfig, build_pg_pool, build_redis_pool,
};
use agent_runtime::store::{
    Begin, EventKind, EventLimits, MemoryRunStore, Payload, PostgresRunStore, RedisRunStore, RunId,
    RunStore, StoreError,
};
use serde_json::json;

/// Long enough that nothing here turns stale by itself.
const STALE: Duration = Duration::from_secs(300);

fn run_id(name: &str) -> RunId {
    RunId::parse(&support::unique(name)).expect("valid id")
}

fn redis_pool(test: &str) -> Option<RedisPool> {
    let url = support::redis_url(test)?;
    Some(
        build_redis_pool(&RedisPoolConfig {
            max_size: 8,
            ..RedisPoolConfig::new(Some(url))
        })
        .expect("redis pool")
        .expect("configured"),
    )
}

fn pg_pool(test: &str) -> Option<DbPool> {
    let url = support::database_url(test)?;
    Some(
        build_pg_pool(&DbPoolConfig {
            min_connections: 2,
            max_overflow: 6,
            ..DbPoolConfig::new(Some(url))
        })
        .expect("pg pool")
        .expect("configured"),
    )
}

fn limits(max_events: u64) -> EventLimits {
    EventLimits {
        max_events,
        ttl: Duration::from_secs(3600),
    }
}

async fn started(store: &dyn RunStore, id: &RunId, instance: &str, background: bool) -> u32 {
    match store
        .begin_as(
            id,
            &Payload::of(&json!({"message": "m"})),
            instance,
            background,
        )
        .await
    {
        Ok(Begin::Started(record, _)) => record.attempts,
        other => panic!("begin {id}: {other:?}"),
    }
}

/// Numbering, reading after a number, fencing, the terminal number and the count bound
/// (`bounded` keeps 5 events per run).
async fn event_log_suite(store: Arc<dyn RunStore>, bounded: Arc<dyn RunStore>) {
    let id = run_id("log");
    let unknown = store.events_after(&id, 0, 10).await.expect("read");
    assert_eq!(
        (unknown.events.len(), unknown.first, unknown.last),
        (0, None, 0)
    );
    let append = store.append_event(&id, 1, EventKind::Delta, "x").await;
    assert!(matches!(append, Err(StoreError::NotFound(_))), "{append:?}");

    let attempt = started(&*store, &id, "a", false).await;
    for (i, word) in ["one ", "two ", "three"].iter().enumerate() {
        let seq = store
            .append_event(&id, attempt, EventKind::Delta, word)
            .await;
        assert_eq!(seq.expect("append"), i as u64 + 1);
    }
    let page = store.events_after(&id, 0, 10).await.expect("read");
    let texts: Vec<_> = page
        .events
        .iter()
        .map(|e| (e.seq, e.data.as_str()))
        .collect();
    assert_eq!(texts, [(1, "one "), (2, "two "), (3, "three")]);
    assert_eq!((page.first, page.last), (Some(1), 3));
    let page = store.events_after(&id, 2, 10).await.expect("read");
    assert_eq!(page.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    let page = store.events_after(&id, 0, 2).await.expect("read");
    assert_eq!(page.events.len(), 2, "the limit is kept");
    let reset = store.append_event(&id, attempt, EventKind::Reset, "").await;
    assert_eq!(reset.expect("reset"), 4);
    let page = store.events_after(&id, 3, 10).await.expect("read");
    assert_eq!(
        (page.events[0].kind, page.events[0].data.as_str()),
        (EventKind::Reset, "")
    );

    // Another attempt number is refused, and changes nothing.
    let wrong = store
        .append_event(&id, attempt + 1, EventKind::Delta, "no")
        .await;
    assert!(
        matches!(wrong, Err(StoreError::Superseded { .. })),
        "{wrong:?}"
    );
    // The finish takes the terminal event's number; appends after it are refused.
    store
        .complete(&id, attempt, &json!({"output": "one two three"}))
        .await
        .expect("complete");
    let page = store.events_after(&id, 0, 10).await.expect("read");
    assert_eq!((page.events.len(), page.last), (4, 5));
    let late = store
        .append_event(&id, attempt, EventKind::Delta, "late")
        .await;
    assert!(
        matches!(late, Err(StoreError::NotRunning { .. })),
        "{late:?}"
    );

    // The count bound drops the oldest events; the numbers go on.
    let id = run_id("bounded");
    let attempt = started(&*bounded, &id, "a", false).await;
    for i in 1..=8u64 {
        let seq = bounded
            .append_event(&id, attempt, EventKind::Delta, &i.to_string())
            .await;
        assert_eq!(seq.expect("append"), i);
    }
    let page = bounded.events_after(&id, 0, 100).await.expect("read");
    let seqs: Vec<_> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [4, 5, 6, 7, 8], "the last 5 are kept");
    assert_eq!((page.first, page.last), (Some(4), 8));
}

/// Concurrent appends of one attempt get distinct, gapless numbers; a taken-over attempt's
/// appends are refused while the new attempt's number after the old ones.
async fn writers_suite(store: Arc<dyn RunStore>) {
    let id = run_id("concurrent");
    let attempt = started(&*store, &id, "a", false).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                store
                    .append_event(&id, attempt, EventKind::Delta, &format!("w{i}"))
                    .await
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.expect("task").expect("append"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
    let page = store.events_after(&id, 0, 100).await.expect("read");
    assert_eq!(page.events.len(), 20);
    let mut datas: Vec<_> = page.events.iter().map(|e| e.data.clone()).collect();
    datas.sort();
    datas.dedup();
    assert_eq!(datas.len(), 20, "every writer's event is there once");

    // Released: the next begin takes the run over at once, though stale-after is 5 minutes.
    store.release(&id, attempt).await.expect("release");
    let taken = store.begin(&id, &json!({"message": "m"}), "b").await;
    let second = match taken {
        Ok(Begin::Started(record, Some(previous))) => {
            assert_eq!(
                (previous.instance_id.as_str(), previous.attempts),
                ("a", attempt)
            );
            record.attempts
        }
        other => panic!("a released run is taken over: {other:?}"),
    };
    // Both attempts write at once: only the new one's events land.
    let old = {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            store
                .append_event(&id, attempt, EventKind::Delta, "old")
                .await
        })
    };
    let new = store
        .append_event(&id, second, EventKind::Delta, "new")
        .await;
    let old = old.await.expect("task");
    assert!(matches!(old, Err(StoreError::Superseded { .. })), "{old:?}");
    assert_eq!(new.expect("new attempt appends"), 21);
    let released = store.release(&id, attempt).await;
    assert!(
        matches!(released, Err(StoreError::Superseded { .. })),
        "{released:?}"
    );
    let page = store.events_after(&id, 20, 100).await.expect("read");
    assert_eq!(
        page.events
            .iter()
            .map(|e| e.data.as_str())
            .collect::<Vec<_>>(),
        ["new"]
    );
}

/// A background run is listed once stalled (released here), and not once finished; a run a
/// client waits on is never listed.
async fn background_suite(store: Arc<dyn RunStore>) {
    let bg = run_id("bg");
    let fg = run_id("fg");
    let a = started(&*store, &bg, "a", true).await;
    let f = started(&*store, &fg, "a", false).await;
    let listed = store.stalled_background(1000).await.expect("list");
    assert!(!listed.contains(&bg), "a live background run is not listed");
    let record = store.get(&bg).await.expect("get").expect("a record");
    assert!(record.background);
    let record = store.get(&fg).await.expect("get").expect("a record");
    assert!(!record.background);
    store.release(&bg, a).await.expect("release");
    store.release(&fg, f).await.expect("release");
    let listed = store.stalled_background(1000).await.expect("list");
    assert!(listed.contains(&bg), "released: listed");
    assert!(!listed.contains(&fg), "not a background run");
    let b = match store
        .begin_as(&bg, &Payload::of(&json!({"message": "m"})), "b", true)
        .await
    {
        Ok(Begin::Started(record, Some(_))) => record.attempts,
        other => panic!("{other:?}"),
    };
    let listed = store.stalled_background(1000).await.expect("list");
    assert!(!listed.contains(&bg), "taken over: live again");
    store
        .complete(&bg, b, &json!({"output": "m"}))
        .await
        .expect("complete");
    let listed = store.stalled_background(1000).await.expect("list");
    assert!(!listed.contains(&bg), "finished: not listed");
}

/// Every suite, on stores made with the given event limits (a store shared between processes).
async fn shared_store_suites(store: impl Fn(EventLimits) -> Arc<dyn RunStore>) {
    event_log_suite(store(EventLimits::default()), store(limits(5))).await;
    writers_suite(store(EventLimits::default())).await;
    background_suite(store(EventLimits::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_keeps_an_event_log() {
    let store = || MemoryRunStore::new(STALE);
    event_log_suite(
        Arc::new(store()),
        Arc::new(store().with_event_limits(limits(5))),
    )
    .await;
    writers_suite(Arc::new(store())).await;
    // A private store lists no background runs: a process's own are not lost to it.
    let store = Arc::new(store());
    let id = run_id("bg");
    let a = started(&*store, &id, "a", true).await;
    store.release(&id, a).await.expect("release");
    assert_eq!(store.stalled_background(10).await.expect("list"), []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_keeps_an_event_log() {
    let Some(pool) = redis_pool("redis_store_keeps_an_event_log") else {
        return;
    };
    let store = || RedisRunStore::new(pool.clone(), STALE);
    shared_store_suites(|l| Arc::new(store().with_event_limits(l))).await;

    // The age bound: the stream expires its TTL after the last event, renewed by each.
    let store = store().with_event_limits(EventLimits {
        max_events: 100,
        ttl: Duration::from_secs(120),
    });
    let id = run_id("ttl");
    let attempt = started(&store, &id, "a", false).await;
    store
        .append_event(&id, attempt, EventKind::Delta, "x")
        .await
        .expect("append");
    let mut conn = pool.get().await.expect("conn");
    let key = format!("fastagentic:events:{id}");
    let ttl: i64 = deadpool_redis::redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert!(
        (100..=120).contains(&ttl),
        "events expire 120 s after the last: {ttl}"
    );
    let _: () = deadpool_redis::redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let page = store.events_after(&id, 0, 10).await.expect("read");
    assert_eq!(
        (page.first, page.last),
        (None, 1),
        "expired: the numbers stay known"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_keeps_an_event_log() {
    let Some(pool) = pg_pool("postgres_store_keeps_an_event_log") else {
        return;
    };
    let store = || PostgresRunStore::new(pool.clone(), STALE);
    shared_store_suites(|l| Arc::new(store().with_event_limits(l))).await;

    // The age bound: events older than the TTL are deleted by the sweep.
    let store = store();
    let id = run_id("ttl");
    let attempt = started(&store, &id, "a", false).await;
    store
        .append_event(&id, attempt, EventKind::Delta, "x")
        .await
        .expect("append");
    store
        .append_event(&id, attempt, EventKind::Delta, "y")
        .await
        .expect("append");
    sqlx::query(
        "UPDATE fastagentic_run_events SET created_at = now() - interval '2 hours' \
         WHERE run_id = $1 AND seq = 1",
    )
    .bind(id.as_str())
    .execute(pool.pg())
    .await
    .expect("backdate");
    store.stalled_background(1).await.expect("sweep");
    let page = store.events_after(&id, 0, 10).await.expect("read");
    assert_eq!(page.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
    assert_eq!((page.first, page.last), (Some(2), 2));
}
