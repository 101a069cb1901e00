# shellcheck shell=bash
# Shared by the benchmarks (sourced; the caller defines log and die, and sets SYSTEM_NS and
# RELEASE): the loopback control plane, the operator binary, the chart installed without an
# operator pod, and a kubeconfig holding a token of the chart's ServiceAccount.

# Checks that KUBECONFIG (or scripts/control-plane.sh env) points at the loopback control plane
# and that it is ready; sets `server`.
bench_control_plane() {
  if [[ -z "${KUBECONFIG:-}" ]]; then
    eval "$(scripts/control-plane.sh env)"
  fi
  server="$(kubectl config view --minify -o 'jsonpath={.clusters[0].cluster.server}')"
  case "$server" in
    https://127.0.0.1:* | https://localhost:* | "https://[::1]:"*) ;;
    *) die "KUBECONFIG points at '$server', not at the loopback control plane of scripts/control-plane.sh" ;;
  esac
  kubectl get --raw /readyz >/dev/null 2>&1 || die "the API server at $server is not ready (scripts/control-plane.sh up)"
}

# FASTAGENTIC_BENCH_OPERATOR, else a release build; sets `operator`.
bench_operator_binary() {
  operator="${FASTAGENTIC_BENCH_OPERATOR:-}"
  if [[ -z "$operator" ]]; then
    log "building the operator (cargo build --release -p fastagentic-operator)"
    cargo build --release -p fastagentic-operator >&2
    operator="${CARGO_TARGET_DIR:-target}/release/fastagentic-operator"
  fi
  [[ -x "$operator" ]] || die "no operator binary at $operator"
}

# The CRD, and the chart with no operator pod (it runs here) and no metrics APIService (an
# APIService without its server holds up namespace deletion).
bench_install_chart() {
  kubectl apply --server-side --force-conflicts -f crds/fastagentic.io_fastagentics.yaml >/dev/null
  kubectl wait --for=condition=Established crd/fastagentics.fastagentic.io --timeout=60s >/dev/null
  helm="${FASTAGENTIC_HELM:-$(scripts/control-plane.sh path helm)}"
  "$helm" upgrade --install "$RELEASE" charts/fastagentic-operator --namespace "$SYSTEM_NS" \
    --create-namespace --set replicaCount=0 --set metricsApi.enabled=false >/dev/null
}

# Writes FILE: the control plane's server and CA with a one-hour token of the chart's
# ServiceAccount (what the operator runs as), readable by the owner only.
bench_operator_kubeconfig() {
  local file="$1" token ca
  token="$(kubectl create token "$RELEASE" -n "$SYSTEM_NS" --duration 1h)"
  ca="$(kubectl config view --raw --minify --flatten -o 'jsonpath={.clusters[0].cluster.certificate-authority-data}')"
  cat >"$file" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: cp, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: operator, user: {token: "$token"}}]
contexts: [{name: operator, context: {cluster: cp, user: operator, namespace: $SYSTEM_NS}}]
current-context: operator
KUBECONFIG
  chmod 600 "$file"
}

# A free TCP port on loopback.
bench_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts OPERATOR for namespace NS with the kubeconfig FILE, logging to LOG, and waits for its
# /readyz; sets `operator_pid`, `metrics_port` and `health_port`.
bench_start_operator() {
  local ns="$1" kubeconfig="$2" log_file="$3"
  metrics_port="$(bench_free_port)"
  health_port="$(bench_free_port)"
  KUBECONFIG="$kubeconfig" "$operator" run --namespace "$ns" \
    --metrics-bind-address "127.0.0.1:$metrics_port" --health-bind-address "127.0.0.1:$health_port" \
    --log-format json >"$log_file" 2>&1 &
  operator_pid=$!
  for _ in $(seq 1 120); do
    curl -fsS "http://127.0.0.1:$health_port/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$operator_pid" 2>/dev/null || die "the operator exited: $(tail -n 20 "$log_file")"
    sleep 0.5
  done
  die "the operator never became ready: $(tail -n 20 "$log_file")"
}
