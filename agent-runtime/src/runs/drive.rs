//! Driving one streamed attempt: the agent's chunks are logged as events (so that a client can
//! resume on any replica) and forwarded to the live client if there is one; the outcome is
//! recorded at the end.
//!
//! How an attempt starts its log depends on how it began:
//! - a new run: nothing before it;
//! - the retry of a failed run: a `reset` to the empty output first (the failed attempt's
//!   output is void);
//! - a takeover of a stalled attempt: the log holds what the stalled attempt produced, and its
//!   clients resume after the last event they received. The new attempt runs the agent from
//!   the start; while its output repeats the logged output, nothing is logged, and from where
//!   it goes beyond, the rest is. So an agent that answers the same way (the echo agent, a
//!   model at temperature 0) gives resumed clients exactly the remaining output; one that
//!   answers differently logs a `reset` with its output so far, and clients replace theirs. A
//!   live client of a takeover first gets the logged events.
//!
//! When this process drains ([`Runs::wrap_up`]), the attempt stops the agent, releases the run
//! so that another process takes it over at once, and ends the live stream with
//! [`StreamEvent::Resume`].

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::heartbeat::Heartbeat;
use super::{Attempt, Failure, RunError, Runs, StreamEvent};
use crate::store::{EventKind, LoggedEvent, RunId, StoreError};

/// Events read at once from a run's log.
pub(super) const PAGE: usize = 256;

/// Decides what a taken-over attempt logs while its output repeats the stalled one's.
#[derive(Debug)]
pub(super) struct Continuation {
    /// The logged output still to be matched; `None` once the attempt went past it.
    logged: Option<String>,
}

impl Continuation {
    /// Matching `logged` (a takeover), or nothing to match (`None`).
    pub(super) fn new(logged: Option<String>) -> Self {
        Self {
            logged: logged.filter(|t| !t.is_empty()),
        }
    }

    /// What to log now that the attempt's output is `text`, of which `delta` is new.
    pub(super) fn feed(&mut self, text: &str, delta: &str) -> Option<(EventKind, String)> {
        let Some(logged) = &self.logged else {
            return Some((EventKind::Delta, delta.to_owned()));
        };
        if logged.starts_with(text) {
            return None;
        }
        let event = match text.strip_prefix(logged.as_str()) {
            Some(rest) => (EventKind::Delta, rest.to_owned()),
            None => (EventKind::Reset, text.to_owned()),
        };
        self.logged = None;
        Some(event)
    }

    /// What to log when the attempt's output ended at `text`: a reset when it is shorter than
    /// the logged output.
    pub(super) fn finish(&mut self, text: &str) -> Option<(EventKind, String)> {
        let logged = self.logged.take()?;
        (logged != text).then(|| (EventKind::Reset, text.to_owned()))
    }
}

/// The output a log's events add up to.
pub(super) fn logged_text(events: &[LoggedEvent]) -> String {
    let mut text = String::new();
    for e in events {
        match e.kind {
            EventKind::Delta => text.push_str(&e.data),
            EventKind::Reset => text.clone_from(&e.data),
        }
    }
    text
}

/// A logged event as the client gets it.
pub(super) fn client_event(e: LoggedEvent) -> StreamEvent {
    match e.kind {
        EventKind::Delta => StreamEvent::Delta {
            seq: Some(e.seq),
            text: e.data,
        },
        EventKind::Reset => StreamEvent::Reset {
            seq: Some(e.seq),
            text: e.data,
        },
    }
}

/// The live client of an attempt, if any; sends to a gone client are ignored.
struct Live(Option<mpsc::Sender<StreamEvent>>);

impl Live {
    async fn send(&self, event: StreamEvent) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(event).await;
        }
    }
}

