//! The durable run store: one record per agent run, so a repeated run id is answered from the
//! store instead of running the agent again.
//!
//! A run moves `running → completed` or `running → failed`. [`RunStore::begin`] is the one
//! atomic step that decides who runs: of any number of concurrent callers with the same id,
//! exactly one gets [`Begin::Started`]; the others see the existing record
//! ([`Begin::StillRunning`] → HTTP 409, [`Begin::AlreadyCompleted`] → the stored result).
//!
//! **Failed runs may be retried with the same id**: `begin` on a `failed` record starts it again
//! (status back to `running`, output and error cleared, `attempts` incremented). A failure is
//! usually transient (an upstream timeout), and a client that retries with its idempotency key
//! expects a second try, not the old error forever.
//!
//! **Stalled runs are taken over**: a run whose process died while it ran (SIGKILL, OOM, a lost
//! node) would stay `running` forever. So `begin` on a `running` record whose last update is
//! older than the store's stale-after threshold (`--run-stale-after`, longer than any live
//! attempt may take) starts it again exactly like a failed run, and says so
//! ([`Begin::Started`] with a [`TakenOver`]). Staleness is judged by the store's own clock where
//! it has one (Redis `TIME`, PostgreSQL `now()`), so pods with skewed clocks agree.
//!
//! **Fencing**: the attempt that was taken over may still be alive (slow rather than dead).
//! `complete` and `fail` therefore name the attempt they finish (the `attempts` of the record
//! `begin` returned) and only change a record that is still `running` at that attempt; a finish
//! of a superseded attempt changes nothing and fails with [`StoreError::Superseded`] (HTTP 409).
//!
//! **Heartbeats**: a streamed run (`POST /chat/stream`) may legitimately last longer than
//! stale-after in total (a long LLM stream; `--stream-idle-timeout` bounds each wait on the
//! agent, and only `--run-max-duration`, unlimited by default, the whole stream). While it streams, its attempt calls [`RunStore::heartbeat`] every
//! stale-after / 3, which refreshes the record's last-update time (the one staleness is judged
//! by) if it is still `running` at that attempt, and is fenced like `complete`. So only a run
//! whose process stopped is taken over. A non-streamed run (`POST /chat`) sends none: it is one
//! wait on the agent, bounded by `--agent-first-byte-timeout` (default `--agent-timeout`), or a
//! shorter `--run-max-duration`, which must be below stale-after.
//!
//! **Events**: a streamed or background run's output is logged as numbered events ([`events`]),
//! so a stream can be resumed on any replica; appends are fenced like `complete`.
//!
//! **Releasing**: a draining process that stops an attempt it cannot finish marks the run
//! stalled at once ([`RunStore::release`]), so another process takes it over without waiting
//! for stale-after.
//!
//! **Background runs** (`POST /runs`) are begun with [`RunStore::begin_as`]; the shared stores
//! list the stalled ones ([`RunStore::stalled_background`]) so that any process takes them over,
//! not only a client that asks again.
//!
//! Implementations: [`memory`] (per worker, lost on restart, bounded by bytes per worker; the
//! default), [`redis`] (a hash per run, updated by Lua scripts, expiring 7 days after its last
//! change) and [`postgres`] (table `fastagentic_runs`, created by embedded migrations; rows are
//! kept, and deleting old ones by `updated_at` is left to the operator of the database, see the
//! crate's README).

mod config;
pub mod events;
pub mod memory;
mod payload;
pub mod postgres;
pub mod redis;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pools::PoolError;

pub use config::{
    DurableStoreKind, StoreArgs, StoreConfigError, build_run_store, resolve_store_kind,
};
pub use events::{EventKind, EventLimits, EventPage, LoggedEvent};
pub use memory::{DEFAULT_MAX_BYTES as MEMORY_STORE_DEFAULT_MAX_BYTES, MemoryRunStore};
pub use payload::Payload;
pub use postgres::{MIGRATOR, PostgresRunStore, migrate};
pub use redis::RedisRunStore;

/// Longest accepted run id.
pub const MAX_RUN_ID_LEN: usize = 128;

/// Default `--run-stale-after`, seconds.
pub const DEFAULT_RUN_STALE_AFTER_SECS: u64 = 300;

/// Largest accepted `--run-stale-after`, seconds: a week, the Redis store's retention.
pub const MAX_RUN_STALE_AFTER_SECS: u64 = 7 * 24 * 3600;

/// A validated run id: 1-128 characters of `A-Z a-z 0-9 . _ : -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RunId(String);

