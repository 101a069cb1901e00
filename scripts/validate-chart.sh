#!/usr/bin/env bash
# Checks the Helm chart charts/fastagentic-operator:
#   1. helm lint --strict
#   2. helm template (default values, one watched namespace, two replicas, no leader election,
#      the NetworkPolicy) validated with kubernetes-validate --strict for Kubernetes 1.33
#      (unknown fields are errors)
#   3. bad values are refused by values.schema.json with a message naming the value
#
#   scripts/validate-chart.sh
#
# helm: FASTAGENTIC_HELM, else `scripts/control-plane.sh path helm` (built from the Go module
# proxy on first use), else helm on PATH. kubernetes-validate: installed by
# scripts/validate-render.sh's virtualenv (~/.cache/fastagentic/venv).
# Exit status: 0 all good, 1 a check failed, 2 setup failed.
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=charts/fastagentic-operator
K8S_VERSION=1.33.0
VENV="${FASTAGENTIC_VENV:-$HOME/.cache/fastagentic/venv}"
TOOL="$VENV/bin/kubernetes-validate"

HELM="${FASTAGENTIC_HELM:-}"
if [[ -z "$HELM" ]]; then
    HELM="$(scripts/control-plane.sh path helm 2>/dev/null || command -v helm || true)"
fi
if [[ -z "$HELM" || ! -x "$HELM" ]]; then
    echo "error: no helm binary (run scripts/control-plane.sh build, or set FASTAGENTIC_HELM)" >&2
    exit 2
fi
if [[ ! -x "$TOOL" ]]; then
    echo "==> installing kubernetes-validate into $VENV"
    if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet kubernetes-validate; }; then
        echo "error: could not install kubernetes-validate" >&2
        exit 2
    fi
fi

status=0
echo "==> helm lint --strict $CHART"
"$HELM" lint --strict "$CHART" || status=1

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
render() { # name, then helm template flags
    local name="$1"
    shift
    echo "==> helm template $* | kubernetes-validate --strict --kubernetes-version $K8S_VERSION"
    "$HELM" template fastagentic-operator "$CHART" --namespace fastagentic-system "$@" >"$out/$name.yaml"
    # The CRD is validated by its own tests; kubernetes-validate checks the built-in kinds.
    "$TOOL" --strict --kubernetes-version "$K8S_VERSION" "$out/$name.yaml" || status=1
}
render default
render one-namespace --set 'watchNamespaces[0]=agents'
render two-replicas --set replicaCount=2
render no-leader-election --set leaderElection.enabled=false
render network-policy -f tests/fixtures/lint/chart-network-policy.yaml

# The operator's NetworkPolicy exists exactly when asked for, with both ports and egress rules.
if grep -q '^kind: NetworkPolicy' "$out/default.yaml"; then
    echo "FAIL: the default values render a NetworkPolicy (it is opt-in)" >&2
    status=1
elif ! grep -q '^kind: NetworkPolicy' "$out/network-policy.yaml" \
    || ! grep -q -- '- Egress' "$out/network-policy.yaml" \
    || ! grep -q 'port: 6443' "$out/network-policy.yaml"; then
    echo "FAIL: networkPolicy.enabled renders no NetworkPolicy with the metrics API port and egress" >&2
    status=1
else
    echo "ok: a NetworkPolicy with networkPolicy.enabled, none by default"
fi

# The operator's PodDisruptionBudget exists exactly when there is a standby to keep.
if ! grep -q '^kind: PodDisruptionBudget' "$out/two-replicas.yaml"; then
    echo "FAIL: replicaCount=2 renders no PodDisruptionBudget" >&2
    status=1
elif grep -q '^kind: PodDisruptionBudget' "$out/default.yaml"; then
    echo "FAIL: replicaCount=1 renders a PodDisruptionBudget (it would block every drain)" >&2
    status=1
else
    echo "ok: a PodDisruptionBudget with replicaCount=2, none with 1"
fi

refuse() { # expected message, then helm template flags
    local want="$1"
    shift
    local err
    if err="$("$HELM" template fastagentic-operator "$CHART" "$@" 2>&1 >/dev/null)"; then
        echo "FAIL: helm accepted $*" >&2
        status=1
    elif [[ "$err" != *"$want"* ]]; then
        echo "FAIL: helm refused $* without naming it ($want): $err" >&2
        status=1
    else
        echo "ok: refused $* ($want)"
    fi
}
refuse "replicaCount" --set replicaCount=-1
refuse "pullPolicy" --set image.pullPolicy=Sometimes
refuse "metrics/port" --set metrics.port=70000
refuse "watchNamespaces" --set 'watchNamespaces[0]=Not_A_Namespace'
refuse "additional properties" --set replicas=2
refuse "leaderElection.enabled" --set replicaCount=2 --set leaderElection.enabled=false
refuse "metricsApi/scrape/interval" --set metricsApi.scrape.interval=fast
refuse "metricsApi.caBundle" --set metricsApi.existingSecret=my-tls
refuse "networkPolicy/enabled" --set networkPolicy.enabled=maybe
exit "$status"
