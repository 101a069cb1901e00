//! The PostgreSQL store's event log: table `fastagentic_run_events` (run, number, kind, data,
//! time). An append is one statement: it takes the next number from the run's `last_event`
//! in an update fenced by `status = 'running' AND attempts = <the caller's>` (whose row lock
//! also orders it against a takeover) and inserts the event with it. Beyond the count bound the
//! run's oldest events are deleted; events older than the TTL are deleted by the periodic sweep
//! (at most once a minute per process).

use std::time::{Duration, Instant};

use sqlx::{PgConnection, Row};

use super::{PostgresRunStore, backend};
use crate::store::{
    DurableStoreKind, EventKind, EventLimits, EventPage, LoggedEvent, RunId, StoreError,
};

/// How often a process deletes events by age.
const PRUNE_PERIOD: Duration = Duration::from_secs(60);

/// Takes the next number of a run running at attempt $2 and logs the event ($3 kind, $4 data)
/// under it; no row when the run is not running at that attempt.
const APPEND: &str = "WITH s AS (UPDATE fastagentic_runs SET last_event = last_event + 1 \
     WHERE run_id = $1 AND status = 'running' AND attempts = $2 RETURNING last_event) \
     INSERT INTO fastagentic_run_events (run_id, seq, kind, data) \
     SELECT $1, last_event, $3, $4 FROM s RETURNING seq";

/// The count bound: drops the run's events numbered $2 or lower.
const TRIM: &str = "DELETE FROM fastagentic_run_events WHERE run_id = $1 AND seq <= $2";

/// The last number taken and the oldest event kept.
const HEAD: &str = "SELECT r.last_event, \
     (SELECT min(seq) FROM fastagentic_run_events e WHERE e.run_id = $1) AS first \
     FROM fastagentic_runs r WHERE r.run_id = $1";

const READ: &str = "SELECT seq, kind, data FROM fastagentic_run_events \
     WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

const PRUNE: &str = "DELETE FROM fastagentic_run_events \
     WHERE created_at < now() - make_interval(secs => $1)";

const STALLED: &str = "SELECT run_id FROM fastagentic_runs \
     WHERE background AND status = 'running' \
     AND updated_at < now() - make_interval(secs => $1) ORDER BY updated_at LIMIT $2";

fn corrupt(run_id: &RunId, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        store: DurableStoreKind::Postgres,
        run_id: run_id.to_string(),
        message: message.into(),
    }
}

/// Logs an event; `None` when the run is not running at `attempt`.
pub(super) async fn append(
    conn: &mut PgConnection,
    run_id: &RunId,
    attempt: u32,
    kind: EventKind,
    data: &str,
    limits: EventLimits,
) -> Result<Option<u64>, StoreError> {
    let row = sqlx::query(APPEND)
        .bind(run_id.as_str())
        .bind(i64::from(attempt))
        .bind(kind.as_str())
        .bind(data)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
    let Some(row) = row else { return Ok(None) };
    let seq: i64 = row
        .try_get("seq")
        .map_err(|e| corrupt(run_id, e.to_string()))?;
    let max = i64::try_from(limits.max_events).unwrap_or(i64::MAX);
    if seq > max {
        sqlx::query(TRIM)
            .bind(run_id.as_str())
            .bind(seq - max)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    Ok(Some(u64::try_from(seq).unwrap_or(0)))
}

/// Up to `limit` events after `after`, with the head of the log.
pub(super) async fn read(
    conn: &mut PgConnection,
    run_id: &RunId,
    after: u64,
    limit: usize,
) -> Result<EventPage, StoreError> {
    let Some(head) = sqlx::query(HEAD)
        .bind(run_id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?
    else {
        return Ok(EventPage::default());
    };
    let bad = |e: sqlx::Error| corrupt(run_id, e.to_string());
    let last: i64 = head.try_get("last_event").map_err(bad)?;
    let first: Option<i64> = head.try_get("first").map_err(bad)?;
    let rows = sqlx::query(READ)
        .bind(run_id.as_str())
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let seq: i64 = row.try_get("seq").map_err(bad)?;
        let kind: String = row.try_get("kind").map_err(bad)?;
        events.push(LoggedEvent {
            seq: u64::try_from(seq).unwrap_or(0),
            kind: EventKind::parse(&kind)
                .ok_or_else(|| corrupt(run_id, format!("unknown event kind {kind:?}")))?,
            data: row.try_get("data").map_err(bad)?,
        });
    }
    Ok(EventPage {
        events,
        first: first.and_then(|f| u64::try_from(f).ok()),
        last: u64::try_from(last).unwrap_or(0),
    })
}

/// Deletes events older than `ttl`.
pub(super) async fn prune(conn: &mut PgConnection, ttl: Duration) -> Result<(), StoreError> {
    let pruned = sqlx::query(PRUNE)
        .bind(ttl.as_secs_f64())
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    if pruned.rows_affected() > 0 {
        tracing::debug!(event = "run_events_pruned", rows = pruned.rows_affected());
    }
    Ok(())
}

/// Running background runs not updated within stale-after.
pub(super) async fn stalled(
    conn: &mut PgConnection,
    stale_after_secs: f64,
    limit: usize,
) -> Result<Vec<RunId>, StoreError> {
    let rows = sqlx::query(STALLED)
        .bind(stale_after_secs)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(rows
        .iter()
        .filter_map(|row| row.try_get::<String, _>("run_id").ok())
        .filter_map(|id| RunId::parse(&id).ok())
        .collect())
}

impl PostgresRunStore {
    /// Whether this process should delete events by age now (once per [`PRUNE_PERIOD`]).
    pub(super) fn prune_due(&self) -> bool {
        let mut last = self
            .pruned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < PRUNE_PERIOD) {
            return false;
        }
        *last = Some(now);
        true
    }
}
