//! `controller.kubernetes.io/pod-deletion-cost` from the pods' in-flight requests, throttled.
//!
//! When a ReplicaSet scales down it removes the pods with the lowest cost first, so idle pods
//! go before pods in the middle of a long run. The cost is the pod's in-flight count. Writes are
//! throttled three ways: a pod is written only on a meaningful change (idle ↔ busy, or at least a
//! quarter up or down); at most once per [`CostThrottle::min_interval`] unless it turns idle or
//! busy; and at most `per_minute` writes per FastAgentic (a token bucket that starts full).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Bucket units per write (milliseconds in a minute).
const WRITE: u128 = 60_000;

/// The annotation the ReplicaSet controller reads.
pub const ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

/// `(namespace, pod)`.
pub type PodKey = (String, String);

/// Decides which pods to write, remembering what was written.
#[derive(Debug)]
pub struct CostThrottle {
    per_minute: u32,
    min_interval: Duration,
    written: HashMap<PodKey, (i64, Instant)>,
    buckets: HashMap<(String, String), (u128, Instant)>,
}

/// The cost for `in_flight` requests (the annotation is an int32).
pub fn cost(in_flight: u64) -> i64 {
    i64::try_from(in_flight)
        .unwrap_or(i64::MAX)
        .min(i64::from(i32::MAX))
}

/// Whether going from `old` to `new` is worth a write.
fn meaningful(old: i64, new: i64) -> bool {
    (old == 0) != (new == 0) || (new - old).abs() * 4 >= old.max(new).max(1)
}

impl CostThrottle {
    /// At most `per_minute` writes per FastAgentic; a pod at most every `min_interval` except
    /// when it turns idle or busy.
    pub fn new(per_minute: u32, min_interval: Duration) -> Self {
        Self {
            per_minute,
            min_interval,
            written: HashMap::new(),
            buckets: HashMap::new(),
        }
    }

    /// The per-pod interval.
    pub fn min_interval(&self) -> Duration {
        self.min_interval
    }

    /// The cost to write on `pod` (of FastAgentic `fa`) now, if any. `current` is the
    /// annotation the pod carries (used until this throttle has written the pod itself).
    pub fn decide(
        &mut self,
        pod: &PodKey,
        fa: &str,
        in_flight: u64,
        current: Option<i64>,
        now: Instant,
    ) -> Option<i64> {
        let new = cost(in_flight);
        let (old, last) = match self.written.get(pod) {
            Some((v, at)) => (*v, Some(*at)),
            None => (current.unwrap_or(0), None),
        };
        if !meaningful(old, new) {
            return None;
        }
        let flips = (old == 0) != (new == 0);
        if !flips && last.is_some_and(|at| now.duration_since(at) < self.min_interval) {
            return None;
        }
        // Whole numbers: one write is 60_000 units; a minute refills `per_minute` writes.
        let capacity = u128::from(self.per_minute.max(1)) * WRITE;
        let bucket = self
            .buckets
            .entry((pod.0.clone(), fa.to_string()))
            .or_insert((capacity, now));
        let ms = now.duration_since(bucket.1).as_millis();
        bucket.0 = (bucket.0 + ms * u128::from(self.per_minute)).min(capacity);
        // Advance by whole milliseconds only, so no fraction is lost between calls.
        bucket.1 += Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX));
        if bucket.0 < WRITE {
            return None;
        }
        bucket.0 -= WRITE;
        self.written.insert(pod.clone(), (new, now));
        Some(new)
    }

    /// The write of `pod` failed: forget it, so the next round tries again.
    pub fn failed(&mut self, pod: &PodKey) {
        self.written.remove(pod);
    }

    /// Drops what is remembered of pods for which `keep` is false (deleted pods).
    pub fn retain(&mut self, keep: impl Fn(&PodKey) -> bool) {
        self.written.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str) -> PodKey {
        ("ns".into(), p.into())
    }

    #[test]
    fn only_meaningful_changes_are_written() {
        let mut t = CostThrottle::new(1000, Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            t.decide(&key("a"), "fa", 0, None, at(0)),
            None,
            "idle, unannotated: 0 already"
        );
        assert_eq!(
            t.decide(&key("a"), "fa", 8, None, at(0)),
            Some(8),
            "turned busy"
        );
        assert_eq!(
            t.decide(&key("a"), "fa", 9, None, at(20)),
            None,
            "+12%: not meaningful"
        );
        assert_eq!(
            t.decide(&key("a"), "fa", 12, None, at(20)),
            Some(12),
            "+50%"
        );
        assert_eq!(
            t.decide(&key("a"), "fa", 20, None, at(25)),
            None,
            "within the interval"
        );
        assert_eq!(
            t.decide(&key("a"), "fa", 0, None, at(26)),
            Some(0),
            "turned idle: at once"
        );
        assert_eq!(
            t.decide(&key("b"), "fa", 0, Some(7), at(0)),
            Some(0),
            "stale annotation"
        );
        assert_eq!(
            t.decide(&key("c"), "fa", 5, Some(5), at(0)),
            None,
            "annotation is right"
        );
    }

    #[test]
    fn writes_per_fastagentic_are_bounded_per_minute() {
        let mut t = CostThrottle::new(6, Duration::from_secs(1));
        let t0 = Instant::now();
        // 100 pods turn busy at once: only the bucket's 6 are written now.
        let first = (0..100)
            .filter(|i| {
                t.decide(&key(&format!("p{i}")), "fa", 3, None, t0)
                    .is_some()
            })
            .count();
        assert_eq!(first, 6);
        // Another FastAgentic has its own budget.
        assert!(t.decide(&key("other"), "fb", 3, None, t0).is_some());
        // Over the next minute, one write per 10 s: 6 more.
        let mut later = 0;
        for s in 1..=60 {
            let now = t0 + Duration::from_secs(s);
            later += (0..100)
                .filter(|i| {
                    t.decide(&key(&format!("p{i}")), "fa", 3, None, now)
                        .is_some()
                })
                .count();
        }
        assert_eq!(later, 6);
    }

    #[test]
    fn a_failed_write_is_tried_again() {
        let mut t = CostThrottle::new(100, Duration::from_secs(10));
        let now = Instant::now();
        assert_eq!(t.decide(&key("a"), "fa", 4, None, now), Some(4));
        t.failed(&key("a"));
        assert_eq!(t.decide(&key("a"), "fa", 4, None, now), Some(4));
        t.retain(|k| k.1 != "a");
        assert_eq!(t.decide(&key("a"), "fa", 4, Some(4), now), None);
    }

    #[test]
    fn cost_is_an_int32() {
        assert_eq!(cost(0), 0);
        assert_eq!(cost(u64::MAX), i64::from(i32::MAX));
    }
}
