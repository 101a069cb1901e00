#!/usr/bin/env bash
# The operator scraping PODS simulated agent pods for the concurrency metric, against a
# baseline run of the same operator with the same pods but nothing to scrape, in one invocation.
#
#   scripts/control-plane.sh up            # the control plane must be up
#   bench/metrics-api.sh [PODS]            # PODS defaults to 100
#
# The pods are Pod objects that are never scheduled, whose status (Ready, podIP) the script
# writes, pointing at bench/sim_pods.py: one Python process answering the runtime's /metrics
# JSON on PODS ports of this machine's address, with in-flight counts that change every second.
# The operator runs as a local process with the chart ServiceAccount's token and the chart's RBAC.
#
# Phases of WINDOW seconds each (after a warm-up):
#   baseline   the FastAgentic has no concurrency target: nothing is scraped, no costs written;
#   scraping   the same FastAgentic with the target: every pod scraped every 2 s, deletion costs.
# Measured per phase: operator CPU (utime+stime from /proc), RSS, scrape rounds and their mean
# time (the operator's own histogram), deletion-cost writes per minute, and what an unthrottled
# writer would have written (the simulator's meaningful changes per minute).
#
# Environment:
#   FASTAGENTIC_BENCH_OPERATOR   operator binary (default: cargo build --release)
#   FASTAGENTIC_BENCH_WINDOW     seconds of each measured phase (default 60)
# Results are printed and written to bench/results/metrics-api-<time>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

PODS="${1:-100}"
WINDOW="${FASTAGENTIC_BENCH_WINDOW:-60}"
SYSTEM_NS=fastagentic-system
RELEASE=fastagentic-operator

log() { printf '[metrics-api] %s\n' "$*" >&2; }
die() { printf '[metrics-api] ERROR: %s\n' "$*" >&2; exit 1; }

[[ "$PODS" =~ ^[1-9][0-9]*$ ]] || die "PODS must be a positive number, got '$PODS'"
[[ "$WINDOW" =~ ^[1-9][0-9]*$ ]] || die "FASTAGENTIC_BENCH_WINDOW must be a positive number of seconds, got '$WINDOW'"
for tool in kubectl curl python3 ip; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_control_plane

# A non-loopback address of this machine (what a pod IP would be).
host="$(ip -4 -o addr show scope global | awk '{ split($4, a, "/"); print a[1] }' | grep -x '10.244.0.1' || true)"
[[ -n "$host" ]] || host="$(ip -4 -o addr show scope global | awk '!n++ { split($4, a, "/"); print a[1] }')"
[[ -n "$host" ]] || die "this machine has no non-loopback IPv4 address for the simulated pods"

bench_operator_binary

log "applying the CRD, the chart (replicaCount=0) and its RBAC with the metrics API on"
bench_install_chart
"$helm" template "$RELEASE" charts/fastagentic-operator --namespace "$SYSTEM_NS" --set replicaCount=0 \
  --show-only templates/rbac.yaml | kubectl apply --server-side --force-conflicts --field-manager bench -f - >/dev/null

work="$(mktemp -d /tmp/fastagentic-bench.XXXXXX)"
ns="bench-metrics-$(date +%s)"
operator_pid=""
sim_pid=""
cleanup() {
  local rc=$?
  for pid in "$operator_pid" "$sim_pid"; do
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  kubectl delete namespace "$ns" --wait=false --ignore-not-found >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

bench_operator_kubeconfig "$work/operator.kubeconfig"
kubectl create namespace "$ns" >/dev/null

first_port=$(( ( $(date +%s) % 2000 ) * 10 + 30000 ))
log "simulating $PODS pods on $host:$first_port-$((first_port + PODS - 1))"
python3 bench/sim_pods.py --host "$host" --first-port "$first_port" --pods "$PODS" \
  --changes "$work/changes" >"$work/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 50); do [[ -s "$work/changes" ]] && break; sleep 0.2; done
kill -0 "$sim_pid" 2>/dev/null || die "the simulator exited: $(cat "$work/sim.log")"

# The FastAgentic (no concurrency target yet; 0 replicas of its own) and PODS never-scheduled pods.
kubectl apply -n "$ns" -f - >/dev/null <<EOF
apiVersion: fastagentic.io/v1alpha1
kind: FastAgentic
metadata: {name: sim}
spec:
  image: registry.example.com/agent:1
  maxConcurrent: 8
  replicas: 0
EOF
for ((i = 0; i < PODS; i++)); do
  printf -- '---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: sim-%03d\n  labels: {app.kubernetes.io/managed-by: fastagentic-operator, app.kubernetes.io/instance: sim}\nspec:\n  nodeSelector: {fastagentic.io/bench-no-such-node: "true"}\n  containers: [{name: agent, image: "not-pulled:0", ports: [{name: http, containerPort: %d}]}]\n' \
    "$i" "$((first_port + i))"
done >"$work/pods.yaml"
kubectl apply -n "$ns" -f "$work/pods.yaml" >/dev/null
log "writing $PODS pod statuses (Ready, podIP $host)"
seq -f 'sim-%03g' 0 $((PODS - 1)) | xargs -P 8 -I{} kubectl patch pod {} -n "$ns" --subresource=status --type=merge \
  -p "{\"status\":{\"phase\":\"Running\",\"podIP\":\"$host\",\"podIPs\":[{\"ip\":\"$host\"}],\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}" >/dev/null

bench_start_operator "$ns" "$work/operator.kubeconfig" "$work/operator.log"

tck="$(getconf CLK_TCK)"
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$operator_pid/stat"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$operator_pid/status"; }
metric() { curl -fsS "http://127.0.0.1:$metrics_port/metrics" | awk -v m="$1" '$1 == m { print $2; f = 1 } END { if (!f) print 0 }'; }
changes() { awk '{ print $1 }' "$work/changes"; }

