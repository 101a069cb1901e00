//! Durable runs: what `POST /chat`, `POST /chat/stream` and `GET /runs/{run_id}` do, without
//! HTTP (the handlers are in [`crate::server::routes`], the error answers in [`crate::error`]).
//!
//! One path for every run: [`Runs::begin`] → the agent → [`Runs::finish`], which records the
//! outcome; `chat` waits for it, `stream` forwards chunks as [`StreamEvent`]s.
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
//! A client that disconnects does not leave the run `running` forever: `chat` runs the agent in
//! the request's own task and moves it to a task of its own when the request is dropped
//! (`detach`), and `stream` drives it on a task from the start; either way the outcome is
//! recorded. During a graceful shutdown the response (and so the store write before it)
//! completes before the process exits.
//!
//! A streamed run may last longer than `--run-stale-after` in total (`--stream-idle-timeout`
//! bounds each wait for a chunk; `--run-max-duration`, unlimited by default, the whole stream),
//! so while it streams its attempt sends a heartbeat every stale-after / 3 (see
//! [`crate::store::RunStore::heartbeat`]) and is not taken over while its process lives.
//! Heartbeats run beside the stream and never delay a chunk; a failed one is logged as
//! `run_heartbeat_failed` and the stream goes on. A non-streamed run needs none: it is one wait
//! on the agent, bounded by `--agent-first-byte-timeout` (or a shorter `--run-max-duration`),
//! which is below stale-after. The limits are the agent's ([`crate::agents::Timed`]): one that
//! fires is an agent error, so the run is recorded `failed` like any other.
//!
//! An attempt records its outcome under its attempt number. When another request took the run
//! over meanwhile (this attempt was slow, not dead), the store refuses the write: the answer is
//! 409 `run_superseded`, the event `run_superseded` is logged, and the record stays the other
//! attempt's. A heartbeat refused that way is logged as `run_superseded` (once; the attempt
//! stops sending them); its stream goes on and ends with that `run_superseded` error event.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::agent::{Agent, AgentError, AgentRequest};
use crate::metrics::{Counters, RunEvent};
use crate::store::{
    Begin, DurableStoreKind, Outcome, Payload, RunId, RunRecord, RunStore, StoreError, TakenOver,
};

mod answer;
mod background;
mod detach;
mod drive;
mod events;
mod heartbeat;
mod id;
mod resume;
mod webhook;

use answer::StoredOutput;
pub use answer::{Answer, AnswerBody};
pub use background::Submitted;
use detach::{Detachable, Panicked};
use events::replay_events;
pub use events::{Failure, RunEvents, StreamEvent};
pub use id::{BadRunId, resolve_run_id};
pub use webhook::Webhook;

/// Chunks buffered between a streaming run and its (possibly slow) client.
const STREAM_BUFFER: usize = 64;

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
    /// Set when this process drains and its streams must end (see [`Runs::wrap_up`]).
    pub wrap_up: Arc<watch::Sender<bool>>,
    /// Attempts this process drives as streams now.
    pub driving: Arc<std::sync::atomic::AtomicUsize>,
    /// Where finished background runs are reported (`--run-webhook-url`).
    pub webhook: Option<Arc<Webhook>>,
}

/// Counts an attempt as driven while it lives.
struct Driving(Arc<std::sync::atomic::AtomicUsize>);

