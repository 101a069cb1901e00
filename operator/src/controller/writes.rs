//! Counts every write request the reconciler sends, in `fastagentic_operator_writes_total`.
//!
//! A tower layer on the reconciler's own client, not a counter at each call site: whatever
//! writes (an apply, the replicas hand-off, a delete, the status patch, the Event recorder's
//! create or its patch of a series), the request is counted, so "a reconcile with nothing
//! changed writes nothing" can be read off the counter. Reads are not counted; neither are the
//! leader election's and the metrics API's writes, which use another client.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::CONTENT_TYPE;
use http::{Method, Request};
use tower::{Layer, Service};

use crate::metrics::Metrics;

/// The layer: `ClientBuilder::with_layer(&CountWrites::new(metrics))`.
#[derive(Clone)]
pub struct CountWrites {
    metrics: Arc<Metrics>,
}

impl CountWrites {
    /// Counts into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for CountWrites {
    type Service = CountWritesService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountWritesService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`CountWrites`] wraps a client's stack in.
#[derive(Clone)]
pub struct CountWritesService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<Request<B>> for CountWritesService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if let Some(write) = classify(request.method(), request.uri().path(), content_type) {
            self.metrics.count_write(&write.kind, write.verb);
        }
        self.inner.call(request)
    }
}

/// One write request, as the counter labels it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The kind (`Deployment`), with the subresource if any (`FastAgentic/status`).
    pub kind: String,
    /// `apply`, `patch`, `create`, `update` or `delete`.
    pub verb: &'static str,
}

/// The write a request is, from its method, path and content type; `None` for a read.
pub fn classify(method: &Method, path: &str, content_type: Option<&str>) -> Option<Write> {
    let verb = match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::DELETE => "delete",
        Method::PATCH if content_type.is_some_and(|c| c.starts_with("application/apply-patch")) => {
            "apply"
        }
        Method::PATCH => "patch",
        _ => return None,
    };
    // /api/v1/[namespaces/NS/]RESOURCE[/NAME[/SUBRESOURCE]] or
    // /apis/GROUP/VERSION/[namespaces/NS/]RESOURCE[/NAME[/SUBRESOURCE]]
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut at = match segments.first() {
        Some(&"api") => 2,
        Some(&"apis") => 3,
        _ => 0,
    };
    if segments.get(at) == Some(&"namespaces") && segments.len() > at + 2 {
        at += 2;
    }
    let resource = segments.get(at).copied().unwrap_or(path);
    let kind = match segments.get(at + 2) {
        Some(sub) => format!("{}/{sub}", kind_of(resource)),
        None => kind_of(resource).to_string(),
    };
    Some(Write { kind, verb })
}

/// The kind of the resources the operator writes; any other resource by its plural.
fn kind_of(resource: &str) -> &str {
    match resource {
        "deployments" => "Deployment",
        "services" => "Service",
        "horizontalpodautoscalers" => "HorizontalPodAutoscaler",
        "poddisruptionbudgets" => "PodDisruptionBudget",
        "fastagentics" => "FastAgentic",
        "events" => "Event",
        "pods" => "Pod",
        "endpointslices" => "EndpointSlice",
        "leases" => "Lease",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(kind: &str, verb: &'static str) -> Option<Write> {
        Some(Write {
            kind: kind.into(),
            verb,
        })
    }

    #[test]
    fn requests_are_classified_by_kind_and_verb() {
        let apply = Some("application/apply-patch+yaml");
        assert_eq!(
            classify(
                &Method::PATCH,
                "/apis/apps/v1/namespaces/ns/deployments/agent",
                apply
            ),
            write("Deployment", "apply")
        );
        assert_eq!(
            classify(
                &Method::PATCH,
                "/apis/fastagentic.io/v1alpha1/namespaces/ns/fastagentics/agent/status",
                apply
            ),
            write("FastAgentic/status", "apply")
        );
        assert_eq!(
            classify(
                &Method::DELETE,
                "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/agent",
                None
            ),
            write("PodDisruptionBudget", "delete")
        );
        assert_eq!(
            classify(
                &Method::POST,
                "/apis/events.k8s.io/v1/namespaces/ns/events",
                None
            ),
            write("Event", "create")
        );
        assert_eq!(
            classify(
                &Method::PATCH,
                "/apis/events.k8s.io/v1/namespaces/ns/events/agent.17f",
                Some("application/merge-patch+json")
            ),
            write("Event", "patch")
        );
        assert_eq!(
            classify(&Method::PUT, "/api/v1/namespaces/ns/services/agent", None),
            write("Service", "update")
        );
        assert_eq!(
            classify(&Method::POST, "/api/v1/namespaces", None),
            write("namespaces", "create")
        );
        assert_eq!(
            classify(
                &Method::GET,
                "/apis/apps/v1/namespaces/ns/deployments/agent",
                None
            ),
            None,
            "a read is not a write"
        );
    }
}