/// Why a run id was rejected (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid run id {shown:?}: {reason}; a run id is 1-{MAX_RUN_ID_LEN} characters of A-Z a-z 0-9 . _ : -"
)]
pub struct InvalidRunId {
    /// The offending id, cut to a readable length.
    pub shown: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl RunId {
    /// Validates a client-supplied id (`run_id` field or `Idempotency-Key` header).
    pub fn parse(id: &str) -> Result<Self, InvalidRunId> {
        let reject = |reason| InvalidRunId {
            shown: id.chars().take(40).collect(),
            reason,
        };
        if id.is_empty() {
            return Err(reject("it is empty"));
        }
        if id.len() > MAX_RUN_ID_LEN {
            return Err(reject("it is too long"));
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return Err(reject("it contains a character that is not allowed"));
        }
        Ok(Self(id.to_owned()))
    }

    /// A fresh id for a request that did not bring one: `run-` and 32 random hex digits.
    pub fn generate() -> Self {
        Self(format!("run-{:032x}", rand::random::<u128>()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// The agent is working on it.
    Running,
    /// The agent answered; `output` holds the answer.
    Completed,
    /// The agent failed; `error` says why. May be retried with the same id.
    Failed,
}

impl RunStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(RunStatus::Running),
            "completed" => Some(RunStatus::Completed),
            "failed" => Some(RunStatus::Failed),
            _ => None,
        }
    }
}

/// One run as stored (and as `GET /runs/{run_id}` returns it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run id.
    pub run_id: String,
    /// Current status.
    pub status: RunStatus,
    /// The request the agent was given (shared JSON text, see [`Payload`]).
    pub input: Payload,
    /// The agent's answer, once completed.
    pub output: Option<Payload>,
    /// Why it failed, once failed.
    pub error: Option<String>,
    /// When the run was first begun.
    pub created_at: DateTime<Utc>,
    /// Last change (a heartbeat of a streaming attempt counts as one).
    pub updated_at: DateTime<Utc>,
    /// Instance that ran (or is running) the latest attempt.
    pub instance_id: String,
    /// How many times the run was begun (1 unless a failed or stalled run was started again).
    /// Also the number of the latest attempt, which `complete` and `fail` must name.
    pub attempts: u32,
    /// A background run (`POST /runs`; as of its latest `begin`).
    #[serde(default)]
    pub background: bool,
}

/// The stalled attempt a [`Begin::Started`] replaced (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenOver {
    /// Instance that ran the stalled attempt.
    pub instance_id: String,
    /// Its attempt number.
    pub attempts: u32,
}

/// How a run ended: what [`RunStore::finish`] records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome<'a> {
    /// The agent answered: status `completed`, `output` set (shared like `begin_as`'s input).
    Completed(&'a Payload),
    /// The agent failed: status `failed`, `error` set.
    Failed(&'a str),
}

impl Outcome<'_> {
    /// The status the run ends in.
    pub fn status(self) -> RunStatus {
        match self {
            Outcome::Completed(_) => RunStatus::Completed,
            Outcome::Failed(_) => RunStatus::Failed,
        }
    }
}

/// What [`RunStore::begin`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// The caller owns the run now and must `complete` or `fail` it, naming the record's
    /// `attempts`. The second field is `Some` when a stalled `running` attempt was taken over
    /// (and `None` for a new run or the retry of a failed one).
    Started(RunRecord, Option<TakenOver>),
    /// The run already finished: answer with the stored result, do not run again.
    AlreadyCompleted(RunRecord),
    /// Another request is running it (HTTP 409).
    StillRunning(RunRecord),
}

/// What went wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection could be had (exhausted pool or store down): HTTP 503.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The store answered with an error: HTTP 503.
    #[error("{store} store error: {message}")]
    Backend {
        /// Which store.
        store: DurableStoreKind,
        /// What it said.
        message: String,
    },
    /// A stored record could not be read back: HTTP 500.
    #[error("{store} store holds an unreadable record for run {run_id}: {message}")]
    Corrupt {
        /// Which store.
        store: DurableStoreKind,
        /// The run.
        run_id: String,
        /// What is wrong.
        message: String,
    },
    /// `complete`/`fail`/`heartbeat` for a run id the store does not know: HTTP 404.
    #[error("run {0} not found")]
    NotFound(String),
    /// `complete`/`fail`/`heartbeat` for a run that is not running: HTTP 409.
    #[error("run {run_id} is {status:?}, not running")]
    NotRunning {
        /// The run.
        run_id: String,
        /// Its status.
        status: RunStatus,
    },
    /// `complete`/`fail`/`heartbeat` for an attempt that another `begin` took over after it
    /// stalled: the record belongs to a later attempt and was not changed. HTTP 409.
    #[error(
        "run {run_id}: attempt {attempt} was taken over by another attempt after it stalled; \
         its result was not recorded"
    )]
    Superseded {
        /// The run.
        run_id: String,
        /// The attempt that tried to finish.
        attempt: u32,
    },
}

