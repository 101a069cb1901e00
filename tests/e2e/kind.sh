#!/usr/bin/env bash
# kind end-to-end test: the whole path with real images, pods and kubelets. Needs Docker (a
# running engine), kind, kubectl and helm; it is not run in this repository's CI, which has no
# Docker engine (the control-plane tests cover the API side there).
#
#   tests/e2e/kind.sh                 create a kind cluster, run every check, delete the cluster
#   KEEP_CLUSTER=1 tests/e2e/kind.sh  keep the cluster (and what the test left in it) afterwards
#
# Steps: create (or reuse) the cluster; build Dockerfile.operator and Dockerfile.runtime;
# `kind load docker-image` both; `helm upgrade --install` the chart with the operator image;
# apply examples/staging.yaml with the runtime image (and a small max-concurrent and a slow echo
# agent, so the 503 limit can be shown) and examples/kubernetes-seed.yaml (for the HPA); wait for
# `condition=Ready` on the FastAgentic and for its pods; port-forward the Service and check
# /health, the X-FastAgentic-Instance header (one of the pod names), HTTP 503 with Retry-After
# beyond max-concurrent, the HPA; delete the FastAgentics and check every child is gone.
#
# Settings (environment):
#   KIND_CLUSTER_NAME      cluster name (default fastagentic-e2e); an existing cluster of that
#                          name is reused and then kept
#   KIND_NODE_IMAGE        node image for `kind create cluster --image` (default: kind's own)
#   KEEP_CLUSTER=1         do not delete the cluster at the end
#   E2E_IMAGE_TAG          tag of the two images (default e2e)
#   E2E_MAX_CONCURRENT     max-concurrent of the test resource (default 2)
#   E2E_ECHO_DELAY_MS      how long each /chat takes (default 3000)
#   E2E_LOCAL_PORT         local port for the port-forward (default 18000)
#   E2E_TIMEOUT            seconds to wait for each rollout (default 300)
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
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
TAG="${E2E_IMAGE_TAG:-e2e}"
OPERATOR_IMAGE="fastagentic-operator:${TAG}"
RUNTIME_IMAGE="fastagentic-runtime:${TAG}"
MAX_CONCURRENT="${E2E_MAX_CONCURRENT:-2}"
ECHO_DELAY_MS="${E2E_ECHO_DELAY_MS:-3000}"
LOCAL_PORT="${E2E_LOCAL_PORT:-18000}"
TIMEOUT="${E2E_TIMEOUT:-300}"
OPERATOR_NS="fastagentic-system"
RELEASE="fastagentic-operator"
NS="fastagentic-e2e"
AGENT="agent-staging"      # from examples/staging.yaml
SEED="fastagentic-agent"   # from examples/kubernetes-seed.yaml
WORKERS=2                  # examples/staging.yaml: gunicorn, 2 workers

WORK=""
created_cluster=0
port_forward_pid=""
passed=0

step() { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
pass() {
    passed=$((passed + 1))
    printf '    ok: %s\n' "$*"
}
fail() {
    printf '    FAIL: %s\n' "$*" >&2
    diagnostics
    exit 1
}

k() { kubectl --context "$CONTEXT" "$@"; }

diagnostics() {
    [[ "${diagnosed:-0}" == 1 ]] && return 0
    diagnosed=1
    printf '\n==> diagnostics\n' >&2
    k get fa,deploy,rs,pod,svc,hpa,pdb -n "$NS" -o wide >&2 2>&1 || true
    k get fa -n "$NS" -o yaml >&2 2>&1 || true
    k get events -n "$NS" --sort-by=.lastTimestamp 2>&1 | tail -40 >&2 || true
    k logs -n "$OPERATOR_NS" -l "app.kubernetes.io/instance=${RELEASE}" --tail=100 >&2 2>&1 || true
    [[ -f "$WORK/port-forward.log" ]] && cat "$WORK/port-forward.log" >&2
    return 0
}

cleanup() {
    local rc=$?
    if [[ -n "$port_forward_pid" ]]; then
        kill "$port_forward_pid" 2>/dev/null || true
        wait "$port_forward_pid" 2>/dev/null || true
    fi
    if [[ "$KEEP_CLUSTER" == 1 ]]; then
        step "KEEP_CLUSTER=1: cluster ${CLUSTER} kept (kubectl --context ${CONTEXT} ...;" \
            "delete it with: kind delete cluster --name ${CLUSTER})"
    elif ((created_cluster)); then
        step "deleting kind cluster ${CLUSTER}"
        kind delete cluster --name "$CLUSTER" || true
    elif kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
        step "cluster ${CLUSTER} existed before this run: removing only what the test installed"
        k delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
        helm --kube-context "$CONTEXT" uninstall "$RELEASE" -n "$OPERATOR_NS" >/dev/null 2>&1 || true
    fi
    [[ -n "$WORK" ]] && rm -rf "$WORK"
    exit "$rc"
}

# ---- prerequisites ---------------------------------------------------------------------------
step "prerequisites: docker, kind, kubectl, helm, curl"
missing=()
for tool in docker kind kubectl helm curl; do
    if command -v "$tool" >/dev/null 2>&1; then
        info "$tool: $(command -v "$tool")"
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

# ---- cluster ---------------------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    step "reusing kind cluster ${CLUSTER}"
else
    step "creating kind cluster ${CLUSTER}"
    node_image=()
    [[ -n "${KIND_NODE_IMAGE:-}" ]] && node_image=(--image "$KIND_NODE_IMAGE")
    created_cluster=1
    kind create cluster --name "$CLUSTER" "${node_image[@]}" --wait 180s
fi
k cluster-info >/dev/null || fail "kubectl cannot reach context ${CONTEXT}"
server_version="$(k get --raw /version | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')"
pass "cluster ${CLUSTER} reachable (Kubernetes ${server_version})"

# ---- images ----------------------------------------------------------------------------------
step "building ${OPERATOR_IMAGE} (Dockerfile.operator)"
docker build -f Dockerfile.operator -t "$OPERATOR_IMAGE" .
step "building ${RUNTIME_IMAGE} (Dockerfile.runtime)"
docker build -f Dockerfile.runtime --target runtime -t "$RUNTIME_IMAGE" .
for image in "$OPERATOR_IMAGE" "$RUNTIME_IMAGE"; do
    user="$(docker image inspect -f '{{.Config.User}}' "$image")"
    [[ "$user" == 65532* ]] || fail "$image runs as user '${user}', expected 65532"
    info "$image: $(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=iec-i --suffix=B 2>/dev/null || true), user ${user}"
done
pass "both images built, non-root"

step "loading the images into the cluster (kind load docker-image)"
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$RUNTIME_IMAGE"

# ---- operator --------------------------------------------------------------------------------
step "helm upgrade --install ${RELEASE} charts/fastagentic-operator (image ${OPERATOR_IMAGE})"
helm --kube-context "$CONTEXT" upgrade --install "$RELEASE" charts/fastagentic-operator \
    -n "$OPERATOR_NS" --create-namespace \
    --set image.repository=fastagentic-operator --set "image.tag=${TAG}" \
    --set image.pullPolicy=Never \
    --wait --timeout "${TIMEOUT}s"
k -n "$OPERATOR_NS" wait --for=condition=Available deployment \
    -l "app.kubernetes.io/instance=${RELEASE}" --timeout "${TIMEOUT}s" >/dev/null \
    || fail "the operator Deployment did not become Available"
pass "operator running"
k get crd fastagentics.fastagentic.io >/dev/null || fail "the chart did not install the CRD"
pass "CRD fastagentics.fastagentic.io installed"

# ---- resources -------------------------------------------------------------------------------
step "applying examples/staging.yaml (image ${RUNTIME_IMAGE}, maxConcurrent ${MAX_CONCURRENT}, echo delay ${ECHO_DELAY_MS} ms) and examples/kubernetes-seed.yaml"
k create namespace "$NS" --dry-run=client -o yaml | k apply -f - >/dev/null
# staging.yaml ends with its spec; the image and the limit are replaced, and the pull policy and a
# slow echo agent are appended to the spec (so that max-concurrent is reached with few requests).
sed -e "s|^\(  image:\).*|\1 ${RUNTIME_IMAGE}|" \
    -e "s|^\(  maxConcurrent:\).*|\1 ${MAX_CONCURRENT}|" examples/staging.yaml >"$WORK/staging.yaml"
cat >>"$WORK/staging.yaml" <<EOF
  imagePullPolicy: Never
  env:
    - name: FASTAGENTIC_ECHO_DELAY_MS
      value: "${ECHO_DELAY_MS}"
EOF
sed -e "s|^\(  image:\).*|\1 ${RUNTIME_IMAGE}|" examples/kubernetes-seed.yaml >"$WORK/seed.yaml"
printf '  imagePullPolicy: Never\n' >>"$WORK/seed.yaml"
grep -q "image: ${RUNTIME_IMAGE}" "$WORK/staging.yaml" || fail "could not set the image in staging.yaml"
grep -q "maxConcurrent: ${MAX_CONCURRENT}" "$WORK/staging.yaml" || fail "could not set maxConcurrent in staging.yaml"
grep -q "name: ${AGENT}" "$WORK/staging.yaml" || fail "examples/staging.yaml no longer names ${AGENT}"
grep -q "image: ${RUNTIME_IMAGE}" "$WORK/seed.yaml" || fail "could not set the image in kubernetes-seed.yaml"
k apply -n "$NS" -f "$WORK/staging.yaml" -f "$WORK/seed.yaml"

step "waiting for fa/${AGENT} to be Ready"
k -n "$NS" wait --for=condition=Ready "fa/${AGENT}" --timeout "${TIMEOUT}s" \
    || fail "fa/${AGENT} did not become Ready"
pass "fa/${AGENT} Ready"
selector="$(k -n "$NS" get "fa/${AGENT}" -o jsonpath='{.status.selector}')"
[[ -n "$selector" ]] || fail "fa/${AGENT} has no status.selector"
k -n "$NS" wait --for=condition=Ready pod -l "$selector" --timeout "${TIMEOUT}s" >/dev/null \
    || fail "the pods of ${AGENT} did not become Ready"
mapfile -t pods < <(k -n "$NS" get pods -l "$selector" \
    --field-selector=status.phase=Running -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
((${#pods[@]} == 2)) || fail "expected 2 running pods (staging replicas: 2), found ${#pods[@]}: ${pods[*]}"
pass "2 pods Ready: ${pods[*]}"
k -n "$NS" get fa,deploy,svc,hpa,pdb

# ---- HTTP through the Service ----------------------------------------------------------------
svc_port="$(k -n "$NS" get "svc/${AGENT}" -o jsonpath='{.spec.ports[?(@.name=="http")].port}')"
[[ -n "$svc_port" ]] || fail "svc/${AGENT} has no port named http"
step "port-forward svc/${AGENT} ${LOCAL_PORT}:${svc_port}"
k -n "$NS" port-forward "svc/${AGENT}" "${LOCAL_PORT}:${svc_port}" >"$WORK/port-forward.log" 2>&1 &
port_forward_pid=$!
base="http://127.0.0.1:${LOCAL_PORT}"
for _ in $(seq 1 60); do
    curl -fsS -o /dev/null "$base/health" 2>/dev/null && break
    kill -0 "$port_forward_pid" 2>/dev/null || fail "kubectl port-forward exited"
    sleep 0.5
done

step "GET /health"
code="$(curl -sS -D "$WORK/health.headers" -o "$WORK/health.json" -w '%{http_code}' "$base/health")"
info "HTTP ${code}: $(cat "$WORK/health.json")"
[[ "$code" == 200 ]] || fail "/health answered HTTP ${code}"
grep -q '"status"' "$WORK/health.json" || fail "/health body has no status field"
pass "/health 200"
instance="$(tr -d '\r' <"$WORK/health.headers" | sed -n 's/^[Xx]-[Ff]ast[Aa]gentic-[Ii]nstance: *//p')"
info "X-FastAgentic-Instance: ${instance}"
found=0
for pod in "${pods[@]}"; do [[ "$pod" == "$instance" ]] && found=1; done
((found)) || fail "X-FastAgentic-Instance '${instance}' is not one of the pods (${pods[*]})"
pass "X-FastAgentic-Instance is pod ${instance}"
grep -q "\"instance_id\": *\"${instance}\"" "$WORK/health.json" \
    || fail "/health instance_id differs from the header ${instance}"
pass "/health instance_id matches the header"

# A port-forward reaches one pod: its capacity is WORKERS x MAX_CONCURRENT requests in flight.
capacity=$((WORKERS * MAX_CONCURRENT))
burst=$((capacity * 4 + 4))
step "${burst} concurrent POST /chat (one pod holds ${WORKERS} workers x ${MAX_CONCURRENT} = ${capacity}; each takes ${ECHO_DELAY_MS} ms)"
for i in $(seq 1 "$burst"); do
    curl -sS -X POST -H 'Content-Type: application/json' \
        -d "{\"message\": \"hello ${i}\"}" --max-time 60 \
        -D "$WORK/chat-${i}.headers" -o "$WORK/chat-${i}.json" -w '%{http_code}' \
        "$base/chat" >"$WORK/chat-${i}.code" 2>"$WORK/chat-${i}.err" &
done
wait_failures=0
for job in $(jobs -p); do
    [[ "$job" == "$port_forward_pid" ]] && continue
    wait "$job" || wait_failures=$((wait_failures + 1))
done
ok=0
busy=0
other=0
for i in $(seq 1 "$burst"); do
    case "$(cat "$WORK/chat-${i}.code")" in
        200) ok=$((ok + 1)) ;;
        503)
            busy=$((busy + 1))
            tr -d '\r' <"$WORK/chat-${i}.headers" | grep -qi '^retry-after: *[0-9]' \
                || fail "a 503 without Retry-After: $(cat "$WORK/chat-${i}.headers")"
            grep -q '"Too many concurrent requests"' "$WORK/chat-${i}.json" \
                || fail "a 503 with an unexpected body: $(cat "$WORK/chat-${i}.json")"
            ;;
        *) other=$((other + 1)) ;;
    esac
done
info "200: ${ok}, 503: ${busy}, other: ${other} (curl failures: ${wait_failures})"
((other == 0)) || fail "${other} requests answered neither 200 nor 503"
((ok >= 1)) || fail "no request succeeded"
((busy >= 1)) || fail "no 503 although ${burst} requests exceed max-concurrent ${capacity}"
((ok <= capacity)) || fail "${ok} requests succeeded at once on one pod, above ${capacity}"
pass "beyond max-concurrent: ${busy} x HTTP 503 with Retry-After, ${ok} x 200 (at most ${capacity})"

# ---- HPA -------------------------------------------------------------------------------------
step "HPA of fa/${SEED} (examples/kubernetes-seed.yaml: 2-10 pods)"
for _ in $(seq 1 60); do
    k -n "$NS" get "hpa/${SEED}" >/dev/null 2>&1 && break
    sleep 1
done
hpa="$(k -n "$NS" get "hpa/${SEED}" \
    -o jsonpath='{.spec.scaleTargetRef.kind}/{.spec.scaleTargetRef.name} {.spec.minReplicas}-{.spec.maxReplicas}')" \
    || fail "no HorizontalPodAutoscaler ${SEED}"
info "hpa/${SEED}: ${hpa}"
[[ "$hpa" == "Deployment/${SEED} 2-10" ]] || fail "hpa/${SEED} is '${hpa}', expected 'Deployment/${SEED} 2-10'"
pass "hpa/${SEED} scales Deployment/${SEED} between 2 and 10"

# ---- deletion --------------------------------------------------------------------------------
step "deleting the FastAgentics; every child must be garbage-collected"
kill "$port_forward_pid" 2>/dev/null || true
wait "$port_forward_pid" 2>/dev/null || true
port_forward_pid=""
k -n "$NS" delete fa "$AGENT" "$SEED" --wait --timeout "${TIMEOUT}s"
for name in "$AGENT" "$SEED"; do
    left=""
    for _ in $(seq 1 "$TIMEOUT"); do
        left="$(k -n "$NS" get deploy,rs,pod,svc,hpa,pdb -l "app.kubernetes.io/instance=${name}" -o name 2>/dev/null || true)"
        [[ -z "$left" ]] && break
        sleep 1
    done
    [[ -z "$left" ]] || fail "children of ${name} still there after ${TIMEOUT}s: ${left//$'\n'/ }"
    for kind in deployment service horizontalpodautoscaler poddisruptionbudget; do
        if k -n "$NS" get "$kind" "$name" >/dev/null 2>&1; then
            fail "${kind}/${name} still exists"
        fi
    done
    pass "every child of ${name} is gone"
done

step "kind e2e: ${passed} passed, 0 failed"