# measure NAME: WINDOW seconds; prints "name cpu% rss_kib rounds mean_ms writes/min changes/min"
measure() {
  local c0 t0 r0 s0 w0 ch0 c1 t1 r1 s1 w1 ch1
  c0="$(cpu_ticks)"; t0="$(date +%s.%N)"
  r0="$(metric fastagentic_operator_scrape_duration_seconds_count)"
  s0="$(metric fastagentic_operator_scrape_duration_seconds_sum)"
  w0="$(metric fastagentic_operator_deletion_cost_writes_total)"
  ch0="$(changes)"
  sleep "$WINDOW"
  c1="$(cpu_ticks)"; t1="$(date +%s.%N)"
  r1="$(metric fastagentic_operator_scrape_duration_seconds_count)"
  s1="$(metric fastagentic_operator_scrape_duration_seconds_sum)"
  w1="$(metric fastagentic_operator_deletion_cost_writes_total)"
  ch1="$(changes)"
  awk -v n="$1" -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v tck="$tck" -v rss="$(rss_kib)" \
      -v r0="$r0" -v r1="$r1" -v s0="$s0" -v s1="$s1" -v w0="$w0" -v w1="$w1" -v ch0="$ch0" -v ch1="$ch1" \
    'BEGIN { d = t1 - t0; rounds = r1 - r0;
             printf "%s %.2f %d %d %.1f %.1f %.1f\n", n, 100 * (c1 - c0) / tck / d, rss, rounds,
                    (rounds > 0 ? 1000 * (s1 - s0) / rounds : 0), 60 * (w1 - w0) / d, 60 * (ch1 - ch0) / d }'
}

log "warm-up 10 s, then the baseline: $PODS pods, no concurrency target ($WINDOW s)"
sleep 10
baseline="$(measure baseline)"
log "baseline: $baseline"
kubectl patch fa sim -n "$ns" --type=merge -p '{"spec":{"replicas":null,"autoscaling":{"minReplicas":1,"maxReplicas":100,"targetConcurrencyUtilizationPercentage":70}}}' >/dev/null
log "the target is set: warm-up 10 s, then scraping $PODS pods every 2 s ($WINDOW s)"
sleep 10
scraping="$(measure scraping)"
log "scraping: $scraping"
peak="$(awk '/^VmHWM/ { print $2 }' "/proc/$operator_pid/status")"
pods_now="$(metric fastagentic_operator_scraped_pods)"

mkdir -p bench/results
out="bench/results/metrics-api-$(date +%Y%m%d-%H%M%S).txt"
{
  echo "metrics API bench: $PODS simulated pods, $WINDOW s a phase, $(nproc) CPUs, $(uname -r)"
  echo
  printf '%-10s %8s %9s %7s %12s %11s %15s\n' phase "CPU %" "RSS MiB" rounds "round ms" "writes/min" "unthrottled/min"
  for row in "$baseline" "$scraping"; do
    read -r n cpu rss rounds ms writes ch <<<"$row"
    printf '%-10s %8s %9.1f %7s %12s %11s %15s\n' "$n" "$cpu" "$(awk -v r="$rss" 'BEGIN { print r / 1024 }')" "$rounds" "$ms" "$writes" "$ch"
  done
  read -r _ bcpu brss _ _ _ _ <<<"$baseline"
  read -r _ scpu srss _ _ _ _ <<<"$scraping"
  awk -v b="$bcpu" -v s="$scpu" -v br="$brss" -v sr="$srss" -v hwm="$peak" \
    'BEGIN { printf "\nscraping / baseline: CPU x%.1f (+%.2f points), RSS x%.2f (+%.1f MiB); peak RSS %.1f MiB\n",
             (b > 0 ? s / b : 0), s - b, sr / br, (sr - br) / 1024, hwm / 1024 }'
  echo "pods with a value after the last round: $pods_now"
} | tee "$out"
log "written to $out"
