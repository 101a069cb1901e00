//! In-memory run store: one map per worker, lost on restart. The default when no durable store
//! is configured; good for development and for single-process deployments that accept losing
//! idempotency across restarts.
//!
//! Bounded by bytes: every `POST /chat` records a run, so an unbounded map would grow with
//! traffic. The store keeps its records within [`DEFAULT_MAX_BYTES`] per worker
//! (`--memory-store-max-bytes`) and forgets the oldest finished (completed or failed) runs first;
//! a running run is never evicted, nor the record just written. A record's size is estimated
//! from what it holds (ids, error, the JSON text of input and output) plus the map's
//! per-record overhead ([`record_bytes`]). A replay of a forgotten run id runs the agent again,
//! which is why production deployments use Redis or PostgreSQL.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use super::{
    Begin, DEFAULT_RUN_STALE_AFTER_SECS, DurableStoreKind, EventKind, EventLimits, EventPage,
    LoggedEvent, Outcome, Payload, RunId, RunRecord, RunStatus, RunStore, StoreError, TakenOver,
};

/// Bytes of records kept per worker by default (4 MiB: about 9,000 runs of a short chat).
pub const DEFAULT_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Per-record overhead besides its contents: the record itself, the map's entry and hash slot,
/// the id's copy in the eviction order, the payloads' shared headers, and the allocator's
/// headers.
const RECORD_OVERHEAD: usize = std::mem::size_of::<RunRecord>() + 128;

/// Estimated heap bytes of `record` in the store (see the module docs).
pub fn record_bytes(record: &RunRecord) -> usize {
    RECORD_OVERHEAD
        + 2 * record.run_id.len()
        + record.instance_id.len()
        + record.error.as_ref().map_or(0, String::len)
        + record.input.json().len()
        + record.output.as_ref().map_or(0, |o| o.json().len())
}

/// See the module docs.
#[derive(Debug)]
pub struct MemoryRunStore {
    // A std mutex: no await happens while it is held.
    runs: Mutex<Runs>,
    max_bytes: usize,
    max_events: usize,
    stale_after: chrono::Duration,
    stale_after_std: Duration,
}

/// The records with their estimated sizes, the order in which their ids were first stored
/// (oldest first), and the sum of the sizes. Records are boxed: the table stays small enough to
/// stay in cache while every new run evicts an old one, and a new record takes the memory the
/// evicted one just gave back.
#[derive(Debug, Default)]
struct Runs {
    by_id: HashMap<Arc<str>, Box<Stored>>,
    order: VecDeque<Arc<str>>,
    bytes: usize,
}

/// A record, its event log and their estimated bytes ([`record_bytes`] plus the log's),
/// computed when they change.
#[derive(Debug)]
struct Stored {
    record: RunRecord,
    log: Log,
    bytes: usize,
}

/// The event log of one run (see [`super::events`]).
#[derive(Debug, Default)]
struct Log {
    events: VecDeque<LoggedEvent>,
    /// The last number taken, by an event or a finish.
    last: u64,
    /// Estimated bytes of `events`.
    bytes: usize,
}

/// Estimated heap bytes of one logged event.
fn event_bytes(event: &LoggedEvent) -> usize {
    std::mem::size_of::<LoggedEvent>() + event.data.len()
}

impl Runs {
    fn get(&self, id: &str) -> Option<&RunRecord> {
        self.by_id.get(id).map(|s| &s.record)
    }

    /// Changes the record of `id` with `f`, keeping the byte count; `None` if there is none.
    fn update<T>(&mut self, id: &str, f: impl FnOnce(&mut RunRecord) -> T) -> Option<T> {
        self.update_with_log(id, |record, _| f(record))
    }

    /// Changes the record and event log of `id` with `f`, keeping the byte count.
    fn update_with_log<T>(
        &mut self,
        id: &str,
        f: impl FnOnce(&mut RunRecord, &mut Log) -> T,
    ) -> Option<T> {
        let stored = self.by_id.get_mut(id)?;
        let out = f(&mut stored.record, &mut stored.log);
        let bytes = record_bytes(&stored.record) + stored.log.bytes;
        self.bytes = (self.bytes + bytes).saturating_sub(stored.bytes);
        stored.bytes = bytes;
        Some(out)
    }

    /// Stores a new record of `bytes` ([`record_bytes`]).
    fn insert(&mut self, id: Arc<str>, record: RunRecord, bytes: usize) {
        self.bytes += bytes;
        self.order.push_back(id.clone());
        self.by_id.insert(
            id,
            Box::new(Stored {
                record,
                log: Log::default(),
                bytes,
            }),
        );
    }

