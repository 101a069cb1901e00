//! Durable runs over HTTP: `POST /chat`, `POST /chat/stream` and `GET /runs/{run_id}`.
//!
//! Every agent request is a run with an id: the body's `run_id`, else the `Idempotency-Key`
//! header, else a generated one. When both are given they must be equal (400 otherwise: two
//! different keys for one request is a client bug, and silently picking one could replay the
//! wrong run). The store's atomic `begin` decides what happens:
//!
//! - started: the agent runs, and the run is recorded `completed` (with the agent's answer) or
//!   `failed` (with the error) *before* the response is sent;
//! - already completed: the stored answer is returned without running the agent, marked with
//!   `"replayed": true` and the header `X-FastAgentic-Replayed: true`;
//! - still running: 409 with the run's record;
//! - stalled (running, not updated for longer than `--run-stale-after`: its process died): taken
//!   over like a new run, with the warning event `run_taken_over`.
//!
//! The agent call runs in its own task, so a client that disconnects does not leave the run
//! `running` forever: the task still records the outcome. During a graceful shutdown the
//! response (and so the store write before it) completes before the process exits.
//!
//! A streamed run may last longer than `--run-stale-after` in total (`--agent-timeout` bounds
//! each wait for a chunk, not the stream), so while it streams its attempt sends a heartbeat
//! every stale-after / 3 (see [`crate::store::RunStore::heartbeat`]) and is not taken over while
//! its process lives. Heartbeats run beside the stream and never delay a chunk; a failed one is
//! logged as `run_heartbeat_failed` and the stream goes on. A non-streamed run needs none: it is
//! one wait on the agent, bounded by `--agent-timeout`, which is below stale-after.
//!
//! An attempt records its outcome under its attempt number. When another request took the run
//! over meanwhile (this attempt was slow, not dead), the store refuses the write: the answer is
//! 409 `run_superseded`, the event `run_superseded` is logged, and the record stays the other
//! attempt's. A heartbeat refused that way is logged as `run_superseded` (once; the attempt
//! stops sending them); its stream goes on and ends with that `run_superseded` error event.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::agent::{Agent, AgentError, AgentReply, AgentRequest};
use crate::metrics::{Counters, RunEvent};
use crate::pools::PoolError;
use crate::store::{Begin, RunId, RunRecord, RunStore, StoreError};

/// Request header accepted as the run id.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Response header set (to `true`) on an answer served from the store.
pub const REPLAYED_HEADER: &str = "x-fastagentic-replayed";
/// Chunks buffered between a streaming run and its (possibly slow) client.
const STREAM_BUFFER: usize = 64;
/// Shortest heartbeat period, whatever the stale-after.
const MIN_HEARTBEAT_PERIOD: Duration = Duration::from_millis(10);

/// What a run needs: the store, the agent, and where to count.
#[derive(Clone)]
pub struct Runs {
    /// The durable store.
    pub store: Arc<dyn RunStore>,
    /// The agent backend.
    pub agent: Arc<dyn Agent>,
    /// Instance id recorded with each run.
    pub instance_id: String,
    /// Run counters.
    pub counters: Arc<Counters>,
}

/// Why a request's run id was refused (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRunId(pub String);

/// Picks the run id of a request (see the module docs). Pure.
pub fn resolve_run_id(body: Option<&str>, header: Option<&str>) -> Result<RunId, BadRunId> {
    let parse =
        |source: &str, id: &str| RunId::parse(id).map_err(|e| BadRunId(format!("{source}: {e}")));
    match (body, header) {
        (Some(b), Some(h)) if b != h => Err(BadRunId(format!(
            "run_id {:?} and the Idempotency-Key header {:?} differ; send one, or the same \
             value in both",
            b.chars().take(40).collect::<String>(),
            h.chars().take(40).collect::<String>(),
        ))),
        (Some(b), _) => parse("run_id", b),
        (None, Some(h)) => parse("run_id (Idempotency-Key header)", h),
        (None, None) => Ok(RunId::generate()),
    }
}

