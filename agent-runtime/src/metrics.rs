//! Request metrics, per process and for the whole pod.
//!
//! Each process keeps its numbers in one fixed array of atomic words ([`Counters`]), laid out
//! like a *slot*. In pre-fork mode the supervisor creates an anonymous shared file (memfd) with
//! one slot per worker process and passes it to every worker; when a response head is ready a
//! worker writes its whole slot (one `pwrite` of [`SLOT_BYTES`], checksummed), and whoever
//! answers `/metrics` reads all slots (`pread`) and adds them up. So the request and run counts
//! are for the pod whichever worker answers, exact at the moment a response is sent (everything
//! a request counted happened before its head was ready), without a round trip to the
//! supervisor and without `unsafe` shared memory. What happens after the head — the in-flight
//! gauge going down, the duration histogram, a streamed run finishing — is written with the
//! next response or by the worker's one-second tick, so in other workers' view it is at most a
//! second old; a worker's own numbers are always read from its memory. One write per request
//! instead of one per change is what keeps pre-fork mode's request rate close to one process's
//! (bench/README.md).
//!
//! Slots outlive processes: when a worker exits, the supervisor zeroes the slot's in-flight
//! gauge and hands the slot to the next worker it starts, which continues the counters from
//! where its predecessor stopped. Counters therefore never go down, and the file holds at most
//! as many slots as workers can be alive at once.
//!
//! Besides the request counters a slot holds the worker's durable-run counters (started,
//! completed, failed, replayed, taken_over) and a snapshot of each of its connection pools (max size, open,
//! in use, idle, waiters, wait timeouts), refreshed every second and before `/metrics` answers.
//! Pool gauges are added over live workers only; the timeout counters continue across
//! replacements like the request counters.

use std::fs::File;
use std::num::NonZeroU32;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Route labels metrics are kept for; anything else is counted as `other`.
pub const ROUTES: &[&str] = &[
    "/chat",
    "/chat/stream",
    "/health",
    "/ready",
    "/metrics",
    "/runs",
    "other",
];
/// Status classes kept per route.
pub const CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Upper bounds (seconds) of the request duration histogram buckets.
pub const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bytes per slot in the shared file.
pub const SLOT_BYTES: usize = 1024;

/// Slot format version 4 (version 2 added runs and pools and 1024-byte slots; version 3 the
/// `taken_over` run counter; version 4 a word-wise checksum). Supervisor and workers are
/// the same binary, so a slot is only ever read by the version that wrote it; the magic still
/// changes with the layout so a mismatch reads as an unusable slot, never as wrong numbers.
const MAGIC: u64 = 0x4641_5f4d_4554_5234; // "FA_METR4"

/// Pools reported per slot, in this order.
pub const POOLS: &[&str] = &[crate::pools::REDIS_POOL, crate::pools::DB_POOL];
/// Words per pool: max size, open, in use, idle, waiters, timeouts.
const POOL_WORDS: usize = 6;
/// Durable-run events counted per slot, in this order.
pub const RUN_EVENTS: &[&str] = &["started", "completed", "failed", "replayed", "taken_over"];

// Word indices of a slot.
const W_MAGIC: usize = 0;
const W_STATE: usize = 1;
const W_PID: usize = 2;
const W_STARTED_MS: usize = 3;
const W_IN_FLIGHT: usize = 4;
const W_MAX_IN_FLIGHT: usize = 5;
const W_REJECTED: usize = 6;
const W_HANDLED: usize = 7; // requests by this process (not carried over)
const W_DURATION_SUM_US: usize = 8;
const W_ROUTES: usize = 9;
const W_BUCKETS: usize = W_ROUTES + 7 * 5;
const W_RUNS: usize = W_BUCKETS + 12 + 1; // one more bucket: +Inf
const W_POOLS: usize = W_RUNS + 5;
const W_CHECKSUM: usize = W_POOLS + 2 * POOL_WORDS;
const WORDS: usize = W_CHECKSUM + 1;

