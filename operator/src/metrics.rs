//! Prometheus metrics of the operator (served on `--metrics-bind-address` at `/metrics`).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The error's reason (`SecretNotFound`, `Forbidden`, ...).
    pub reason: String,
}

/// Label set of the writes counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// What was written: a kind (`Deployment`, `Event`, ...), with `/status` for the status
    /// subresource (`FastAgentic/status`).
    pub kind: String,
    /// `apply` (server-side apply), `patch` (any other patch), `create`, `update` or `delete`.
    pub verb: String,
}

/// The writes a reconcile can make, exposed at 0 from the start so that "nothing was written"
/// reads as 0, not as a missing series.
const RECONCILER_WRITES: [(&str, &str); 9] = [
    ("Deployment", "apply"),
    ("Service", "apply"),
    ("HorizontalPodAutoscaler", "apply"),
    ("HorizontalPodAutoscaler", "delete"),
    ("PodDisruptionBudget", "apply"),
    ("PodDisruptionBudget", "delete"),
    ("FastAgentic/status", "apply"),
    ("Event", "create"),
    ("Event", "patch"),
];

/// The operator's metrics and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    leader: Gauge,
    scrape_duration: Histogram,
    scraped_pods: Gauge,
    scrape_failures: Counter,
    deletion_cost_writes: Counter,
    api_requests: Family<CodeLabels, Counter>,
    writes: Family<WriteLabels, Counter>,
}

/// Label set of the metrics API's answers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// HTTP status code.
    pub code: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("fastagentic_operator");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        // 1 ms .. ~16 s.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconcile took",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this process holds the leader Lease (or runs without leader election)",
            leader.clone(),
        );
        let scrape_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let scraped_pods = Gauge::default();
        let scrape_failures = Counter::default();
        let deletion_cost_writes = Counter::default();
        let api_requests = Family::<CodeLabels, Counter>::default();
        registry.register(
            "scrape_duration_seconds",
            "Time one round of scraping the pods' concurrency took (leader)",
            scrape_duration.clone(),
        );
        registry.register(
            "scraped_pods",
            "Pods with a concurrency utilization after the last round (leader)",
            scraped_pods.clone(),
        );
        registry.register(
            "scrape_failures",
            "Pod scrapes that failed or timed out (the pod is left out)",
            scrape_failures.clone(),
        );
        registry.register(
            "deletion_cost_writes",
            "controller.kubernetes.io/pod-deletion-cost annotations written",
            deletion_cost_writes.clone(),
        );
        registry.register(
            "metrics_api_requests",
            "Requests to the custom.metrics.k8s.io API, by HTTP status",
            api_requests.clone(),
        );
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "writes",
            "Write requests the reconciler sent to the API server (children, status, Events), \
             by kind and verb",
            writes.clone(),
        );
        for (kind, verb) in RECONCILER_WRITES {
            let _ = writes.get_or_create(&WriteLabels {
                kind: kind.into(),
                verb: verb.into(),
            });
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
            scrape_duration,
            scraped_pods,
            scrape_failures,
            deletion_cost_writes,
            api_requests,
            writes,
        }
    }
}

impl Metrics {
    /// Records one finished reconcile; `error` is the failure's reason, if it failed.
    pub fn observe(&self, took: Duration, error: Option<&str>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(reason) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    reason: reason.to_string(),
                })
                .inc();
        }
    }

    /// Records one scrape round.
    pub fn observe_scrape(&self, took: Duration, pods: u64, failures: u64) {
        self.scrape_duration.observe(took.as_secs_f64());
        self.scraped_pods
            .set(i64::try_from(pods).unwrap_or(i64::MAX));
        self.scrape_failures.inc_by(failures);
    }

    /// Counts one deletion-cost write.
    pub fn deletion_cost_written(&self) {
        self.deletion_cost_writes.inc();
    }

    /// Counts one write request of the reconciler (see `controller::writes`).
    pub fn count_write(&self, kind: &str, verb: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                kind: kind.into(),
                verb: verb.into(),
            })
            .inc();
    }

    /// Counts one answer of the metrics API.
    pub fn metrics_api_answered(&self, code: u16) {
        self.api_requests
            .get_or_create(&CodeLabels {
                code: code.to_string(),
            })
            .inc();
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_errors_by_reason_and_histogram() {
        let m = Metrics::default();
        m.observe(Duration::from_millis(3), None);
        m.observe(Duration::from_millis(3), Some("SecretNotFound"));
        let text = m.encode().expect("encoding to a String cannot fail");
        assert!(
            text.contains("fastagentic_operator_reconciles_total 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "fastagentic_operator_reconcile_errors_total{reason=\"SecretNotFound\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("fastagentic_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
    }

    #[test]
    fn writes_are_exposed_at_zero_and_counted_by_kind_and_verb() {
        let m = Metrics::default();
        let text = m.encode().expect("encoding to a String cannot fail");
        for (kind, verb) in RECONCILER_WRITES {
            let line =
                format!("fastagentic_operator_writes_total{{kind=\"{kind}\",verb=\"{verb}\"}} 0");
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
        m.count_write("Deployment", "apply");
        m.count_write("Deployment", "apply");
        m.count_write("Pod", "patch");
        let text = m.encode().expect("encoding to a String cannot fail");
        assert!(
            text.contains(
                "fastagentic_operator_writes_total{kind=\"Deployment\",verb=\"apply\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("fastagentic_operator_writes_total{kind=\"Pod\",verb=\"patch\"} 1"),
            "{text}"
        );
    }
}
