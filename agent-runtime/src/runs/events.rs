//! What a streamed run sends its client: [`StreamEvent`]s, made into server-sent events by
//! [`crate::server::streams`].

use serde_json::Value;
use tokio::sync::mpsc;

use super::RunError;
use crate::store::RunRecord;

/// One event of a streamed run. `seq` is its number in the run's event log (the SSE id
/// `<run_id>:<seq>`); `None` for an event that is not logged (a replay of a stored answer, or
/// an append the store failed).
#[derive(Debug)]
pub enum StreamEvent {
    /// A chunk of output.
    Delta {
        /// Its number.
        seq: Option<u64>,
        /// The text.
        text: String,
    },
    /// The output so far is `text`, replacing what the client has (see [`crate::store::events`]).
    Reset {
        /// Its number.
        seq: Option<u64>,
        /// The whole output so far.
        text: String,
    },
    /// The run completed (and is recorded), or was replayed.
    Done {
        /// The run.
        run_id: String,
        /// Served from the store.
        replayed: bool,
        /// Its number.
        seq: Option<u64>,
    },
    /// The run failed after it began streaming; the stream ends here.
    Failed {
        /// The run.
        run_id: String,
        /// Why.
        error: Failure,
        /// Its number.
        seq: Option<u64>,
    },
    /// This process is draining and ends the stream: the client resumes with
    /// `GET /runs/{run_id}/stream` and `Last-Event-ID` set to `last` (from the start without).
    Resume {
        /// The run.
        run_id: String,
        /// The last event this stream sent.
        last: Option<u64>,
    },
}

/// Why a streamed run failed: this process's error, or the one recorded on the run (read back
/// by a resumed stream).
#[derive(Debug)]
pub enum Failure {
    /// The error of this process's attempt.
    Run(RunError),
    /// The run's recorded `error`: `<code>: <message>`.
    Recorded(String),
}

/// The events of a streamed run, as they come.
#[derive(Debug)]
pub struct RunEvents {
    /// The run.
    pub run_id: String,
    /// Served from the store without running the agent.
    pub replayed: bool,
    /// The events; the last is `Done` or `Failed`.
    pub events: mpsc::Receiver<StreamEvent>,
}

/// A completed run's stored output as a stream: one chunk, then `Done`.
pub(super) fn replay_events(record: RunRecord) -> RunEvents {
    let text = record
        .output
        .as_ref()
        .and_then(|o| o.to_value().get_mut("output").map(Value::take))
        .and_then(|v| match v {
            Value::String(text) => Some(text),
            _ => None,
        })
        .unwrap_or_default();
    let (tx, rx) = mpsc::channel(2);
    let _ = tx.try_send(StreamEvent::Delta { seq: None, text });
    let _ = tx.try_send(StreamEvent::Done {
        run_id: record.run_id.clone(),
        replayed: true,
        seq: None,
    });
    RunEvents {
        run_id: record.run_id,
        replayed: true,
        events: rx,
    }
}
