#!/usr/bin/env bash
# Benchmark of the fastagentic runtime against the Python FastAgentic server and a minimal
# axum hello-world (this machine's ceiling), all measured in the same run on 127.0.0.1.
#
#   bench/runtime.sh            # prints a markdown table (copy it into bench/README.md)
#
# Environment:
#   BENCH_DURATION   seconds per load run (default 10)
#   BENCH_ROUNDS     rounds of the ceiling and our runtime, reported as medians (default 3)
#   BENCH_JOBS       cargo build jobs (default 2)
#   BENCH_SKIP_PYTHON=1   skip the Python peer (ratios are then left out)
#   FASTAGENTIC_BENCH_CACHE  where the venv and the hello-world build live
#                    (default ~/.cache/fastagentic-bench)
#   CARGO_TARGET_DIR honoured for the runtime's release build
#
# Needs: wrk (Debian package `wrk`; installed with apt-get when missing and run as root),
# python3 with venv, cargo. Load generator and servers share the machine: read the figures
# as ratios measured under the same conditions, not as absolute capacity.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DUR=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
JOBS=${BENCH_JOBS:-2}
CONNS=64
CACHE=${FASTAGENTIC_BENCH_CACHE:-$HOME/.cache/fastagentic-bench}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/fastagentic-bench.XXXXXX)
PROBE="python3 $ROOT/bench/probe.py"
mkdir -p "$CACHE"

log() { echo "[bench] $*" >&2; }

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    log "installing wrk"
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
  else
    echo "wrk is missing: apt-get install wrk" >&2; exit 1
  fi
fi

log "building the runtime (release)"
(cd "$ROOT" && cargo build --release -j"$JOBS" -p agent-runtime --bin fastagentic >&2)
BIN=$TARGET/release/fastagentic

log "building the axum hello-world (release)"
HELLO=$CACHE/hello
mkdir -p "$HELLO/src"
cat >"$HELLO/Cargo.toml" <<'TOML'
[package]
name = "hello-axum"
version = "0.1.0"
edition = "2021"

[workspace]

[dependencies]
axum = "0.8"
tokio = { version = "1", features = ["full"] }
serde_json = "1"

[profile.release]
debug = false
TOML
cat >"$HELLO/src/main.rs" <<'RS'
//! Minimal axum server: the ceiling for the runtime's request rate on this machine.
use axum::{routing::{get, post}, Json, Router};
use serde_json::{json, Value};

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(8000);
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "healthy"})) }))
        .route("/chat", post(|Json(v): Json<Value>| async move { Json(json!({"output": v["message"]})) }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    axum::serve(listener, app).await.unwrap();
}
RS
(cd "$HELLO" && CARGO_TARGET_DIR=$HELLO/target cargo build --release -j"$JOBS" -q >&2)
HELLO_BIN=$HELLO/target/release/hello-axum

PY=""
if [ "${BENCH_SKIP_PYTHON:-0}" != 1 ]; then
  if [ ! -x "$CACHE/venv/bin/fastagentic" ]; then
    log "installing the Python peer (fastagentic gunicorn uvicorn) in $CACHE/venv"
    python3 -m venv "$CACHE/venv"
    "$CACHE/venv/bin/pip" install -q fastagentic gunicorn uvicorn >&2
  fi
  PY=$CACHE/venv/bin/fastagentic
  mkdir -p "$WORK/peer"
  # The peer's @agent_endpoint answers 422 over HTTP (1.2.2), so the echo endpoint is a
  # plain route on its app.
  cat >"$WORK/peer/app.py" <<'PYAPP'
import asyncio
import os

from fastagentic import App

app = App(title="Bench Agent")
DELAY = float(os.environ.get("ECHO_DELAY_MS", "0")) / 1000


@app.post("/chat")
async def chat(body: dict):
    if DELAY:
        await asyncio.sleep(DELAY)
    return {"output": body.get("message")}
PYAPP
  log "Python peer: $("$CACHE/venv/bin/pip" show fastagentic 2>/dev/null | sed -n 's/^Version: //p')"
fi

cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"message": "hello"}'
wrk.headers["Content-Type"] = "application/json"
LUA
cat >"$WORK/status.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"message": "hello"}'
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  local agg = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do agg[k] = (agg[k] or 0) + v end
  end
  for k, v in pairs(agg) do io.write(string.format("status %d %d\n", k, v)) end