impl Driving {
    fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Drop for Driving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Why a run gave no answer; [`crate::error`] turns each into its HTTP error.
#[derive(Debug)]
pub enum RunError {
    /// The run id of the request is unusable.
    BadRunId(BadRunId),
    /// Another attempt is running the run.
    StillRunning(RunRecord),
    /// The store failed, or refused to record a superseded attempt's outcome.
    Store(StoreError),
    /// The agent failed; the run is recorded `failed`.
    Agent {
        /// The agent's error.
        error: AgentError,
        /// The run.
        run_id: RunId,
    },
    /// The task running the agent died (a panic); the run is recorded `failed`.
    TaskFailed {
        /// The run.
        run_id: RunId,
    },
    /// A `Last-Event-ID` that is not an event of the run (HTTP 400).
    BadEventId(crate::store::events::BadEventId),
    /// The events after the client's `Last-Event-ID` are no longer kept (HTTP 410).
    EventsExpired {
        /// The run.
        run_id: RunId,
        /// The last event the client has.
        after: u64,
    },
    /// `GET /runs/{run_id}` of a run the store does not hold.
    NotFound {
        /// The run.
        run_id: RunId,
        /// The store asked.
        store: DurableStoreKind,
    },
}

/// A begun attempt: the request (with its run id set), the attempt number its outcome is
/// recorded under, and how it began.
struct Attempt {
    request: AgentRequest,
    run_id: RunId,
    number: u32,
    /// It took over a stalled attempt, whose logged output it continues.
    taken_over: bool,
    /// A background run (`POST /runs`): its outcome goes to the webhook.
    background: bool,
}

/// What the store decided at `begin`.
enum Begun {
    /// Run the agent.
    Fresh(Attempt),
    /// A completed run: replay its record.
    Completed(RunRecord),
}

/// Resolves when this process wraps up its streams ([`Runs::wrap_up`]).
async fn wrapped_up(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, before anything else awaits.
    let _ = rx.wait_for(|w| *w).await.map(drop);
}

/// Logs that the store refused to record the outcome of a taken-over attempt.
fn log_superseded(run_id: &RunId, attempt: u32, operation: &str) {
    tracing::warn!(event = "run_superseded", run_id = %run_id, attempt, operation);
}

impl Runs {
    /// Counts a begun attempt, and logs the takeover when it replaced a stalled one.
    fn note_started(&self, run_id: &RunId, record: &RunRecord, taken_over: Option<&TakenOver>) {
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
    }

    /// Ends this process's streams: each attempt it drives releases its run and each stream
    /// ends with [`StreamEvent::Resume`]. Called when a drain is about to reach its deadline.
    pub fn wrap_up(&self) {
        self.wrap_up.send_replace(true);
    }