const _: () = assert!(ROUTES.len() == 7 && CLASSES.len() == 5 && BUCKETS.len() == 12);
const _: () = assert!(RUN_EVENTS.len() == 5 && POOLS.len() == 2);
const _: () = assert!(WORDS * 8 <= SLOT_BYTES);

/// Lifecycle of the process owning a slot, as seen by the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum SlotState {
    /// Never used.
    Empty = 0,
    /// Process started, not accepting yet.
    Starting = 1,
    /// Accepting connections.
    Ready = 2,
    /// Served its request budget; asks the supervisor for a replacement.
    RecycleRequested = 3,
    /// Stopped accepting, finishing in-flight requests.
    Draining = 4,
    /// Process gone; counters kept for the next owner.
    Exited = 5,
}

impl SlotState {
    fn from_word(w: u64) -> Self {
        match w {
            1 => Self::Starting,
            2 => Self::Ready,
            3 => Self::RecycleRequested,
            4 => Self::Draining,
            5 => Self::Exited,
            _ => Self::Empty,
        }
    }

    /// Whether a live process owns the slot.
    pub fn is_alive(self) -> bool {
        matches!(
            self,
            Self::Starting | Self::Ready | Self::RecycleRequested | Self::Draining
        )
    }

    fn name(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::RecycleRequested => "recycle_requested",
            Self::Draining => "draining",
            Self::Exited => "exited",
        }
    }
}