end
LUA

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wrk output → "<req/s> <p50 ms> <p99 ms> <non-2xx>"
parse_wrk() {
  awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec:/ { rps=$2 }
    /^ +50%/ { p50=ms($2) }
    /^ +99%/ { p99=ms($2) }
    /Non-2xx or 3xx responses:/ { bad=$5 }
    END { printf "%.0f %.2f %.2f %d\n", rps, p50, p99, bad }'
}

SERVER_PID=""
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
trap 'stop_server; rm -rf "$WORK"' EXIT

declare -A R

# throughput NAME DIR -- CMD... (CMD gets PORT substituted for the literal @PORT@)
throughput() {
  local name=$1 dir=$2; shift 3
  local port; port=$(free_port)
  local cmd=("${@//@PORT@/$port}")
  read -r SERVER_PID ms < <(cd "$dir" && $PROBE start "$port" "$WORK/$name.log" -- "${cmd[@]}")
  sleep 1
  read -r idle_max _ procs < <($PROBE rss "$SERVER_PID")
  local h c
  h=$(wrk -t2 -c$CONNS -d"${DUR}s" --latency "http://127.0.0.1:$port/health" | parse_wrk)
  ( sleep "$((DUR / 2))"; $PROBE rss "$SERVER_PID" >"$WORK/$name.rss" ) &
  c=$(wrk -t2 -c$CONNS -d"${DUR}s" --latency -s "$WORK/post.lua" "http://127.0.0.1:$port/chat" | parse_wrk)
  wait
  read -r load_max _ _ <"$WORK/$name.rss"
  stop_server
  R[$name]="$ms $idle_max $load_max $procs $h $c"
  log "$name: start ${ms} ms, RSS idle ${idle_max} KiB loaded ${load_max} KiB (largest of ${procs} processes), /health [$h], /chat [$c]"
}

# overload NAME CONNECTIONS DIR -- CMD...
overload() {
  local name=$1 conns=$2 dir=$3; shift 4
  local port; port=$(free_port)
  local cmd=("${@//@PORT@/$port}")
  read -r SERVER_PID _ < <(cd "$dir" && $PROBE start "$port" "$WORK/$name.log" -- "${cmd[@]}")
  wrk -t2 -c"$conns" -d"${DUR}s" --latency -s "$WORK/status.lua" "http://127.0.0.1:$port/chat" >"$WORK/$name.wrk" &
  local wrk_pid=$!
  sleep 2
  local p
  p=$($PROBE probe503 "$port" "$((DUR - 4))")
  wait "$wrk_pid"
  local ok rej
  ok=$(awk '$1=="status" && $2==200 {print $3}' "$WORK/$name.wrk"); ok=${ok:-0}
  rej=$(awk '$1=="status" && $2==503 {print $3}' "$WORK/$name.wrk"); rej=${rej:-0}
  local all99 inside
  all99=$(parse_wrk <"$WORK/$name.wrk" | awk '{print $3}')
  stop_server
  # Our runtime logs each request's duration; the peer does not.
  inside=$($PROBE logstatus "$WORK/$name.log" 503 | awk '{print $3}')
  R[$name]="$ok $rej $p $all99 $inside"
  log "$name: 200s $ok, 503s $rej, probe of 503s [count p50 p99 max, 200s]: $p, wrk p99 of all: $all99 ms"
}

# openload NAME DIR -- CMD...: the limiter saturated by an open-loop load (100 connections, 2000
# requests/s offered against a capacity of about 100/s), so the CPUs are not: every rejected
# client waits for its next slot instead of retrying at once.
openload() {
  local name=$1 dir=$2; shift 3
  local port; port=$(free_port)
  local cmd=("${@//@PORT@/$port}")
  read -r SERVER_PID _ < <(cd "$dir" && $PROBE start "$port" "$WORK/$name.log" -- "${cmd[@]}")
  local p
  p=$($PROBE openloop "$port" "$DUR" 100 2000)
  stop_server
  local inside
  inside=$($PROBE logstatus "$WORK/$name.log" 503 | awk '{print $3}')
  R[$name]="$p $inside"
  log "$name: open loop [503s p50 p99 max, 200s, sent/s]: $p, 503 p99 inside: $inside ms"
}

