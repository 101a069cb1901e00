//! The HTTP application: routes, handlers and the tower layer stack.
//!
//! The whole stack is visible in [`app`]: from the outside in,
//! instance header → request tracking (metrics, in-flight, `request_completed` log) →
//! JSON error bodies → panic catcher → router; the agent routes additionally sit behind the
//! concurrency guard and the request body limit, the probes (`/health`, `/ready`,
//! `/metrics`) do not.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body::{Frame, SizeHint};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::agent::Agent;
use crate::metrics::Counters;
use crate::runs::Runs;
use crate::services::{Pools, ReadinessCheck};

/// Response header carrying the instance id.
pub const INSTANCE_HEADER: &str = "x-fastagentic-instance";
/// Seconds a rejected client is told to wait.
pub const RETRY_AFTER_SECS: u64 = 1;
/// Time limit of one readiness check.
pub const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Shared state of one worker's HTTP application.
pub struct AppState {
    /// Instance id (pod name in Kubernetes).
    pub instance_id: String,
    /// Title reported by `/health`.
    pub title: String,
    /// Effective configuration reported by `/metrics`.
    pub config_json: serde_json::Value,
    /// `--max-concurrent` (per worker), for the capacity `/metrics` reports.
    pub max_concurrent: Option<NonZeroU32>,
    /// This process's metrics (they read the pod's).
    pub counters: Arc<Counters>,
    /// Prometheus registry of this process.
    pub registry: Registry,
    /// Set when shutdown began: `/ready` answers 503.
    pub draining: AtomicBool,
    /// The agent backend.
    pub agent: Arc<dyn Agent>,
    /// Durable runs (store + agent) behind `/chat`, `/chat/stream` and `/runs/{run_id}`.
    pub runs: Runs,
    /// This worker's pools, for `/metrics`.
    pub pools: Pools,
    /// Readiness checks.
    pub checks: Vec<Arc<dyn ReadinessCheck>>,
    /// Permits of the concurrency limit (`None`: unlimited).
    pub limiter: Option<Arc<Semaphore>>,
    /// Requests now being served, for the shutdown log.
    pub in_flight: InFlight,
    /// Called with the number of requests this process has answered.
    pub on_answered: Option<Box<dyn Fn(u64) + Send + Sync>>,
}

/// Registry of in-flight requests (method, path, start), for logging what a shutdown cuts.
#[derive(Debug, Default)]
pub struct InFlight {
    next: AtomicU64,
    map: Mutex<HashMap<u64, (Method, String, Instant)>>,
}

impl InFlight {
    fn insert(&self, method: Method, path: String) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.map.lock() {
            m.insert(id, (method, path, Instant::now()));
        }
        id
    }

    fn remove(&self, id: u64) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&id);
        }
    }

    /// `(method, path, running for)` of each in-flight request.
    pub fn list(&self) -> Vec<(String, String, Duration)> {
        self.map
            .lock()
            .map(|m| {
                m.values()
                    .map(|(me, p, t)| (me.to_string(), p.clone(), t.elapsed()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Marks a response refused by the concurrency guard.
#[derive(Debug, Clone, Copy)]
struct Rejected;

/// Builds the application with its layer stack.
pub fn app(
    state: Arc<AppState>,
    extra_routes: Router,
    max_body: usize,
    test_routes: bool,
) -> Router {
    let probes = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state.clone());

    let mut agent_routes = Router::new()
        .route("/chat", post(chat))
        .route("/chat/stream", post(chat_stream))
        .route("/runs/{run_id}", get(get_run));
    if test_routes {
        agent_routes = agent_routes.route("/__test/panic", post(panic_route));
    }
    let agent_routes = agent_routes
        .with_state(state.clone())
        .merge(extra_routes)
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    concurrency_guard,
                ))
                .layer(RequestBodyLimitLayer::new(max_body)),
        );

    let instance = HeaderValue::from_str(&state.instance_id)
        .unwrap_or_else(|_| HeaderValue::from_static("invalid-instance-id"));
    probes.merge(agent_routes).fallback(not_found).layer(
        ServiceBuilder::new()
            .layer(SetResponseHeaderLayer::overriding(
                HeaderName::from_static(INSTANCE_HEADER),
                instance,
            ))
            .layer(middleware::from_fn_with_state(state, track_request))
            .layer(middleware::from_fn(json_errors))
            .layer(CatchPanicLayer::custom(panic_response)),
    )
}

/// A JSON error body.
pub fn json_error(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "message": message, "status": status.as_u16()})),
    )
        .into_response()
}

// ---- layers ----

/// Counts, logs and tracks each request until its response body is finished.
async fn track_request(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let id = st.in_flight.insert(method.clone(), path.clone());
    let mut guard = Completion {
        st: st.clone(),
        id,
        start: Instant::now(),
        method,
        path,
        status: None,
    };
    let resp = next.run(req).await;
    let status = resp.status();
    let rejected = resp.extensions().get::<Rejected>().is_some();
    let answered = st
        .counters
        .response_started(&guard.path, status.as_u16(), rejected);
    if let Some(f) = &st.on_answered {
        f(answered);
    }
    guard.status = Some(status.as_u16());
    resp.map(|b| Body::new(GuardedBody::new(b, guard)))
}