impl Runs {
    /// Every event of a run's log.
    pub(super) async fn whole_log(&self, run_id: &RunId) -> Result<Vec<LoggedEvent>, StoreError> {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.events_after(run_id, after, PAGE).await?;
            let full = page.events.len() == PAGE;
            if let Some(e) = page.events.last() {
                after = e.seq;
            }
            events.extend(page.events);
            if !full {
                return Ok(events);
            }
        }
    }

    /// Logs an event of the attempt; its number, or `None` when the store failed (the event
    /// still goes to the live client). A superseded attempt gets the error.
    async fn log_event(
        &self,
        run_id: &RunId,
        attempt: u32,
        kind: EventKind,
        data: &str,
    ) -> Result<Option<u64>, StoreError> {
        match self.store.append_event(run_id, attempt, kind, data).await {
            Ok(seq) => Ok(Some(seq)),
            Err(e @ StoreError::Superseded { .. }) => Err(e),
            Err(e) => {
                tracing::warn!(event = "run_event_append_failed", run_id = %run_id, attempt, error = %e);
                Ok(None)
            }
        }
    }

    /// Runs a begun attempt as a stream (see the module docs). `opened` is told whether the
    /// agent's stream opened; without it (a background run, a takeover nobody waits on), an
    /// agent that fails at once is recorded and logged only. A background run's outcome, if
    /// this attempt recorded it, goes to the webhook.
    pub(super) async fn drive(
        self,
        attempt: Attempt,
        live: Option<mpsc::Sender<StreamEvent>>,
        opened: Option<oneshot::Sender<Result<(), RunError>>>,
    ) {
        let (run_id, number) = (attempt.run_id.clone(), attempt.number);
        let webhook = self.webhook.clone().filter(|_| attempt.background);
        self.clone().drive_stream(attempt, live, opened).await;
        let Some(webhook) = webhook else { return };
        match self.store.get(&run_id).await {
            // Only the attempt that finished the run reports it (not a released or superseded
            // one).
            Ok(Some(record)) if record.attempts == number => {
                webhook.deliver(&record, &self.instance_id).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(event = "run_webhook_failed", run_id = %run_id, error = %e),
        }
    }

    /// [`Runs::drive`] without the webhook.
    async fn drive_stream(
        self,
        attempt: Attempt,
        live: Option<mpsc::Sender<StreamEvent>>,
        opened: Option<oneshot::Sender<Result<(), RunError>>>,
    ) {
        let Attempt {
            request,
            run_id,
            number,
            taken_over,
            ..
        } = attempt;
        let _driving = super::Driving::new(&self.driving);
        let live = Live(live);
        let mut wrap_up = self.wrap_up.subscribe();
        let mut last: Option<u64> = None;
        let mut continuation = Continuation::new(None);
        if taken_over {
            match self.whole_log(&run_id).await {
                Ok(events) => {
                    continuation = Continuation::new(Some(logged_text(&events)));
                    last = events.last().map(|e| e.seq);
                    for e in events {
                        live.send(client_event(e)).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(event = "run_events_read_failed", run_id = %run_id, error = %e)
                }
            }
        } else if number > 1 {
            // The retry of a failed run starts its output over.
            if let Ok(Some(seq)) = self.log_event(&run_id, number, EventKind::Reset, "").await {
                last = Some(seq);
            }
        }
        let mut chunks = match self.agent.stream(request).await {
            Ok(s) => {
                if let Some(opened) = opened {
                    let _ = opened.send(Ok(()));
                }
                s
            }
            Err(e) => {
                let error = self.fail(&run_id, number, e).await;
                match opened {
                    Some(opened) => drop(opened.send(Err(error))),
                    None => {
                        tracing::warn!(event = "run_failed", run_id = %run_id, attempt = number)
                    }
                }
                return;
            }
        };
        // Keeps the run from being taken over while it streams (see the module docs).
        let heartbeat = Heartbeat::start(self.store.clone(), run_id.clone(), number);
        let mut text = String::new();
        let failed = |error: RunError, seq| StreamEvent::Failed {
            run_id: run_id.to_string(),
            error: Failure::Run(error),
            seq,
        };
        loop {
            let chunk = tokio::select! {
                chunk = chunks.next() => chunk,
                () = super::wrapped_up(&mut wrap_up) => {
                    heartbeat.stop().await;
                    drop(chunks);
                    self.release(&run_id, number).await;
                    let run_id = run_id.to_string();
                    live.send(StreamEvent::Resume { run_id, last }).await;
                    return;
                }
            };
            let delta = match chunk {
                Some(Ok(delta)) => delta,
                Some(Err(e)) => {
                    heartbeat.stop().await;
                    let error = self.fail(&run_id, number, e).await;
                    live.send(failed(error, last.map(|s| s + 1))).await;
                    return;
                }
                None => break,
            };
            text.push_str(&delta);
            let Some((kind, data)) = continuation.feed(&text, &delta) else {
                continue;
            };
            match self.log_event(&run_id, number, kind, &data).await {
                Ok(seq) => {
                    last = seq.or(last);
                    live.send(match kind {
                        EventKind::Delta => StreamEvent::Delta { seq, text: data },
                        EventKind::Reset => StreamEvent::Reset { seq, text: data },
                    })
                    .await;
                }
                Err(e) => {
                    heartbeat.stop().await;
                    super::log_superseded(&run_id, number, "append");
                    live.send(failed(RunError::Store(e), None)).await;
                    return;
                }
            }
        }
        if let Some((kind, data)) = continuation.finish(&text)
            && let Ok(Some(seq)) = self.log_event(&run_id, number, kind, &data).await
        {
            last = Some(seq);
            live.send(StreamEvent::Reset {
                seq: Some(seq),
                text: data,
            })
            .await;
        }
        heartbeat.stop().await;
        let output = super::StoredOutput {
            text: &text,
            agent: self.agent.name(),
            extra: None,
        }
        .payload();
        let seq = last.map(|s| s + 1);
        live.send(match self.finish(&run_id, number, Ok(output)).await {
            Ok(_) => StreamEvent::Done {
                run_id: run_id.to_string(),
                replayed: false,
                seq,
            },
            Err(error) => failed(error, seq),
        })
        .await;
    }

    /// Releases a run this process stops driving, so that another takes it over at once.
    async fn release(&self, run_id: &RunId, attempt: u32) {
        match self.store.release(run_id, attempt).await {
            Ok(()) => tracing::info!(event = "run_released", run_id = %run_id, attempt),
            Err(e) => {
                tracing::warn!(event = "run_release_failed", run_id = %run_id, attempt, error = %e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(c: &mut Continuation, chunks: &[&str]) -> Vec<(EventKind, String)> {
        let mut text = String::new();
        let mut out = Vec::new();
        for chunk in chunks {
            text.push_str(chunk);
            out.extend(c.feed(&text, chunk));
        }
        out.extend(c.finish(&text));
        out
    }

    #[test]
    fn a_new_attempt_logs_every_chunk() {
        let mut c = Continuation::new(None);
        let out = feed_all(&mut c, &["a ", "b"]);
        assert_eq!(
            out,
            [
                (EventKind::Delta, "a ".into()),
                (EventKind::Delta, "b".into())
            ]
        );
    }

    #[test]
    fn a_takeover_logs_only_what_goes_beyond_the_logged_output() {
        let mut c = Continuation::new(Some("one two th".into()));
        let out = feed_all(&mut c, &["one ", "two ", "three ", "four"]);
        assert_eq!(
            out,
            [
                (EventKind::Delta, "ree ".into()),
                (EventKind::Delta, "four".into())
            ]
        );
        let mut same = Continuation::new(Some("one two".into()));
        assert_eq!(feed_all(&mut same, &["one ", "two"]), []);
    }

    #[test]
    fn a_takeover_that_answers_differently_resets_the_output() {
        let mut c = Continuation::new(Some("one two".into()));
        let out = feed_all(&mut c, &["one ", "six ", "seven"]);
        assert_eq!(
            out,
            [
                (EventKind::Reset, "one six ".into()),
                (EventKind::Delta, "seven".into())
            ]
        );
        let mut shorter = Continuation::new(Some("one two".into()));
        assert_eq!(
            feed_all(&mut shorter, &["one"]),
            [(EventKind::Reset, "one".into())]
        );
    }

    #[test]
    fn the_logged_text_follows_resets() {
        let e = |seq, kind, data: &str| LoggedEvent {
            seq,
            kind,
            data: data.into(),
        };
        let log = [
            e(1, EventKind::Delta, "a"),
            e(2, EventKind::Delta, "b"),
            e(4, EventKind::Reset, ""),
            e(5, EventKind::Delta, "c"),
        ];
        assert_eq!(logged_text(&log), "c");
        assert_eq!(logged_text(&log[..2]), "ab");
    }
}
