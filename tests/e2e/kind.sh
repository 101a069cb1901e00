#!/usr/bin/env bash
# kind end-to-end: the same checks as the real-node e2e of scripts/test.sh (tests/e2e.rs), on a
# kind cluster. Needs Docker (a running engine), kind, kubectl, helm, curl and cargo, and root
# (or sudo) to route the cluster's Service and pod ranges to the kind node. It is not run in
# this repository's CI, which has no Docker engine (CI runs the checks on its own real node).
#
#   tests/e2e/kind.sh                 create a kind cluster, run every check, delete the cluster
#   KEEP_CLUSTER=1 tests/e2e/kind.sh  keep the cluster afterwards
#
# What it provides, so that tests/e2e.rs finds what it finds on the real node:
#   - a registry container on kind's network, set in the node's containerd as the mirror of
#     docker.io and ghcr.io (the images keep the names users and the chart give them:
#     ghcr.io/fastagentic/fastagentic-operator:<appVersion>, ghcr.io/fastagentic/
#     fastagentic-runtime:<version>, and your-agent:latest for examples/kubernetes-seed.yaml,
#     whose `:latest` means imagePullPolicy Always); Docker Hub's redis:7 is pulled through it;
#   - the images built from Dockerfile.operator and Dockerfile.runtime and pushed there;
#   - metrics-server (its release manifest, with --kubelet-insecure-tls as kind needs);
#   - routes on this host to 10.96.0.0/16 (Services) and 10.244.0.0/16 (pods) via the node;
#   - FASTAGENTIC_E2E_NODE_SHELL="docker exec -i <node> bash -s" for the node-side checks.
#
# Settings (environment):
#   KIND_CLUSTER_NAME      cluster name (default fastagentic-e2e); an existing one is reused and kept
#   KIND_NODE_IMAGE        node image for `kind create cluster --image` (default: kind's own)
#   KEEP_CLUSTER=1         do not delete the cluster at the end
#   KIND_REGISTRY_PORT     host port of the registry (default 5001)
#   METRICS_SERVER_MANIFEST  URL or file of metrics-server's components.yaml (default v0.8.0's)
#
# Exit status: 0 every check passed, 1 a check failed, 2 a prerequisite is missing.
set -euo pipefail

# (no dirname: the prerequisite check below must work with nothing on PATH)
here="${BASH_SOURCE[0]%/*}"
[[ "$here" == "${BASH_SOURCE[0]}" ]] && here=.
ROOT="$(cd "$here/../.." && pwd)"
cd "$ROOT"

CLUSTER="${KIND_CLUSTER_NAME:-fastagentic-e2e}"
CONTEXT="kind-${CLUSTER}"
NODE="${CLUSTER}-control-plane"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
REGISTRY_NAME="${CLUSTER}-registry"
REGISTRY_PORT="${KIND_REGISTRY_PORT:-5001}"
METRICS_SERVER_MANIFEST="${METRICS_SERVER_MANIFEST:-https://github.com/kubernetes-sigs/metrics-server/releases/download/v0.8.0/components.yaml}"
SERVICE_RANGE="10.96.0.0/16"
POD_RANGE="10.244.0.0/16"

WORK=""
created_cluster=0
routes=()

step() { printf '\n==> %s\n' "$*"; }

cleanup() {
    local rc=$?
    local r
    for r in "${routes[@]}"; do
        as_root ip route del "$r" 2>/dev/null || true
    done
    if [[ "$KEEP_CLUSTER" == 1 ]]; then
        step "KEEP_CLUSTER=1: cluster ${CLUSTER} kept (kubectl --context ${CONTEXT} ...; delete it with: kind delete cluster --name ${CLUSTER}; docker rm -f ${REGISTRY_NAME})"
    elif ((created_cluster)); then
        step "deleting kind cluster ${CLUSTER} and its registry"
        kind delete cluster --name "$CLUSTER" || true
        docker rm -f "$REGISTRY_NAME" >/dev/null 2>&1 || true
    fi
    [[ -n "$WORK" ]] && rm -rf "$WORK"
    exit "$rc"
}

as_root() {
    if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo "$@"; fi
}

# ---- prerequisites ---------------------------------------------------------------------------
step "prerequisites: docker, kind, kubectl, helm, curl, cargo"
missing=()
for tool in docker kind kubectl helm curl cargo; do
    if command -v "$tool" >/dev/null 2>&1; then
        printf '    %s: %s\n' "$tool" "$(command -v "$tool")"
    else
        missing+=("$tool")
    fi
