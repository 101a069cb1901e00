//! The pod snapshot as `/metrics` shows it: JSON, and the Prometheus collector.

use std::num::NonZeroU32;
use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::counters::Counters;
use super::pod::PodSnapshot;
use super::slot::*;

impl PodSnapshot {
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
                ConstCounter::new(s.pools[p][POOL_TIMEOUTS]).encode(m.encode_family(&labels)?)?;
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
    use std::time::Duration;

    use super::*;
    use crate::metrics::SlotState;

    fn nz(n: u32) -> Option<NonZeroU32> {
        NonZeroU32::new(n)
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
