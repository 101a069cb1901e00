//! In-memory run store: one map per worker, lost on restart. The default when no durable store
//! is configured; good for development and for single-process deployments that accept losing
//! idempotency across restarts.
//!
//! Bounded: every `POST /chat` records a run, so an unbounded map would grow with traffic. The
//! store keeps at most [`DEFAULT_MAX_RUNS`] records per worker and forgets the oldest finished
//! (completed or failed) runs first; a running run is never evicted. A replay of a forgotten run
//! id runs the agent again, which is why production deployments use Redis or PostgreSQL.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;

use super::{
    Begin, DEFAULT_RUN_STALE_AFTER_SECS, DurableStoreKind, Outcome, RunId, RunRecord, RunStatus,
    RunStore, StoreError, TakenOver,
};

/// Records kept per worker by default.
pub const DEFAULT_MAX_RUNS: usize = 10_000;

/// See the module docs.
#[derive(Debug)]
pub struct MemoryRunStore {
    // A std mutex: no await happens while it is held.
    runs: Mutex<Runs>,
    max_runs: usize,
    stale_after: chrono::Duration,
    stale_after_std: Duration,
}

/// The records and the order in which their ids were first stored (oldest first).
#[derive(Debug, Default)]
struct Runs {
    by_id: HashMap<String, RunRecord>,
    order: VecDeque<String>,
}

impl Runs {
    fn get_mut(&mut self, id: &str) -> Option<&mut RunRecord> {
        self.by_id.get_mut(id)
    }

    fn get(&self, id: &str) -> Option<&RunRecord> {
        self.by_id.get(id)
    }

    /// Stores a new record, first forgetting the oldest finished runs beyond `max` records.
    fn insert(&mut self, id: String, record: RunRecord, max: usize) {
        let mut kept_running = Vec::new();
        while self.by_id.len() >= max {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            match self.by_id.get(&oldest) {
                Some(r) if r.status == RunStatus::Running => kept_running.push(oldest),
                _ => {
                    self.by_id.remove(&oldest);
                }
            }
        }
        // Running runs keep their place at the front, oldest first.
        for id in kept_running.into_iter().rev() {
            self.order.push_front(id);
        }
        self.order.push_back(id.clone());
        self.by_id.insert(id, record);
    }
}

impl Default for MemoryRunStore {
    fn default() -> Self {
        Self::with_limits(
            DEFAULT_MAX_RUNS,
            Duration::from_secs(DEFAULT_RUN_STALE_AFTER_SECS),
        )
    }
}

impl MemoryRunStore {
    /// A store that takes over runs left `running` for longer than `stale_after`.
    pub fn new(stale_after: Duration) -> Self {
        Self::with_limits(DEFAULT_MAX_RUNS, stale_after)
    }

    /// A store that keeps at most `max_runs` records (at least 1), with the default stale-after.
    pub fn with_max_runs(max_runs: usize) -> Self {
        Self::with_limits(max_runs, Duration::from_secs(DEFAULT_RUN_STALE_AFTER_SECS))
    }

    /// A store that keeps at most `max_runs` records (at least 1) and takes over runs left
    /// `running` for longer than `stale_after`.
    pub fn with_limits(max_runs: usize, stale_after: Duration) -> Self {
        Self {
            runs: Mutex::new(Runs::default()),
            max_runs: max_runs.max(1),
            // Out of chrono's range only for absurd values: such a run is then never stale.
            stale_after: chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX),
            stale_after_std: stale_after,
        }
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.with_runs(|runs| runs.by_id.len())
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn with_runs<T>(&self, f: impl FnOnce(&mut Runs) -> T) -> T {
        // A panic while holding the lock cannot leave a record half-written (each closure
        // replaces whole records), so a poisoned map is still consistent.
        let mut runs = self
            .runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut runs)
    }

    /// The record of `run_id` if it is running at `attempt`, else the error `complete`,
    /// `fail` and `heartbeat` report.
    fn running_at<'a>(
        runs: &'a mut Runs,
        run_id: &RunId,
        attempt: u32,
    ) -> Result<&'a mut RunRecord, StoreError> {
        let record = runs
            .get_mut(run_id.as_str())
            .ok_or_else(|| StoreError::NotFound(run_id.to_string()))?;
        if record.attempts != attempt {
            return Err(StoreError::Superseded {
                run_id: run_id.to_string(),
                attempt,
            });
        }
        if record.status != RunStatus::Running {
            return Err(StoreError::NotRunning {
                run_id: run_id.to_string(),
                status: record.status,
            });
        }
        Ok(record)
    }
}

#[async_trait]
impl RunStore for MemoryRunStore {
    fn kind(&self) -> DurableStoreKind {
        DurableStoreKind::Memory
    }

