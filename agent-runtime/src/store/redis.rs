//! Redis run store: one hash per run at `fastagentic:run:{run_id}`, with the fields of
//! [`RunRecord`] (`input`/`output` as JSON text, times as RFC 3339).
//!
//! Every state change is one Lua script, so it is atomic on the server: `begin` reads the
//! status and writes `running` in the same step (the Redis equivalent of `SET NX`, extended to
//! restart failed runs), and `complete`/`fail` only change a run that is still running.
//!
//! Retention: every state change sets the key to expire [`RUN_TTL_SECONDS`] (7 days) later, so
//! the key space is bounded by a week of traffic; a run id older than that runs again. A run
//! whose process died while it ran (it stays `running`, answering 409) is forgotten the same way.

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_redis::redis::{self, Script};
use serde_json::Value;

use super::{Begin, DurableStoreKind, RunId, RunRecord, RunStatus, RunStore, StoreError};
use crate::pools::RedisPool;

/// Prefix of every run key.
pub const KEY_PREFIX: &str = "fastagentic:run:";

/// Seconds a run is kept after its last change.
pub const RUN_TTL_SECONDS: u64 = 7 * 24 * 3600;

/// ARGV: run_id, input JSON, instance_id, now, ttl seconds. Returns {outcome, HGETALL} where outcome is
/// `started` or the existing status.
static BEGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('HGET', KEYS[1], 'status')
if status == false or status == 'failed' then
  redis.call('HSET', KEYS[1], 'run_id', ARGV[1], 'status', 'running', 'input', ARGV[2],
             'instance_id', ARGV[3], 'updated_at', ARGV[4])
  redis.call('HSETNX', KEYS[1], 'created_at', ARGV[4])
  redis.call('HDEL', KEYS[1], 'output', 'error')
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return {'started', redis.call('HGETALL', KEYS[1])}
end
return {status, redis.call('HGETALL', KEYS[1])}
",
    )
});

/// ARGV: new status, field to set (`output` or `error`), its value, now, ttl seconds. Returns {outcome,
/// HGETALL} where outcome is `done`, `missing` or the status of a run that is not running.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('HGET', KEYS[1], 'status')
if status == false then return {'missing', {}} end
if status ~= 'running' then return {status, redis.call('HGETALL', KEYS[1])} end
redis.call('HSET', KEYS[1], 'status', ARGV[1], ARGV[2], ARGV[3], 'updated_at', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {'done', redis.call('HGETALL', KEYS[1])}
",
    )
});

/// See the module docs.
#[derive(Debug, Clone)]
pub struct RedisRunStore {
    pool: RedisPool,
}

impl RedisRunStore {
    /// A store on the worker's Redis pool.
    pub fn new(pool: RedisPool) -> Self {
        Self { pool }
    }

    fn key(run_id: &RunId) -> String {
        format!("{KEY_PREFIX}{run_id}")
    }

    async fn finish(
        &self,
        run_id: &RunId,
        status: RunStatus,
        field: &str,
        value: &str,
    ) -> Result<RunRecord, StoreError> {
        let mut conn = self.pool.get().await?;
        let (outcome, fields): (String, HashMap<String, String>) = FINISH
            .key(Self::key(run_id))
            .arg(status.as_str())
            .arg(field)
            .arg(value)
            .arg(Utc::now().to_rfc3339())
            .arg(RUN_TTL_SECONDS)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        match outcome.as_str() {
            "done" => parse_record(run_id, &fields),
            "missing" => Err(StoreError::NotFound(run_id.to_string())),
            other => Err(StoreError::NotRunning {
                run_id: run_id.to_string(),
                status: RunStatus::parse(other).ok_or_else(|| corrupt(run_id, "unknown status"))?,
            }),
        }
    }
}

fn backend(e: redis::RedisError) -> StoreError {
    StoreError::Backend {
        store: DurableStoreKind::Redis,
        message: e.to_string(),
    }
}

fn corrupt(run_id: &RunId, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        store: DurableStoreKind::Redis,
        run_id: run_id.to_string(),
        message: message.into(),
    }
}

fn parse_record(run_id: &RunId, f: &HashMap<String, String>) -> Result<RunRecord, StoreError> {
    let field = |name: &str| {
        f.get(name)
            .ok_or_else(|| corrupt(run_id, format!("field {name} is missing")))
    };
    let json = |name: &str, text: &str| {
        serde_json::from_str::<Value>(text)
            .map_err(|e| corrupt(run_id, format!("field {name}: {e}")))
    };
    let time = |name: &str| {
        field(name).and_then(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| corrupt(run_id, format!("field {name}: {e}")))
        })
    };
    Ok(RunRecord {
        run_id: field("run_id")?.clone(),
        status: RunStatus::parse(field("status")?)
            .ok_or_else(|| corrupt(run_id, "unknown status"))?,
        input: json("input", field("input")?)?,
        output: f.get("output").map(|t| json("output", t)).transpose()?,
        error: f.get("error").cloned(),
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        instance_id: field("instance_id")?.clone(),
        attempts: field("attempts")?
            .parse()
            .map_err(|_| corrupt(run_id, "field attempts is not a number"))?,
    })
}

#[async_trait]
impl RunStore for RedisRunStore {
    fn kind(&self) -> DurableStoreKind {
        DurableStoreKind::Redis
    }

    async fn begin(
        &self,
        run_id: &RunId,
        input: &Value,
        instance_id: &str,
    ) -> Result<Begin, StoreError> {
        let mut conn = self.pool.get().await?;
        let (outcome, fields): (String, HashMap<String, String>) = BEGIN
            .key(Self::key(run_id))
            .arg(run_id.as_str())
            .arg(input.to_string())
            .arg(instance_id)
            .arg(Utc::now().to_rfc3339())
            .arg(RUN_TTL_SECONDS)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        let record = parse_record(run_id, &fields)?;
        match outcome.as_str() {
            "started" => Ok(Begin::Started(record)),
            "completed" => Ok(Begin::AlreadyCompleted(record)),
            "running" => Ok(Begin::StillRunning(record)),
            other => Err(corrupt(run_id, format!("unexpected outcome {other:?}"))),
        }
    }

    async fn complete(&self, run_id: &RunId, output: &Value) -> Result<RunRecord, StoreError> {
        self.finish(run_id, RunStatus::Completed, "output", &output.to_string())
            .await
    }

    async fn fail(&self, run_id: &RunId, error: &str) -> Result<RunRecord, StoreError> {
        self.finish(run_id, RunStatus::Failed, "error", error).await
    }

    async fn get(&self, run_id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        let mut conn = self.pool.get().await?;
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(Self::key(run_id))
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse_record(run_id, &fields).map(Some)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(backend)
    }
}
