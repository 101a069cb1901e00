//! The leader's scrape loop: every interval, `GET /metrics` (JSON) from each ready pod of a
//! FastAgentic with `autoscaling.targetConcurrencyUtilizationPercentage`, concurrently (bounded)
//! and with a timeout per pod. A pod that does not answer, answers garbage or reports no capacity
//! is left out until it answers again — never counted as idle or full.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use fastagentic_crd::FastAgentic;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;

use super::api::{PodMetric, PodMetrics};
use super::cost::{self, CostThrottle, PodKey};
use crate::build::PORT_NAME;
use crate::labels::LABEL_INSTANCE;
use crate::metrics::Metrics;

/// What one pod said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Requests in flight in the whole pod.
    pub in_flight: u64,
    /// Requests the pod admits at once (`maxConcurrent` x accepting workers).
    pub capacity: u64,
}

/// Reads the runtime's `/metrics` JSON (`in_flight`, `capacity`).
pub fn parse_reading(body: &[u8]) -> Result<Reading, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| format!("no number {name:?} (an unlimited or older runtime?)"))
    };
    Ok(Reading {
        in_flight: field("in_flight")?,
        capacity: field("capacity")?,
    })
}

/// Utilization over a window of readings, in thousandths of a percent: the sum of in-flight
/// over the sum of capacities (a pod whose workers restart within the window is weighed by
/// what it could admit). `None` when there was no capacity at all.
pub fn utilization_milli_percent(readings: impl IntoIterator<Item = Reading>) -> Option<u64> {
    let (in_flight, capacity) = readings.into_iter().fold((0u128, 0u128), |(i, c), r| {
        (i + u128::from(r.in_flight), c + u128::from(r.capacity))
    });
    (capacity > 0).then(|| u64::try_from(in_flight * 100_000 / capacity).unwrap_or(u64::MAX))
}

/// How often, how wide, how patient.
#[derive(Debug, Clone)]
pub struct ScrapeConfig {
    /// Time between rounds.
    pub interval: Duration,
    /// Time one pod gets to answer.
    pub timeout: Duration,
    /// Pods scraped at once.
    pub concurrency: usize,
    /// Readings a value averages over (the newest ones, within `window * interval`).
    pub window: usize,
    /// Deletion-cost writes per FastAgentic per minute (0: no deletion costs).
    pub cost_writes_per_minute: u32,
}

/// A pod to scrape.
#[derive(Debug, Clone)]
pub struct Target {
    key: PodKey,
    fa: String,
    url: String,
    labels: BTreeMap<String, String>,
    cost: Option<i64>,
}

/// The ready pods of FastAgentics that scale on concurrency.
pub fn targets(pods: &[Arc<Pod>], fas: &[Arc<FastAgentic>]) -> Vec<Target> {
    let scaled: HashMap<(&str, &str), &FastAgentic> = fas
        .iter()
        .filter(|fa| {
            fa.spec
                .autoscaling
                .as_ref()
                .is_some_and(|a| a.target_concurrency_utilization_percentage.is_some())
        })
        .filter_map(|fa| {
            Some((
                (
                    fa.metadata.namespace.as_deref()?,
                    fa.metadata.name.as_deref()?,
                ),
                fa.as_ref(),
            ))
        })
        .collect();
    pods.iter()
        .filter_map(|pod| {
            let ns = pod.metadata.namespace.as_deref()?;
            let name = pod.metadata.name.as_deref()?;
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let fa = scaled.get(&(ns, labels.get(LABEL_INSTANCE)?.as_str()))?;
            if pod.metadata.deletion_timestamp.is_some() {
                return None;
            }
            let status = pod.status.as_ref()?;
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
            if !ready {
                return None;
            }
            let port = pod
                .spec
                .as_ref()
                .into_iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(PORT_NAME))
                .map_or(fa.spec.port, |p| p.container_port);
            let host = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip.to_string()
            };
            let cost = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(cost::ANNOTATION))
                .and_then(|v| v.parse().ok());
            Some(Target {
                key: (ns.to_string(), name.to_string()),
                fa: fa.metadata.name.clone().unwrap_or_default(),
                url: format!("http://{host}:{port}/metrics"),
                labels,
                cost,
            })
        })
        .collect()
}