/// Ends a request's tracking when dropped (body finished, or request abandoned).
struct Completion {
    st: Arc<AppState>,
    id: u64,
    start: Instant,
    method: Method,
    path: String,
    status: Option<u16>,
}

impl Drop for Completion {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        self.st.counters.request_finished(elapsed);
        self.st.in_flight.remove(self.id);
        // 499: the client went away before a response was produced.
        let status = self.status.unwrap_or(499);
        tracing::info!(
            event = "request_completed",
            instance_id = %self.st.instance_id,
            method = %self.method,
            path = %self.path,
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
        );
    }
}

/// Takes a permit without waiting; holds it until the response body is finished.
async fn concurrency_guard(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let permit = match &st.limiter {
        None => None,
        Some(sem) => match sem.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => return too_many_requests(),
        },
    };
    let in_flight = st.counters.enter();
    next.run(req)
        .await
        .map(|b| Body::new(GuardedBody::new(b, (permit, in_flight))))
}

/// The seed's response when the limit is reached.
pub fn too_many_requests() -> Response {
    let mut resp = (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
        Json(json!({
            "error": "Service temporarily unavailable",
            "message": "Too many concurrent requests",
            "retry_after": RETRY_AFTER_SECS,
        })),
    )
        .into_response();
    resp.extensions_mut().insert(Rejected);
    resp
}

/// Turns every error response without a JSON body into one.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(resp.headers()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("Error");
    let detail = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if detail.is_empty() {
        reason.to_owned()
    } else {
        detail
    };
    let body = json!({"error": reason, "message": message, "status": status.as_u16()});
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body.to_string()))
}

fn is_json(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn panic_response(_err: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    // The panic itself is logged by the panic hook (see `logging`).
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal Server Error",
        "the request handler failed",
    )
}

/// A response body that holds `G` (a permit, a tracking guard) until the body is finished
/// or dropped.
pub struct GuardedBody<G> {
    inner: Body,
    guard: Option<G>,
}

impl<G> GuardedBody<G> {
    /// Wraps `inner`.
    pub fn new(inner: Body, guard: G) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl<G: Send + Unpin + 'static> http_body::Body for GuardedBody<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let res = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                this.guard.take();
            }
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => {
                this.guard.take();
            }
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// ---- handlers ----

async fn health(State(st): State<Arc<AppState>>) -> Response {
    Json(json!({
        "status": "healthy",
        "version": env!("CARGO_PKG_VERSION"),
        "title": st.title,
        "instance_id": st.instance_id,
    }))
    .into_response()
}

async fn ready(State(st): State<Arc<AppState>>) -> Response {
    let draining = st.draining.load(Ordering::Acquire);
    let mut checks = serde_json::Map::new();
    checks.insert("app".into(), (!draining).into());
    let results = futures::future::join_all(st.checks.iter().map(|c| async move {
        let ok = tokio::time::timeout(READY_CHECK_TIMEOUT, c.check())
            .await
            .unwrap_or(false);
        (c.name(), ok)
    }))
    .await;
    for (name, ok) in results {
        checks.insert(name.into(), ok.into());
    }
    let is_ready = checks.values().all(|v| v.as_bool() == Some(true));
    let status = if is_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({"ready": is_ready, "checks": checks, "instance_id": st.instance_id});
    if draining {
        body["draining"] = true.into();
    }
    (status, Json(body)).into_response()
}

/// Which exposition a scrape asked for.
fn wants_prometheus(h: &HeaderMap) -> Option<&'static str> {
    let accept = h.get(header::ACCEPT).and_then(|v| v.to_str().ok())?;
    if accept.contains("application/openmetrics-text") {
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    } else if accept.contains("text/plain") {
        Some("text/plain; version=0.0.4; charset=utf-8")
    } else {
        None
    }
}

async fn metrics(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(content_type) = wants_prometheus(&headers) {
        st.counters.set_pools(st.pools.metrics());
        let mut out = String::new();
        let res = if content_type.starts_with("application/openmetrics") {
            prometheus_client::encoding::text::encode(&mut out, &st.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &st.registry)
        };
        return match res {
            Ok(()) => ([(header::CONTENT_TYPE, content_type)], out).into_response(),
            Err(_) => json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                "metrics encoding failed",
            ),
        };
    }
    st.counters.set_pools(st.pools.metrics());
    let snapshot = st.counters.pod_snapshot();
    Json(snapshot.to_json(
        &st.instance_id,
        st.max_concurrent,
        st.config_json.clone(),
        st.counters.process_json(),
    ))
    .into_response()
}

async fn chat(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    st.runs.chat(&headers, &body).await
}

async fn chat_stream(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    st.runs.chat_stream(&headers, &body).await
}

async fn get_run(
    State(st): State<Arc<AppState>>,
    axum::extract::Path(run_id): axum::extract::Path<String>,
) -> Response {
    st.runs.get(&run_id).await
}

async fn panic_route() -> Response {
    panic!("deliberate panic from the test route")
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "Not Found",
        &format!("no route for {method} {}", uri.path()),
    )
}
