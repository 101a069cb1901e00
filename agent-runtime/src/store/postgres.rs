//! PostgreSQL run store: table `fastagentic_runs`, created by the embedded migrations in
//! `agent-runtime/migrations/`.
//!
//! `begin` is a single `INSERT ... ON CONFLICT DO UPDATE ... WHERE status = 'failed' OR
//! (status = 'running' AND updated_at < now() - stale-after) RETURNING`: the row lock on the
//! conflicting key serialises concurrent callers, so exactly one gets a row back (started) and
//! the rest read the existing record. Staleness is judged by the database's clock (`now()`, and
//! `updated_at` is always set by the database), so pods with skewed clocks agree.
//!
//! The statement also reads the row as it was before (a CTE on the statement's snapshot), to
//! tell a takeover from a failed-run retry and name the stalled attempt; the update only
//! applies when the locked row is still at the status and attempt of that snapshot, so what it
//! reports is exactly what it replaced (when the row changed in between, `begin` tries again).
//! `complete`/`fail` update only `WHERE status = 'running' AND attempts = <the caller's>`, and so
//! does `heartbeat`, which sets nothing but `updated_at = now()`.
//!
//! Migrations run on first use (or first `ping`), not at process start, so a worker starts even
//! when the database is down; sqlx takes a PostgreSQL advisory lock around them, so several
//! workers and pods starting at once apply each migration exactly once.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use tokio::sync::OnceCell;

use super::{
    Begin, DurableStoreKind, EventKind, EventLimits, EventPage, Outcome, Payload, RunId, RunRecord,
    RunStatus, RunStore, StoreError, TakenOver,
};
use crate::pools::DbPool;

mod events;

/// The embedded schema migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The columns of a run, in every `SELECT`/`RETURNING` (a macro so the queries stay literals).
macro_rules! columns {
    () => {
        "run_id, status, input, output, error, instance_id, attempts, created_at, updated_at, \
         background"
    };
}

const SELECT_RUN: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM fastagentic_runs WHERE run_id = $1"
);

const FINISH_RUN: &str = concat!(
    "UPDATE fastagentic_runs SET status = $2, output = $3, error = $4, updated_at = now(), ",
    "last_event = last_event + 1 ",
    "WHERE run_id = $1 AND status = 'running' AND attempts = $5 RETURNING ",
    columns!()
);

/// Refreshes `updated_at` of a run still running at attempt $2; changes nothing else.
const HEARTBEAT_RUN: &str = "UPDATE fastagentic_runs SET updated_at = now() \
     WHERE run_id = $1 AND status = 'running' AND attempts = $2";

/// Marks a run still running at attempt $2 stalled: last updated at the epoch.
const RELEASE_RUN: &str = "UPDATE fastagentic_runs SET updated_at = 'epoch' \
     WHERE run_id = $1 AND status = 'running' AND attempts = $2";

/// Insert, or restart a failed run or a stalled running one ($4: stale-after, seconds); returns
/// the row only when this call started the run, with the status, instance and attempt it had
/// before (`prev_*`, NULL for a new row).
const BEGIN_RUN: &str = concat!(
    "WITH prev AS (SELECT status, instance_id, attempts FROM fastagentic_runs WHERE run_id = $1), ",
    "started AS (",
    "INSERT INTO fastagentic_runs AS r (run_id, status, input, instance_id, background) ",
    "VALUES ($1, 'running', $2, $3, $5) ",
    "ON CONFLICT (run_id) DO UPDATE SET status = 'running', input = EXCLUDED.input, ",
    "background = EXCLUDED.background, ",
    "output = NULL, error = NULL, instance_id = EXCLUDED.instance_id, ",
    "attempts = r.attempts + 1, updated_at = now() ",
    "WHERE (r.status = 'failed' ",
    "OR (r.status = 'running' AND r.updated_at < now() - make_interval(secs => $4))) ",
    // Unchanged since the snapshot `prev` was read, so `prev` is what this replaces.
    "AND r.status = (SELECT status FROM prev) AND r.attempts = (SELECT attempts FROM prev) ",
    "RETURNING ",
    columns!(),
    ") SELECT started.*, prev.status AS prev_status, prev.instance_id AS prev_instance_id, ",
    "prev.attempts AS prev_attempts FROM started LEFT JOIN prev ON true"
);

/// Applies the embedded migrations (idempotent; safe to run concurrently from many processes).
pub async fn migrate(db: &DbPool) -> Result<(), StoreError> {
    // Through the pool rather than `db.acquire()`: sqlx's `Acquire` for `&mut PgConnection` is
    // not general enough for the `Send` futures of `async_trait`.
    MIGRATOR
        .run(db.pg())
        .await
        .map_err(|e| StoreError::Backend {
            store: DurableStoreKind::Postgres,
            message: format!("migration failed: {e}"),
        })
}

