//! The numbers of this process: lock-free words, published into its slot.
//!
//! [`Counters`] keeps one atomic word per word of a [`Slot`], at the same index
//! ([`word!`](super::slot) computes it from the struct), so a snapshot is the slot itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::pod::PodSnapshot;
use super::slot::*;
use crate::routes::Route;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where a process publishes its counters.
#[derive(Debug)]
struct Sink {
    file: SharedFile,
    slot: usize,
    lock: Mutex<()>,
    dirty: AtomicBool,
}

/// A durable-run event (see [`RUN_EVENTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEvent {
    /// The store recorded a new (or retried) run as running.
    Started = 0,
    /// A run was recorded completed.
    Completed = 1,
    /// A run was recorded failed.
    Failed = 2,
    /// A completed run was answered from the store without running the agent.
    Replayed = 3,
    /// A stalled running run was started again by another attempt (also counted `Started`).
    TakenOver = 4,
}

/// The metrics of this process (one per process).
#[derive(Debug)]
pub struct Counters {
    words: [AtomicU64; WORDS],
    sink: Option<Sink>,
    /// Pool wait timeouts the slot's previous owners counted (a new process's pools start at 0).
    pool_timeout_base: [u64; POOLS.len()],
}

impl Counters {
    /// Counters for a single-process server.
    pub fn local() -> Arc<Self> {
        let c = Self {
            words: std::array::from_fn(|_| AtomicU64::new(0)),
            sink: None,
            pool_timeout_base: [0; POOLS.len()],
        };
        c.init();
        Arc::new(c)
    }

    /// Counters of a worker publishing into `slot` of `file`, continuing the counters a
    /// previous owner of the slot left there.
    pub fn shared(file: SharedFile, slot: usize) -> Arc<Self> {
        let previous = file.read_slot(slot).unwrap_or_else(Slot::empty);
        let c = Self {
            words: std::array::from_fn(|i| AtomicU64::new(previous.words()[i])),
            sink: Some(Sink {
                file,
                slot,
                lock: Mutex::new(()),
                dirty: AtomicBool::new(false),
            }),
            pool_timeout_base: std::array::from_fn(|p| previous.pools[p][POOL_TIMEOUTS]),
        };
        c.init();
        c.publish();
        Arc::new(c)
    }

    fn init(&self) {
        self.words[word!(magic)].store(MAGIC, Ordering::Relaxed);
        self.words[word!(state)].store(SlotState::Starting as u64, Ordering::Relaxed);
        self.words[word!(pid)].store(u64::from(std::process::id()), Ordering::Relaxed);
        self.words[word!(started_ms)].store(now_ms(), Ordering::Relaxed);
        self.words[word!(in_flight)].store(0, Ordering::Relaxed);
        self.words[word!(connections)].store(0, Ordering::Relaxed);
        self.words[word!(handled)].store(0, Ordering::Relaxed);
        for p in 0..POOLS.len() {
            for k in 0..POOL_TIMEOUTS {
                self.words[word!(pools) + p * POOL_WORDS + k].store(0, Ordering::Relaxed);
            }
        }
    }

    /// The slot this process publishes into (pre-fork workers), for naming its connections.
    pub fn slot(&self) -> Option<usize> {
        self.sink.as_ref().map(|s| s.slot)
    }

    /// Counts a durable-run event; written to the slot with the response head that follows
    /// (or the next tick, for a run that ends after its head was sent).
    pub fn run_event(&self, event: RunEvent) {
        self.words[word!(runs) + event as usize].fetch_add(1, Ordering::AcqRel);
    }

    /// Records the current numbers of this process's pools (`None`: not configured), without
    /// publishing; see [`Counters::publish_now`].
    pub fn set_pools(&self, pools: [Option<crate::pools::PoolMetrics>; POOLS.len()]) {
        for (p, m) in pools.iter().enumerate() {
            let base = word!(pools) + p * POOL_WORDS;
            let m = m.unwrap_or(crate::pools::PoolMetrics {
                max_size: 0,
                size: 0,
                in_use: 0,
                idle: 0,
                waiters: 0,
                timeouts: 0,
            });
            let values: [u64; POOL_WORDS] = [
                m.max_size as u64,
                m.size as u64,
                m.in_use as u64,
                m.idle as u64,
                m.waiters as u64,
                self.pool_timeout_base[p] + m.timeouts,
            ];
            for (k, v) in values.into_iter().enumerate() {
                self.words[base + k].store(v, Ordering::Release);
            }
        }
    }

