//! The `custom.metrics.k8s.io/v1beta2` answers: discovery documents and `MetricValueList`s of
//! the pods' concurrency utilization. Pure functions of the current samples; the HTTP layer and
//! authentication live in the parent module.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fastagentic_crd::CONCURRENCY_METRIC;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::selector::Selector;

/// API group served.
pub const GROUP: &str = "custom.metrics.k8s.io";
/// Version served (the HorizontalPodAutoscaler prefers it when discovery offers it).
pub const VERSION: &str = "v1beta2";

/// The latest utilization of one pod, as the leader scraped it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodMetric {
    /// Pod labels (for `labelSelector`).
    pub labels: BTreeMap<String, String>,
    /// Average in-flight requests over capacity across the window, in thousandths of a
    /// percent (the quantity's milli units): 72_500 is 72.5%.
    pub utilization_milli_percent: u64,
    /// End of the window.
    pub timestamp: Timestamp,
    /// Seconds the value averages over.
    pub window_seconds: i64,
}

/// Pods by `(namespace, name)`.
pub type PodMetrics = BTreeMap<(String, String), PodMetric>;

/// A Kubernetes `Status` error, the body every API client understands.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub code: StatusCode,
    /// `reason` (`NotFound`, `BadRequest`, `Unauthorized`, `Forbidden`, ...).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            code: StatusCode::BAD_REQUEST,
            reason: "BadRequest",
            message: message.into(),
        }
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            code: StatusCode::NOT_FOUND,
            reason: "NotFound",
            message: message.into(),
        }
    }
    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            code: StatusCode::UNAUTHORIZED,
            reason: "Unauthorized",
            message: message.into(),
        }
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            code: StatusCode::FORBIDDEN,
            reason: "Forbidden",
            message: message.into(),
        }
    }
    /// 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            code: StatusCode::SERVICE_UNAVAILABLE,
            reason: "ServiceUnavailable",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        (self.code, Json(body)).into_response()
    }
}

/// `GET /apis`.
pub fn group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group()]})
}

/// `GET /apis/custom.metrics.k8s.io`.
pub fn group() -> Value {
    let gv = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": GROUP,
        "versions": [gv.clone()], "preferredVersion": gv,
    })
}

/// `GET /apis/custom.metrics.k8s.io/v1beta2`: the one metric, for pods.
pub fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [{
            "name": format!("pods/{CONCURRENCY_METRIC}"),
            "singularName": "",
            "namespaced": true,
            "kind": "MetricValueList",
            "verbs": ["get"],
        }],
    })
}