/// See the module docs.
#[derive(Debug)]
pub struct PostgresRunStore {
    db: DbPool,
    schema: OnceCell<()>,
    stale_after: Duration,
    stale_after_secs: f64,
    events: EventLimits,
    /// When events were last deleted by age (see [`RunStore::stalled_background`]).
    pruned: std::sync::Mutex<Option<std::time::Instant>>,
}

impl PostgresRunStore {
    /// A store on the worker's database pool that takes over runs left `running` for longer
    /// than `stale_after`.
    pub fn new(db: DbPool, stale_after: Duration) -> Self {
        Self {
            db,
            schema: OnceCell::new(),
            stale_after,
            stale_after_secs: stale_after.as_secs_f64(),
            events: EventLimits::default(),
            pruned: std::sync::Mutex::new(None),
        }
    }

    /// The same store with these bounds on each run's events.
    pub fn with_event_limits(mut self, limits: EventLimits) -> Self {
        self.events = limits;
        self
    }

    /// An update fenced by `status = 'running' AND attempts = $2` ([`HEARTBEAT_RUN`],
    /// [`RELEASE_RUN`]).
    async fn touch(
        &self,
        query: &'static str,
        run_id: &RunId,
        attempt: u32,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let updated = sqlx::query(query)
            .bind(run_id.as_str())
            .bind(i64::from(attempt))
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        if updated.rows_affected() == 1 {
            return Ok(());
        }
        Err(Self::refused(&mut conn, run_id, attempt).await)
    }

    /// Runs the migrations once per store; retried on the next call if they failed.
    pub async fn ensure_schema(&self) -> Result<(), StoreError> {
        self.schema
            .get_or_try_init(|| migrate(&self.db))
            .await
            .map(|_| ())
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, StoreError> {
        self.ensure_schema().await?;
        Ok(self.db.acquire().await?)
    }

    async fn select(
        conn: &mut PgConnection,
        run_id: &RunId,
    ) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query(SELECT_RUN)
            .bind(run_id.as_str())
            .fetch_optional(conn)
            .await
            .map_err(backend)?;
        row.map(|row| parse_row(run_id, &row)).transpose()
    }

    /// Why an update fenced by `status = 'running' AND attempts = attempt` matched no row (read
    /// after it; the update itself was the one atomic step).
    async fn refused(conn: &mut PgConnection, run_id: &RunId, attempt: u32) -> StoreError {
        match Self::select(conn, run_id).await {
            Err(e) => e,
            Ok(None) => StoreError::NotFound(run_id.to_string()),
            Ok(Some(record)) if record.attempts != attempt => StoreError::Superseded {
                run_id: run_id.to_string(),
                attempt,
            },
            Ok(Some(record)) => StoreError::NotRunning {
                run_id: run_id.to_string(),
                status: record.status,
            },
        }
    }
}

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend {
        store: DurableStoreKind::Postgres,
        message: e.to_string(),
    }
}

fn parse_row(run_id: &RunId, row: &PgRow) -> Result<RunRecord, StoreError> {
    let corrupt = |e: sqlx::Error| StoreError::Corrupt {
        store: DurableStoreKind::Postgres,
        run_id: run_id.to_string(),
        message: e.to_string(),
    };
    let status: String = row.try_get("status").map_err(corrupt)?;
    let attempts: i32 = row.try_get("attempts").map_err(corrupt)?;
    Ok(RunRecord {
        run_id: row.try_get("run_id").map_err(corrupt)?,
        status: RunStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
            store: DurableStoreKind::Postgres,
            run_id: run_id.to_string(),
            message: format!("unknown status {status:?}"),
        })?,
        input: row.try_get::<Json<Payload>, _>("input").map_err(corrupt)?.0,
        output: row
            .try_get::<Option<Json<Payload>>, _>("output")
            .map_err(corrupt)?
            .map(|o| o.0),
        error: row.try_get("error").map_err(corrupt)?,
        created_at: row.try_get("created_at").map_err(corrupt)?,
        updated_at: row.try_get("updated_at").map_err(corrupt)?,
        instance_id: row.try_get("instance_id").map_err(corrupt)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        background: row.try_get("background").map_err(corrupt)?,
    })
}

