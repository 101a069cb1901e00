//! The handlers of streamed and background runs: `POST /chat/stream`, `GET /runs/{run_id}/stream`
//! and `POST /runs`. Run logic is in [`crate::runs`].
//!
//! Every logged event carries the SSE id `<run_id>:<seq>`; a client resumes with
//! `GET /runs/{run_id}/stream` and `Last-Event-ID` (or `?last_event_id=`, for clients that
//! cannot set the header on their first request).

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{IdempotencyKey, JsonBody};
use super::handlers::replayed;
use super::http::AppState;
use crate::agent::AgentRequest;
use crate::error::ApiError;
use crate::runs::{Failure, RunError, RunEvents, StreamEvent, Submitted};
use crate::store::StoreError;
use crate::store::events::event_id;

/// The header a resuming client names its last event in.
pub const LAST_EVENT_ID: &str = "last-event-id";

/// `POST /chat/stream`: server-sent events `data: {"delta": ...}`, then `event: done`
/// (`{"run_id", "replayed"}`) or `event: error`; see [`sse_events`] for the others.
pub async fn chat_stream(
    State(st): State<Arc<AppState>>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<AgentRequest>,
) -> Result<Response, ApiError> {
    let events = st.runs.stream(request, key.as_deref()).await?;
    let was_replayed = events.replayed;
    let resp = st.with_heartbeat(Sse::new(sse_events(events)));
    Ok(if was_replayed { replayed(resp) } else { resp })
}

/// The query of `GET /runs/{run_id}/stream`.
#[derive(Debug, Deserialize)]
pub struct ResumeQuery {
    /// Same as the `Last-Event-ID` header, which wins when both are given.
    last_event_id: Option<String>,
}

/// `GET /runs/{run_id}/stream`: the run's events after `Last-Event-ID`, following the run
/// until it ends.
pub async fn run_stream(
    State(st): State<Arc<AppState>>,
    Path(run_id): Path<String>,
    Query(query): Query<ResumeQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let header = match headers.get(LAST_EVENT_ID) {
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_last_event_id",
                "Last-Event-ID is not visible ASCII; accepted: an id this runtime sent, \
                 \"<run_id>:<number>\"",
            )
        })?),
        None => None,
    };
    let last = header.or(query.last_event_id.as_deref());
    let events = st.runs.resume(&run_id, last).await?;
    let was_replayed = events.replayed;
    let resp = st.with_heartbeat(Sse::new(sse_events(events)));
    Ok(if was_replayed { replayed(resp) } else { resp })
}

/// `POST /runs`: 202 with the run's URLs once the run is recorded (it goes on here, in the
/// background); 200 with the record when the run id exists already.
pub async fn submit_run(
    State(st): State<Arc<AppState>>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<AgentRequest>,
) -> Result<Response, ApiError> {
    let (status, record) = match st.runs.submit(request, key.as_deref()).await? {
        Submitted::Accepted(record) => (StatusCode::ACCEPTED, record),
        Submitted::Existing(record) => (StatusCode::OK, record),
    };
    let url = format!("/runs/{}", record.run_id);
    let mut body = serde_json::to_value(&record).unwrap_or(Value::Null);
    body["url"] = url.clone().into();
    body["stream_url"] = format!("{url}/stream").into();
    let mut resp = (status, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&url) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    Ok(resp)
}

/// A run's events as SSE events (see the module docs): `data` for a delta, `event: reset`
/// (`{"output"}`: the whole output so far), `event: done`, `event: error`, and `event: resume`
/// (`{"run_id", "last_event_id", "url"}`) when this process drains and the client must
/// reconnect to resume.
fn sse_events(events: RunEvents) -> impl Stream<Item = Result<Event, Infallible>> {
    let RunEvents { run_id, events, .. } = events;
    futures::stream::unfold(events, move |mut rx| {
        let run_id = run_id.clone();
        async move {
            let with_id = |event: Event, seq: Option<u64>| match seq {
                Some(seq) => event.id(event_id(&run_id, seq)),
                None => event,
            };
            let event = match rx.recv().await? {
                StreamEvent::Delta { seq, text } => with_id(
                    Event::default().data(json!({"delta": text}).to_string()),
                    seq,
                ),
                StreamEvent::Reset { seq, text } => with_id(
                    Event::default()
                        .event("reset")
                        .data(json!({"output": text}).to_string()),
                    seq,
                ),
                StreamEvent::Done {
                    run_id: id,
                    replayed,
                    seq,
                } => with_id(
                    Event::default()
                        .event("done")
                        .data(json!({"run_id": id, "replayed": replayed}).to_string()),
                    seq,
                ),
                StreamEvent::Failed {
                    run_id: id,
                    error,
                    seq,
                } => with_id(
                    Event::default()
                        .event("error")
                        .data(stream_error(&id, &error).to_string()),
                    seq,
                ),
                StreamEvent::Resume { run_id: id, last } => Event::default().event("resume").data(
                    json!({
                        "run_id": id,
                        "last_event_id": last.map(|s| event_id(&id, s)),
                        "url": format!("/runs/{id}/stream"),
                    })
                    .to_string(),
                ),
            };
            Some((Ok(event), rx))
        }
    })
}

/// The `event: error` data of a stream that failed after it began: the agent's error, or
/// the store's (`run_superseded`, `durable_store_error`) when the outcome was not recorded, or
/// the error recorded on the run.
fn stream_error(run_id: &str, e: &Failure) -> Value {
    let (code, message) = match e {
        Failure::Run(RunError::Agent { error, .. }) => {
            (error.code().to_owned(), error.message.clone())
        }
        Failure::Run(RunError::Store(s @ StoreError::Superseded { .. })) => {
            ("run_superseded".into(), s.to_string())
        }
        Failure::Run(RunError::Store(s)) => ("durable_store_error".into(), s.to_string()),
        Failure::Run(other) => {
            let api = ApiError::from(other);
            (api.error, api.message)
        }
        Failure::Recorded(text) => match text.split_once(": ") {
            Some((code, message)) => (code.to_owned(), message.to_owned()),
            None => ("run_failed".to_owned(), text.clone()),
        },
    };
    json!({"error": code, "message": message, "run_id": run_id})
}