/// A JSON error body with a machine-readable `error` code.
fn error_json(status: StatusCode, error: &str, message: &str, extra: Value) -> Response {
    let mut body = json!({"error": error, "message": message, "status": status.as_u16()});
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    (status, Json(body)).into_response()
}

/// 503 (with `Retry-After`) or 500 for a pool that handed out no connection, e.g.
/// `{"error": "redis_pool_exhausted", ...}`.
pub fn pool_error_response(e: &PoolError) -> Response {
    let status = StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = error_json(status, &e.code(), &e.to_string(), Value::Null);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(crate::server::http::RETRY_AFTER_SECS),
        );
    }
    resp
}

/// The response for a store failure.
pub fn store_error_response(e: &StoreError) -> Response {
    match e {
        StoreError::Pool(p) => pool_error_response(p),
        StoreError::Superseded { run_id, attempt } => error_json(
            StatusCode::CONFLICT,
            "run_superseded",
            &format!(
                "run {run_id} was taken over by another attempt after this one (attempt \
                 {attempt}) stalled; this attempt's result was not recorded; GET /runs/{run_id} \
                 for the run's current state"
            ),
            json!({"run_id": run_id, "attempt": attempt}),
        ),
        other => {
            let status = StatusCode::from_u16(other.status_code())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error_json(
                status,
                "durable_store_error",
                &other.to_string(),
                Value::Null,
            )
        }
    }
}

fn agent_error_response(e: &AgentError, run_id: &RunId) -> Response {
    error_json(
        e.status,
        &e.error,
        &e.message,
        json!({"run_id": run_id, "run_status": "failed"}),
    )
}

fn bad_run_id_response(e: &BadRunId) -> Response {
    error_json(
        StatusCode::BAD_REQUEST,
        "invalid_run_id",
        &e.0,
        json!({"field": "run_id"}),
    )
}

fn still_running_response(record: &RunRecord) -> Response {
    error_json(
        StatusCode::CONFLICT,
        "run_in_progress",
        &format!(
            "run {} is still running (last updated {} on {}); retry later or GET /runs/{}",
            record.run_id, record.updated_at, record.instance_id, record.run_id
        ),
        json!({"run_id": record.run_id, "run_status": record.status, "run": record}),
    )
}

fn parse_request(body: &Bytes) -> Result<AgentRequest, Box<Response>> {
    serde_json::from_slice::<AgentRequest>(body).map_err(|e| {
        Box::new(crate::server::http::json_error(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            &format!("expected a JSON body {{\"message\": string, ...}}: {e}"),
        ))
    })
}

/// What is stored as a completed run's output: the agent's answer without the run id.
fn output_value(reply: &AgentReply, agent: &str) -> Value {
    let mut v = json!({"output": reply.output, "agent": agent});
    if let Some(o) = v.as_object_mut() {
        for (k, x) in &reply.extra {
            o.entry(k.clone()).or_insert_with(|| x.clone());
        }
    }
    v
}

/// The answer body: the stored output plus run id, answering instance and replay flag.
fn answer_body(output: &Value, run_id: &str, instance_id: &str, replayed: bool) -> Value {
    let mut body = match output {
        Value::Object(_) => output.clone(),
        other => json!({"output": other}),
    };
    body["run_id"] = run_id.into();
    body["instance_id"] = instance_id.into();
    body["replayed"] = replayed.into();
    body
}

fn replayed(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        HeaderName::from_static(REPLAYED_HEADER),
        HeaderValue::from_static("true"),
    );
    resp
}

/// The `event: error` data of a stream whose outcome the store did not record.
fn store_error_event(e: &StoreError, run_id: &RunId) -> Value {
    let code = match e {
        StoreError::Superseded { .. } => "run_superseded",
        _ => "durable_store_error",
    };
    json!({"error": code, "message": e.to_string(), "run_id": run_id})
}

