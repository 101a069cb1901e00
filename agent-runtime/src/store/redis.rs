//! Redis run store: one hash per run at `fastagentic:run:{run_id}`, with the fields of
//! [`RunRecord`] (`input`/`output` as JSON text, times as RFC 3339) and `updated_ms`, the
//! server's clock (`TIME`, milliseconds) at the last state change.
//!
//! Every state change is one Lua script, so it is atomic on the server: `begin` reads the
//! status and writes `running` in the same step (the Redis equivalent of `SET NX`, extended to
//! restart failed runs and to take over stalled ones), and `complete`/`fail`/`heartbeat` only
//! change a run that is still running at the caller's attempt (a heartbeat stamps `updated_at`
//! and `updated_ms` and renews the expiry, nothing else).
//!
//! A run is stalled when it is `running` and its `updated_ms` is more than the stale-after
//! threshold behind the server's `TIME`: the one clock every pod sees. A record without
//! `updated_ms` (written by an older version) is never taken over; it still expires by TTL.
//! (Writing after `TIME` in a script needs script effects replication, the default since Redis 5.)
//!
//! Retention: every state change sets the key to expire [`RUN_TTL_SECONDS`] (7 days) later, so
//! the key space is bounded by a week of traffic; a run id older than that runs again.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_redis::redis::{self, Script};

use super::{
    Begin, DurableStoreKind, EventKind, EventLimits, EventPage, Outcome, Payload, RunId, RunRecord,
    RunStatus, RunStore, StoreError, TakenOver,
};
use crate::pools::RedisPool;

/// Prefix of every run key.
pub const KEY_PREFIX: &str = "fastagentic:run:";

/// The sorted set of running background runs (score: when begun, server milliseconds).
pub const BACKGROUND_KEY: &str = "fastagentic:background";

mod events;

/// Seconds a run is kept after its last change.
pub const RUN_TTL_SECONDS: u64 = 7 * 24 * 3600;

/// KEYS: the run, the background set. ARGV: run_id, input JSON, instance_id, now, ttl seconds,
/// stale-after milliseconds, `1` for a background run. Returns
/// {outcome, HGETALL, previous instance_id, previous attempts} where outcome is `started`,
/// `taken_over` (a stalled running run was started again) or the existing status.
static BEGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prev = redis.call('HMGET', KEYS[1], 'status', 'updated_ms', 'instance_id', 'attempts')
local status = prev[1]
local outcome = 'started'
if status == 'running' then
  local updated_ms = tonumber(prev[2])
  if updated_ms ~= nil and now_ms - updated_ms > tonumber(ARGV[6]) then
    outcome = 'taken_over'
  end
end
if status == false or status == 'failed' or outcome == 'taken_over' then
  redis.call('HSET', KEYS[1], 'run_id', ARGV[1], 'status', 'running', 'input', ARGV[2],
             'instance_id', ARGV[3], 'updated_at', ARGV[4], 'updated_ms', tostring(now_ms))
  redis.call('HSETNX', KEYS[1], 'created_at', ARGV[4])
  redis.call('HDEL', KEYS[1], 'output', 'error')
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('HSET', KEYS[1], 'background', ARGV[7])
  if ARGV[7] == '1' then redis.call('ZADD', KEYS[2], now_ms, ARGV[1]) end
  return {outcome, redis.call('HGETALL', KEYS[1]), prev[3] or '', prev[4] or ''}
end
return {status, redis.call('HGETALL', KEYS[1]), '', ''}
",
    )
});

/// KEYS: the run, the background set, the run's events. ARGV: new status, field to set
/// (`output` or `error`), its value, now, ttl seconds, attempt, run_id, events ttl seconds.
/// Returns {outcome, HGETALL} where outcome is `done`, `missing`, `superseded` (the run is at
/// another attempt) or the status of a run that is not running. Takes the terminal event's
/// number and leaves the background set.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('HMGET', KEYS[1], 'status', 'attempts')
local status = cur[1]
if status == false then return {'missing', {}} end
if tonumber(cur[2]) ~= tonumber(ARGV[6]) then
  return {'superseded', redis.call('HGETALL', KEYS[1])}
end
if status ~= 'running' then return {status, redis.call('HGETALL', KEYS[1])} end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'status', ARGV[1], ARGV[2], ARGV[3], 'updated_at', ARGV[4],
           'updated_ms', tostring(now_ms))
redis.call('HINCRBY', KEYS[1], 'events', 1)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[7])
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('EXPIRE', KEYS[3], ARGV[8]) end
return {'done', redis.call('HGETALL', KEYS[1])}
",
    )
});

/// ARGV: now, ttl seconds, attempt, `1` to release the run (mark it stalled). Stamps
/// `updated_at` and `updated_ms` (and renews the expiry) of a run still running at the attempt,
/// changing nothing else; a release sets `updated_ms` to 0 instead. Returns `done`, `missing`,
/// `superseded` or the status of a run that is not running, like [`FINISH`].
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('HMGET', KEYS[1], 'status', 'attempts')
local status = cur[1]
if status == false then return 'missing' end
if tonumber(cur[2]) ~= tonumber(ARGV[3]) then return 'superseded' end
if status ~= 'running' then return status end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[4] == '1' then now_ms = 0 end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[1], 'updated_ms', tostring(now_ms))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 'done'
",
    )
});

/// See the module docs.
#[derive(Debug, Clone)]
pub struct RedisRunStore {
    pool: RedisPool,
    stale_after: Duration,
    stale_after_ms: u64,
    events: EventLimits,
}