    /// Writes this process's slot now.
    pub fn publish_now(&self) {
        self.publish();
    }

    /// Sets this process's lifecycle state (and publishes it).
    pub fn set_state(&self, state: SlotState) {
        self.words[word!(state)].store(state as u64, Ordering::Release);
        self.publish();
    }

    /// A request was admitted past the concurrency guard (agent routes; probes are not
    /// counted): in flight until the returned guard is dropped, when its response body is
    /// finished.
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        let now = self.words[word!(in_flight)].fetch_add(1, Ordering::AcqRel) + 1;
        self.words[word!(max_in_flight)].fetch_max(now, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    /// A connection was accepted: open until the returned guard is dropped. Written to the slot
    /// at once, so that the other workers count it when they decide whether to accept
    /// ([`Counters::over_share`]); the close is written with the next response head or tick.
    pub fn connection_opened(self: &Arc<Self>) -> ConnectionGuard {
        self.words[word!(connections)].fetch_add(1, Ordering::AcqRel);
        self.publish();
        ConnectionGuard(self.clone())
    }

    /// Whether this pre-fork worker holds more than its share of the pod's connections: more
    /// than the least loaded other accepting worker by [`over_share`]'s margin. Always `false`
    /// for a single process.
    pub fn over_share(&self) -> bool {
        let Some(sink) = &self.sink else { return false };
        let mine = self.words[word!(connections)].load(Ordering::Acquire);
        let fewest = sink
            .file
            .read_all()
            .into_iter()
            .enumerate()
            .filter(|(slot, s)| *slot != sink.slot && s.magic == MAGIC && s.state().is_accepting())
            .map(|(_, s)| s.connections)
            .min();
        fewest.is_some_and(|fewest| over_share(mine, fewest))
    }

    /// The response head is ready: count it (before it is sent, so a client that saw the
    /// response also sees it counted). Returns the requests handled by this process.
    pub fn response_started(&self, path: &str, status: u16, rejected: bool) -> u64 {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let i = word!(routes) + Route::of_path(path).index() * CLASSES.len() + class;
        self.words[i].fetch_add(1, Ordering::AcqRel);
        if rejected {
            self.words[word!(rejected)].fetch_add(1, Ordering::AcqRel);
        }
        let handled = self.words[word!(handled)].fetch_add(1, Ordering::AcqRel) + 1;
        self.publish();
        handled
    }

    /// The response body is done (or the request was abandoned): record its duration (written
    /// to the slot with the next response head or tick).
    pub fn request_finished(&self, duration: Duration) {
        let secs = duration.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.words[word!(buckets) + bucket].fetch_add(1, Ordering::AcqRel);
        self.words[word!(duration_sum_us)].fetch_add(duration.as_micros() as u64, Ordering::AcqRel);
    }

    /// In-flight requests of this process.
    pub fn in_flight(&self) -> u64 {
        self.words[word!(in_flight)].load(Ordering::Acquire)
    }

    /// This process's slot as it is now, sealed for writing.
    pub(super) fn snapshot(&self) -> Slot {
        Slot::from_words(std::array::from_fn(|i| {
            self.words[i].load(Ordering::Acquire)
        }))
        .sealed()
    }

    /// Writes this process's slot. Concurrent callers coalesce: whoever holds the lock
    /// writes again if anything changed meanwhile, so the last write holds the latest values.
    fn publish(&self) {
        let Some(sink) = &self.sink else { return };
        sink.dirty.store(true, Ordering::Release);
        loop {
            let Ok(guard) = sink.lock.try_lock() else {
                return; // the holder re-checks `dirty` after its write
            };
            if !sink.dirty.swap(false, Ordering::AcqRel) {
                return;
            }
            if let Err(e) = sink.file.write_slot(sink.slot, &self.snapshot()) {
                tracing::warn!(event = "metrics_write_failed", error = %e);
            }
            drop(guard);
            if !sink.dirty.load(Ordering::Acquire) {
                return;
            }
        }
    }

    /// Numbers for the whole pod (all slots) or, in single-process mode, for this process.
    pub fn pod_snapshot(&self) -> PodSnapshot {
        let own = self.snapshot();
        let slots = match &self.sink {
            Some(sink) => {
                let mut all = sink.file.read_all();
                // Our own slot from memory: fresher than the file.
                if let Some(s) = all.get_mut(sink.slot) {
                    *s = own;
                }
                all
            }
            None => vec![own],
        };
        PodSnapshot::from_slots(&slots, self.sink.is_some())
    }

    /// This process's pid, start time and requests handled.
    pub fn process_json(&self) -> serde_json::Value {
        let s = self.snapshot();
        serde_json::json!({
            "pid": s.pid,
            "started_at_ms": s.started_ms,
            "requests_handled": s.handled,
            "slot": self.sink.as_ref().map(|s| s.slot),
        })
    }
}

/// Whether a worker with `mine` open connections holds more than its share when the least
/// loaded other worker has `fewest`: by more than one, and by more than an eighth at larger
/// counts, so that near-equal workers do not take turns waiting.
pub(super) fn over_share(mine: u64, fewest: u64) -> bool {
    mine > fewest + 1 + fewest / 8
}

/// Holds one accepted connection in the open-connections gauge.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<Counters>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.words[word!(connections)].fetch_sub(1, Ordering::AcqRel);
    }
}