    async fn begin(
        &self,
        run_id: &RunId,
        input: &Value,
        instance_id: &str,
    ) -> Result<Begin, StoreError> {
        let now = Utc::now();
        let max = self.max_runs;
        // Running and last updated before this: stalled. (`None`: the threshold reaches back
        // past chrono's range, so nothing is.)
        let stale_before = now.checked_sub_signed(self.stale_after);
        let stalled = |r: &RunRecord| stale_before.is_some_and(|t| r.updated_at < t);
        Ok(self.with_runs(|runs| match runs.get_mut(run_id.as_str()) {
            Some(existing) if existing.status == RunStatus::Completed => {
                Begin::AlreadyCompleted(existing.clone())
            }
            Some(existing) if existing.status == RunStatus::Running && !stalled(existing) => {
                Begin::StillRunning(existing.clone())
            }
            Some(previous) => {
                // Failed, or running but stalled: start it again.
                let taken_over = (previous.status == RunStatus::Running).then(|| TakenOver {
                    instance_id: previous.instance_id.clone(),
                    attempts: previous.attempts,
                });
                previous.status = RunStatus::Running;
                previous.input = input.clone();
                previous.output = None;
                previous.error = None;
                previous.instance_id = instance_id.to_owned();
                previous.updated_at = now;
                previous.attempts = previous.attempts.saturating_add(1);
                Begin::Started(previous.clone(), taken_over)
            }
            None => {
                let record = RunRecord {
                    run_id: run_id.to_string(),
                    status: RunStatus::Running,
                    input: input.clone(),
                    output: None,
                    error: None,
                    created_at: now,
                    updated_at: now,
                    instance_id: instance_id.to_owned(),
                    attempts: 1,
                };
                runs.insert(run_id.to_string(), record.clone(), max);
                Begin::Started(record, None)
            }
        }))
    }

    async fn finish(
        &self,
        run_id: &RunId,
        attempt: u32,
        outcome: Outcome<'_>,
    ) -> Result<RunRecord, StoreError> {
        self.with_runs(|runs| {
            let record = Self::running_at(runs, run_id, attempt)?;
            record.status = outcome.status();
            (record.output, record.error) = match outcome {
                Outcome::Completed(output) => (Some(output.clone()), None),
                Outcome::Failed(error) => (None, Some(error.to_owned())),
            };
            record.updated_at = Utc::now();
            Ok(record.clone())
        })
    }

    async fn heartbeat(&self, run_id: &RunId, attempt: u32) -> Result<(), StoreError> {
        self.with_runs(|runs| {
            Self::running_at(runs, run_id, attempt)?.updated_at = Utc::now();
            Ok(())
        })
    }

    fn stale_after(&self) -> Duration {
        self.stale_after_std
    }

    async fn get(&self, run_id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.with_runs(|runs| runs.get(run_id.as_str()).cloned()))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> RunId {
        RunId::parse(&format!("run-{n}")).expect("valid id")
    }

    #[tokio::test]
    async fn the_store_is_bounded_and_forgets_the_oldest_finished_runs() {
        let store = MemoryRunStore::with_max_runs(3);
        let input = serde_json::json!({"message": "hi"});
        // run-0 stays running; run-1 and run-2 complete.
        for n in 0..3 {
            store.begin(&id(n), &input, "i").await.expect("begin");
        }
        for n in 1..3 {
            store.complete(&id(n), 1, &input).await.expect("complete");
        }
        // Two more runs: the oldest finished ones (run-1, run-2) go, the running run-0 stays.
        for n in 3..5 {
            store.begin(&id(n), &input, "i").await.expect("begin");
        }
        assert_eq!(store.len(), 3);
        assert!(
            store.get(&id(0)).await.expect("get").is_some(),
            "running runs are kept"
        );
        assert!(store.get(&id(1)).await.expect("get").is_none());
        assert!(store.get(&id(2)).await.expect("get").is_none());
        assert!(store.get(&id(3)).await.expect("get").is_some());
        assert!(store.get(&id(4)).await.expect("get").is_some());
        // Ten thousand more finished runs never grow it past the bound.
        for n in 3..5 {
            store.complete(&id(n), 1, &input).await.expect("complete");
        }
        for n in 5..10_005 {
            store.begin(&id(n), &input, "i").await.expect("begin");
            store.complete(&id(n), 1, &input).await.expect("complete");
        }
        assert_eq!(store.len(), 3);
        assert!(store.get(&id(0)).await.expect("get").is_some());
        assert!(store.get(&id(10_004)).await.expect("get").is_some());
    }

    #[tokio::test]
    async fn running_runs_are_never_evicted_even_past_the_bound() {
        let store = MemoryRunStore::with_max_runs(2);
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
        store.begin(&id(4), &input, "i").await.expect("begin");
        assert_eq!(
            store.len(),
            2,
            "finished runs are evicted down to the bound"
        );
    }

    #[test]
    fn the_default_bound() {
        assert_eq!(MemoryRunStore::default().max_runs, DEFAULT_MAX_RUNS);
    }
}