    /// Forgets the oldest finished runs until the records fit in `max` bytes; running runs and
    /// `keep` (the record just written) stay, even past the bound. Returns what it forgot, for
    /// the caller to free once the lock is released.
    // Kept boxed until freed: moving each record out of its box here measured slower.
    #[allow(clippy::vec_box)]
    fn evict(&mut self, max: usize, keep: &str) -> Vec<Box<Stored>> {
        let mut kept = Vec::new();
        let mut forgotten = Vec::new();
        while self.bytes > max {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            // Removed first: what must stay (rarely the oldest) goes back.
            match self.by_id.remove(&oldest) {
                Some(s) if s.record.status == RunStatus::Running || *oldest == *keep => {
                    self.by_id.insert(oldest.clone(), s);
                    kept.push(oldest);
                }
                Some(s) => {
                    self.bytes = self.bytes.saturating_sub(s.bytes);
                    forgotten.push(s);
                }
                None => {}
            }
        }
        // What stays keeps its place at the front, oldest first.
        for id in kept.into_iter().rev() {
            self.order.push_front(id);
        }
        forgotten
    }
}

impl Default for MemoryRunStore {
    fn default() -> Self {
        Self::with_limits(
            DEFAULT_MAX_BYTES,
            Duration::from_secs(DEFAULT_RUN_STALE_AFTER_SECS),
        )
    }
}

impl MemoryRunStore {
    /// A store that takes over runs left `running` for longer than `stale_after`.
    pub fn new(stale_after: Duration) -> Self {
        Self::with_limits(DEFAULT_MAX_BYTES, stale_after)
    }

    /// A store whose records fit in `max_bytes`, with the default stale-after.
    pub fn with_max_bytes(max_bytes: u64) -> Self {
        Self::with_limits(max_bytes, Duration::from_secs(DEFAULT_RUN_STALE_AFTER_SECS))
    }

    /// A store whose records fit in `max_bytes` (see the module docs) and that takes over runs
    /// left `running` for longer than `stale_after`.
    pub fn with_limits(max_bytes: u64, stale_after: Duration) -> Self {
        Self {
            runs: Mutex::new(Runs::default()),
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            max_events: usize::try_from(EventLimits::default().max_events).unwrap_or(usize::MAX),
            // Out of chrono's range only for absurd values: such a run is then never stale.
            stale_after: chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX),
            stale_after_std: stale_after,
        }
    }

    /// The same store keeping at most `limits.max_events` events per run (the memory store
    /// keeps events as long as their run's record, so `limits.ttl` does not apply).
    pub fn with_event_limits(mut self, limits: EventLimits) -> Self {
        self.max_events = usize::try_from(limits.max_events).unwrap_or(usize::MAX);
        self
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.with_runs(|runs| runs.by_id.len())
    }

    /// Estimated bytes of the records held.
    pub fn bytes(&self) -> usize {
        self.with_runs(|runs| runs.bytes)
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

    /// Nothing, if `record` (of `run_id`) is running at `attempt`; else the error `complete`,
    /// `fail` and `heartbeat` report.
    fn check_running(
        record: Option<&RunRecord>,
        run_id: &RunId,
        attempt: u32,
    ) -> Result<(), StoreError> {
        let record = record.ok_or_else(|| StoreError::NotFound(run_id.to_string()))?;
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
        Ok(())
    }
}

#[async_trait]
impl RunStore for MemoryRunStore {
    fn kind(&self) -> DurableStoreKind {
        DurableStoreKind::Memory
    }

