//! The pod-wide sum of all slots: what `/metrics` reports, and capacity and utilization.

use std::num::NonZeroU32;
use std::time::Duration;

use super::slot::*;
use crate::routes::Route;

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
    /// Open connections.
    pub connections: u64,
}

/// Aggregated numbers.
#[derive(Debug, Clone, Default)]
pub struct PodSnapshot {
    /// Responses per route ([`Route::ALL`] order) and status class.
    pub routes: [[u64; CLASSES.len()]; Route::COUNT],
    /// Requests refused by the concurrency limit (HTTP 503).
    pub rejected: u64,
    /// Admitted agent-route requests in flight in live processes (probes are not counted).
    pub in_flight: u64,
    /// Highest in-flight count any single worker has reached (the limit is per worker).
    pub max_in_flight: u64,
    /// Live processes accepting connections (ready, or ready and asking to be recycled).
    pub accepting: u64,
    /// Duration histogram (cumulative buckets computed on output), last = +Inf.
    pub buckets: [u64; BUCKETS.len() + 1],
    /// Sum of durations.
    pub duration_sum: Duration,
    /// Durable-run events, in [`RUN_EVENTS`] order.
    pub runs: [u64; RUN_EVENTS.len()],
    /// Per pool ([`POOLS`] order): max size, open, in use, idle, waiters (live workers) and
    /// wait timeouts (all time).
    pub pools: [[u64; POOL_WORDS]; POOLS.len()],
    /// Live workers (pre-fork mode).
    pub workers: Vec<WorkerView>,
    /// Whether these numbers cover several processes.
    pub pod_wide: bool,
}

impl PodSnapshot {
    pub(super) fn from_slots(slots: &[Slot], pod_wide: bool) -> Self {
        let mut s = PodSnapshot {
            pod_wide,
            ..Default::default()
        };
        for (slot, w) in slots.iter().enumerate() {
            if w.magic != MAGIC {
                continue;
            }
            add(s.routes.as_flattened_mut(), w.routes.as_flattened());
            s.rejected += w.rejected;
            s.max_in_flight = s.max_in_flight.max(w.max_in_flight);
            add(&mut s.buckets, &w.buckets);
            s.duration_sum += Duration::from_micros(w.duration_sum_us);
            add(&mut s.runs, &w.runs);
            for (sum, pool) in s.pools.iter_mut().zip(&w.pools) {
                sum[POOL_TIMEOUTS] += pool[POOL_TIMEOUTS];
            }
            let state = w.state();
            if state.is_alive() {
                for (sum, pool) in s.pools.iter_mut().zip(&w.pools) {
                    add(&mut sum[..POOL_TIMEOUTS], &pool[..POOL_TIMEOUTS]);
                }
                s.in_flight += w.in_flight;
                if state.is_accepting() {
                    s.accepting += 1;
                }
                s.workers.push(WorkerView {
                    slot,
                    pid: w.pid,
                    state: state.name(),
                    started_at_ms: w.started_ms,
                    requests_handled: w.handled,
                    in_flight: w.in_flight,
                    max_in_flight: w.max_in_flight,
                    connections: w.connections,
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
}

/// Adds `values` to `sums`, element by element.
fn add(sums: &mut [u64], values: &[u64]) {
    for (sum, v) in sums.iter_mut().zip(values) {
        *sum += v;
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::metrics::{Counters, RunEvent, SharedFile};

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
}
