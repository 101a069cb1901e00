#!/usr/bin/env bash
# Runs on a node, fed to `bash -s` (tests/e2e.rs; on kind through `docker exec -i NODE bash -s`):
#
#   pod-procs.sh POD_UID                 the pod's processes, one per line:
#                                        pid ppid uid root-mount-options memory-limit cmdline...
#   pod-procs.sh POD_UID kill SIG PID    send SIG to PID, only if PID is one of the pod's
#
# A process belongs to the pod when its cgroup path names the pod's UID (cgroupfs: pod<uid>,
# systemd: pod<uid with underscores>). memory-limit is the container cgroup's limit in bytes
# (cgroup v1 memory.limit_in_bytes or v2 memory.max); root-mount-options are the options of the
# process's own / mount (ro,... for a read-only root filesystem).
set -euo pipefail

uid="${1:?usage: pod-procs.sh POD_UID [kill SIG PID]}"
alt="${uid//-/_}"

in_pod() { # pid
  local cg
  cg="$(cat "/proc/$1/cgroup" 2>/dev/null)" || return 1
  [[ "$cg" == *"pod$uid"* || "$cg" == *"pod$alt"* ]]
}

memory_limit() { # pid
  local path
  path="$(sed -n 's/^[0-9]*:[^:]*\bmemory\b[^:]*:\(.*\)$/\1/p' "/proc/$1/cgroup")"
  if [[ -n "$path" && -f "/sys/fs/cgroup/memory$path/memory.limit_in_bytes" ]]; then
    cat "/sys/fs/cgroup/memory$path/memory.limit_in_bytes"
    return
  fi
  path="$(sed -n 's/^0::\(.*\)$/\1/p' "/proc/$1/cgroup")"
  if [[ -n "$path" && -f "/sys/fs/cgroup$path/memory.max" ]]; then
    cat "/sys/fs/cgroup$path/memory.max"
    return
  fi
  echo unknown
}

if [[ "${2:-}" == kill ]]; then
  sig="${3:?signal}" pid="${4:?pid}"
  in_pod "$pid" || { echo "pid $pid is not a process of pod $uid" >&2; exit 1; }
  kill -s "$sig" "$pid"
  exit 0
fi

for d in /proc/[0-9]*; do
  pid="${d#/proc/}"
  in_pod "$pid" || continue
  ppid="$(awk '/^PPid:/ { print $2 }' "$d/status" 2>/dev/null)" || continue
  puid="$(awk '/^Uid:/ { print $2 }' "$d/status" 2>/dev/null)" || continue
  root="$(awk '$5 == "/" { print $6; exit }' "$d/mountinfo" 2>/dev/null)" || continue
  cmd="$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null)" || continue
  [[ -n "$cmd" ]] || continue
  printf '%s %s %s %s %s %s\n' "$pid" "$ppid" "$puid" "${root:-?}" "$(memory_limit "$pid")" "$cmd"
done
