//! The HTTP routes the runtime serves, in one table.
//!
//! [`Route::ALL`] gives each route's router path pattern, HTTP method, metric label and whether
//! the concurrency limit applies to it. The metrics take their route dimension from it (its
//! order is the order of the `fastagentic_http_requests_total` samples, of the `/metrics` JSON
//! and of the route words in a metrics slot), and the router is built from it
//! ([`crate::server::http::app`]), so adding a route is one edit here (plus its handler in the
//! router's exhaustive `match`): a variant before [`Route::Other`] and its row at the same place.
//! Adding or moving a row changes the metrics slot's layout: give the slot a new format magic
//! (`metrics::slot`, whose layout test fails until then).

use axum::routing::MethodFilter;
use fastagentic_contract::path;

/// A route of the HTTP server, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /chat`: one agent turn.
    Chat,
    /// `POST /chat/stream`: one agent turn as server-sent events.
    ChatStream,
    /// `GET /health`: liveness.
    Health,
    /// `GET /ready`: readiness.
    Ready,
    /// `GET /metrics`: JSON or Prometheus text.
    Metrics,
    /// `GET /runs/{run_id}`: a durable run.
    Run,
    /// `POST /runs`: a background run.
    Submit,
    /// `GET /runs/{run_id}/stream`: a run's events, resumable.
    RunStream,
    /// Anything else; stays last.
    Other,
}

/// Whether the concurrency limit applies to a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Outside the limit and not counted in flight: answered even when the worker is full.
    Probe,
    /// Behind the limit (refused with 503 when the worker is full) and counted in flight.
    Agent,
    /// No router entry of its own ([`Route::Other`]): the not-found fallback answers outside
    /// the limit; routes merged in from elsewhere (`Services::extra_routes`, the test routes)
    /// sit behind it.
    Unrouted,
}

/// One row of [`Route::ALL`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteInfo {
    /// The route.
    pub route: Route,
    /// axum path pattern; `None` for [`Route::Other`], which has no router entry.
    pub path: Option<&'static str>,
    /// The method the route answers; `None`: any (the fallback).
    pub method: Option<MethodFilter>,
    /// The `path` label of the route's request metrics.
    pub label: &'static str,
    /// Whether the concurrency limit applies.
    pub access: Access,
}

impl Route {
    /// Every route, once, in metric order; [`Route::Other`] last.
    pub const ALL: &'static [RouteInfo] = &[
        RouteInfo {
            route: Route::Chat,
            path: Some("/chat"),
            method: Some(MethodFilter::POST),
            label: "/chat",
            access: Access::Agent,
        },
        RouteInfo {
            route: Route::ChatStream,
            path: Some("/chat/stream"),
            method: Some(MethodFilter::POST),
            label: "/chat/stream",
            access: Access::Agent,
        },
        RouteInfo {
            route: Route::Health,
            path: Some(path::HEALTH),
            method: Some(MethodFilter::GET),
            label: path::HEALTH,
            access: Access::Probe,
        },
        RouteInfo {
            route: Route::Ready,
            path: Some(path::READY),
            method: Some(MethodFilter::GET),
            label: path::READY,
            access: Access::Probe,
        },
        RouteInfo {
            route: Route::Metrics,
            path: Some(path::METRICS),
            method: Some(MethodFilter::GET),
            label: path::METRICS,
            access: Access::Probe,
        },
        RouteInfo {
            route: Route::Run,
            path: Some("/runs/{run_id}"),
            method: Some(MethodFilter::GET),
            label: "/runs",
            access: Access::Agent,
        },
        RouteInfo {
            route: Route::Submit,
            path: Some("/runs"),
            method: Some(MethodFilter::POST),
            label: "POST /runs",
            access: Access::Agent,
        },
        RouteInfo {
            route: Route::RunStream,
            path: Some("/runs/{run_id}/stream"),
            method: Some(MethodFilter::GET),
            label: "/runs/{run_id}/stream",
            access: Access::Agent,
        },
        RouteInfo {
            route: Route::Other,
            path: None,
            method: None,
            label: "other",
            access: Access::Unrouted,
        },
    ];

    /// Number of routes (the metrics' route dimension).
    pub const COUNT: usize = Self::ALL.len();

    /// The route a request path is counted under: the first row of [`Route::ALL`] whose
    /// pattern matches, else [`Route::Other`]. A capture matches one path segment, empty or
    /// not: `/runs/` counts as `/runs` (the router answers it with 404), `/runs/a/b` as other.
    pub fn of_path(path: &str) -> Route {
        Self::ALL
            .iter()
            .find(|r| r.matches(path))
            .map_or(Route::Other, |r| r.route)
    }

    /// Position in [`Route::ALL`] (and in the metrics' route dimension).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// This route's row of [`Route::ALL`].
    pub const fn info(self) -> &'static RouteInfo {
        &Self::ALL[self.index()]
    }

    /// The `path` label of this route's request metrics.
    pub const fn label(self) -> &'static str {
        self.info().label
    }
}

