//! Errors as HTTP answers: the one place that decides an error's status and JSON body.
//!
//! Every error response of the runtime is an [`ApiError`]:
//! `{"error": code, "message": text, "status": n, ...extra}` with the status that fits, and
//! `Retry-After` where waiting helps (a full pool). The instance header is added to every
//! response, errors included, by the outermost layer of the application
//! ([`crate::server::http::app`]). The domain modules (`store`, `pools`, `agents`, `runs`)
//! know nothing about HTTP; the conversions from their errors are here.
//!
//! The concurrency limit's 503 keeps the seed's own body (see [`crate::server::limiter`]).

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::agent::{AgentError, AgentErrorKind};
use crate::pools::PoolError;
use crate::runs::{BadRunId, RunError};
use crate::store::StoreError;

/// Seconds a client is told to wait (`Retry-After`) before retrying a 503.
pub const RETRY_AFTER_SECS: u64 = 1;

/// An error answer: status, machine-readable `error` code, human-readable `message`, extra
/// fields, and whether `Retry-After` applies.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `error` field: a stable code (`run_not_found`) or the status's reason phrase.
    pub error: String,
    /// The `message` field.
    pub message: String,
    /// Fields added to the body (`run_id`, `field`, ...).
    pub extra: Map<String, Value>,
    /// Sends `Retry-After: RETRY_AFTER_SECS`.
    pub retry_after: bool,
}

impl ApiError {
    /// An error with `status`, `error` code and `message`.
    pub fn new(status: StatusCode, error: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            message: message.into(),
            extra: Map::new(),
            retry_after: false,
        }
    }

    /// An error whose `error` field is the status's reason phrase (`"Bad Request"`).
    pub fn plain(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(
            status,
            status.canonical_reason().unwrap_or("Error"),
            message,
        )
    }

    /// Adds a body field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "error": self.error,
            "message": self.message,
            "status": self.status.as_u16(),
        });
        if let Some(b) = body.as_object_mut() {
            b.extend(self.extra.clone());
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body())).into_response();
        if self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        resp
    }
}

/// The status an agent failure answers with.
pub fn agent_status(kind: AgentErrorKind) -> StatusCode {
    match kind {
        AgentErrorKind::Unavailable | AgentErrorKind::BadResponse => StatusCode::BAD_GATEWAY,
        AgentErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
    }
}