/// Logs that the store refused to record the outcome of a taken-over attempt.
fn log_superseded(run_id: &RunId, attempt: u32, operation: &str) {
    tracing::warn!(event = "run_superseded", run_id = %run_id, attempt, operation);
}

/// How often a streaming attempt sends a heartbeat: a third of the store's stale-after, so two
/// may be lost or late before the run counts as stalled.
fn heartbeat_period(stale_after: Duration) -> Duration {
    (stale_after / 3).max(MIN_HEARTBEAT_PERIOD)
}

/// The heartbeat of one streaming attempt: its own task, so a slow store or a slow client never
/// holds up the other. Stopped (and waited for) before the attempt records its outcome, so no
/// heartbeat races the finish; dropped (a panicking stream task), it stops as well.
struct Heartbeat {
    /// Dropping it stops the task.
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Heartbeat {
    fn start(store: Arc<dyn RunStore>, run_id: RunId, attempt: u32) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let period = heartbeat_period(store.stale_after());
        let task = tokio::spawn(async move {
            // The first tick is one period from now: `begin` has just stamped the record.
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = ticks.tick() => {}
                }
                match store.heartbeat(&run_id, attempt).await {
                    Ok(()) => {}
                    Err(StoreError::Superseded { .. }) => {
                        // Every later heartbeat would be refused too: the run is another
                        // attempt's now. The stream goes on; its finish is refused as well.
                        log_superseded(&run_id, attempt, "heartbeat");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(event = "run_heartbeat_failed", run_id = %run_id, attempt, error = %e);
                    }
                }
            }
        });
        Self { stop, task }
    }

    /// Stops the heartbeat and waits for one in flight to finish.
    async fn stop(self) {
        drop(self.stop);
        let _ = self.task.await;
    }
}

/// The parsed request, its run id, and what the store decided.
enum Admission {
    /// Run it: the request (with its run id set), and the attempt to record its outcome under.
    Run(AgentRequest, RunId, u32),
    /// Answer with this response (replay, conflict, or error).
    Answer(Response),
    /// A completed run: its record.
    Replay(RunRecord),
}

impl Runs {
    async fn admit(&self, headers: &HeaderMap, body: &Bytes) -> Admission {
        let mut request = match parse_request(body) {
            Ok(r) => r,
            Err(resp) => return Admission::Answer(*resp),
        };
        let header = headers.get(IDEMPOTENCY_KEY).map(|v| v.to_str());
        let header = match header {
            Some(Ok(h)) => Some(h),
            Some(Err(_)) => {
                return Admission::Answer(bad_run_id_response(&BadRunId(
                    "run_id (Idempotency-Key header): not visible ASCII".to_owned(),
                )));
            }
            None => None,
        };
        let run_id = match resolve_run_id(request.run_id.as_deref(), header) {
            Ok(id) => id,
            Err(e) => return Admission::Answer(bad_run_id_response(&e)),
        };
        request.run_id = Some(run_id.to_string());
        let input = serde_json::to_value(&request).unwrap_or(Value::Null);
        match self.store.begin(&run_id, &input, &self.instance_id).await {
            Ok(Begin::Started(record, taken_over)) => {
                self.counters.run_event(RunEvent::Started);
                if let Some(previous) = taken_over {
                    self.counters.run_event(RunEvent::TakenOver);
                    tracing::warn!(
                        event = "run_taken_over",
                        run_id = %run_id,
                        previous_instance_id = %previous.instance_id,
                        previous_attempts = previous.attempts,
                        attempt = record.attempts,
                    );
                }
                Admission::Run(request, run_id, record.attempts)
            }
            Ok(Begin::AlreadyCompleted(record)) => {
                self.counters.run_event(RunEvent::Replayed);
                Admission::Replay(record)
            }
            Ok(Begin::StillRunning(record)) => Admission::Answer(still_running_response(&record)),
            Err(e) => {
                tracing::warn!(event = "run_begin_failed", run_id = %run_id, error = %e);
                Admission::Answer(store_error_response(&e))
            }
        }
    }