/// A durable run store. Implementations are shared between requests (`Arc<dyn RunStore>`).
#[async_trait]
pub trait RunStore: Send + Sync + fmt::Debug + 'static {
    /// Which kind of store this is.
    fn kind(&self) -> DurableStoreKind;

    /// Atomically starts the run unless it exists and is completed, or running and updated
    /// within the stale-after threshold (see [`Begin`]); a failed or stalled run is started
    /// again. `background`: a run of `POST /runs`, listed by
    /// [`RunStore::stalled_background`] while it runs. `input` is shared: the memory store keeps
    /// it as it is, the others write its JSON.
    async fn begin_as(
        &self,
        run_id: &RunId,
        input: &Payload,
        instance_id: &str,
        background: bool,
    ) -> Result<Begin, StoreError>;

    /// [`RunStore::begin_as`] for a run a client waits on (`POST /chat`, `/chat/stream`).
    async fn begin(
        &self,
        run_id: &RunId,
        input: &Value,
        instance_id: &str,
    ) -> Result<Begin, StoreError> {
        self.begin_as(run_id, &Payload::of(input), instance_id, false)
            .await
    }

    /// Appends an event to the run's log if the run is still running at `attempt`, and returns
    /// its number; refused like [`RunStore::heartbeat`] otherwise. One atomic step.
    async fn append_event(
        &self,
        run_id: &RunId,
        attempt: u32,
        kind: EventKind,
        data: &str,
    ) -> Result<u64, StoreError>;

    /// Up to `limit` events of the run numbered after `after`, with the oldest kept and the
    /// last number taken ([`EventPage`]). An unknown run has an empty page.
    async fn events_after(
        &self,
        run_id: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<EventPage, StoreError>;

    /// Marks the run stalled now, if it is still running at `attempt`, so that the next
    /// `begin` (or a sweep of background runs) takes it over without waiting for stale-after.
    /// Refused like [`RunStore::heartbeat`] otherwise.
    async fn release(&self, run_id: &RunId, attempt: u32) -> Result<(), StoreError>;

    /// Up to `limit` background runs that are running and stalled: their process died or
    /// released them. Stores private to a process have none to share.
    async fn stalled_background(&self, limit: usize) -> Result<Vec<RunId>, StoreError> {
        let _ = limit;
        Ok(Vec::new())
    }

    /// Records how the run ended, if it is still running at `attempt` (the `attempts` of the
    /// record `begin` returned): [`StoreError::Superseded`] when the run is at another attempt,
    /// [`StoreError::NotFound`] for an unknown id, [`StoreError::NotRunning`] when this attempt
    /// already finished. One atomic step on the store.
    async fn finish(
        &self,
        run_id: &RunId,
        attempt: u32,
        outcome: Outcome<'_>,
    ) -> Result<RunRecord, StoreError>;

    /// Marks the run completed with `output` ([`RunStore::finish`]).
    async fn complete(
        &self,
        run_id: &RunId,
        attempt: u32,
        output: &Value,
    ) -> Result<RunRecord, StoreError> {
        self.finish(run_id, attempt, Outcome::Completed(&Payload::of(output)))
            .await
    }

    /// Marks the run failed with `error` ([`RunStore::finish`]).
    async fn fail(
        &self,
        run_id: &RunId,
        attempt: u32,
        error: &str,
    ) -> Result<RunRecord, StoreError> {
        self.finish(run_id, attempt, Outcome::Failed(error)).await
    }

    /// Refreshes the record's last-update time (the one staleness is judged by: the store's own
    /// clock where it has one), so a live attempt is not taken over, if the run is still
    /// running at `attempt`. Otherwise changes nothing and fails like `complete`:
    /// [`StoreError::Superseded`] when the run is at another attempt, [`StoreError::NotFound`]
    /// for an unknown id, [`StoreError::NotRunning`] when this attempt already finished.
    /// One atomic step on the store.
    async fn heartbeat(&self, run_id: &RunId, attempt: u32) -> Result<(), StoreError>;

    /// The stale-after threshold this store was built with: a `running` record not updated for
    /// longer is taken over by the next `begin`. Live attempts heartbeat well within it.
    fn stale_after(&self) -> Duration;

    /// The record, or `None` for an unknown id.
    async fn get(&self, run_id: &RunId) -> Result<Option<RunRecord>, StoreError>;

    /// Readiness: the store answers (and, for Postgres, the schema is in place). Callers bound
    /// it with a timeout.
    async fn ping(&self) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_validated() {
        for ok in ["a", "run-1", "A.b_c:d-e", &"x".repeat(128)] {
            assert!(RunId::parse(ok).is_ok(), "{ok:?} must be accepted");
        }
        for bad in [
            "",
            "has space",
            "slash/",
            "ünï",
            "semi;colon",
            &"x".repeat(129),
        ] {
            let err = RunId::parse(bad).map(|_| ()).map_err(|e| e.to_string());
            assert!(
                matches!(&err, Err(e) if e.contains("invalid run id") && e.contains("1-128")),
                "{bad:?}: {err:?}"
            );
        }
        let generated = RunId::generate();
        assert!(RunId::parse(generated.as_str()).is_ok());
        assert_ne!(generated, RunId::generate());
    }

    #[test]
    fn record_serializes_with_lowercase_status() {
        let now = Utc::now();
        let record = RunRecord {
            run_id: "r".into(),
            status: RunStatus::Completed,
            input: Payload::of(&serde_json::json!({"message": "hi"})),
            output: Some(Payload::of(&serde_json::json!({"response": "hi"}))),
            error: None,
            created_at: now,
            updated_at: now,
            instance_id: "i".into(),
            attempts: 1,
            background: false,
        };
        let json = serde_json::to_value(&record).map_err(|e| e.to_string());
        assert!(
            matches!(&json, Ok(v) if v["status"] == "completed" && v["output"]["response"] == "hi"),
            "{json:?}"
        );
    }
}