/// 503 (with `Retry-After`) when a pool handed out no connection in time or its server is
/// down; 500 for a configuration error, which is the operator's fault.
impl From<&PoolError> for ApiError {
    fn from(e: &PoolError) -> Self {
        let status = match e {
            PoolError::Exhausted { .. } | PoolError::Unavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            PoolError::Config { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut err = Self::new(status, e.code(), e.to_string());
        err.retry_after = status == StatusCode::SERVICE_UNAVAILABLE;
        err
    }
}

impl From<&StoreError> for ApiError {
    fn from(e: &StoreError) -> Self {
        let status = match e {
            StoreError::Pool(p) => return p.into(),
            StoreError::Superseded { run_id, attempt } => {
                return Self::new(
                    StatusCode::CONFLICT,
                    "run_superseded",
                    format!(
                        "run {run_id} was taken over by another attempt after this one (attempt \
                         {attempt}) stalled; this attempt's result was not recorded; GET \
                         /runs/{run_id} for the run's current state"
                    ),
                )
                .with("run_id", run_id.as_str())
                .with("attempt", *attempt);
            }
            StoreError::Backend { .. } => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Corrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::NotRunning { .. } => StatusCode::CONFLICT,
        };
        Self::new(status, "durable_store_error", e.to_string())
    }
}

impl From<&AgentError> for ApiError {
    fn from(e: &AgentError) -> Self {
        Self::new(agent_status(e.kind), e.code(), e.message.as_str())
    }
}

impl From<&BadRunId> for ApiError {
    fn from(e: &BadRunId) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_run_id", e.0.as_str()).with("field", "run_id")
    }
}

impl From<&RunError> for ApiError {
    fn from(e: &RunError) -> Self {
        match e {
            RunError::BadRunId(b) => b.into(),
            RunError::StillRunning(record) => Self::new(
                StatusCode::CONFLICT,
                "run_in_progress",
                format!(
                    "run {} is still running (last updated {} on {}); retry later or GET \
                     /runs/{}",
                    record.run_id, record.updated_at, record.instance_id, record.run_id
                ),
            )
            .with("run_id", record.run_id.as_str())
            .with("run_status", json!(record.status))
            .with("run", json!(record)),
            RunError::Store(s) => s.into(),
            RunError::Agent { error, run_id } => ApiError::from(error)
                .with("run_id", run_id.as_str())
                .with("run_status", "failed"),
            RunError::TaskFailed { run_id } => {
                ApiError::plain(StatusCode::INTERNAL_SERVER_ERROR, "the agent task failed")
                    .with("run_id", run_id.as_str())
            }
            RunError::BadEventId(e) => {
                Self::new(StatusCode::BAD_REQUEST, "bad_last_event_id", e.to_string())
            }
            RunError::EventsExpired { run_id, after } => Self::new(
                StatusCode::GONE,
                "events_expired",
                format!(
                    "the events of run {run_id} after {} are no longer kept \
                     (--stream-events-max, --stream-events-ttl); GET /runs/{run_id} has its \
                     record",
                    crate::store::events::event_id(run_id.as_str(), *after)
                ),
            )
            .with("run_id", run_id.as_str()),
            RunError::NotFound { run_id, store } => Self::new(
                StatusCode::NOT_FOUND,
                "run_not_found",
                format!("no run {run_id} in the {store} store"),
            )
            .with("run_id", run_id.as_str()),
        }
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        (&e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pool_errors_answer_503_with_retry_after_or_500() {
        let exhausted = PoolError::Exhausted {
            pool: "redis",
            waited: Duration::from_millis(5),
        };
        let e = ApiError::from(&exhausted);
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.error, "redis_pool_exhausted");
        assert!(e.retry_after);
        let resp = e.into_response();
        assert_eq!(
            resp.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from(RETRY_AFTER_SECS))
        );
        let config = PoolError::Config {
            pool: "database",
            reason: "bad url".into(),
        };
        let e = ApiError::from(&config);
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.retry_after);
    }

    #[test]
    fn store_errors_map_to_statuses() {
        let cases = [
            (StoreError::NotFound("r".into()), StatusCode::NOT_FOUND),
            (
                StoreError::Superseded {
                    run_id: "r".into(),
                    attempt: 1,
                },
                StatusCode::CONFLICT,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(ApiError::from(&e).status, status, "{e:?}");
        }
        let superseded = ApiError::from(&StoreError::Superseded {
            run_id: "r".into(),
            attempt: 2,
        });
        assert_eq!(superseded.error, "run_superseded");
        assert_eq!(superseded.body()["attempt"], 2);
        assert_eq!(superseded.body()["run_id"], "r");
    }

    #[test]
    fn agent_failures_are_502_or_504() {
        assert_eq!(
            agent_status(AgentErrorKind::Unavailable),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            agent_status(AgentErrorKind::BadResponse),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            agent_status(AgentErrorKind::Timeout),
            StatusCode::GATEWAY_TIMEOUT
        );
        let e = ApiError::from(&AgentError::new(AgentErrorKind::Timeout, "slow"));
        assert_eq!(
            e.body(),
            json!({"error": "agent_timeout", "message": "slow", "status": 504})
        );
    }

    #[test]
    fn extra_fields_join_the_body() {
        let e = ApiError::plain(StatusCode::BAD_REQUEST, "no").with("field", "run_id");
        assert_eq!(
            e.body(),
            json!({"error": "Bad Request", "message": "no", "status": 400, "field": "run_id"})
        );
    }
}
