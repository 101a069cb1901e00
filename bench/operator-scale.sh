#!/usr/bin/env bash
# Operator at scale: COUNT FastAgentics created at once against the loopback control plane.
#
#   scripts/control-plane.sh up        # the control plane must be up
#   bench/operator-scale.sh [COUNT]    # COUNT defaults to 500
#
# Measures, with the operator running as the chart's ServiceAccount (like the control-plane
# tests) and watching one fresh namespace:
#   1. time from the first create until every Deployment exists, and until every FastAgentic's
#      status.observedGeneration equals its metadata.generation;
#   2. the operator's peak resident memory (VmHWM in /proc/PID/status);
#   3. writes while nothing changes: after the objects settle (no watch event for 15 s), the
#      watch events of every FastAgentic, Deployment and Service in the namespace are counted
#      over IDLE seconds, with the operator's "applying" log lines and its writes counter
#      (target 0 for all).
# Progress is followed with watches, not by listing the objects every second (that load on the
# API server would be part of what is measured).
#
# The size of etcd's database at the start is printed with the results, so that a run on a
# control plane that holds earlier runs' history can be told from one on a fresh control plane
# (scripts/control-plane.sh down && up).
#
# The resources ask for 0 replicas, so no pods are created: the figure is the operator's (and
# the API server's), not the scheduler's or kwok's.
#
# Environment:
#   FASTAGENTIC_BENCH_OPERATOR   operator binary (default: cargo build --release, then
#                                ${CARGO_TARGET_DIR:-target}/release/fastagentic-operator)
#   FASTAGENTIC_BENCH_IDLE       seconds of the idle window (default 60)
#   FASTAGENTIC_BENCH_PARALLEL   concurrent kubectl apply processes creating the objects (default 8)
#   FASTAGENTIC_BENCH_KEEP=1     keep the namespace afterwards
#   FASTAGENTIC_BENCH_PROFILE=S  also take a CPU profile of kube-apiserver over the first S
#                                seconds after the first create (the control plane must be up
#                                with FASTAGENTIC_CP_PROFILING=1); its top functions are printed
#                                and the profile kept in bench/results/
# Results are printed and written to bench/results/operator-scale-<time>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT="${1:-500}"
IDLE="${FASTAGENTIC_BENCH_IDLE:-60}"
PROFILE="${FASTAGENTIC_BENCH_PROFILE:-}"
PARALLEL="${FASTAGENTIC_BENCH_PARALLEL:-8}"
TIMEOUT=600
SYSTEM_NS=fastagentic-system
RELEASE=fastagentic-operator