/// Readings per pod, newest last, and the latest values the API serves.
pub struct Scraper {
    config: ScrapeConfig,
    http: reqwest::Client,
    history: HashMap<PodKey, VecDeque<(Instant, Reading)>>,
    throttle: CostThrottle,
    published: Arc<RwLock<PodMetrics>>,
    metrics: Arc<Metrics>,
}

impl Scraper {
    /// A scraper publishing into `published`.
    pub fn new(
        config: ScrapeConfig,
        published: Arc<RwLock<PodMetrics>>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .pool_max_idle_per_host(1)
            .build()?;
        let throttle = CostThrottle::new(config.cost_writes_per_minute, config.interval * 5);
        Ok(Self {
            config,
            http,
            history: HashMap::new(),
            throttle,
            published,
            metrics,
        })
    }

    /// Scrapes every round until the task is dropped.
    pub async fn run(mut self, client: kube::Client, pods: Store<Pod>, fas: Store<FastAgentic>) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let targets = targets(&pods.state(), &fas.state());
            let writes = self.round(targets).await;
            self.write_costs(&client, writes).await;
        }
    }

    /// One round: scrape `targets`, publish, and return the deletion costs to write.
    pub async fn round(&mut self, targets: Vec<Target>) -> Vec<(PodKey, i64)> {
        let started = Instant::now();
        let http = &self.http;
        let results: Vec<(Target, Result<Reading, String>)> = futures::stream::iter(targets)
            .map(|t| async move {
                let r = scrape(http, &t.url).await;
                (t, r)
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let now = Instant::now();
        let stamp = Timestamp::now();
        let max_age = self.config.interval * u32::try_from(self.config.window).unwrap_or(1);
        let mut published = PodMetrics::new();
        let mut answered = HashMap::new();
        let mut failures = 0u64;
        let mut costs = Vec::new();
        for (t, r) in results {
            let reading = match r {
                Ok(reading) => reading,
                Err(e) => {
                    failures += 1;
                    tracing::debug!(namespace = %t.key.0, pod = %t.key.1, error = %e, "scrape failed; pod left out");
                    continue;
                }
            };
            let mut h = self.history.remove(&t.key).unwrap_or_default();
            h.push_back((now, reading));
            while h.len() > self.config.window.max(1)
                || h.front()
                    .is_some_and(|(at, _)| now.duration_since(*at) > max_age)
            {
                h.pop_front();
            }
            let window_seconds = h
                .front()
                .map_or(0, |(at, _)| now.duration_since(*at).as_secs())
                .max(self.config.interval.as_secs().max(1));
            if let Some(u) = utilization_milli_percent(h.iter().map(|(_, r)| *r)) {
                published.insert(
                    t.key.clone(),
                    PodMetric {
                        labels: t.labels.clone(),
                        utilization_milli_percent: u,
                        timestamp: stamp,
                        window_seconds: i64::try_from(window_seconds).unwrap_or(i64::MAX),
                    },
                );
            }
            if self.config.cost_writes_per_minute > 0
                && let Some(c) = self
                    .throttle
                    .decide(&t.key, &t.fa, reading.in_flight, t.cost, now)
            {
                costs.push((t.key.clone(), c));
            }
            answered.insert(t.key, h);
        }
        // Pods that did not answer lose their history: after a gap they start over.
        self.history = answered;
        let history = &self.history;
        self.throttle.retain(|k| history.contains_key(k));
        let pods = published.len();
        match self.published.write() {
            Ok(mut p) => *p = published,
            Err(poisoned) => *poisoned.into_inner() = published,
        }
        self.metrics
            .observe_scrape(started.elapsed(), pods as u64, failures);
        costs
    }

    async fn write_costs(&mut self, client: &kube::Client, writes: Vec<(PodKey, i64)>) {
        let results: Vec<(PodKey, Result<(), kube::Error>)> = futures::stream::iter(writes)
            .map(|(key, value)| {
                let api: Api<Pod> = Api::namespaced(client.clone(), &key.0);
                async move {
                    let patch = serde_json::json!({
                        "metadata": {"annotations": {cost::ANNOTATION: value.to_string()}}
                    });
                    let r = api
                        .patch(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| ());
                    (key, r)
                }
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        for (key, r) in results {
            match r {
                Ok(()) => self.metrics.deletion_cost_written(),
                Err(e) => {
                    tracing::debug!(namespace = %key.0, pod = %key.1, error = %e, "deletion cost not written");
                    self.throttle.failed(&key);
                }
            }
        }
    }
}

async fn scrape(http: &reqwest::Client, url: &str) -> Result<Reading, String> {
    let resp = http
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    parse_reading(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(in_flight: u64, capacity: u64) -> Reading {
        Reading {
            in_flight,
            capacity,
        }
    }

    #[test]
    fn utilization_is_summed_in_flight_over_summed_capacity() {
        assert_eq!(utilization_milli_percent([r(3, 4)]), Some(75_000));
        assert_eq!(utilization_milli_percent([r(4, 4), r(2, 4)]), Some(75_000));
        // A worker restarting: its capacity dropped for one reading.
        assert_eq!(utilization_milli_percent([r(2, 2), r(4, 4)]), Some(100_000));
        assert_eq!(utilization_milli_percent([r(1, 3)]), Some(33_333));
        assert_eq!(
            utilization_milli_percent([r(0, 0)]),
            None,
            "no capacity: unknown"
        );
        assert_eq!(utilization_milli_percent([]), None);
        assert_eq!(utilization_milli_percent([r(u64::MAX, 1)]), Some(u64::MAX));
    }

    #[test]
    fn readings_come_from_the_runtime_json() {
        let body = br#"{"in_flight": 7, "capacity": 8, "utilization": 0.875, "workers": []}"#;
        assert_eq!(parse_reading(body), Ok(r(7, 8)));
        let e = parse_reading(br#"{"in_flight": 7, "capacity": null}"#).expect_err("unlimited");
        assert!(e.contains("capacity"), "{e}");
        assert!(parse_reading(b"<html>").is_err());
    }

    fn pod(name: &str, instance: &str, ready: bool, ip: Option<&str>) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns",
                             "labels": {LABEL_INSTANCE: instance},
                             "annotations": {cost::ANNOTATION: "3"}},
                "spec": {"containers": [{"name": "agent", "ports": [{"name": "http", "containerPort": 9000}]}]},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
            }))
            .expect("pod fixture"),
        )
    }

    fn fa(name: &str, target: Option<i32>) -> Arc<FastAgentic> {
        let mut autoscaling = serde_json::json!({"maxReplicas": 3});
        if let Some(t) = target {
            autoscaling["targetConcurrencyUtilizationPercentage"] = t.into();
        }
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "fastagentic.io/v1alpha1", "kind": "FastAgentic",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"image": "i", "maxConcurrent": 4, "autoscaling": autoscaling}
            }))
            .expect("fa fixture"),
        )
    }

    #[test]
    fn only_ready_pods_with_an_address_of_concurrency_scaled_resources() {
        let pods = [
            pod("a-1", "a", true, Some("10.0.0.1")),
            pod("a-2", "a", false, Some("10.0.0.2")),
            pod("a-3", "a", true, None),
            pod("b-1", "b", true, Some("10.0.0.4")),
            pod("c-1", "c", true, Some("fd00::5")),
        ];
        let fas = [fa("a", Some(70)), fa("b", None), fa("c", Some(50))];
        let t = targets(&pods, &fas);
        let urls: Vec<&str> = t.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://10.0.0.1:9000/metrics",
                "http://[fd00::5]:9000/metrics"
            ]
        );
        assert_eq!(t[0].fa, "a");
        assert_eq!(t[0].cost, Some(3));
    }
}
