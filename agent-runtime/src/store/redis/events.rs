//! The Redis store's event log: a Redis stream per run at `fastagentic:events:{run_id}`, whose
//! entry ids are `0-<seq>` with fields `k` (kind) and `d` (data). The run's hash counts the
//! numbers taken (field `events`), so numbering goes on across attempts and after the stream
//! expired. An append is one script: it checks the attempt like a heartbeat, takes the next
//! number, `XADD`s with `MAXLEN` (exact) and sets the stream to expire the events' TTL later.

use std::sync::LazyLock;

use deadpool_redis::redis::Script;

use super::{BACKGROUND_KEY, RedisRunStore, backend, corrupt, refused};
use crate::store::{EventKind, EventPage, LoggedEvent, RunId, StoreError};

/// Prefix of every event stream key.
pub const KEY_PREFIX: &str = "fastagentic:events:";

/// KEYS: the run, its events. ARGV: attempt, kind, data, max events, events ttl seconds.
/// Returns {outcome, seq} where outcome is `done` or what [`super::HEARTBEAT`] would refuse.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('HMGET', KEYS[1], 'status', 'attempts')
local status = cur[1]
if status == false then return {'missing', 0} end
if tonumber(cur[2]) ~= tonumber(ARGV[1]) then return {'superseded', 0} end
if status ~= 'running' then return {status, 0} end
local seq = redis.call('HINCRBY', KEYS[1], 'events', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], '0-' .. seq, 'k', ARGV[2], 'd', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return {'done', seq}
",
    )
});

/// KEYS: the run, its events. ARGV: first number wanted, count. Returns {last, first kept or
/// '', then kind and data and number of each event}.
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local last = redis.call('HGET', KEYS[1], 'events') or '0'
local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local first = ''
if #head > 0 then first = head[1][1] end
local out = {last, first}
for _, e in ipairs(redis.call('XRANGE', KEYS[2], '0-' .. ARGV[1], '+', 'COUNT', ARGV[2])) do
  local f = e[2]
  local kind, data = '', ''
  for i = 1, #f, 2 do
    if f[i] == 'k' then kind = f[i + 1] elseif f[i] == 'd' then data = f[i + 1] end
  end
  table.insert(out, e[1]); table.insert(out, kind); table.insert(out, data)
end
return out
",
    )
});

/// KEYS: the background set. ARGV: count, stale-after milliseconds, run key prefix. Returns the
/// ids of running background runs not updated within stale-after (by the server's clock);
/// members whose run is no longer running are removed.
static STALLED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)) do
  local cur = redis.call('HMGET', ARGV[3] .. id, 'status', 'updated_ms')
  if cur[1] ~= 'running' then
    redis.call('ZREM', KEYS[1], id)
  elseif now_ms - (tonumber(cur[2]) or now_ms) > tonumber(ARGV[2]) then
    table.insert(out, id)
  end
end
return out
",
    )
});

/// The number of a stream entry id `0-<seq>`.
fn seq_of(run_id: &RunId, entry: &str) -> Result<u64, StoreError> {
    entry
        .strip_prefix("0-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| corrupt(run_id, format!("event id {entry:?} is not 0-<number>")))
}

impl RedisRunStore {
    pub(super) async fn append(
        &self,
        run_id: &RunId,
        attempt: u32,
        kind: EventKind,
        data: &str,
    ) -> Result<u64, StoreError> {
        let mut conn = self.pool.get().await?;
        let (outcome, seq): (String, u64) = APPEND
            .key(Self::key(run_id))
            .key(Self::events_key(run_id))
            .arg(attempt)
            .arg(kind.as_str())
            .arg(data)
            .arg(self.events.max_events.max(1))
            .arg(self.events.ttl.as_secs().max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        match outcome.as_str() {
            "done" => Ok(seq),
            other => Err(refused(run_id, attempt, other)),
        }
    }

    pub(super) async fn read_events(
        &self,
        run_id: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        let mut conn = self.pool.get().await?;
        let reply: Vec<String> = READ
            .key(Self::key(run_id))
            .key(Self::events_key(run_id))
            .arg(after.saturating_add(1))
            .arg(limit.max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        let mut parts = reply.into_iter();
        let last = parts
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|_| corrupt(run_id, "field events is not a number"))?;
        let first = match parts.next().unwrap_or_default() {
            entry if entry.is_empty() => None,
            entry => Some(seq_of(run_id, &entry)?),
        };
        let rest: Vec<String> = parts.collect();
        let mut events = Vec::with_capacity(rest.len() / 3);
        for chunk in rest.chunks(3) {
            let [entry, kind, data] = chunk else {
                return Err(corrupt(run_id, "an event has missing fields"));
            };
            events.push(LoggedEvent {
                seq: seq_of(run_id, entry)?,
                kind: EventKind::parse(kind)
                    .ok_or_else(|| corrupt(run_id, format!("unknown event kind {kind:?}")))?,
                data: data.clone(),
            });
        }
        Ok(EventPage {
            events,
            first,
            last,
        })
    }

    pub(super) async fn stalled(&self, limit: usize) -> Result<Vec<RunId>, StoreError> {
        let mut conn = self.pool.get().await?;
        let ids: Vec<String> = STALLED
            .key(BACKGROUND_KEY)
            .arg(limit.max(1))
            .arg(self.stale_after_ms)
            .arg(super::KEY_PREFIX)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        // Ids were validated when the runs were begun; one that no longer parses is skipped.
        Ok(ids.iter().filter_map(|id| RunId::parse(id).ok()).collect())
    }
}
