//! PostgreSQL run store: table `fastagentic_runs`, created by the embedded migrations in
//! `agent-runtime/migrations/`.
//!
//! `begin` is a single `INSERT ... ON CONFLICT DO UPDATE ... WHERE status = 'failed'
//! RETURNING`: the row lock on the conflicting key serialises concurrent callers, so exactly one
//! gets a row back (started) and the rest read the existing record.
//!
//! Migrations run on first use (or first `ping`), not at process start, so a worker starts even
//! when the database is down; sqlx takes a PostgreSQL advisory lock around them, so several
//! workers and pods starting at once apply each migration exactly once.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use tokio::sync::OnceCell;

use super::{Begin, DurableStoreKind, RunId, RunRecord, RunStatus, RunStore, StoreError};
use crate::pools::DbPool;

/// The embedded schema migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The columns of a run, in every `SELECT`/`RETURNING` (a macro so the queries stay literals).
macro_rules! columns {
    () => {
        "run_id, status, input, output, error, instance_id, attempts, created_at, updated_at"
    };
}

const SELECT_RUN: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM fastagentic_runs WHERE run_id = $1"
);

const FINISH_RUN: &str = concat!(
    "UPDATE fastagentic_runs SET status = $2, output = $3, error = $4, updated_at = now() ",
    "WHERE run_id = $1 AND status = 'running' RETURNING ",
    columns!()
);

/// Insert, or restart a failed run; returns the row only when this call started the run.
const BEGIN_RUN: &str = concat!(
    "INSERT INTO fastagentic_runs AS r (run_id, status, input, instance_id) ",
    "VALUES ($1, 'running', $2, $3) ",
    "ON CONFLICT (run_id) DO UPDATE SET status = 'running', input = EXCLUDED.input, ",
    "output = NULL, error = NULL, instance_id = EXCLUDED.instance_id, ",
    "attempts = r.attempts + 1, updated_at = now() ",
    "WHERE r.status = 'failed' ",
    "RETURNING ",
    columns!()
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
}

impl PostgresRunStore {
    /// A store on the worker's database pool.
    pub fn new(db: DbPool) -> Self {
        Self {
            db,
            schema: OnceCell::new(),
        }
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

    async fn finish(
        &self,
        run_id: &RunId,
        status: RunStatus,
        output: Option<&Value>,
        error: Option<&str>,
    ) -> Result<RunRecord, StoreError> {
        let mut conn = self.conn().await?;
        let row = sqlx::query(FINISH_RUN)
            .bind(run_id.as_str())
            .bind(status.as_str())
            .bind(output)
            .bind(error)
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        if let Some(row) = row {
            return parse_row(run_id, &row);
        }
        match Self::select(&mut conn, run_id).await? {
            None => Err(StoreError::NotFound(run_id.to_string())),
            Some(record) => Err(StoreError::NotRunning {
                run_id: run_id.to_string(),
                status: record.status,
            }),
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
        input: row.try_get("input").map_err(corrupt)?,
        output: row.try_get("output").map_err(corrupt)?,
        error: row.try_get("error").map_err(corrupt)?,
        created_at: row.try_get("created_at").map_err(corrupt)?,
        updated_at: row.try_get("updated_at").map_err(corrupt)?,
        instance_id: row.try_get("instance_id").map_err(corrupt)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
    })
}

/// How often `begin` re-reads when the row changed between its insert and its read (a failed
/// run restarted by someone else in between). Each retry means another caller made progress.
const BEGIN_ATTEMPTS: usize = 5;

#[async_trait]
impl RunStore for PostgresRunStore {
    fn kind(&self) -> DurableStoreKind {
        DurableStoreKind::Postgres
    }

    async fn begin(
        &self,
        run_id: &RunId,
        input: &Value,
        instance_id: &str,
    ) -> Result<Begin, StoreError> {
        let mut conn = self.conn().await?;
        for _ in 0..BEGIN_ATTEMPTS {
            let started = sqlx::query(BEGIN_RUN)
                .bind(run_id.as_str())
                .bind(input)
                .bind(instance_id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(backend)?;
            if let Some(row) = started {
                return parse_row(run_id, &row).map(Begin::Started);
            }
            match Self::select(&mut conn, run_id).await? {
                Some(r) if r.status == RunStatus::Completed => {
                    return Ok(Begin::AlreadyCompleted(r));
                }
                Some(r) if r.status == RunStatus::Running => return Ok(Begin::StillRunning(r)),
                // Failed again (or gone) since our insert: try to start it once more.
                _ => continue,
            }
        }
        Err(StoreError::Backend {
            store: DurableStoreKind::Postgres,
            message: format!("run {run_id} kept changing while it was being begun"),
        })
    }

    async fn complete(&self, run_id: &RunId, output: &Value) -> Result<RunRecord, StoreError> {
        self.finish(run_id, RunStatus::Completed, Some(output), None)
            .await
    }

    async fn fail(&self, run_id: &RunId, error: &str) -> Result<RunRecord, StoreError> {
        self.finish(run_id, RunStatus::Failed, None, Some(error))
            .await
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