    async fn begin_as(
        &self,
        run_id: &RunId,
        input: &Payload,
        instance_id: &str,
        background: bool,
    ) -> Result<Begin, StoreError> {
        let now = Utc::now();
        let max = self.max_bytes;
        // Running and last updated before this: stalled. (`None`: the threshold reaches back
        // past chrono's range, so nothing is.)
        let stale_before = now.checked_sub_signed(self.stale_after);
        let stalled = |r: &RunRecord| stale_before.is_some_and(|t| r.updated_at < t);
        let id = run_id.as_str();
        // Built before taking the lock, which then covers map operations only: the record of a
        // new run (most begins are), its size and its key.
        let input = input.clone();
        let fresh = RunRecord {
            run_id: id.to_owned(),
            status: RunStatus::Running,
            input: input.clone(),
            output: None,
            error: None,
            created_at: now,
            updated_at: now,
            instance_id: instance_id.to_owned(),
            attempts: 1,
            background,
        };
        let fresh_bytes = record_bytes(&fresh);
        let key: Arc<str> = Arc::from(id);
        let (begun, evicted) = self.with_runs(|runs| {
            let begun = match runs.get(id) {
                Some(existing) if existing.status == RunStatus::Completed => {
                    return (Begin::AlreadyCompleted(existing.clone()), Vec::new());
                }
                Some(existing) if existing.status == RunStatus::Running && !stalled(existing) => {
                    return (Begin::StillRunning(existing.clone()), Vec::new());
                }
                // Failed, or running but stalled: start it again.
                Some(_) => runs.update(id, |previous| {
                    let taken_over = (previous.status == RunStatus::Running).then(|| TakenOver {
                        instance_id: previous.instance_id.clone(),
                        attempts: previous.attempts,
                    });
                    previous.status = RunStatus::Running;
                    previous.input = input;
                    previous.output = None;
                    previous.error = None;
                    previous.instance_id = instance_id.to_owned();
                    previous.updated_at = now;
                    previous.attempts = previous.attempts.saturating_add(1);
                    previous.background = background;
                    Begin::Started(previous.clone(), taken_over)
                }),
                None => None,
            };
            let begun = begun.unwrap_or_else(|| {
                runs.insert(key, fresh.clone(), fresh_bytes);
                Begin::Started(fresh, None)
            });
            (begun, runs.evict(max, id))
        });
        // Forgotten records are freed after the lock is released.
        drop(evicted);
        Ok(begun)
    }

    async fn finish(
        &self,
        run_id: &RunId,
        attempt: u32,
        outcome: Outcome<'_>,
    ) -> Result<RunRecord, StoreError> {
        let id = run_id.as_str();
        let max = self.max_bytes;
        let status = outcome.status();
        // Made before taking the lock (see `begin_as`).
        let (output, error) = match outcome {
            Outcome::Completed(output) => (Some(output.clone()), None),
            Outcome::Failed(error) => (None, Some(error.to_owned())),
        };
        let now = Utc::now();
        let (finished, evicted) = self.with_runs(|runs| {
            if let Err(e) = Self::check_running(runs.get(id), run_id, attempt) {
                return (Err(e), Vec::new());
            }
            let finished = runs.update_with_log(id, |record, log| {
                log.last += 1;
                record.status = status;
                (record.output, record.error) = (output, error);
                record.updated_at = now;
                record.clone()
            });
            let finished = finished.ok_or_else(|| StoreError::NotFound(run_id.to_string()));
            (finished, runs.evict(max, id))
        });
        drop(evicted);
        finished
    }

    async fn heartbeat(&self, run_id: &RunId, attempt: u32) -> Result<(), StoreError> {
        let id = run_id.as_str();
        self.with_runs(|runs| {
            Self::check_running(runs.get(id), run_id, attempt)?;
            runs.update(id, |record| record.updated_at = Utc::now());
            Ok(())
        })
    }

    async fn append_event(
        &self,
        run_id: &RunId,
        attempt: u32,
        kind: EventKind,
        data: &str,
    ) -> Result<u64, StoreError> {
        let id = run_id.as_str();
        let (max, max_events) = (self.max_bytes, self.max_events);
        let (seq, evicted) = self.with_runs(|runs| {
            if let Err(e) = Self::check_running(runs.get(id), run_id, attempt) {
                return (Err(e), Vec::new());
            }
            let seq = runs.update_with_log(id, |_, log| {
                log.last += 1;
                let event = LoggedEvent {
                    seq: log.last,
                    kind,
                    data: data.to_owned(),
                };
                log.bytes += event_bytes(&event);
                log.events.push_back(event);
                while log.events.len() > max_events {
                    if let Some(old) = log.events.pop_front() {
                        log.bytes = log.bytes.saturating_sub(event_bytes(&old));
                    }
                }
                log.last
            });
            (
                seq.ok_or_else(|| StoreError::NotFound(run_id.to_string())),
                runs.evict(max, id),
            )
        });
        drop(evicted);
        seq
    }

    async fn events_after(
        &self,
        run_id: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        Ok(
            self.with_runs(|runs| match runs.by_id.get(run_id.as_str()) {
                None => EventPage::default(),
                Some(stored) => EventPage {
                    events: stored
                        .log
                        .events
                        .iter()
                        .filter(|e| e.seq > after)
                        .take(limit)
                        .cloned()
                        .collect(),
                    first: stored.log.events.front().map(|e| e.seq),
                    last: stored.log.last,
                },
            }),
        )
    }

    async fn release(&self, run_id: &RunId, attempt: u32) -> Result<(), StoreError> {
        let id = run_id.as_str();
        self.with_runs(|runs| {
            Self::check_running(runs.get(id), run_id, attempt)?;
            runs.update(id, |record| {
                record.updated_at = chrono::DateTime::UNIX_EPOCH
            });
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
mod tests;