/// The stalled attempt a started row replaced: the `prev_*` columns of [`BEGIN_RUN`], when the
/// row was running before.
fn parse_taken_over(run_id: &RunId, row: &PgRow) -> Result<Option<TakenOver>, StoreError> {
    let corrupt = |e: sqlx::Error| StoreError::Corrupt {
        store: DurableStoreKind::Postgres,
        run_id: run_id.to_string(),
        message: e.to_string(),
    };
    let status: Option<String> = row.try_get("prev_status").map_err(corrupt)?;
    if status.as_deref() != Some(RunStatus::Running.as_str()) {
        return Ok(None);
    }
    let attempts: Option<i32> = row.try_get("prev_attempts").map_err(corrupt)?;
    Ok(Some(TakenOver {
        instance_id: row
            .try_get::<Option<String>, _>("prev_instance_id")
            .map_err(corrupt)?
            .unwrap_or_default(),
        attempts: attempts.and_then(|a| u32::try_from(a).ok()).unwrap_or(0),
    }))
}

/// How often `begin` re-reads when the row changed between its insert and its read (a failed
/// run restarted by someone else in between, or a change between the statement's snapshot and
/// its row lock). Each retry means another caller made progress.
const BEGIN_ATTEMPTS: usize = 5;

#[async_trait]
impl RunStore for PostgresRunStore {
    fn kind(&self) -> DurableStoreKind {
        DurableStoreKind::Postgres
    }

    async fn begin_as(
        &self,
        run_id: &RunId,
        input: &Payload,
        instance_id: &str,
        background: bool,
    ) -> Result<Begin, StoreError> {
        let mut conn = self.conn().await?;
        for _ in 0..BEGIN_ATTEMPTS {
            let started = sqlx::query(BEGIN_RUN)
                .bind(run_id.as_str())
                .bind(Json(input))
                .bind(instance_id)
                .bind(self.stale_after_secs)
                .bind(background)
                .fetch_optional(&mut *conn)
                .await
                .map_err(backend)?;
            if let Some(row) = started {
                let record = parse_row(run_id, &row)?;
                let taken_over = parse_taken_over(run_id, &row)?;
                return Ok(Begin::Started(record, taken_over));
            }
            // Not started: the row is completed, or running and not stalled, or it changed
            // between the statement's snapshot and its row lock. (A row that turned stale in
            // the moment since is reported running; the next retry takes it over.)
            match Self::select(&mut conn, run_id).await? {
                Some(r) if r.status == RunStatus::Completed => {
                    return Ok(Begin::AlreadyCompleted(r));
                }
                Some(r) if r.status == RunStatus::Running => return Ok(Begin::StillRunning(r)),
                // Failed again (or gone) since our statement: try to start it once more.
                _ => continue,
            }
        }
        Err(StoreError::Backend {
            store: DurableStoreKind::Postgres,
            message: format!("run {run_id} kept changing while it was being begun"),
        })
    }

    async fn finish(
        &self,
        run_id: &RunId,
        attempt: u32,
        outcome: Outcome<'_>,
    ) -> Result<RunRecord, StoreError> {
        let (output, error) = match outcome {
            Outcome::Completed(output) => (Some(Json(output)), None),
            Outcome::Failed(error) => (None, Some(error)),
        };
        let mut conn = self.conn().await?;
        let row = sqlx::query(FINISH_RUN)
            .bind(run_id.as_str())
            .bind(outcome.status().as_str())
            .bind(output)
            .bind(error)
            .bind(i64::from(attempt))
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        if let Some(row) = row {
            return parse_row(run_id, &row);
        }
        Err(Self::refused(&mut conn, run_id, attempt).await)
    }

    async fn heartbeat(&self, run_id: &RunId, attempt: u32) -> Result<(), StoreError> {
        self.touch(HEARTBEAT_RUN, run_id, attempt).await
    }

    async fn release(&self, run_id: &RunId, attempt: u32) -> Result<(), StoreError> {
        self.touch(RELEASE_RUN, run_id, attempt).await
    }

    async fn append_event(
        &self,
        run_id: &RunId,
        attempt: u32,
        kind: EventKind,
        data: &str,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        match events::append(&mut conn, run_id, attempt, kind, data, self.events).await? {
            Some(seq) => Ok(seq),
            None => Err(Self::refused(&mut conn, run_id, attempt).await),
        }
    }

    async fn events_after(
        &self,
        run_id: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        let mut conn = self.conn().await?;
        events::read(&mut conn, run_id, after, limit).await
    }

    async fn stalled_background(&self, limit: usize) -> Result<Vec<RunId>, StoreError> {
        let mut conn = self.conn().await?;
        if self.prune_due() {
            events::prune(&mut conn, self.events.ttl).await?;
        }
        events::stalled(&mut conn, self.stale_after_secs, limit).await
    }

    fn stale_after(&self) -> Duration {
        self.stale_after
    }

    async fn get(&self, run_id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        let mut conn = self.conn().await?;
        Self::select(&mut conn, run_id).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        sqlx::query("SELECT 1")
            .execute(&mut *conn)
            .await
            .map(drop)
            .map_err(backend)
    }
}
