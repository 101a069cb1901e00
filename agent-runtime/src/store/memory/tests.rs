//! Tests of the memory store: the byte bound, eviction order, the byte count.
use super::*;

fn id(n: usize) -> RunId {
    RunId::parse(&format!("run-{n}")).expect("valid id")
}

/// The estimated size of one finished echo run of these tests (ids of the same length).
async fn one_run_bytes() -> usize {
    let store = MemoryRunStore::default();
    let input = serde_json::json!({"message": "hi"});
    store.begin(&id(1_000), &input, "i").await.expect("begin");
    store
        .complete(&id(1_000), 1, &input)
        .await
        .expect("complete");
    store.bytes()
}

#[tokio::test]
async fn the_store_is_bounded_by_bytes_and_forgets_the_oldest_finished_runs() {
    let one = one_run_bytes().await;
    // Room for three finished runs.
    let store = MemoryRunStore::with_max_bytes(u64::try_from(3 * one).expect("small"));
    let input = serde_json::json!({"message": "hi"});
    // run-1000 stays running; run-1001 and run-1002 complete.
    for n in 1_000..1_003 {
        store.begin(&id(n), &input, "i").await.expect("begin");
    }
    for n in 1_001..1_003 {
        store.complete(&id(n), 1, &input).await.expect("complete");
    }
    // Two more runs: the oldest finished ones go, the running run-1000 stays.
    for n in 1_003..1_005 {
        store.begin(&id(n), &input, "i").await.expect("begin");
        store.complete(&id(n), 1, &input).await.expect("complete");
    }
    assert!(store.bytes() <= 3 * one, "{} > {}", store.bytes(), 3 * one);
    assert!(
        store.get(&id(1_000)).await.expect("get").is_some(),
        "running runs are kept"
    );
    assert!(store.get(&id(1_001)).await.expect("get").is_none());
    assert!(store.get(&id(1_004)).await.expect("get").is_some());
    // Ten thousand more finished runs never grow it past the bound.
    for n in 2_000..12_000 {
        store.begin(&id(n), &input, "i").await.expect("begin");
        store.complete(&id(n), 1, &input).await.expect("complete");
        assert!(store.bytes() <= 3 * one, "{} after run-{n}", store.bytes());
    }
    assert!(store.get(&id(1_000)).await.expect("get").is_some());
    assert!(store.get(&id(11_999)).await.expect("get").is_some());
    assert!(store.len() <= 3);
}

#[tokio::test]
async fn large_answers_take_the_room_of_many_small_ones() {
    let one = one_run_bytes().await;
    let store = MemoryRunStore::with_max_bytes(u64::try_from(100 * one).expect("small"));
    let small = serde_json::json!({"message": "hi"});
    for n in 1_000..1_050 {
        store.begin(&id(n), &small, "i").await.expect("begin");
        store.complete(&id(n), 1, &small).await.expect("complete");
    }
    assert_eq!(store.len(), 50);
    // One answer as large as ~60 small runs: the oldest small ones make room for it.
    let big = serde_json::json!({"response": "x".repeat(60 * one)});
    store.begin(&id(2_000), &small, "i").await.expect("begin");
    store.complete(&id(2_000), 1, &big).await.expect("complete");
    assert!(store.bytes() <= 100 * one);
    assert!(store.len() < 50, "{} records", store.len());
    assert!(store.get(&id(2_000)).await.expect("get").is_some());
    assert!(store.get(&id(1_000)).await.expect("get").is_none());
    assert!(store.get(&id(1_049)).await.expect("get").is_some());
}

#[tokio::test]
async fn a_record_larger_than_the_bound_is_kept_until_the_next_one() {
    let store = MemoryRunStore::with_max_bytes(1);
    let input = serde_json::json!({"message": "hi"});
    store.begin(&id(1), &input, "i").await.expect("begin");
    store.complete(&id(1), 1, &input).await.expect("complete");
    assert_eq!(
        store.len(),
        1,
        "the record just written stays: a replay finds it"
    );
    store.begin(&id(2), &input, "i").await.expect("begin");
    store.complete(&id(2), 1, &input).await.expect("complete");
    assert_eq!(store.len(), 1);
    assert!(store.get(&id(2)).await.expect("get").is_some());
}

#[tokio::test]
async fn the_byte_count_follows_every_change_and_returns_to_zero() {
    let store = MemoryRunStore::with_max_bytes(u64::MAX);
    let input = serde_json::json!({"message": "hello", "context": {"a": [1, 2, 3]}});
    store.begin(&id(1), &input, "i").await.expect("begin");
    let running = store.bytes();
    assert_eq!(
        running,
        store.with_runs(|r| r
            .by_id
            .values()
            .map(|s| record_bytes(&s.record))
            .sum::<usize>())
    );
    store.fail(&id(1), 1, "agent down").await.expect("fail");
    let failed = store.bytes();
    assert_eq!(failed, running + "agent down".len());
    // Retried and completed with a larger answer.
    store.begin(&id(1), &input, "j").await.expect("begin again");
    store
        .complete(
            &id(1),
            2,
            &serde_json::json!({"response": "x".repeat(1000)}),
        )
        .await
        .expect("complete");
    assert_eq!(
        store.bytes(),
        store.with_runs(|r| r
            .by_id
            .values()
            .map(|s| record_bytes(&s.record))
            .sum::<usize>())
    );
    assert!(store.bytes() > running + 1000);
    // Everything evicted: nothing counted.
    let tiny = MemoryRunStore::with_max_bytes(0);
    for n in 0..3 {
        tiny.begin(&id(n), &input, "i").await.expect("begin");
        tiny.complete(&id(n), 1, &input).await.expect("complete");
    }
    let last = tiny.with_runs(|r| {
        r.by_id
            .values()
            .map(|s| record_bytes(&s.record))
            .sum::<usize>()
    });
    assert_eq!(tiny.bytes(), last);
    assert_eq!(tiny.len(), 1);
}

#[tokio::test]
async fn running_runs_are_never_evicted_even_past_the_bound() {
    let store = MemoryRunStore::with_max_bytes(1);
    let input = serde_json::json!({});
    for n in 0..4 {
        store.begin(&id(n), &input, "i").await.expect("begin");
    }
    // All four are in flight: none may be forgotten, or their completion would be lost.
    assert_eq!(store.len(), 4);
    for n in 0..4 {
        store
            .complete(&id(n), 1, &input)
            .await
            .expect("each run completes");
    }
    assert_eq!(
        store.len(),
        1,
        "finished runs are evicted down to the last one"
    );
}

#[test]
fn the_default_bound() {
    assert_eq!(
        MemoryRunStore::default().max_bytes as u64,
        DEFAULT_MAX_BYTES
    );
}

/// The default bound holds about 9,000 short chats (the figure the docs give).
#[test]
fn the_default_bound_holds_about_9000_short_chats() {
    let run_id = "0194f3a2-7c1e-7b3a-9f2d-5e8c1a6b4d70";
    let now = chrono::Utc::now();
    let record = RunRecord {
        run_id: run_id.into(),
        status: RunStatus::Completed,
        input: Payload::of(&serde_json::json!({"message": "hello", "run_id": run_id})),
        output: Some(Payload::of(
            &serde_json::json!({"output": "hello", "agent": "echo"}),
        )),
        error: None,
        created_at: now,
        updated_at: now,
        instance_id: "agent-5d8f7c9b6-abcde".into(),
        attempts: 1,
        background: false,
    };
    let runs = DEFAULT_MAX_BYTES as usize / record_bytes(&record);
    assert!((8_500..=9_500).contains(&runs), "{runs} runs");
}
