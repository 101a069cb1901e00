//! `--max-concurrent`: where the limit is enforced.
//!
//! The agent routes sit behind [`Limiter::guard`]: it takes a permit without waiting, or
//! answers the seed's 503 (`Retry-After: 1`, `{"error": "Service temporarily unavailable",
//! "message": "Too many concurrent requests", "retry_after": 1}`). The permit (and the
//! in-flight gauge) is held by the response body until its last byte is sent, so a stream
//! counts for as long as it streams. The limit is per worker process; probes (`/health`,
//! `/ready`, `/metrics`) are never limited.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::json;
use tokio::sync::Semaphore;

use super::body::GuardedBody;
use crate::error::RETRY_AFTER_SECS;
use crate::metrics::Counters;

/// Marks a response refused by the limiter (counted as rejected).
#[derive(Debug, Clone, Copy)]
pub struct Rejected;

/// The concurrency limit of one worker process.
#[derive(Clone)]
pub struct Limiter {
    /// Permits (`None`: unlimited).
    permits: Option<Arc<Semaphore>>,
    /// Where admitted requests are counted in flight.
    counters: Arc<Counters>,
}

impl Limiter {
    /// A limiter over `permits` (`None`: unlimited) counting into `counters`.
    pub fn new(permits: Option<Arc<Semaphore>>, counters: Arc<Counters>) -> Self {
        Self { permits, counters }
    }

    /// Middleware: takes a permit without waiting; holds it until the response body is
    /// finished.
    pub async fn guard(State(limiter): State<Limiter>, req: Request, next: Next) -> Response {
        let permit = match &limiter.permits {
            None => None,
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => return too_many_requests(),
            },
        };
        let in_flight = limiter.counters.enter();
        next.run(req)
            .await
            .map(|b| Body::new(GuardedBody::new(b, (permit, in_flight))))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_the_seeds_503() {
        let resp = too_many_requests();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        assert!(resp.extensions().get::<Rejected>().is_some());
    }
}