impl RouteInfo {
    /// Whether a request path is counted under this row (see [`Route::of_path`]).
    fn matches(&self, path: &str) -> bool {
        let Some(pattern) = self.path else {
            return false;
        };
        if !pattern.contains('{') {
            return path == pattern;
        }
        let mut want = pattern.split('/');
        let mut got = path.split('/');
        loop {
            match (want.next(), got.next()) {
                (None, None) => return true,
                (Some(w), Some(g)) if w == g || w.starts_with('{') => {}
                _ => return false,
            }
        }
    }
}

// Each row sits at its route's position, and `Other` is last, so every route has a row.
const _: () = {
    let mut i = 0;
    while i < Route::COUNT {
        assert!(Route::ALL[i].route as usize == i);
        i += 1;
    }
    assert!(Route::Other as usize == Route::COUNT - 1);
};

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// A request path for a row's pattern (captures filled in).
    fn example(pattern: &str) -> String {
        pattern.replace("{run_id}", "run-1")
    }

    #[test]
    fn every_path_maps_to_its_route() {
        for info in Route::ALL {
            let Some(pattern) = info.path else {
                assert_eq!(info.route, Route::Other);
                continue;
            };
            assert_eq!(Route::of_path(&example(pattern)), info.route, "{pattern}");
            assert_eq!(info.route.info(), info);
        }
        for (path, route) in [
            ("/runs/", Route::Run),
            ("/runs/a/b", Route::Other),
            ("/runs/a/stream/x", Route::Other),
            ("/runs", Route::Submit),
            ("/chat/", Route::Other),
            ("/chat/stream/x", Route::Other),
            ("/healthz", Route::Other),
            ("/", Route::Other),
            ("", Route::Other),
            ("/__test/panic", Route::Other),
        ] {
            assert_eq!(Route::of_path(path), route, "{path:?}");
        }
    }

    #[test]
    fn labels_and_patterns_are_unique() {
        let labels: HashSet<_> = Route::ALL.iter().map(|r| r.label).collect();
        assert_eq!(labels.len(), Route::COUNT);
        let patterns: HashSet<_> = Route::ALL.iter().filter_map(|r| r.path).collect();
        assert_eq!(
            patterns.len(),
            Route::COUNT - 1,
            "every route but Other has one"
        );
    }

    /// The metrics keep one row per route in table order, and a slot's layout depends on it:
    /// this order and these labels are what `/metrics` has always shown.
    #[test]
    fn table_order_is_metric_order() {
        let labels: Vec<_> = Route::ALL.iter().map(|r| r.label).collect();
        assert_eq!(
            labels,
            [
                "/chat",
                "/chat/stream",
                "/health",
                "/ready",
                "/metrics",
                "/runs",
                "POST /runs",
                "/runs/{run_id}/stream",
                "other"
            ]
        );
        for (i, info) in Route::ALL.iter().enumerate() {
            assert_eq!(info.route.index(), i);
            assert_eq!(info.route.label(), info.label);
        }
        assert_eq!(crate::metrics::ROUTES, labels.as_slice());
    }

    #[test]
    fn probes_are_the_health_readiness_and_metrics_routes() {
        let probes: Vec<_> = Route::ALL
            .iter()
            .filter(|r| r.access == Access::Probe)
            .map(|r| r.route)
            .collect();
        assert_eq!(probes, [Route::Health, Route::Ready, Route::Metrics]);
        let unrouted: Vec<_> = Route::ALL
            .iter()
            .filter(|r| r.access == Access::Unrouted || r.path.is_none() || r.method.is_none())
            .map(|r| r.route)
            .collect();
        assert_eq!(unrouted, [Route::Other]);
    }

    /// A router built from the table answers each row's method and example path with that
    /// row's handler, and only that method.
    #[tokio::test]
    async fn the_table_builds_a_router() {
        use axum::body::Body;
        use http::{Method, Request, StatusCode};
        use tower::ServiceExt;

        let mut router = axum::Router::new();
        for info in Route::ALL {
            if let (Some(path), Some(method)) = (info.path, info.method) {
                let label = info.label;
                router = router.route(
                    path,
                    axum::routing::on(method, move || async move { label }),
                );
            }
        }
        for info in Route::ALL {
            let Some(pattern) = info.path else { continue };
            let method = if info.method == Some(MethodFilter::POST) {
                Method::POST
            } else {
                Method::GET
            };
            let other = if method == Method::POST {
                Method::GET
            } else {
                Method::POST
            };
            let request = |m: Method| {
                Request::builder()
                    .method(m)
                    .uri(example(pattern))
                    .body(Body::empty())
            };
            let resp = router
                .clone()
                .oneshot(request(method).expect("request"))
                .await
                .expect("infallible");
            assert_eq!(resp.status(), StatusCode::OK, "{pattern}");
            let body = axum::body::to_bytes(resp.into_body(), 1024)
                .await
                .expect("body");
            assert_eq!(body, info.label.as_bytes());
            let resp = router
                .clone()
                .oneshot(request(other).expect("request"))
                .await
                .expect("infallible");
            assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{pattern}");
        }
    }
}
