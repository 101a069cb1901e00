//! The HTTP application: routes, handlers and the tower layer stack.
//!
//! The whole stack is visible in [`app`]: from the outside in,
//! request tracking (metrics, in-flight, `request_completed` log, JSON error bodies, the
//! instance header: one middleware) → panic catcher → router; the agent routes additionally sit behind the
//! concurrency limit ([`super::limiter`]) and the request body limit, the probes
//! (`/health`, `/ready`, `/metrics`) do not. The handlers are in [`super::handlers`].

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, post};
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;

use super::body::GuardedBody;
use super::limiter::{Limiter, Rejected};
use super::{handlers, streams};
use crate::agent::Agent;
use crate::error::ApiError;
use crate::metrics::Counters;
use crate::routes::{Access, Route};
use crate::runs::Runs;
use crate::services::{Pools, ReadinessCheck};

/// Response header carrying the instance id.
pub const INSTANCE_HEADER: &str = fastagentic_contract::header::INSTANCE;
/// Time limit of one readiness check.
pub const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Text of the SSE comment a quiet stream sends (`: keep-alive`).
pub const STREAM_HEARTBEAT_TEXT: &str = "keep-alive";

/// Shared state of one worker's HTTP application.
pub struct AppState {
    /// Instance id (pod name in Kubernetes).
    pub instance_id: String,
    /// Title reported by `/health`.
    pub title: String,
    /// The `/health` body, made once (nothing in it changes while the process runs).
    pub health_body: std::sync::OnceLock<axum::body::Bytes>,
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
    /// `--stream-heartbeat` (`None`: off).
    pub stream_heartbeat: Option<Duration>,
}

impl AppState {
    /// `sse` as the response, with a `: keep-alive` comment after every `--stream-heartbeat`
    /// without an event (when it is on), so proxies do not cut a quiet stream.
    pub fn with_heartbeat<S, E>(&self, sse: Sse<S>) -> Response
    where
        S: futures::Stream<Item = Result<Event, E>> + Send + 'static,
        E: Into<axum::BoxError>,
    {
        match self.stream_heartbeat {
            Some(every) => sse
                .keep_alive(KeepAlive::new().interval(every).text(STREAM_HEARTBEAT_TEXT))
                .into_response(),
            None => sse.into_response(),
        }
    }
}

/// Registry of in-flight requests (method, path, start), for logging what a shutdown cuts.
#[derive(Debug, Default)]
pub struct InFlight {
    next: AtomicU64,
    map: Mutex<HashMap<u64, (Method, Uri, Instant)>>,
}

impl InFlight {
    fn insert(&self, method: Method, uri: Uri, start: Instant) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.map.lock() {
            m.insert(id, (method, uri, start));
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
                    .map(|(me, u, t)| (me.to_string(), u.path().to_owned(), t.elapsed()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Builds the application with its layer stack.
pub fn app(
    state: Arc<AppState>,
    extra_routes: Router,
    max_body: usize,
    test_routes: bool,
) -> Router {
    // One router entry per row of the route table, on the side of the limit the row says.
    let mut probes = Router::new();
    let mut agent_routes = Router::new();
    for info in Route::ALL {
        let (Some(path), Some(method)) = (info.path, info.method) else {
            continue;
        };
        let handler = match info.route {
            Route::Chat => on(method, handlers::chat),
            Route::ChatStream => on(method, streams::chat_stream),
            Route::Health => on(method, handlers::health),
            Route::Ready => on(method, handlers::ready),
            Route::Metrics => on(method, handlers::metrics),
            Route::Run => on(method, handlers::get_run),
            Route::Submit => on(method, streams::submit_run),
            Route::RunStream => on(method, streams::run_stream),
            Route::Other => continue,
        };
        match info.access {
            Access::Probe => probes = probes.route(path, handler),
            Access::Agent | Access::Unrouted => agent_routes = agent_routes.route(path, handler),
        }
    }
    let probes = probes.with_state(state.clone());
    if test_routes {
        agent_routes = agent_routes.route("/__test/panic", post(handlers::panic_route));
    }
    let limiter = Limiter::new(state.limiter.clone(), state.counters.clone());
    let agent_routes = agent_routes
        .with_state(state.clone())
        .merge(extra_routes)
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(limiter, Limiter::guard))
                .layer(RequestBodyLimitLayer::new(max_body)),
        );

    let instance = HeaderValue::from_str(&state.instance_id)
        .unwrap_or_else(|_| HeaderValue::from_static("invalid-instance-id"));
    let outer = Outer {
        st: state,
        instance,
    };
    probes
        .merge(agent_routes)
        .fallback(handlers::not_found)
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(outer, track_request))
                .layer(CatchPanicLayer::custom(panic_response)),
        )
}

// ---- layers ----

/// State of the outermost layer: the app's state and the instance header's value.
#[derive(Clone)]
struct Outer {
    st: Arc<AppState>,
    instance: HeaderValue,
}

/// The outermost layer, one middleware for what every response gets: counts, logs and tracks
/// the request until its response body is finished, gives an error without a JSON body one
/// ([`json_errors`]), and sets the instance header.
async fn track_request(State(outer): State<Outer>, req: Request, next: Next) -> Response {
    let Outer { st, instance } = outer;
    let method = req.method().clone();
    // A URI shares the request's buffer: cloning it copies no path.
    let uri = req.uri().clone();
    let start = Instant::now();
    let id = st.in_flight.insert(method.clone(), uri.clone(), start);
    let mut guard = Completion {
        st: st.clone(),
        id,
        start,
        method,
        uri,
        status: None,
    };
    let mut resp = json_errors(next.run(req).await).await;
    resp.headers_mut()
        .insert(HeaderName::from_static(INSTANCE_HEADER), instance);
    let status = resp.status();
    let rejected = resp.extensions().get::<Rejected>().is_some();
    let answered = st
        .counters
        .response_started(guard.uri.path(), status.as_u16(), rejected);
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
    uri: Uri,
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
            path = %self.uri.path(),
            status,
            // In whole microseconds: `0.059`, not `0.059188000000000004`.
            duration_ms = elapsed.as_micros() as f64 / 1000.0,
        );
    }
}

/// Turns every error response without a JSON body into one.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(resp.headers()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .unwrap_or_default();
    let detail = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if detail.is_empty() {
        status.canonical_reason().unwrap_or("Error").to_owned()
    } else {
        detail
    };
    let body = ApiError::plain(status, message).body();
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
    ApiError::plain(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the request handler failed",
    )
    .into_response()
}
