//! `GET /runs/{run_id}/stream`: a run's events from the store's log, on any replica.
//!
//! The stream starts after the client's `Last-Event-ID` (from the first event without one),
//! sends the logged events, and follows the log while the run goes on (polling the store every
//! [`POLL`]) until the terminal event: `done` or `error`, made from the record and numbered
//! with the number its finish took. A run found stalled while it is followed (its process died,
//! or drained and released it) is taken over here: this process runs the agent again and logs
//! what goes beyond the logged output (see [`super::drive`]), so the client gets the remaining
//! events once.
//!
//! Refused: an id that is not one of the run's events (400), a resume from events no longer
//! kept (410), an unknown run (404). A completed run whose events are gone and that is read
//! from the start is sent as its stored output in one chunk, like a replay.

use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;

use super::drive::{PAGE, client_event};
use super::{Attempt, BadRunId, Failure, RunError, RunEvents, Runs, STREAM_BUFFER, StreamEvent};
use crate::agent::AgentRequest;
use crate::store::events::parse_event_id;
use crate::store::{Begin, EventPage, RunId, RunRecord, RunStatus};

/// How often a followed run's log is read while nothing new came.
pub(super) const POLL: Duration = Duration::from_millis(100);

/// Whether the client's position is before events the log no longer holds. `end` is the last
/// number an event may have (a finished run's last number is its terminal event's).
fn missing_events(page: &EventPage, after: u64, end: u64) -> bool {
    after < end && page.first.is_none_or(|first| first > after + 1)
}

impl Runs {
    /// `GET /runs/{run_id}/stream` (see the module docs).
    pub async fn resume(
        &self,
        id: &str,
        last_event_id: Option<&str>,
    ) -> Result<RunEvents, RunError> {
        let run_id =
            RunId::parse(id).map_err(|e| RunError::BadRunId(BadRunId(format!("run_id: {e}"))))?;
        let after = last_event_id
            .map(|text| parse_event_id(&run_id, text))
            .transpose()
            .map_err(RunError::BadEventId)?
            .unwrap_or(0);
        let not_found = || RunError::NotFound {
            run_id: run_id.clone(),
            store: self.store.kind(),
        };
        let record = self
            .store
            .get(&run_id)
            .await
            .map_err(RunError::Store)?
            .ok_or_else(not_found)?;
        let page = self
            .store
            .events_after(&run_id, after, PAGE)
            .await
            .map_err(RunError::Store)?;
        let finished = record.status != RunStatus::Running;
        if after > page.last {
            let text = last_event_id.unwrap_or_default();
            let why = format!("the run's last event is {}", page.last);
            return Err(RunError::BadEventId(crate::store::events::BadEventId(
                format!(
                    "Last-Event-ID {text:?} is not an event of run {run_id}: {why}; accepted: an \
                     id this runtime sent for the run"
                ),
            )));
        }
        let end = if finished {
            page.last.saturating_sub(1)
        } else {
            page.last
        };
        if missing_events(&page, after, end) {
            if after == 0 && record.status == RunStatus::Completed {
                return Ok(super::replay_events(record));
            }
            return Err(RunError::EventsExpired { run_id, after });
        }
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(self.clone().follow(run_id.clone(), record, page, after, tx));
        Ok(RunEvents {
            run_id: run_id.to_string(),
            replayed: false,
            events: rx,
        })
    }

    /// Sends the log's events from `page` on, following the run until its terminal event.
    async fn follow(
        self,
        run_id: RunId,
        mut record: RunRecord,
        mut page: EventPage,
        mut after: u64,
        tx: mpsc::Sender<StreamEvent>,
    ) {
        let mut wrap_up = self.wrap_up.subscribe();
        loop {
            let full = page.events.len() == PAGE;
            for e in std::mem::take(&mut page.events) {
                after = e.seq;
                if tx.send(client_event(e)).await.is_err() {
                    return;
                }
            }
            // `record` was read before `page`: a finished record means the page is final.
            if !full {
                let terminal = match record.status {
                    RunStatus::Completed => Some(StreamEvent::Done {
                        run_id: run_id.to_string(),
                        replayed: false,
                        seq: Some(page.last),
                    }),
                    RunStatus::Failed => Some(StreamEvent::Failed {
                        run_id: run_id.to_string(),
                        error: Failure::Recorded(record.error.clone().unwrap_or_default()),
                        seq: Some(page.last),
                    }),
                    RunStatus::Running => None,
                };
                if let Some(event) = terminal {
                    if after < page.last {
                        let _ = tx.send(event).await;
                    }
                    return;
                }
                self.take_over_if_stalled(&record).await;
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    () = super::wrapped_up(&mut wrap_up) => {
                        let last = (after > 0).then_some(after);
                        let _ = tx.send(StreamEvent::Resume { run_id: run_id.to_string(), last }).await;
                        return;
                    }
                    () = tx.closed() => return,
                }
            }
            let read = async {
                let record = self.store.get(&run_id).await?;
                let page = self.store.events_after(&run_id, after, PAGE).await?;
                Ok::<_, crate::store::StoreError>((record, page))
            };
            match read.await {
                Ok((Some(r), p)) => (record, page) = (r, p),
                Ok((None, _)) => return,
                Err(e) => {
                    tracing::warn!(event = "run_events_read_failed", run_id = %run_id, error = %e);
                    page = EventPage {
                        last: page.last,
                        ..EventPage::default()
                    };
                }
            }
        }
    }

    /// Takes over a followed run that looks stalled (not updated within stale-after by this
    /// process's clock; the store's `begin` decides by its own) and drives it here.
    async fn take_over_if_stalled(&self, record: &RunRecord) {
        let quiet = Utc::now().signed_duration_since(record.updated_at);
        if quiet.to_std().is_ok_and(|q| q <= self.store.stale_after()) {
            return;
        }
        self.take_over(record, record.background).await;
    }

    /// Begins a stalled run again with its recorded input and drives it in its own task; does
    /// nothing if the store says it is not stalled (or another process was quicker).
    pub(super) async fn take_over(&self, record: &RunRecord, background: bool) {
        let Ok(run_id) = RunId::parse(&record.run_id) else {
            return;
        };
        let request: AgentRequest = match record.input.parse() {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!(event = "run_takeover_failed", run_id = %run_id, error = %e);
                return;
            }
        };
        let input = record.input.clone();
        match self
            .store
            .begin_as(&run_id, &input, &self.instance_id, background)
            .await
        {
            Ok(Begin::Started(started, taken_over)) => {
                self.note_started(&run_id, &started, taken_over.as_ref());
                let attempt = Attempt {
                    request,
                    run_id,
                    number: started.attempts,
                    taken_over: taken_over.is_some(),
                    background,
                };
                tokio::spawn(self.clone().drive(attempt, None, None));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(event = "run_takeover_failed", run_id = %run_id, error = %e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_events_are_those_before_the_oldest_kept() {
        let page = |first| EventPage {
            events: Vec::new(),
            first,
            last: 10,
        };
        assert!(!missing_events(&page(Some(1)), 0, 10));
        assert!(!missing_events(&page(Some(4)), 3, 10));
        assert!(missing_events(&page(Some(5)), 3, 10));
        assert!(missing_events(&page(None), 3, 10), "all gone");
        assert!(!missing_events(&page(None), 10, 10), "nothing after it");
        assert!(!missing_events(&page(None), 0, 0), "no events yet");
    }
}
