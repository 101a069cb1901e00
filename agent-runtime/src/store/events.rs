//! The event log of a run: what a streamed (or background) run produced, kept so that a client
//! can resume the stream on any replica (`GET /runs/{run_id}/stream` with `Last-Event-ID`).
//!
//! Every event has a sequence number, unique within its run and increasing: the store assigns
//! it in the same atomic step that checks the writer is the run's current attempt (like
//! `complete` and `heartbeat`, a superseded attempt's append is refused). Finishing a run takes
//! a number too, so the terminal event (`done` or `error`, which readers make from the record)
//! has its own id, and an attempt started after it numbers its events after it.
//!
//! Kinds: [`EventKind::Delta`] (a chunk of output) and [`EventKind::Reset`] (the output so far
//! is replaced by the event's text: a run retried after a failure starts over, and a taken-over
//! attempt whose agent answered differently from the attempt it replaced says so).
//!
//! Bounds ([`EventLimits`]): at most `max_events` per run (the oldest are dropped; a resume
//! from before them is refused with 410), kept `ttl` after the run's last event (Redis key
//! expiry, PostgreSQL rows deleted by age; the memory store keeps a run's events as long as its
//! record and counts them in its byte bound).

use std::fmt;
use std::time::Duration;

use super::RunId;

/// Default `--stream-events-max`: events kept per run.
pub const DEFAULT_MAX_EVENTS: u64 = 10_000;
/// Default `--stream-events-ttl`, seconds: how long a run's events are kept after its last one.
pub const DEFAULT_EVENTS_TTL_SECS: u64 = 3600;

/// How many events of a run are kept, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// Events kept per run; older ones are dropped.
    pub max_events: u64,
    /// Time a run's events are kept after its last event.
    pub ttl: Duration,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self {
            max_events: DEFAULT_MAX_EVENTS,
            ttl: Duration::from_secs(DEFAULT_EVENTS_TTL_SECS),
        }
    }
}

/// What a logged event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A chunk of output; `data` is the text.
    Delta,
    /// The output so far is `data`, replacing what came before.
    Reset,
}

impl EventKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Delta => "delta",
            EventKind::Reset => "reset",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "delta" => Some(EventKind::Delta),
            "reset" => Some(EventKind::Reset),
            _ => None,
        }
    }
}

/// One event as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Its number within the run (1, 2, ...).
    pub seq: u64,
    /// What it is.
    pub kind: EventKind,
    /// Its text.
    pub data: String,
}

/// Events of a run after a given number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventPage {
    /// The events, oldest first.
    pub events: Vec<LoggedEvent>,
    /// The oldest event still kept (`None`: none is, dropped by the bounds or never written).
    pub first: Option<u64>,
    /// The last number taken (by an event or a finish), 0 when none was.
    pub last: u64,
}

/// The SSE event id of event `seq` of a run: `<run_id>:<seq>`.
pub fn event_id(run_id: &str, seq: u64) -> String {
    format!("{run_id}:{seq}")
}

/// Why a `Last-Event-ID` was refused (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEventId(pub String);

impl fmt::Display for BadEventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The event number in a `Last-Event-ID` given for `run_id`: `<run_id>:<seq>` as this runtime
/// sends it. Anything else (another run's id, no number) is refused.
pub fn parse_event_id(run_id: &RunId, text: &str) -> Result<u64, BadEventId> {
    let shown: String = text.chars().take(80).collect();
    let bad = |why: &str| {
        BadEventId(format!(
            "Last-Event-ID {shown:?} is not an event of run {run_id}: {why}; \
             accepted: an id this runtime sent for the run, \"{run_id}:<number>\""
        ))
    };
    let (run, seq) = text
        .rsplit_once(':')
        .ok_or_else(|| bad("it has no ':<number>'"))?;
    if run != run_id.as_str() {
        return Err(bad("it names another run"));
    }
    match seq.parse::<u64>() {
        Ok(n) if n > 0 && seq.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(bad("its number is not a positive integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_and_foreign_ones_are_refused() {
        let run = RunId::parse("a:b-1").map_err(|e| e.to_string());
        let Ok(run) = run else { panic!("{run:?}") };
        assert_eq!(event_id(run.as_str(), 7), "a:b-1:7");
        assert_eq!(parse_event_id(&run, "a:b-1:7"), Ok(7));
        for bad in [
            "a:b-1", "other:7", "a:b-1:0", "a:b-1:-3", "a:b-1:+3", "a:b-1:x", "",
        ] {
            let err = parse_event_id(&run, bad);
            assert!(
                matches!(&err, Err(BadEventId(m)) if m.contains("Last-Event-ID") && m.contains("a:b-1:<number>")),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn kinds_round_trip() {
        for kind in [EventKind::Delta, EventKind::Reset] {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("done"), None);
    }
}