# median NAME: the per-column median of R[NAME#1] .. R[NAME#ROUNDS] into R[NAME] (a column that
# is not a number is taken from the first round).
median() {
  local name=$1 r rows=""
  for r in $(seq 1 "$ROUNDS"); do rows+="${R[$name#$r]}"$'\n'; done
  R[$name]=$(printf '%s' "$rows" | awk '
    { for (i = 1; i <= NF; i++) v[NR, i] = $i; if (NF > nf) nf = NF }
    END {
      for (i = 1; i <= nf; i++) {
        if (v[1, i] !~ /^-?[0-9.]+$/) { out = out (i > 1 ? " " : "") v[1, i]; continue }
        n = 0; for (r = 1; r <= NR; r++) a[++n] = v[r, i] + 0
        for (x = 2; x <= n; x++) { k = a[x]; y = x - 1; while (y > 0 && a[y] > k) { a[y + 1] = a[y]; y-- } a[y + 1] = k }
        out = out (i > 1 ? " " : "") a[int((n + 1) / 2)]
      }
      print out
    }')
  log "$name: median of $ROUNDS rounds: ${R[$name]}"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "run: ${DUR}s per load, $CONNS connections, $(nproc) cores, $ROUNDS rounds"
# The ceiling and our runtime take turns, round after round, and each figure is the median of
# the rounds: on two shared cores a single run moves by up to 2x with what else the machine does.
for round in $(seq 1 "$ROUNDS"); do
  throughput "hello#$round" "$WORK" -- "$HELLO_BIN" @PORT@
  throughput "rs1#$round" "$WORK" -- "$BIN" run --port @PORT@ --instance-id bench
  throughput "rs2#$round" "$WORK" -- "$BIN" run --port @PORT@ --instance-id bench --server gunicorn --workers 2
  overload "rs_over#$round" 100 "$WORK" -- "$BIN" run --port @PORT@ --instance-id bench --server gunicorn --workers 2 --max-concurrent 10 --echo-delay-ms 200
  # Permits taken but CPU not saturated: one process, 10 permits, 10 wrk connections holding them.
  overload "rs_hold#$round" 10 "$WORK" -- "$BIN" run --port @PORT@ --instance-id bench --max-concurrent 10 --echo-delay-ms 200
  openload "rs_open#$round" "$WORK" -- "$BIN" run --port @PORT@ --instance-id bench --server gunicorn --workers 2 --max-concurrent 10 --echo-delay-ms 200
done
for n in hello rs1 rs2 rs_over rs_hold rs_open; do median "$n"; done
if [ -n "$PY" ]; then
  export PYTHONPATH=.
  throughput py1 "$WORK/peer" -- "$PY" run app:app --port @PORT@ --instance-id bench
  throughput py2 "$WORK/peer" -- "$PY" run app:app --port @PORT@ --instance-id bench --server gunicorn --workers 2
  ECHO_DELAY_MS=200 overload py_over 100 "$WORK/peer" -- "$PY" run app:app --port @PORT@ --instance-id bench --server gunicorn --workers 2 --max-concurrent 10
  ECHO_DELAY_MS=200 overload py_hold 10 "$WORK/peer" -- "$PY" run app:app --port @PORT@ --instance-id bench --max-concurrent 10
  ECHO_DELAY_MS=200 openload py_open "$WORK/peer" -- "$PY" run app:app --port @PORT@ --instance-id bench --server gunicorn --workers 2 --max-concurrent 10
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b+0 == 0) print "-"; else printf "%.2fx", a/b }'; }
col() { echo "${R[$1]}" | awk -v i="$2" '{print $i}'; }

echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load generator wrk -t2 on the same machine; ${DUR}s per run; our runtime and the ceiling: median of $ROUNDS rounds taken in turns; load average before the run: $LOAD_BEFORE."
echo
echo "| server | start to first /health (ms) | RSS idle / loaded, largest process (MiB) | processes | /health req/s | p50 / p99 (ms) | /chat req/s | p50 / p99 (ms) |"
echo "|---|---|---|---|---|---|---|---|"
for n in hello rs1 rs2 py1 py2; do
  [ -n "${R[$n]:-}" ] || continue
  read -r ms im lm procs hr h50 h99 hbad cr c50 c99 cbad <<<"${R[$n]}"
  case $n in
    hello) label="axum hello-world (ceiling)";;
    rs1) label="fastagentic (Rust), 1 process";;
    rs2) label="fastagentic (Rust), gunicorn mode 2 workers";;
    py1) label="Python FastAgentic, uvicorn 1 worker";;
    py2) label="Python FastAgentic, gunicorn 2 workers";;
  esac
  printf "| %s | %s | %.1f / %.1f | %s | %s | %s / %s | %s | %s / %s |\n" "$label" "$ms" \
    "$(awk -v k="$im" 'BEGIN{print k/1024}')" "$(awk -v k="$lm" 'BEGIN{print k/1024}')" "$procs" \
    "$hr" "$h50" "$h99" "$cr" "$c50" "$c99"
  [ "$hbad" = 0 ] && [ "$cbad" = 0 ] || echo "|  (non-2xx: /health $hbad, /chat $cbad) |||||||"
done
echo
echo "Overload: POST /chat, echo delay 200 ms, --max-concurrent 10, wrk for ${DUR}s. 'over': gunicorn mode 2 workers, 100 connections (CPU saturated by rejected clients retrying at once). 'hold': 1 process, 10 connections holding the 10 permits. 503 latency seen by 4 side clients (Python, sequential requests) while saturated, and inside the server (request_completed.duration_ms; the peer logs none)."
echo
echo "| server | case | 200s | 503s | 503 p50 (ms) | 503 p99 (ms) | 503 max (ms) | 503 p99 inside server (ms) | wrk p99, all (ms) |"
echo "|---|---|---|---|---|---|---|---|---|"
for n in rs_over rs_hold py_over py_hold; do
  [ -n "${R[$n]:-}" ] || continue
  read -r ok rej _ p50 p99 mx _ all99 inside <<<"${R[$n]}"
  case $n in rs_*) label="fastagentic (Rust)";; *) label="Python FastAgentic"; inside="-";; esac
  case $n in *hold) c="hold, 10 conns";; *) c="over, 100 conns";; esac
  echo "| $label | $c | $ok | $rej | $p50 | $p99 | $mx | $inside | $all99 |"
done
echo
echo "Limiter saturated, CPUs not: open loop, 100 keep-alive connections offering 2000 POST /chat per second in total (capacity about 100/s: 2 workers x 10 permits / 200 ms), gunicorn mode 2 workers, --max-concurrent 10, ${DUR}s; 503 latency from send to full response, all 503s counted."
echo
echo "| server | 503s | 503 p50 (ms) | 503 p99 (ms) | 503 max (ms) | 200s | sent/s | 503 p99 inside server (ms) |"
echo "|---|---|---|---|---|---|---|---|"
for n in rs_open py_open; do
  [ -n "${R[$n]:-}" ] || continue
  read -r cnt p50 p99 mx ok sent inside <<<"${R[$n]}"
  case $n in rs_*) label="fastagentic (Rust)";; *) label="Python FastAgentic"; inside="-";; esac
  echo "| $label | $cnt | $p50 | $p99 | $mx | $ok | $sent | $inside |"
done
echo
echo "Ratios:"
echo "- /health req/s vs axum ceiling: 1 process $(ratio "$(col rs1 5)" "$(col hello 5)"), 2 workers $(ratio "$(col rs2 5)" "$(col hello 5)")"
echo "- /chat req/s vs axum ceiling: 1 process $(ratio "$(col rs1 9)" "$(col hello 9)"), 2 workers $(ratio "$(col rs2 9)" "$(col hello 9)")"
if [ -n "$PY" ]; then
  echo "- /health req/s vs Python, equal workers: 1 $(ratio "$(col rs1 5)" "$(col py1 5)"), 2 $(ratio "$(col rs2 5)" "$(col py2 5)")"
  echo "- /chat req/s vs Python, equal workers: 1 $(ratio "$(col rs1 9)" "$(col py1 9)"), 2 $(ratio "$(col rs2 9)" "$(col py2 9)")"
  echo "- start to first /health vs Python (2 workers): $(ratio "$(col py2 1)" "$(col rs2 1)") faster"
  echo "- idle RSS of the largest process vs Python (2 workers): $(ratio "$(col py2 2)" "$(col rs2 2)") smaller"
fi