log() { printf '[operator-scale] %s\n' "$*" >&2; }
die() { printf '[operator-scale] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[[ "$COUNT" =~ ^[1-9][0-9]*$ ]] || die "COUNT must be a positive number, got '$COUNT'"
[[ -z "$PROFILE" || "$PROFILE" =~ ^[1-9][0-9]*$ ]] ||
  die "FASTAGENTIC_BENCH_PROFILE must be a number of seconds, got '$PROFILE'"
command -v kubectl >/dev/null || die "kubectl is not installed"
command -v curl >/dev/null || die "curl is not installed"

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_control_plane
bench_operator_binary
log "applying the CRD and installing the chart (replicaCount=0: the operator runs here, not in a pod)"
bench_install_chart
# etcd's database file (its write-ahead log is preallocated, so its size says nothing).
etcd_db="${FASTAGENTIC_CP_DIR:-/tmp/fastagentic-cp}/etcd-data/member/snap/db"
etcd_mib="$(du -sm "$etcd_db" 2>/dev/null | awk '{ print $1 }')"
etcd_mib="${etcd_mib:-unknown}"

work="$(mktemp -d /tmp/fastagentic-bench.XXXXXX)"
ns="bench-scale-$(date +%s)"
operator_pid=""
watch_pids=()
cleanup() {
  local rc=$?
  if ((${#watch_pids[@]})); then kill "${watch_pids[@]}" 2>/dev/null || true; fi
  if [[ -n "$operator_pid" ]] && kill -0 "$operator_pid" 2>/dev/null; then
    kill -TERM "$operator_pid" 2>/dev/null || true
    wait "$operator_pid" 2>/dev/null || true
  fi
  if [[ "${FASTAGENTIC_BENCH_KEEP:-0}" != 1 ]]; then
    kubectl delete namespace "$ns" --wait=false --ignore-not-found >/dev/null 2>&1 || true
    rm -rf "$work"
  else
    log "kept namespace $ns and $work"
  fi
  exit "$rc"
}
trap cleanup EXIT

bench_operator_kubeconfig "$work/operator.kubeconfig"

kubectl create namespace "$ns" >/dev/null
kubectl label namespace "$ns" fastagentic.io/bench=operator-scale >/dev/null

log "starting $operator for namespace $ns (log $work/operator.log)"
bench_start_operator "$ns" "$work/operator.kubeconfig" "$work/operator.log"
rss_start="$(awk '/^VmRSS/ { print $2 }' "/proc/$operator_pid/status")"

# ---- COUNT resources, created at once ------------------------------------------------------------
mkdir -p "$work/objects"
for ((i = 1; i <= COUNT; i++)); do
  printf -- '---\napiVersion: fastagentic.io/v1alpha1\nkind: FastAgentic\nmetadata:\n  name: agent-%04d\nspec:\n  image: registry.example.com/agent:1.0.0\n  server: gunicorn\n  workers: 2\n  maxConcurrent: 50\n  replicas: 0\n' "$i" \
    >>"$work/objects/chunk-$((i % PARALLEL)).yaml"
done

# Progress is followed with watches started before the first create, not with lists: listing
# 2,000 objects every second costs the API server (and kubectl) more CPU than the operator
# spends, on the same two cores. Each watch prints one line per event.
watch_kind() { # KIND FILE [OUTPUT]
  kubectl get "$1" -n "$ns" --watch -o "${3:-name}" >"$2" 2>/dev/null &
  watch_pids+=("$!")
}
watch_kind deployments "$work/deployments.watch"
watch_kind services "$work/services.watch"
watch_kind fastagentics "$work/fastagentics.watch" \
  'jsonpath={.metadata.name} {.metadata.generation} {.status.observedGeneration}{"\n"}'
sleep 1

if [[ -n "$PROFILE" ]]; then
  kubectl get --raw "/debug/pprof/profile?seconds=$PROFILE" >"$work/apiserver.pprof" \
    2>"$work/apiserver.pprof.err" &
  profile_pid="$!"
  watch_pids+=("$profile_pid")
fi
log "creating $COUNT FastAgentics ($PARALLEL kubectl apply --server-side in parallel)"
t0="$(now)"
printf '%s\n' "$work"/objects/chunk-*.yaml |
  xargs -P "$PARALLEL" -I{} kubectl apply --server-side -n "$ns" -f {} >"$work/apply.log"
t_created="$(since "$t0")"
log "all $COUNT created after ${t_created}s"

t_deployments=""
t_status=""
while :; do
  elapsed="$(since "$t0")"
  if [[ -z "$t_deployments" ]]; then
    deployments="$(sort -u "$work/deployments.watch" | wc -l)"
    ((deployments >= COUNT)) && t_deployments="$elapsed" && log "every Deployment exists after ${elapsed}s"
  fi
  if [[ -z "$t_status" ]]; then
    # The last event of each FastAgentic: generation and observedGeneration.
    observed="$(awk 'NF >= 2 { gen[$1] = $2; obs[$1] = $3 } END { n = 0; for (k in gen) if (gen[k] == obs[k]) n++; print n }' "$work/fastagentics.watch")"
    ((observed >= COUNT)) && t_status="$elapsed" && log "every status has observedGeneration after ${elapsed}s"
  fi
  [[ -n "$t_deployments" && -n "$t_status" ]] && break
  awk -v e="$elapsed" -v t="$TIMEOUT" 'BEGIN { exit !(e > t) }' &&
    die "timed out after ${TIMEOUT}s: ${deployments:-?} Deployments, ${observed:-?} statuses observed"
  sleep 1
done
rss_busy_kib="$(awk '/^VmHWM/ { print $2 }' "/proc/$operator_pid/status")"

# ---- idle: nothing changes, nothing may be written ---------------------------------------------------
events() { cat "$work"/{fastagentics,deployments,services}.watch | wc -l; }
# The controller-manager needs about 0.25 s of two cores per Deployment for its status writes
# (2 minutes for 500): allow 300 s, or 0.3 s per resource beyond 1000.
SETTLE_LIMIT=$((COUNT > 1000 ? COUNT * 3 / 10 : 300))
log "letting the controller-manager finish its Deployment status writes (at most ${SETTLE_LIMIT}s)"
settle_start="$(now)"
prev="$(events)"
quiet=0
while ((quiet < 15)); do
  sleep 1
  cur="$(events)"
  if [[ "$cur" == "$prev" ]]; then quiet=$((quiet + 1)); else quiet=0; prev="$cur"; fi
  awk -v e="$(since "$settle_start")" -v limit="$SETTLE_LIMIT" 'BEGIN { exit !(e > limit) }' &&
    die "the objects never settled for 15 s within ${SETTLE_LIMIT}s"
done
log "settled after $(since "$settle_start")s; watching ${IDLE}s of nothing changing"
applies_before="$(grep -c '"message":"applying"' "$work/operator.log" || true)"
reconciles_metric() { curl -fsS "http://127.0.0.1:$metrics_port/metrics" | awk '$1 == "fastagentic_operator_reconciles_total" { print $2 }'; }
reconciles_before="$(reconciles_metric)"
# Every write request of the reconciler (applies, status, Events, deletes), whatever its log says.
writes_metric() { curl -fsS "http://127.0.0.1:$metrics_port/metrics" | awk '$1 ~ /^fastagentic_operator_writes_total/ { n += $2 } END { print n + 0 }'; }
writes_before="$(writes_metric)"
sleep "$IDLE"
changed="$(($(events) - prev))"
applies_after="$(grep -c '"message":"applying"' "$work/operator.log" || true)"
reconciles_after="$(reconciles_metric)"
writes_after="$(writes_metric)"
objects="$(cat <(sort -u "$work/deployments.watch") <(sort -u "$work/services.watch") | wc -l)"
objects=$((objects + COUNT))

hwm_kib="$(awk '/^VmHWM/ { print $2 }' "/proc/$operator_pid/status")"
rss_kib="$(awk '/^VmRSS/ { print $2 }' "/proc/$operator_pid/status")"
kill -0 "$operator_pid" 2>/dev/null || die "the operator died during the benchmark"

mkdir -p bench/results
result="bench/results/operator-scale-$(date +%Y%m%dT%H%M%S).txt"
{
  echo "operator-scale: $COUNT FastAgentics (replicas 0), $(nproc) CPUs, $(kubectl version -o json 2>/dev/null | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -n 1) API server"
  printf '  %-52s %s s\n' "created (kubectl apply, $PARALLEL in parallel):" "$t_created"
  printf '  %-52s %s MiB\n' "etcd database at the start:" "$etcd_mib"
  printf '  %-52s %s s\n' "every Deployment exists:" "$t_deployments"
  printf '  %-52s %s s\n' "every status.observedGeneration = generation:" "$t_status"
  printf '  %-52s %s / %s / %s MiB\n' "operator RSS at start / end / peak (VmHWM):" \
    "$((rss_start / 1024))" "$((rss_kib / 1024))" "$((hwm_kib / 1024))"
  printf '  %-52s %s MiB\n' "operator peak RSS when all statuses were written:" "$((rss_busy_kib / 1024))"
  printf '  %-52s %s\n' "idle ${IDLE} s: watch events (objects: $objects):" "$changed"
  printf '  %-52s %s\n' "idle ${IDLE} s: operator applies logged:" "$((applies_after - applies_before))"
  printf '  %-52s %s\n' "idle ${IDLE} s: writes (fastagentic_operator_writes_total):" \
    "$(awk -v a="$writes_before" -v b="$writes_after" 'BEGIN { print b - a }')"
  printf '  %-52s %s\n' "idle ${IDLE} s: reconciles (reads only):" \
    "$(awk -v a="$reconciles_before" -v b="$reconciles_after" 'BEGIN { print b - a }')"
} | tee "$result"
log "written to $result"

if [[ -n "$PROFILE" ]]; then
  wait "$profile_pid" || die "the API server's profile failed: $(cat "$work/apiserver.pprof.err")"
  pprof="${result%.txt}-apiserver.pprof"
  cp "$work/apiserver.pprof" "$pprof"
  echo "kube-apiserver CPU over the first ${PROFILE}s (go tool pprof -top $pprof):"
  go tool pprof -top -nodecount=40 "$pprof" 2>/dev/null | sed -n '1,48p'
  echo "by cumulative time:"
  go tool pprof -top -cum -nodecount=60 "$pprof" 2>/dev/null | sed -n '6,68p'
fi