    /// Resolves once this process drives no attempt (polled: only a drain waits on it).
    pub async fn idle(&self) {
        while self.driving.load(std::sync::atomic::Ordering::Acquire) > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Resolves the run id and asks the store to begin the run.
    async fn begin(&self, mut request: AgentRequest, key: Option<&str>) -> Result<Begun, RunError> {
        let run_id = resolve_run_id(request.run_id.as_deref(), key).map_err(RunError::BadRunId)?;
        request.run_id = Some(run_id.to_string());
        let input = Payload::of(&request);
        let begun = self
            .store
            .begin_as(&run_id, &input, &self.instance_id, false)
            .await;
        match begun {
            Ok(Begin::Started(record, taken_over)) => {
                self.note_started(&run_id, &record, taken_over.as_ref());
                Ok(Begun::Fresh(Attempt {
                    request,
                    run_id,
                    number: record.attempts,
                    taken_over: taken_over.is_some(),
                    background: false,
                }))
            }
            Ok(Begin::AlreadyCompleted(record)) => {
                self.counters.run_event(RunEvent::Replayed);
                Ok(Begun::Completed(record))
            }
            Ok(Begin::StillRunning(record)) => Err(RunError::StillRunning(record)),
            Err(e) => {
                tracing::warn!(event = "run_begin_failed", run_id = %run_id, error = %e);
                Err(RunError::Store(e))
            }
        }
    }

    /// Records the outcome of an attempt: `completed` with the output, or `failed`.
    async fn finish(
        &self,
        run_id: &RunId,
        attempt: u32,
        result: Result<Payload, AgentError>,
    ) -> Result<Payload, RunError> {
        let output = match result {
            Ok(output) => output,
            Err(error) => return Err(self.fail(run_id, attempt, error).await),
        };
        let outcome = Outcome::Completed(&output);
        match self.store.finish(run_id, attempt, outcome).await {
            Ok(_) => {
                self.counters.run_event(RunEvent::Completed);
                Ok(output)
            }
            Err(e) => {
                match &e {
                    StoreError::Superseded { .. } => log_superseded(run_id, attempt, "complete"),
                    _ => tracing::warn!(event = "run_record_failed", run_id = %run_id, error = %e),
                }
                Err(RunError::Store(e))
            }
        }
    }

    /// Records a failed attempt; the error to answer with is the agent's, unless the store
    /// refused the write because another attempt took the run over.
    async fn fail(&self, run_id: &RunId, attempt: u32, error: AgentError) -> RunError {
        let text = format!("{}: {}", error.code(), error.message);
        match self.record_failure(run_id, attempt, &text).await {
            Some(superseded) => RunError::Store(superseded),
            None => RunError::Agent {
                error,
                run_id: run_id.clone(),
            },
        }
    }

    /// Records a failed run. A store failure is logged (the answer stays the agent's error),
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

    /// Records that the agent task died, and says so.
    async fn task_failed(&self, run_id: &RunId, attempt: u32, error: String) -> RunError {
        // A superseded attempt was already logged by `record_failure`; the answer is the 500
        // either way.
        let _ = self
            .record_failure(run_id, attempt, "the agent task failed")
            .await;
        tracing::error!(event = "run_task_failed", run_id = %run_id, error = %error);
        RunError::TaskFailed {
            run_id: run_id.clone(),
        }
    }

    /// `POST /chat`: runs the agent (or replays the stored answer) and records the outcome
    /// before answering.
    pub async fn chat(&self, request: AgentRequest, key: Option<&str>) -> Result<Answer, RunError> {
        let attempt = match self.begin(request, key).await? {
            Begun::Fresh(attempt) => attempt,
            Begun::Completed(record) => {
                return Ok(Answer {
                    output: record.output.unwrap_or_else(|| Payload::of(&Value::Null)),
                    run_id: record.run_id,
                    replayed: true,
                });
            }
        };
        let (run_id, number) = (attempt.run_id.clone(), attempt.number);
        let this = self.clone();
        // Polled here; on a task of its own if the client goes away first, so that the run is
        // recorded all the same (see `detach`).
        let work = Detachable::new(async move {
            let result = this.agent.run(attempt.request).await;
            let result =
                result.map(|reply| StoredOutput::of_reply(&reply, this.agent.name()).payload());
            this.finish(&attempt.run_id, attempt.number, result).await
        });
        match work.await {
            Ok(result) => result.map(|output| Answer {
                output,
                run_id: run_id.to_string(),
                replayed: false,
            }),
            Err(Panicked(error)) => Err(self.task_failed(&run_id, number, error).await),
        }
    }

    /// `POST /chat/stream`: the run's events as the agent produces them (or the stored answer
    /// as one chunk). An agent that fails before its first chunk is an error here; a failure
    /// later ends the events with [`StreamEvent::Failed`]. The events are logged (see
    /// [`drive`]), so the stream can be resumed with [`Runs::resume`].
    pub async fn stream(
        &self,
        request: AgentRequest,
        key: Option<&str>,
    ) -> Result<RunEvents, RunError> {
        let attempt = match self.begin(request, key).await? {
            Begun::Fresh(attempt) => attempt,
            Begun::Completed(record) => return Ok(replay_events(record)),
        };
        let (run_id, number) = (attempt.run_id.clone(), attempt.number);
        let (opened_tx, opened_rx) = oneshot::channel::<Result<(), RunError>>();
        let (tx, rx) = mpsc::channel::<StreamEvent>(STREAM_BUFFER);
        // Its own task: the stream is consumed and the run recorded even if the client goes
        // away (sends to a gone client are ignored).
        tokio::spawn(self.clone().drive(attempt, Some(tx), Some(opened_tx)));
        match opened_rx.await {
            Ok(Ok(())) => Ok(RunEvents {
                run_id: run_id.to_string(),
                replayed: false,
                events: rx,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                let error = "the stream task ended before the stream opened".to_owned();
                Err(self.task_failed(&run_id, number, error).await)
            }
        }
    }

    /// `GET /runs/{run_id}`.
    pub async fn get(&self, id: &str) -> Result<RunRecord, RunError> {
        let run_id =
            RunId::parse(id).map_err(|e| RunError::BadRunId(BadRunId(format!("run_id: {e}"))))?;
        match self.store.get(&run_id).await {
            Ok(Some(record)) => Ok(record),
            Ok(None) => Err(RunError::NotFound {
                run_id,
                store: self.store.kind(),
            }),
            Err(e) => Err(RunError::Store(e)),
        }
    }
}

#[cfg(test)]
mod tests;