    /// Records a failed run. A store failure is logged (the response stays the agent's error),
    /// except a superseded attempt, which is returned: the run is another attempt's now.
    async fn record_failure(
        &self,
        run_id: &RunId,
        attempt: u32,
        error: &str,
    ) -> Option<StoreError> {
        match self.store.fail(run_id, attempt, error).await {
            Err(e @ StoreError::Superseded { .. }) => {
                log_superseded(run_id, attempt, "fail");
                Some(e)
            }
            result => {
                self.counters.run_event(RunEvent::Failed);
                if let Err(e) = result {
                    tracing::warn!(event = "run_record_failed", run_id = %run_id, error = %e);
                }
                None
            }
        }
    }

    /// `POST /chat`.
    pub async fn chat(&self, headers: &HeaderMap, body: &Bytes) -> Response {
        let (request, run_id, attempt) = match self.admit(headers, body).await {
            Admission::Run(r, id, attempt) => (r, id, attempt),
            Admission::Answer(resp) => return resp,
            Admission::Replay(record) => {
                let output = record.output.unwrap_or(Value::Null);
                let body = answer_body(&output, &record.run_id, &self.instance_id, true);
                return replayed(Json(body).into_response());
            }
        };
        let this = self.clone();
        let id = run_id.clone();
        // Its own task: the run is recorded even if the client goes away meanwhile.
        let task = tokio::spawn(async move {
            match this.agent.run(request).await {
                Ok(reply) => {
                    let output = output_value(&reply, this.agent.name());
                    match this.store.complete(&id, attempt, &output).await {
                        Ok(_) => {
                            this.counters.run_event(RunEvent::Completed);
                            Ok(output)
                        }
                        Err(e) => {
                            if matches!(e, StoreError::Superseded { .. }) {
                                log_superseded(&id, attempt, "complete");
                            }
                            Err(Err(e))
                        }
                    }
                }
                Err(e) => {
                    let error = format!("{}: {}", e.error, e.message);
                    match this.record_failure(&id, attempt, &error).await {
                        Some(superseded) => Err(Err(superseded)),
                        None => Err(Ok(e)),
                    }
                }
            }
        });
        match task.await {
            Ok(Ok(output)) => Json(answer_body(
                &output,
                run_id.as_str(),
                &self.instance_id,
                false,
            ))
            .into_response(),
            Ok(Err(Ok(agent_error))) => agent_error_response(&agent_error, &run_id),
            Ok(Err(Err(store_error))) => {
                // A superseded attempt was logged where the store refused it.
                if !matches!(store_error, StoreError::Superseded { .. }) {
                    tracing::warn!(event = "run_record_failed", run_id = %run_id, error = %store_error);
                }
                store_error_response(&store_error)
            }
            Err(join) => {
                // A superseded attempt was already logged by `record_failure`; the answer is
                // the 500 either way.
                let _ = self
                    .record_failure(&run_id, attempt, "the agent task failed")
                    .await;
                tracing::error!(event = "run_task_failed", run_id = %run_id, error = %join);
                error_json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                    "the agent task failed",
                    json!({"run_id": run_id}),
                )
            }
        }
    }

    /// `POST /chat/stream`: server-sent events `data: {"delta": ...}`, then `event: done`
    /// (`{"run_id", "replayed"}`) or `event: error`.
    pub async fn chat_stream(&self, headers: &HeaderMap, body: &Bytes) -> Response {
        let (request, run_id, attempt) = match self.admit(headers, body).await {
            Admission::Run(r, id, attempt) => (r, id, attempt),
            Admission::Answer(resp) => return resp,
            Admission::Replay(record) => {
                let text = record
                    .output
                    .as_ref()
                    .and_then(|o| o.get("output"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let done = json!({"run_id": record.run_id, "replayed": true}).to_string();
                let events = futures::stream::iter([
                    Event::default().data(json!({"delta": text}).to_string()),
                    Event::default().event("done").data(done),
                ])
                .map(Ok::<_, std::convert::Infallible>);
                return replayed(Sse::new(events).into_response());
            }
        };
        let (opened_tx, opened_rx) = oneshot::channel::<Result<(), Response>>();
        let (tx, rx) = mpsc::channel::<Event>(STREAM_BUFFER);
        let this = self.clone();
        let id = run_id.clone();
        // Its own task, like `chat`: the stream is consumed and the run recorded even if the
        // client goes away (sends to a gone client are ignored).
        tokio::spawn(async move {
            let mut chunks = match this.agent.stream(request).await {
                Ok(s) => {
                    let _ = opened_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let error = format!("{}: {}", e.error, e.message);
                    let resp = match this.record_failure(&id, attempt, &error).await {
                        Some(superseded) => store_error_response(&superseded),
                        None => agent_error_response(&e, &id),
                    };
                    let _ = opened_tx.send(Err(resp));
                    return;
                }
            };
            // Keeps the run from being taken over while it streams (see the module docs).
            let heartbeat = Heartbeat::start(this.store.clone(), id.clone(), attempt);
            let mut text = String::new();
            while let Some(chunk) = chunks.next().await {
                match chunk {
                    Ok(delta) => {
                        text.push_str(&delta);
                        let _ = tx
                            .send(Event::default().data(json!({"delta": delta}).to_string()))
                            .await;
                    }
                    Err(e) => {
                        heartbeat.stop().await;
                        let error = format!("{}: {}", e.error, e.message);
                        let data = match this.record_failure(&id, attempt, &error).await {
                            Some(superseded) => store_error_event(&superseded, &id),
                            None => json!({"error": e.error, "message": e.message, "run_id": id}),
                        };
                        let _ = tx
                            .send(Event::default().event("error").data(data.to_string()))
                            .await;
                        return;
                    }
                }
            }
            heartbeat.stop().await;
            let output = json!({"output": text, "agent": this.agent.name()});
            let last = match this.store.complete(&id, attempt, &output).await {
                Ok(_) => {
                    this.counters.run_event(RunEvent::Completed);
                    Event::default()
                        .event("done")
                        .data(json!({"run_id": id, "replayed": false}).to_string())
                }
                Err(e) => {
                    match &e {
                        StoreError::Superseded { .. } => log_superseded(&id, attempt, "complete"),
                        _ => tracing::warn!(event = "run_record_failed", run_id = %id, error = %e),
                    }
                    let data = store_error_event(&e, &id);
                    Event::default().event("error").data(data.to_string())
                }
            };
            let _ = tx.send(last).await;
        });
        match opened_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(resp)) => return resp,
            Err(_) => {
                return error_json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                    "the agent task failed",
                    json!({"run_id": run_id}),
                );
            }
        }
        let events =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
                .map(Ok::<_, std::convert::Infallible>);
        Sse::new(events).into_response()
    }

    /// `GET /runs/{run_id}`.
    pub async fn get(&self, id: &str) -> Response {
        let run_id = match RunId::parse(id) {
            Ok(id) => id,
            Err(e) => return bad_run_id_response(&BadRunId(format!("run_id: {e}"))),
        };
        match self.store.get(&run_id).await {
            Ok(Some(record)) => Json(record).into_response(),
            Ok(None) => error_json(
                StatusCode::NOT_FOUND,
                "run_not_found",
                &format!("no run {run_id} in the {} store", self.store.kind()),
                json!({"run_id": run_id}),
            ),
            Err(e) => store_error_response(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_comes_from_body_or_header_and_they_must_agree() {
        assert_eq!(
            resolve_run_id(Some("a-1"), None).map(|r| r.to_string()),
            Ok("a-1".to_owned())
        );
        assert_eq!(
            resolve_run_id(None, Some("h-1")).map(|r| r.to_string()),
            Ok("h-1".to_owned())
        );
        assert_eq!(
            resolve_run_id(Some("same"), Some("same")).map(|r| r.to_string()),
            Ok("same".to_owned())
        );
        let conflict = resolve_run_id(Some("a"), Some("b"));
        assert!(
            matches!(&conflict, Err(BadRunId(m)) if m.contains("differ")),
            "{conflict:?}"
        );
        let bad = resolve_run_id(Some("has space"), None);
        assert!(
            matches!(&bad, Err(BadRunId(m)) if m.starts_with("run_id")),
            "{bad:?}"
        );
        let bad = resolve_run_id(None, Some("x/y"));
        assert!(
            matches!(&bad, Err(BadRunId(m)) if m.contains("Idempotency-Key")),
            "{bad:?}"
        );
        let generated = resolve_run_id(None, None).map(|r| r.to_string());
        assert!(
            matches!(&generated, Ok(id) if id.starts_with("run-")),
            "{generated:?}"
        );
    }

    #[test]
    fn heartbeats_come_every_third_of_the_stale_after() {
        assert_eq!(
            heartbeat_period(Duration::from_secs(300)),
            Duration::from_secs(100)
        );
        assert_eq!(
            heartbeat_period(Duration::from_millis(1500)),
            Duration::from_millis(500)
        );
        assert_eq!(
            heartbeat_period(Duration::from_millis(1)),
            MIN_HEARTBEAT_PERIOD
        );
    }

    fn id(name: &str) -> RunId {
        match RunId::parse(name) {
            Ok(id) => id,
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn a_heartbeat_keeps_a_long_attempt_from_being_taken_over() {
        use crate::store::MemoryRunStore;
        let stale = Duration::from_millis(300);
        let store: Arc<dyn RunStore> = Arc::new(MemoryRunStore::new(stale));
        let run = id("long");
        let begun = store.begin(&run, &json!({}), "a").await;
        assert!(matches!(begun, Ok(Begin::Started(_, None))), "{begun:?}");
        let heartbeat = Heartbeat::start(store.clone(), run.clone(), 1);
        for _ in 0..4 {
            tokio::time::sleep(stale / 2).await;
            let again = store.begin(&run, &json!({}), "b").await;
            assert!(
                matches!(&again, Ok(Begin::StillRunning(r)) if r.attempts == 1),
                "{again:?}"
            );
        }
        heartbeat.stop().await;
        tokio::time::sleep(stale + stale / 2).await;
        let taken = store.begin(&run, &json!({}), "b").await;
        assert!(
            matches!(&taken, Ok(Begin::Started(r, Some(_))) if r.attempts == 2),
            "without heartbeats the run is stalled: {taken:?}"
        );

        // Attempt 1's heartbeat is refused now: it stops by itself, changing nothing.
        let before = store.get(&run).await.ok().flatten();
        let superseded = Heartbeat::start(store.clone(), run.clone(), 1);
        tokio::time::sleep(stale).await;
        assert!(superseded.task.is_finished(), "stops once superseded");
        assert_eq!(store.get(&run).await.ok().flatten(), before);

        // Any other failure is retried at the next tick.
        let unknown = Heartbeat::start(store.clone(), id("unknown"), 1);
        tokio::time::sleep(stale).await;
        assert!(!unknown.task.is_finished(), "keeps trying after an error");
        unknown.stop().await;
    }

    #[test]
    fn answers_carry_the_run_id_and_replay_flag() {
        let reply = AgentReply {
            output: "hi".into(),
            run_id: Some("r".into()),
            extra: serde_json::Map::from_iter([("tokens".to_owned(), json!(3))]),
        };
        let out = output_value(&reply, "echo");
        assert_eq!(out, json!({"output": "hi", "agent": "echo", "tokens": 3}));
        let body = answer_body(&out, "r", "pod-1", true);
        assert_eq!(body["run_id"], "r");
        assert_eq!(body["replayed"], true);
        assert_eq!(body["instance_id"], "pod-1");
        assert_eq!(body["output"], "hi");
    }
}