/// Index of a route label for a request path.
pub fn route_index(path: &str) -> usize {
    match path {
        "/chat" => 0,
        "/chat/stream" => 1,
        "/health" => 2,
        "/ready" => 3,
        "/metrics" => 4,
        p if p.starts_with("/runs/") => 5,
        _ => 6,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn checksum(words: &[u64; WORDS]) -> u64 {
    // Over the words before the checksum word, a word at a time (a byte-wise FNV-1a cost
    // microseconds per write): detects a slot read while it was being written (the reader then
    // retries). Each word is mixed with its position, so equal words in swapped places differ.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, w) in words[..W_CHECKSUM].iter().enumerate() {
        h = (h ^ w.wrapping_add(i as u64).rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 32;
    }
    h
}

fn encode(words: &[u64; WORDS]) -> [u8; SLOT_BYTES] {
    let mut buf = [0u8; SLOT_BYTES];
    for (i, w) in words.iter().enumerate() {
        buf[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    buf
}

fn decode(buf: &[u8]) -> Option<[u64; WORDS]> {
    let mut words = [0u64; WORDS];
    for (i, w) in words.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(buf.get(i * 8..i * 8 + 8)?);
        *w = u64::from_le_bytes(b);
    }
    if words[W_MAGIC] == 0 {
        return Some([0u64; WORDS]);
    }
    (words[W_MAGIC] == MAGIC && words[W_CHECKSUM] == checksum(&words)).then_some(words)
}

/// The shared metrics file of a pre-fork pod.
#[derive(Debug, Clone)]
pub struct SharedFile {
    file: Arc<File>,
    slots: usize,
}

impl SharedFile {
    /// Wraps the (already sized) file.
    pub fn new(file: File, slots: usize) -> Self {
        Self {
            file: Arc::new(file),
            slots,
        }
    }

    /// Creates an anonymous shared file (memfd) that processes started by this one inherit
    /// (no close-on-exec): see [`SharedFile::inheritable_fd`].
    pub fn create(slots: usize) -> std::io::Result<Self> {
        let fd = nix::sys::memfd::memfd_create(
            "fastagentic-metrics",
            nix::sys::memfd::MFdFlags::empty(),
        )
        .map_err(std::io::Error::from)?;
        let file = File::from(fd);
        file.set_len((slots * SLOT_BYTES) as u64)?;
        Ok(Self::new(file, slots))
    }

    /// Descriptor number child processes inherit.
    pub fn inheritable_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&*self.file)
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    fn write_slot(&self, slot: usize, words: &[u64; WORDS]) -> std::io::Result<()> {
        self.file
            .write_all_at(&encode(words), (slot * SLOT_BYTES) as u64)
    }

    /// Reads one slot, retrying while it is being written.
    pub fn read_slot(&self, slot: usize) -> Option<[u64; WORDS]> {
        let mut buf = [0u8; SLOT_BYTES];
        for _ in 0..100 {
            if self
                .file
                .read_exact_at(&mut buf, (slot * SLOT_BYTES) as u64)
                .is_err()
            {
                return None;
            }
            if let Some(w) = decode(&buf) {
                return Some(w);
            }
            std::thread::yield_now();
        }
        None
    }

    /// State of a slot.
    pub fn state(&self, slot: usize) -> SlotState {
        self.read_slot(slot)
            .map(|w| SlotState::from_word(w[W_STATE]))
            .unwrap_or(SlotState::Empty)
    }

    /// Supervisor side: the slot's process is gone; keep its counters, clear its gauges.
    pub fn mark_exited(&self, slot: usize) -> std::io::Result<()> {
        let mut w = self.read_slot(slot).unwrap_or([0u64; WORDS]);
        w[W_MAGIC] = MAGIC;
        w[W_STATE] = SlotState::Exited as u64;
        w[W_IN_FLIGHT] = 0;
        for p in 0..POOLS.len() {
            for k in 0..POOL_WORDS - 1 {
                w[W_POOLS + p * POOL_WORDS + k] = 0;
            }
        }
        w[W_CHECKSUM] = checksum(&w);
        self.write_slot(slot, &w)
    }

    fn read_all(&self) -> Vec<[u64; WORDS]> {
        (0..self.slots).filter_map(|s| self.read_slot(s)).collect()
    }
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
    pool_timeout_base: [u64; 2],
}

impl Counters {
    /// Counters for a single-process server.
    pub fn local() -> Arc<Self> {
        let c = Self {
            words: std::array::from_fn(|_| AtomicU64::new(0)),
            sink: None,
            pool_timeout_base: [0; 2],
        };
        c.init();
        Arc::new(c)
    }

    /// Counters of a worker publishing into `slot` of `file`, continuing the counters a
    /// previous owner of the slot left there.
    pub fn shared(file: SharedFile, slot: usize) -> Arc<Self> {
        let previous = file.read_slot(slot).unwrap_or([0u64; WORDS]);
        let c = Self {
            words: std::array::from_fn(|i| AtomicU64::new(previous[i])),
            sink: Some(Sink {
                file,
                slot,
                lock: Mutex::new(()),
                dirty: AtomicBool::new(false),
            }),
            pool_timeout_base: std::array::from_fn(|p| previous[W_POOLS + p * POOL_WORDS + 5]),
        };
        c.init();
        c.publish();
        Arc::new(c)
    }

    fn init(&self) {
        self.words[W_MAGIC].store(MAGIC, Ordering::Relaxed);
        self.words[W_STATE].store(SlotState::Starting as u64, Ordering::Relaxed);
        self.words[W_PID].store(u64::from(std::process::id()), Ordering::Relaxed);
        self.words[W_STARTED_MS].store(now_ms(), Ordering::Relaxed);
        self.words[W_IN_FLIGHT].store(0, Ordering::Relaxed);
        self.words[W_HANDLED].store(0, Ordering::Relaxed);
        for p in 0..POOLS.len() {
            for k in 0..POOL_WORDS - 1 {
                self.words[W_POOLS + p * POOL_WORDS + k].store(0, Ordering::Relaxed);
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
        self.words[W_RUNS + event as usize].fetch_add(1, Ordering::AcqRel);
    }

    /// Records the current numbers of this process's pools (`None`: not configured), without
    /// publishing; see [`Counters::publish_now`].
    pub fn set_pools(&self, pools: [Option<crate::pools::PoolMetrics>; 2]) {
        for (p, m) in pools.iter().enumerate() {
            let base = W_POOLS + p * POOL_WORDS;
            let m = m.unwrap_or(crate::pools::PoolMetrics {
                max_size: 0,
                size: 0,
                in_use: 0,
                idle: 0,
                waiters: 0,
                timeouts: 0,
            });
            let values = [
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
        self.words[W_STATE].store(state as u64, Ordering::Release);
        self.publish();
    }

    /// A request was admitted past the concurrency guard (agent routes; probes are not
    /// counted): in flight until the returned guard is dropped, when its response body is
    /// finished.
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        let now = self.words[W_IN_FLIGHT].fetch_add(1, Ordering::AcqRel) + 1;
        self.words[W_MAX_IN_FLIGHT].fetch_max(now, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    /// The response head is ready: count it (before it is sent, so a client that saw the
    /// response also sees it counted). Returns the requests handled by this process.
    pub fn response_started(&self, path: &str, status: u16, rejected: bool) -> u64 {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let i = W_ROUTES + route_index(path) * CLASSES.len() + class;
        self.words[i].fetch_add(1, Ordering::AcqRel);
        if rejected {
            self.words[W_REJECTED].fetch_add(1, Ordering::AcqRel);
        }
        let handled = self.words[W_HANDLED].fetch_add(1, Ordering::AcqRel) + 1;
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
        self.words[W_BUCKETS + bucket].fetch_add(1, Ordering::AcqRel);
        self.words[W_DURATION_SUM_US].fetch_add(duration.as_micros() as u64, Ordering::AcqRel);
    }

    /// In-flight requests of this process.
    pub fn in_flight(&self) -> u64 {
        self.words[W_IN_FLIGHT].load(Ordering::Acquire)
    }

    fn snapshot_words(&self) -> [u64; WORDS] {
        let mut w: [u64; WORDS] = std::array::from_fn(|i| self.words[i].load(Ordering::Acquire));
        w[W_CHECKSUM] = checksum(&w);
        w
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
            if let Err(e) = sink.file.write_slot(sink.slot, &self.snapshot_words()) {
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
        let own = self.snapshot_words();
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
        let w = self.snapshot_words();
        serde_json::json!({
            "pid": w[W_PID],
            "started_at_ms": w[W_STARTED_MS],
            "requests_handled": w[W_HANDLED],
            "slot": self.sink.as_ref().map(|s| s.slot),
        })
    }
}

/// Holds one admitted request in the in-flight gauge.
#[derive(Debug)]
pub struct InFlightGuard(Arc<Counters>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        // Written to the slot with the next response head or tick.
        self.0.words[W_IN_FLIGHT].fetch_sub(1, Ordering::AcqRel);
    }
}

/// One live worker in a [`PodSnapshot`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerView {
    /// Slot index.
    pub slot: usize,
    /// Process id.
    pub pid: u64,
    /// Lifecycle state.
    pub state: &'static str,
    /// Start time (ms since the epoch).
    pub started_at_ms: u64,
    /// Requests handled by this process.
    pub requests_handled: u64,
    /// In-flight requests.
    pub in_flight: u64,
    /// Highest in-flight count of this slot.
    pub max_in_flight: u64,
}

/// Aggregated numbers.
#[derive(Debug, Clone, Default)]
pub struct PodSnapshot {
    /// Responses per route and status class.
    pub routes: [[u64; 5]; 7],
    /// Requests refused by the concurrency limit (HTTP 503).
    pub rejected: u64,
    /// Admitted agent-route requests in flight in live processes (probes are not counted).
    pub in_flight: u64,
    /// Highest in-flight count any single worker has reached (the limit is per worker).
    pub max_in_flight: u64,
    /// Live processes accepting connections (ready, or ready and asking to be recycled).
    pub accepting: u64,
    /// Duration histogram (cumulative buckets computed on output), last = +Inf.
    pub buckets: [u64; 13],
    /// Sum of durations.
    pub duration_sum: Duration,
    /// Durable-run events, in [`RUN_EVENTS`] order.
    pub runs: [u64; 5],
    /// Per pool ([`POOLS`] order): max size, open, in use, idle, waiters (live workers) and
    /// wait timeouts (all time).
    pub pools: [[u64; POOL_WORDS]; 2],
    /// Live workers (pre-fork mode).
    pub workers: Vec<WorkerView>,
    /// Whether these numbers cover several processes.
    pub pod_wide: bool,
}

impl PodSnapshot {
    fn from_slots(slots: &[[u64; WORDS]], pod_wide: bool) -> Self {
        let mut s = PodSnapshot {
            pod_wide,
            ..Default::default()
        };
        for (slot, w) in slots.iter().enumerate() {
            if w[W_MAGIC] != MAGIC {
                continue;
            }
            for r in 0..7 {
                for c in 0..5 {
                    s.routes[r][c] += w[W_ROUTES + r * 5 + c];
                }
            }
            s.rejected += w[W_REJECTED];
            s.max_in_flight = s.max_in_flight.max(w[W_MAX_IN_FLIGHT]);
            for b in 0..13 {
                s.buckets[b] += w[W_BUCKETS + b];
            }
            s.duration_sum += Duration::from_micros(w[W_DURATION_SUM_US]);
            for e in 0..RUN_EVENTS.len() {
                s.runs[e] += w[W_RUNS + e];
            }
            for p in 0..POOLS.len() {
                s.pools[p][POOL_WORDS - 1] += w[W_POOLS + p * POOL_WORDS + POOL_WORDS - 1];
            }
            let state = SlotState::from_word(w[W_STATE]);
            if state.is_alive() {
                for p in 0..POOLS.len() {
                    for k in 0..POOL_WORDS - 1 {
                        s.pools[p][k] += w[W_POOLS + p * POOL_WORDS + k];
                    }
                }
                s.in_flight += w[W_IN_FLIGHT];
                if matches!(state, SlotState::Ready | SlotState::RecycleRequested) {
                    s.accepting += 1;
                }
                s.workers.push(WorkerView {
                    slot,
                    pid: w[W_PID],
                    state: state.name(),
                    started_at_ms: w[W_STARTED_MS],
                    requests_handled: w[W_HANDLED],
                    in_flight: w[W_IN_FLIGHT],
                    max_in_flight: w[W_MAX_IN_FLIGHT],
                });
            }
        }
        s
    }

    /// Requests the pod admits at once: `--max-concurrent` (a per-worker limit) times the
    /// processes accepting connections. `None` when unlimited; 0 while no process accepts
    /// (starting, or every worker draining).
    pub fn capacity(&self, max_concurrent: Option<NonZeroU32>) -> Option<u64> {
        max_concurrent.map(|n| u64::from(n.get()) * self.accepting)
    }

    /// In-flight requests over [`PodSnapshot::capacity`], as a fraction (can exceed 1 while
    /// draining workers finish requests admitted before). `None` when unlimited or when no
    /// process accepts: there is no capacity to measure against.
    pub fn utilization(&self, max_concurrent: Option<NonZeroU32>) -> Option<f64> {
        match self.capacity(max_concurrent) {
            Some(c) if c > 0 => Some(self.in_flight as f64 / c as f64),
            _ => None,
        }
    }

    /// All responses.
    pub fn requests_total(&self) -> u64 {
        self.routes.iter().flatten().sum()
    }

    /// Server errors (5xx) other than concurrency-limit rejections.
    pub fn errors_total(&self) -> u64 {
        self.routes
            .iter()
            .map(|r| r[4])
            .sum::<u64>()
            .saturating_sub(self.rejected)
    }

    /// `runs` of the JSON view.
    fn runs_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (e, name) in RUN_EVENTS.iter().enumerate() {
            m.insert((*name).to_owned(), self.runs[e].into());
        }
        m.into()
    }

    /// `pools` of the JSON view: the configured pools only (max size > 0).
    fn pools_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (p, name) in POOLS.iter().enumerate() {
            let v = &self.pools[p];
            if v[0] == 0 && v[5] == 0 {
                continue;
            }
            m.insert(
                (*name).to_owned(),
                serde_json::json!({
                    "max_size": v[0], "size": v[1], "in_use": v[2], "idle": v[3],
                    "waiters": v[4], "timeouts": v[5],
                }),
            );
        }
        m.into()
    }

    /// The seed's `/metrics` JSON, with the counters.
    pub fn to_json(
        &self,
        instance_id: &str,
        max_concurrent: Option<NonZeroU32>,
        config: serde_json::Value,
        process: serde_json::Value,
    ) -> serde_json::Value {
        let mut by_route = serde_json::Map::new();
        for (r, name) in ROUTES.iter().enumerate() {
            let mut m = serde_json::Map::new();
            for (c, class) in CLASSES.iter().enumerate() {
                m.insert((*class).to_owned(), self.routes[r][c].into());
            }
            by_route.insert((*name).to_owned(), m.into());
        }
        serde_json::json!({
            "instance_id": instance_id,
            "version": env!("CARGO_PKG_VERSION"),
            "config": config,
            "scope": if self.pod_wide { "pod" } else { "process" },
            "requests_total": self.requests_total(),
            "errors_total": self.errors_total(),
            "rejected_total": self.rejected,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "accepting_workers": self.accepting,
            "capacity": self.capacity(max_concurrent),
            "utilization": self.utilization(max_concurrent),
            "requests": by_route,
            "runs": self.runs_json(),
            "pools": self.pools_json(),
            "workers": self.workers,
            "process": process,
        })
    }
}

/// Prometheus collector computing the pod snapshot at scrape time.
#[derive(Debug)]
pub struct PodCollector {
    /// This process's counters (they read the others' slots).
    pub counters: Arc<Counters>,
    /// Instance id label.
    pub instance_id: String,
    /// `--max-concurrent` (per worker), for the capacity gauge.
    pub max_concurrent: Option<NonZeroU32>,
}

impl prometheus_client::collector::Collector for PodCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.counters.pod_snapshot();
        {
            let mut m = encoder.encode_descriptor(
                "fastagentic_http_requests",
                "HTTP responses by route and status class (whole pod)",
                None,
                MetricType::Counter,
            )?;
            for (r, route) in ROUTES.iter().enumerate() {
                for (c, class) in CLASSES.iter().enumerate() {
                    let labels = [("path", *route), ("class", *class)];
                    let fam = m.encode_family(&labels)?;
                    ConstCounter::new(s.routes[r][c]).encode(fam)?;
                }
            }
        }
        let counter = |enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64| {
            let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(v).encode(m)
        };
        counter(
            &mut encoder,
            "fastagentic_http_rejected",
            "Requests refused by the concurrency limit with HTTP 503",
            s.rejected,
        )?;
        counter(
            &mut encoder,
            "fastagentic_http_errors",
            "Server errors (5xx) other than concurrency-limit rejections",
            s.errors_total(),
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "fastagentic_runs",
                "Durable-run events by kind (whole pod)",
                None,
                MetricType::Counter,
            )?;
            for (e, event) in RUN_EVENTS.iter().enumerate() {
                let labels = [("event", *event)];
                ConstCounter::new(s.runs[e]).encode(m.encode_family(&labels)?)?;
            }
        }
        for (k, name, help) in [
            (
                0,
                "fastagentic_pool_max_size",
                "Most connections the pools may open (live workers)",
            ),
            (
                1,
                "fastagentic_pool_size",
                "Open connections (live workers)",
            ),
            (
                2,
                "fastagentic_pool_in_use",
                "Connections handed out (live workers)",
            ),
            (
                3,
                "fastagentic_pool_idle",
                "Open connections waiting in the pools (live workers)",
            ),
            (
                4,
                "fastagentic_pool_waiters",
                "Callers waiting for a connection (live workers)",
            ),
        ] {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (p, pool) in POOLS.iter().enumerate() {
                let labels = [("pool", *pool)];
                ConstGauge::new(s.pools[p][k] as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "fastagentic_pool_timeouts",
                "Callers that got no connection within the pool timeout (HTTP 503)",
                None,
                MetricType::Counter,
            )?;
            for (p, pool) in POOLS.iter().enumerate() {
                let labels = [("pool", *pool)];
                ConstCounter::new(s.pools[p][POOL_WORDS - 1]).encode(m.encode_family(&labels)?)?;
            }
        }
        let gauge = |enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64| {
            let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(v).encode(m)
        };
        gauge(
            &mut encoder,
            "fastagentic_http_in_flight",
            "Requests in flight (whole pod)",
            s.in_flight as i64,
        )?;
        gauge(
            &mut encoder,
            "fastagentic_http_max_in_flight",
            "Highest in-flight count reached by one worker",
            s.max_in_flight as i64,
        )?;
        if let Some(capacity) = s.capacity(self.max_concurrent) {
            gauge(
                &mut encoder,
                "fastagentic_http_capacity",
                "Requests the pod admits at once: max-concurrent times accepting workers \
                 (absent when unlimited)",
                capacity as i64,
            )?;
        }
        gauge(
            &mut encoder,
            "fastagentic_workers",
            "Live worker processes",
            if s.pod_wide {
                s.workers.len() as i64
            } else {
                1
            },
        )?;
        {
            // The encoder cumulates the counts itself and writes `le="+Inf"` for an infinite
            // bound: hand it each bucket's own count, the last one unbounded.
            let count: u64 = s.buckets.iter().sum();
            let buckets: Vec<(f64, u64)> = s
                .buckets
                .iter()
                .enumerate()
                .map(|(i, n)| (BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), *n))
                .collect();
            let mut m = encoder.encode_descriptor(
                "fastagentic_http_request_duration_seconds",
                "Time from request to end of response body",
                None,
                MetricType::Histogram,
            )?;
            m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                s.duration_sum.as_secs_f64(),
                count,
                &buckets,
                None,
            )?;
        }
        {
            let mut m = encoder.encode_descriptor(
                "fastagentic_instance",
                "Instance id and version",
                None,
                MetricType::Info,
            )?;
            m.encode_info(&[
                ("instance_id", self.instance_id.as_str()),
                ("version", env!("CARGO_PKG_VERSION")),
            ])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_roundtrip_and_torn_read_detection() {
        let c = Counters::local();
        let _g = c.enter();
        c.response_started("/chat", 200, false);
        let w = c.snapshot_words();
        let mut buf = encode(&w);
        assert_eq!(decode(&buf), Some(w));
        buf[W_ROUTES * 8] ^= 1;
        assert_eq!(decode(&buf), None, "a changed word must fail the checksum");
    }

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
    fn runs_and_pools_add_up_and_timeouts_survive_replacement() {
        let file = SharedFile::create(2).expect("memfd");
        let a = Counters::shared(file.clone(), 0);
        let b = Counters::shared(file.clone(), 1);
        let pool = |size, timeouts| crate::pools::PoolMetrics {
            max_size: 3,
            size,
            in_use: 1,
            idle: size - 1,
            waiters: 0,
            timeouts,
        };
        a.run_event(RunEvent::Started);
        a.run_event(RunEvent::Completed);
        b.run_event(RunEvent::Replayed);
        b.run_event(RunEvent::Started);
        b.run_event(RunEvent::TakenOver);
        a.set_pools([Some(pool(2, 1)), None]);
        a.publish_now();
        b.set_pools([Some(pool(3, 2)), None]);
        b.publish_now();
        let s = a.pod_snapshot();
        assert_eq!(s.runs, [2, 1, 0, 1, 1]);
        assert_eq!(s.pools[0], [6, 5, 2, 3, 0, 3]);
        assert_eq!(s.pools[1], [0; 6]);
        let j = s.to_json("i", None, serde_json::json!({}), serde_json::json!({}));
        assert_eq!(j["pools"]["redis"]["size"], 5);
        assert!(j["pools"].get("database").is_none());
        assert_eq!(j["runs"]["replayed"], 1);
        assert_eq!(j["runs"]["taken_over"], 1);
        assert_eq!(j["runs"]["started"], 2);
        // Worker b dies; its replacement starts with fresh pools.
        file.mark_exited(1).expect("mark");
        let b2 = Counters::shared(file.clone(), 1);
        b2.set_pools([Some(pool(1, 0)), None]);
        b2.publish_now();
        let s = a.pod_snapshot();
        assert_eq!(s.pools[0][1], 3, "open connections of live workers only");
        assert_eq!(s.pools[0][5], 3, "timeouts continue across the replacement");
        assert_eq!(s.runs[3], 1);
        assert_eq!(s.runs[4], 1, "run counters continue across the replacement");
    }

    fn nz(n: u32) -> Option<NonZeroU32> {
        NonZeroU32::new(n)
    }

    #[test]
    fn capacity_counts_accepting_workers_and_utilization_the_whole_pod() {
        let file = SharedFile::create(4).expect("memfd");
        let a = Counters::shared(file.clone(), 0);
        let b = Counters::shared(file.clone(), 1);
        let c = Counters::shared(file.clone(), 2);
        a.set_state(SlotState::Ready);
        b.set_state(SlotState::RecycleRequested);
        c.set_state(SlotState::Starting);
        let _g = [a.enter(), a.enter(), b.enter()];
        b.publish_now();
        let s = a.pod_snapshot();
        assert_eq!(
            s.accepting, 2,
            "ready and recycle-requested accept; starting does not"
        );
        assert_eq!(s.capacity(nz(4)), Some(8));
        assert_eq!(s.utilization(nz(4)), Some(3.0 / 8.0));
        assert_eq!(s.capacity(None), None, "unlimited: no capacity");
        assert_eq!(s.utilization(None), None);
        // A draining worker finishes what it holds but admits nothing new.
        b.set_state(SlotState::Draining);
        let s = a.pod_snapshot();
        assert_eq!(s.capacity(nz(4)), Some(4));
        assert_eq!(s.utilization(nz(4)), Some(0.75));
        let j = s.to_json("i", nz(4), serde_json::json!({}), serde_json::json!({}));
        assert_eq!(j["capacity"], 4);
        assert_eq!(j["utilization"], 0.75);
        assert_eq!(j["accepting_workers"], 1);
        // No accepting process: utilization is unknown, not 0 and not 100%.
        a.set_state(SlotState::Draining);
        let s = a.pod_snapshot();
        assert_eq!(s.capacity(nz(4)), Some(0));
        assert_eq!(s.utilization(nz(4)), None);
    }

    fn exposition(openmetrics: bool) -> String {
        let c = Counters::local();
        c.set_state(SlotState::Ready);
        for ms in [1, 30, 2_000] {
            let _g = c.enter();
            c.response_started("/chat", 200, false);
            c.request_finished(Duration::from_millis(ms));
        }
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(PodCollector {
            counters: c,
            instance_id: "i".into(),
            max_concurrent: nz(5),
        }));
        let mut out = String::new();
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
                .expect("encode");
        }
        out
    }

    #[test]
    fn duration_histogram_buckets_are_cumulative_once_and_end_at_inf() {
        for openmetrics in [false, true] {
            let text = exposition(openmetrics);
            let value = |line: &str| {
                line.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .expect("a sample value")
            };
            let buckets: Vec<(&str, f64)> = text
                .lines()
                .filter(|l| l.starts_with("fastagentic_http_request_duration_seconds_bucket"))
                .map(|l| (l, value(l)))
                .collect();
            assert_eq!(buckets.len(), BUCKETS.len() + 1, "{text}");
            assert!(
                buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                "buckets must not decrease: {buckets:?}"
            );
            let (last, inf) = buckets[buckets.len() - 1];
            assert!(last.contains("le=\"+Inf\""), "last bucket is +Inf: {last}");
            assert_eq!(inf, 3.0, "three requests: {text}");
            assert!(
                !text.contains("e+308"),
                "no finite stand-in for +Inf: {text}"
            );
            let count = text
                .lines()
                .find(|l| l.starts_with("fastagentic_http_request_duration_seconds_count"))
                .map(value);
            assert_eq!(count, Some(3.0));
            let at = |le: &str| {
                buckets
                    .iter()
                    .find(|(l, _)| l.contains(&format!("le=\"{le}\"")))
                    .map(|(_, v)| *v)
            };
            assert_eq!(at("0.005"), Some(1.0), "{text}");
            assert_eq!(at("0.05"), Some(2.0), "{text}");
            assert!(text.contains("fastagentic_http_capacity 5"), "{text}");
        }
    }
}