/// `GET /apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/pods/{name}/{metric}`: `name` is
/// a pod or `*` (every pod matching `label_selector`). Pods without a fresh sample are left out
/// (never reported as 0 or 100); a named pod without one is `NotFound`, as the HPA expects.
pub fn metric_list(
    metrics: &PodMetrics,
    namespace: &str,
    name: &str,
    metric: &str,
    label_selector: Option<&str>,
    metric_selector: Option<&str>,
) -> Result<Value, ApiError> {
    if metric != CONCURRENCY_METRIC {
        return Err(ApiError::not_found(format!(
            "the server could not find the metric {metric} for pods (served: {CONCURRENCY_METRIC})"
        )));
    }
    let selector = Selector::parse(label_selector.unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("labelSelector: {e}")))?;
    // The metric has no labels of its own: any metric selector but the empty one selects nothing.
    let metric_selector = Selector::parse(metric_selector.unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("metricLabelSelector: {e}")))?;
    let metric_matches = metric_selector.matches(&BTreeMap::new());
    let items: Vec<Value> = metrics
        .range((namespace.to_string(), String::new())..)
        .take_while(|((ns, _), _)| ns == namespace)
        .filter(|((_, pod), m)| (name == "*" || pod == name) && selector.matches(&m.labels))
        .filter(|_| metric_matches)
        .map(|((ns, pod), m)| {
            json!({
                "describedObject": {"kind": "Pod", "namespace": ns, "name": pod, "apiVersion": "/v1"},
                "metric": {"name": CONCURRENCY_METRIC},
                "timestamp": m.timestamp.to_string(),
                "windowSeconds": m.window_seconds,
                "value": format!("{}m", m.utilization_milli_percent),
            })
        })
        .collect();
    if name != "*" && items.is_empty() {
        return Err(ApiError::not_found(format!(
            "the server could not find the metric {metric} for pods {name}: no recent sample \
             (not ready, not answering, or not scraped yet)"
        )));
    }
    Ok(json!({
        "kind": "MetricValueList",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {},
        "items": items,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(labels: &[(&str, &str)], milli: u64) -> PodMetric {
        PodMetric {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            utilization_milli_percent: milli,
            timestamp: Timestamp::UNIX_EPOCH,
            window_seconds: 6,
        }
    }

    fn metrics() -> PodMetrics {
        BTreeMap::from([
            (("a".into(), "p1".into()), sample(&[("app", "x")], 100_000)),
            (("a".into(), "p2".into()), sample(&[("app", "x")], 72_500)),
            (("a".into(), "q1".into()), sample(&[("app", "y")], 0)),
            (("b".into(), "p1".into()), sample(&[("app", "x")], 50_000)),
        ])
    }

    fn names(v: &Value) -> Vec<(String, String)> {
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                (
                    i["describedObject"]["name"].as_str().unwrap_or("").into(),
                    i["value"].as_str().unwrap_or("").into(),
                )
            })
            .collect()
    }

    #[test]
    fn lists_the_namespaces_matching_pods_in_milli_percent() {
        let v = metric_list(
            &metrics(),
            "a",
            "*",
            CONCURRENCY_METRIC,
            Some("app=x"),
            None,
        )
        .expect("list");
        assert_eq!(v["kind"], "MetricValueList");
        assert_eq!(v["apiVersion"], "custom.metrics.k8s.io/v1beta2");
        assert_eq!(
            names(&v),
            vec![
                ("p1".into(), "100000m".into()),
                ("p2".into(), "72500m".into())
            ]
        );
        let item = &v["items"][0];
        assert_eq!(item["describedObject"]["namespace"], "a");
        assert_eq!(item["describedObject"]["kind"], "Pod");
        assert_eq!(item["metric"]["name"], CONCURRENCY_METRIC);
        assert_eq!(item["windowSeconds"], 6);
        assert_eq!(item["timestamp"], "1970-01-01T00:00:00Z");
        let all = metric_list(&metrics(), "a", "*", CONCURRENCY_METRIC, None, None).expect("all");
        assert_eq!(
            names(&all).len(),
            3,
            "no selector: every pod of the namespace"
        );
        let empty =
            metric_list(&metrics(), "c", "*", CONCURRENCY_METRIC, None, None).expect("empty");
        assert_eq!(
            empty["items"],
            json!([]),
            "no pods is an empty list, not an error"
        );
    }

    #[test]
    fn a_named_pod_or_nothing() {
        let v = metric_list(&metrics(), "b", "p1", CONCURRENCY_METRIC, None, None).expect("one");
        assert_eq!(names(&v), vec![("p1".into(), "50000m".into())]);
        let e = metric_list(&metrics(), "b", "p9", CONCURRENCY_METRIC, None, None)
            .expect_err("missing pod");
        assert_eq!(e.code, StatusCode::NOT_FOUND);
        assert!(e.message.contains("p9"), "{}", e.message);
    }

    #[test]
    fn unknown_metric_bad_selector_and_metric_selector() {
        let e = metric_list(&metrics(), "a", "*", "cpu_seconds", None, None).expect_err("metric");
        assert_eq!(e.code, StatusCode::NOT_FOUND);
        assert!(e.message.contains("cpu_seconds") && e.message.contains(CONCURRENCY_METRIC));
        let e = metric_list(
            &metrics(),
            "a",
            "*",
            CONCURRENCY_METRIC,
            Some("app in x"),
            None,
        )
        .expect_err("selector");
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert!(e.message.starts_with("labelSelector:"), "{}", e.message);
        let v = metric_list(&metrics(), "a", "*", CONCURRENCY_METRIC, None, Some("le=1"))
            .expect("metric selector");
        assert_eq!(v["items"], json!([]), "the metric has no labels to match");
    }

    #[test]
    fn discovery_names_the_metric_and_the_version() {
        let r = resource_list();
        assert_eq!(r["groupVersion"], "custom.metrics.k8s.io/v1beta2");
        assert_eq!(
            r["resources"][0]["name"],
            format!("pods/{CONCURRENCY_METRIC}")
        );
        assert_eq!(group()["preferredVersion"]["version"], "v1beta2");
        assert_eq!(group_list()["groups"][0]["name"], GROUP);
    }

    #[test]
    fn errors_are_kubernetes_status_objects() {
        let r = ApiError::forbidden("no").into_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
}