impl RedisRunStore {
    /// A store on the worker's Redis pool that takes over runs left `running` for longer than
    /// `stale_after`.
    pub fn new(pool: RedisPool, stale_after: Duration) -> Self {
        Self {
            pool,
            stale_after,
            stale_after_ms: u64::try_from(stale_after.as_millis()).unwrap_or(u64::MAX),
            events: EventLimits::default(),
        }
    }

    /// The same store with these bounds on each run's events.
    pub fn with_event_limits(mut self, limits: EventLimits) -> Self {
        self.events = limits;
        self
    }

    fn key(run_id: &RunId) -> String {
        format!("{KEY_PREFIX}{run_id}")
    }

    /// The key of the run's events (a Redis stream).
    fn events_key(run_id: &RunId) -> String {
        format!("{}{run_id}", events::KEY_PREFIX)
    }

    /// [`HEARTBEAT`] or, with `release`, the release.
    async fn touch(&self, run_id: &RunId, attempt: u32, release: bool) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        // A released run reads as last updated at the epoch, to every clock.
        let updated_at = if release {
            DateTime::<Utc>::UNIX_EPOCH
        } else {
            Utc::now()
        };
        let outcome: String = HEARTBEAT
            .key(Self::key(run_id))
            .arg(updated_at.to_rfc3339())
            .arg(RUN_TTL_SECONDS)
            .arg(attempt)
            .arg(if release { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        match outcome.as_str() {
            "done" => Ok(()),
            other => Err(refused(run_id, attempt, other)),
        }
    }
}

/// The error for an outcome of [`FINISH`] or [`HEARTBEAT`] other than `done`.
fn refused(run_id: &RunId, attempt: u32, outcome: &str) -> StoreError {
    match outcome {
        "missing" => StoreError::NotFound(run_id.to_string()),
        "superseded" => StoreError::Superseded {
            run_id: run_id.to_string(),
            attempt,
        },
        other => match RunStatus::parse(other) {
            Some(status) => StoreError::NotRunning {
                run_id: run_id.to_string(),
                status,
            },
            None => corrupt(run_id, "unknown status"),
        },
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
        Payload::from_json(text).map_err(|e| corrupt(run_id, format!("field {name}: {e}")))
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
        background: f.get("background").is_some_and(|b| b == "1"),
    })
}

#[async_trait]
impl RunStore for RedisRunStore {
    fn kind(&self) -> DurableStoreKind {
        DurableStoreKind::Redis
    }

    async fn begin_as(
        &self,
        run_id: &RunId,
        input: &Payload,
        instance_id: &str,
        background: bool,
    ) -> Result<Begin, StoreError> {
        let mut conn = self.pool.get().await?;
        type Reply = (String, HashMap<String, String>, String, String);
        let (outcome, fields, previous_instance, previous_attempts): Reply = BEGIN
            .key(Self::key(run_id))
            .key(BACKGROUND_KEY)
            .arg(run_id.as_str())
            .arg(input.json())
            .arg(instance_id)
            .arg(Utc::now().to_rfc3339())
            .arg(RUN_TTL_SECONDS)
            .arg(self.stale_after_ms)
            .arg(if background { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        let record = parse_record(run_id, &fields)?;
        match outcome.as_str() {
            "started" => Ok(Begin::Started(record, None)),
            "taken_over" => {
                let taken_over = TakenOver {
                    instance_id: previous_instance,
                    attempts: previous_attempts.parse().map_err(|_| {
                        corrupt(run_id, "field attempts of the stalled run is not a number")
                    })?,
                };
                Ok(Begin::Started(record, Some(taken_over)))
            }
            "completed" => Ok(Begin::AlreadyCompleted(record)),
            "running" => Ok(Begin::StillRunning(record)),
            other => Err(corrupt(run_id, format!("unexpected outcome {other:?}"))),
        }
    }

    async fn finish(
        &self,
        run_id: &RunId,
        attempt: u32,
        outcome: Outcome<'_>,
    ) -> Result<RunRecord, StoreError> {
        let (field, value) = match outcome {
            Outcome::Completed(output) => ("output", output.json()),
            Outcome::Failed(error) => ("error", error),
        };
        let mut conn = self.pool.get().await?;
        let (answer, fields): (String, HashMap<String, String>) = FINISH
            .key(Self::key(run_id))
            .key(BACKGROUND_KEY)
            .key(Self::events_key(run_id))
            .arg(outcome.status().as_str())
            .arg(field)
            .arg(value)
            .arg(Utc::now().to_rfc3339())
            .arg(RUN_TTL_SECONDS)
            .arg(attempt)
            .arg(run_id.as_str())
            .arg(self.events.ttl.as_secs().max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        match answer.as_str() {
            "done" => parse_record(run_id, &fields),
            other => Err(refused(run_id, attempt, other)),
        }
    }

    async fn heartbeat(&self, run_id: &RunId, attempt: u32) -> Result<(), StoreError> {
        self.touch(run_id, attempt, false).await
    }

    async fn release(&self, run_id: &RunId, attempt: u32) -> Result<(), StoreError> {
        self.touch(run_id, attempt, true).await
    }

    async fn append_event(
        &self,
        run_id: &RunId,
        attempt: u32,
        kind: EventKind,
        data: &str,
    ) -> Result<u64, StoreError> {
        self.append(run_id, attempt, kind, data).await
    }

    async fn events_after(
        &self,
        run_id: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        self.read_events(run_id, after, limit).await
    }

    async fn stalled_background(&self, limit: usize) -> Result<Vec<RunId>, StoreError> {
        self.stalled(limit).await
    }

    fn stale_after(&self) -> Duration {
        self.stale_after
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