done
if ((${#missing[@]})); then
    printf 'kind e2e: missing %s; install %s and run again\n' "${missing[*]}" \
        "$( ((${#missing[@]} == 1)) && echo it || echo them)" >&2
    exit 2
fi
if ! docker info >/dev/null 2>&1; then
    printf 'kind e2e: the docker client cannot reach a Docker engine (docker info failed); kind needs one\n' >&2
    exit 2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/fastagentic-kind-e2e.XXXXXX")"
trap cleanup EXIT

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
APP_VERSION="$(sed -n 's/^appVersion: "*\([^"]*\)"*$/\1/p' charts/fastagentic-operator/Chart.yaml)"

# ---- registry and cluster --------------------------------------------------------------------
if [[ "$(docker inspect -f '{{.State.Running}}' "$REGISTRY_NAME" 2>/dev/null)" != true ]]; then
    step "registry ${REGISTRY_NAME} on 127.0.0.1:${REGISTRY_PORT}"
    docker run -d --restart=always -p "127.0.0.1:${REGISTRY_PORT}:5000" --name "$REGISTRY_NAME" registry:2 >/dev/null
fi

if grep -qx "$CLUSTER" <<<"$(kind get clusters 2>/dev/null)"; then
    step "reusing kind cluster ${CLUSTER}"
else
    step "creating kind cluster ${CLUSTER} (containerd mirrors docker.io and ghcr.io to ${REGISTRY_NAME})"
    cat >"$WORK/kind.yaml" <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  serviceSubnet: ${SERVICE_RANGE}
  podSubnet: ${POD_RANGE}
containerdConfigPatches:
- |-
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["http://${REGISTRY_NAME}:5000"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."ghcr.io"]
    endpoint = ["http://${REGISTRY_NAME}:5000"]
EOF
    node_image=()
    [[ -n "${KIND_NODE_IMAGE:-}" ]] && node_image=(--image "$KIND_NODE_IMAGE")
    created_cluster=1
    kind create cluster --name "$CLUSTER" "${node_image[@]}" --config "$WORK/kind.yaml" --wait 180s
fi
docker network connect kind "$REGISTRY_NAME" 2>/dev/null || true
kind get kubeconfig --name "$CLUSTER" >"$WORK/kubeconfig"
export KUBECONFIG="$WORK/kubeconfig"

# ---- images ----------------------------------------------------------------------------------
push() { # local-tag name-in-registry
    docker tag "$1" "127.0.0.1:${REGISTRY_PORT}/$2"
    docker push -q "127.0.0.1:${REGISTRY_PORT}/$2" >/dev/null
    printf '    pushed %s\n' "$2"
}
step "building the images (Dockerfile.operator, Dockerfile.runtime, examples/python-agent) and pushing them to the registry"
docker build -f Dockerfile.operator -t "fastagentic-operator:kind-e2e" .
docker build -f Dockerfile.runtime --target runtime -t "fastagentic-runtime:kind-e2e" .
push fastagentic-operator:kind-e2e "fastagentic/fastagentic-operator:${APP_VERSION}"
push fastagentic-runtime:kind-e2e "fastagentic/fastagentic-runtime:${VERSION}"
push fastagentic-runtime:kind-e2e "library/your-agent:latest"
docker build -t "python-agent:kind-e2e" examples/python-agent
push python-agent:kind-e2e "library/python-agent:1.2.2"

# ---- metrics-server ----------------------------------------------------------------------------
step "metrics-server (${METRICS_SERVER_MANIFEST})"
kubectl apply -f "$METRICS_SERVER_MANIFEST" >/dev/null
kubectl -n kube-system patch deployment metrics-server --type=json \
    -p '[{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"--kubelet-insecure-tls"}]' >/dev/null || true
kubectl -n kube-system rollout status deployment/metrics-server --timeout=180s

# ---- routes ------------------------------------------------------------------------------------
node_ip="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$NODE")"
[[ -n "$node_ip" ]] || { echo "kind e2e: no address for node container ${NODE}" >&2; exit 1; }
step "routing ${SERVICE_RANGE} and ${POD_RANGE} via the kind node ${node_ip}"
for r in "$SERVICE_RANGE" "$POD_RANGE"; do
    as_root ip route replace "$r" via "$node_ip"
    routes+=("$r")
done

# ---- the checks --------------------------------------------------------------------------------
step "the e2e checks (tests/e2e.rs) against the kind cluster"
FASTAGENTIC_E2E=kind \
    FASTAGENTIC_E2E_NODE_SHELL="docker exec -i ${NODE} bash -s" \
    FASTAGENTIC_HELM="$(command -v helm)" \
    cargo test -p fastagentic-tests --test e2e -- --nocapture
step "kind e2e: every check passed"
