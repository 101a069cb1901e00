# shellcheck shell=bash
# Background processes with pid files, shared by scripts/control-plane.sh and scripts/node.sh.
# The sourcing script sets PROC_DIR (pid files and logs: $PROC_DIR/NAME.pid, NAME.log) and
# READY_TIMEOUT, and defines log, die and proc_pattern NAME (an extended regular expression
# that the command line of NAME's process matches: the guard against a recycled pid).

pid_file() { echo "$PROC_DIR/$1.pid"; }

# alive NAME: the pid file names a live process. For waits right after `start_process`: until
# the binary's exec completes, its command line is still the shell's (or empty), which `running`
# would take for a recycled pid.
alive() {
  local pf pid
  pf="$(pid_file "$1")"
  [[ -f "$pf" ]] || return 1
  pid="$(cat "$pf")"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# running NAME: alive, and the process's command line matches proc_pattern NAME.
running() {
  alive "$1" || return 1
  local cmdline
  cmdline="$(tr '\0' ' ' <"/proc/$(cat "$(pid_file "$1")")/cmdline" 2>/dev/null)" || return 1
  grep -qE -- "$(proc_pattern "$1")" <<<"$cmdline"
}

# start_process NAME BINARY ARGS...: in the background, logging to $PROC_DIR/NAME.log.
start_process() {
  local name="$1" bin="$2"
  shift 2
  if running "$name"; then
    log "$name already running (pid $(cat "$(pid_file "$name")"))"
    return 0
  fi
  log "starting $name (log $PROC_DIR/$name.log)"
  nohup "$bin" "$@" </dev/null >>"$PROC_DIR/$name.log" 2>&1 &
  echo $! >"$(pid_file "$name")"
}

# stop NAME [SECONDS]: TERM, then KILL after SECONDS (default 10); removes the pid file.
stop() {
  local name="$1" secs="${2:-10}" pf pid i
  pf="$(pid_file "$name")"
  [[ -f "$pf" ]] || return 0
  if running "$name"; then
    pid="$(cat "$pf")"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop within ${secs}s: KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pf"
}

# wait_for DESCRIPTION NAME COMMAND...: retry COMMAND until it succeeds; NAME (if not empty)
# must stay alive meanwhile.
wait_for() {
  local what="$1" name="$2" deadline
  shift 2
  deadline=$(($(date +%s) + READY_TIMEOUT))
  log "waiting for $what"
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$name" ]] && ! alive "$name"; then
      tail -n 40 "$PROC_DIR/$name.log" >&2 || true
      die "$name exited while waiting for $what (log $PROC_DIR/$name.log)"
    fi
    (($(date +%s) < deadline)) || die "timed out after ${READY_TIMEOUT}s waiting for $what (log $PROC_DIR/$name.log)"
    sleep 1
  done
}