/// Holds one admitted request in the in-flight gauge.
#[derive(Debug)]
pub struct InFlightGuard(Arc<Counters>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        // Written to the slot with the next response head or tick.
        self.0.words[word!(in_flight)].fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_slots_add_up_and_survive_the_process() {
        let file = SharedFile::create(4).expect("memfd");
        let a = Counters::shared(file.clone(), 0);
        let b = Counters::shared(file.clone(), 1);
        for _ in 0..3 {
            let _g = a.enter();
            a.response_started("/chat", 200, false);
            a.request_finished(Duration::from_millis(1));
        }
        let g = b.enter();
        b.response_started("/chat", 503, true);
        let s = a.pod_snapshot();
        assert_eq!(s.routes[0][1], 3);
        assert_eq!(s.rejected, 1);
        assert_eq!(s.errors_total(), 0);
        assert_eq!(s.in_flight, 1);
        std::mem::forget(g); // the process "dies" with the request in flight
        file.mark_exited(1).expect("mark");
        let b2 = Counters::shared(file.clone(), 1);
        assert_eq!(b2.in_flight(), 0);
        let s = a.pod_snapshot();
        assert_eq!(s.requests_total(), 4, "the dead worker's counts stay");
        assert_eq!(s.in_flight, 0);
    }

    #[test]
    fn share_margin() {
        assert!(!over_share(0, 0));
        assert!(!over_share(1, 0), "one ahead is even enough");
        assert!(over_share(2, 0));
        assert!(!over_share(3, 5), "behind is never over");
        assert!(!over_share(37, 32), "32 + 1 + 32 / 8");
        assert!(over_share(38, 32));
    }

    #[test]
    fn a_worker_ahead_of_the_others_is_over_its_share() {
        let file = SharedFile::create(3).expect("memfd");
        let a = Counters::shared(file.clone(), 0);
        let b = Counters::shared(file.clone(), 1);
        assert!(!a.over_share(), "no other worker is accepting yet");
        let opened: Vec<_> = (0..2).map(|_| a.connection_opened()).collect();
        assert!(!a.over_share(), "b is starting, not accepting");
        b.set_state(SlotState::Ready);
        assert!(a.over_share(), "2 open against b's 0");
        assert!(!b.over_share(), "b has fewer");
        let b_open = b.connection_opened();
        assert!(!a.over_share(), "b's connection is published when accepted");
        drop(opened);
        assert!(!a.over_share());
        b.set_state(SlotState::Draining);
        let _more: Vec<_> = (0..5).map(|_| a.connection_opened()).collect();
        assert!(
            !a.over_share(),
            "a draining worker is not one to leave connections to"
        );
        let views = a.pod_snapshot().workers;
        assert_eq!(
            views.iter().map(|w| w.connections).collect::<Vec<_>>(),
            [5, 1]
        );
        drop(b_open);
        file.mark_exited(1).expect("mark");
        assert_eq!(file.read_slot(1).map(|s| s.connections), Some(0));
        assert!(
            !Counters::local().connection_opened().0.over_share(),
            "single process"
        );
    }
}
