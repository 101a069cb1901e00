#!/usr/bin/env bash
# The one-command demo: a FastAgentic resource becomes a Deployment, Service and HPA on a real
# Kubernetes control plane, and its pods run.
#
#   ./scripts/demo.sh          run the demo, then stop everything it started
#   ./scripts/demo.sh --keep   leave everything running (prints how to use and stop it)
#   ./scripts/demo.sh down     stop what a --keep run left running
#
# Where containers can run (root, cgroups, bridges: `scripts/node.sh check`), on a real node:
#   1. the control plane and a real node: kubelet, containerd, kube-proxy, CoreDNS,
#      metrics-server (scripts/control-plane.sh up --node; the first run builds them)
#   2. the images without Docker (scripts/images.sh build), pushed to the node's registry
#   3. the Helm chart as users install it: the operator runs as a pod, with the chart's image
#   4. a Redis as the Service `redis`, and examples/kubernetes-seed.yaml unchanged, in namespace
#      demo; its pods Running and Ready
#   5. the FastAgentic's status and Events
#   6. GET /health through the Service's ClusterIP: both pods answer, each with its pod name in
#      X-FastAgentic-Instance; kubectl top pods
#
# Elsewhere it says why and takes the simulated path:
#   1. the local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
#      a kwok simulated node on loopback (scripts/control-plane.sh up; the first run builds them)
#   2. cargo build --release -p fastagentic-operator -p agent-runtime
#   3. the Helm chart charts/fastagentic-operator with replicaCount=0: no node here runs images,
#      so the operator runs as a local process instead, with a kubeconfig holding a token of the
#      chart's ServiceAccount (kubectl create token): the chart's RBAC is what it works with
#   4. examples/kubernetes-seed.yaml in namespace demo; the Deployment, Service and HPA appear
#   5. the FastAgentic's status: conditions and the connection budget
#   6. the runtime started exactly as the Deployment's pod template says (command, args, env,
#      the downward-API pod name), then GET /health and its X-FastAgentic-Instance header
#
# Settings (environment):
#   FASTAGENTIC_DEMO_NODE=kwok    take the simulated path even where a real node could run
#   FASTAGENTIC_DEMO_DIR          state: logs, pid files, kubeconfig (default /tmp/fastagentic-demo)
#   FASTAGENTIC_DEMO_PORT         port for the runtime instead of the pod template's
#   FASTAGENTIC_DEMO_OPERATOR_PORT  first of two loopback ports for the operator's /metrics and
#                                 /healthz (default 18080, 18081)
#   and those of scripts/control-plane.sh and scripts/services.sh (state dirs, ports).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

STATE="${FASTAGENTIC_DEMO_DIR:-/tmp/fastagentic-demo}"
NS="demo"
NAME="fastagentic-agent"                # metadata.name in examples/kubernetes-seed.yaml
EXAMPLE="examples/kubernetes-seed.yaml"
OPERATOR_NS="fastagentic-system"
RELEASE="fastagentic-operator"
CHART="charts/fastagentic-operator"
OP_PORT="${FASTAGENTIC_DEMO_OPERATOR_PORT:-18080}"
OP_METRICS="127.0.0.1:${OP_PORT}"
OP_HEALTH="127.0.0.1:$((OP_PORT + 1))"
WAIT_SECONDS=120

KEEP=0
DOWN=0
for arg in "$@"; do
    case "$arg" in
        --keep) KEEP=1 ;;
        down) DOWN=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            printf 'demo: unknown argument %s (see --help)\n' "$arg" >&2
            exit 2
            ;;
    esac
done

n=0
step() {
    n=$((n + 1))
    printf '\n\033[1m==> [%d] %s\033[0m\n' "$n" "$*"
}
say() { printf '    %s\n' "$*"; }
run() {
    printf '    $ %s\n' "$*"
    "$@"
}
die() {
    printf '\ndemo: ERROR: %s\n' "$*" >&2
    exit 1
}

mkdir -p "$STATE"

# ---- processes the demo started, recorded in $STATE so `down` (or a rerun) can stop them ----
pid_alive() { [[ -f "$STATE/$1.pid" ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

stop_process() { # name: SIGTERM, wait up to 40 s (the runtime drains), then SIGKILL
    local name="$1" pid i
    if pid_alive "$name"; then
        pid="$(cat "$STATE/$name.pid")"
        say "stopping the ${name} (pid ${pid})"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 400; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$STATE/$name.pid"
}

stop_all() {
    stop_process runtime
    stop_process operator
    if [[ -f "$STATE/started-control-plane" ]]; then
        say "stopping the control plane the demo started"
        scripts/control-plane.sh down
        rm -f "$STATE/started-control-plane"
    fi
    if [[ -f "$STATE/started-services" ]]; then
        say "stopping the Redis (and PostgreSQL) the demo started"
        scripts/services.sh down
        rm -f "$STATE/started-services"
    fi
}

if ((DOWN)); then
    step "stopping what the demo left running"
    stop_all
    say "done"
    exit 0
fi

finish() {
    local rc=$?
    if ((rc != 0)); then
        printf '\ndemo: failed (exit %d). Logs: %s/operator.log, %s/runtime.log\n' "$rc" "$STATE" "$STATE" >&2
        for log in operator runtime; do
            if [[ -s "$STATE/$log.log" ]]; then
                printf -- '--- last lines of %s.log ---\n' "$log" >&2
                tail -n 15 "$STATE/$log.log" >&2
            fi
        done
    fi
    if ((KEEP)) && ((rc == 0)); then
        return
    fi
    step "cleaning up (./scripts/demo.sh --keep leaves everything running)"
    stop_all
    exit "$rc"
}
trap finish EXIT

# ---- the real node, where containers can run -------------------------------------------------
# demo_real: steps 1-6 of the header's first list; returns when done.
demo_real() {
    step "the local Kubernetes control plane and a real node (scripts/control-plane.sh up --node)"
    run scripts/control-plane.sh up --node
    touch "$STATE/started-control-plane"
    eval "$(scripts/control-plane.sh env)"
    eval "$(scripts/node.sh env)"
    HELM="$FASTAGENTIC_HELM"
    say "KUBECONFIG=${KUBECONFIG}"
    run kubectl get nodes -o wide

    step "the images, without Docker (scripts/images.sh build: static binaries, user 65532)"
    run scripts/images.sh build

    step "installing the chart: the operator runs as a pod, from the chart's own image"
    run "$HELM" upgrade --install "$RELEASE" "$CHART" -n "$OPERATOR_NS" --create-namespace \
        --set replicaCount=1 --wait --timeout 4m
    run kubectl -n "$OPERATOR_NS" get pods -o wide

    step "applying a Redis (the Service redis) and ${EXAMPLE}, unchanged, in namespace ${NS}"
    kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    run kubectl apply -n "$NS" -f tests/e2e/redis.yaml
    run kubectl apply -n "$NS" -f "$EXAMPLE"
    run kubectl -n "$NS" wait --for=condition=Ready "fa/${NAME}" --timeout=4m
    # A new Deployment starts with 1 pod; the HPA raises it to minReplicas at its first sync.
    local min ready=0 i
    min="$(kubectl -n "$NS" get hpa "$NAME" -o jsonpath='{.spec.minReplicas}' 2>/dev/null || true)"
    min="${min:-1}"
    say "waiting for ${min} Ready pods (the HPA's minReplicas; it scales the new Deployment up at its first sync)"
    for ((i = 0; i < 120; i++)); do
        ready="$(kubectl -n "$NS" get deployment "$NAME" -o jsonpath='{.status.readyReplicas}' 2>/dev/null || true)"
        [[ "${ready:-0}" -ge "$min" ]] && break
        sleep 2
    done
    [[ "${ready:-0}" -ge "$min" ]] || die "only ${ready:-0} of ${min} pods Ready after 4 minutes"
    run kubectl get fa,deploy,svc,hpa -n "$NS"
    run kubectl get pods -n "$NS" -o wide

    step "the status of fa/${NAME} and what the operator did"
    run kubectl -n "$NS" get "fa/${NAME}" -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'
    run kubectl -n "$NS" events --for "fastagentic/${NAME}" || true

    local ip port url pods seen="" instance
    ip="$(kubectl -n "$NS" get svc "$NAME" -o jsonpath='{.spec.clusterIP}')"
    port="$(kubectl -n "$NS" get svc "$NAME" -o jsonpath='{.spec.ports[0].port}')"
    url="http://${ip}:${port}"
    pods="$(kubectl -n "$NS" get pods -l "app.kubernetes.io/instance=${NAME}" -o jsonpath='{.items[*].metadata.name}')"
    step "GET ${url}/health through the Service (kube-proxy picks a pod per connection)"
    curl -fsS -D "$STATE/health.headers" "$url/health" | python3 -m json.tool | sed 's/^/    /'
    for ((i = 0; i < 20; i++)); do
        instance="$(curl -fsS -D - -o /dev/null "$url/health" | tr -d '\r' |
            sed -n 's/^[Xx]-[Ff]ast[Aa]gentic-[Ii]nstance: *//p')"
        [[ " $pods " == *" $instance "* ]] || die "X-FastAgentic-Instance '${instance}' is not one of the pods (${pods})"
        [[ " $seen " == *" $instance "* ]] || seen="$seen $instance"
    done
    say "20 requests answered by:${seen}"
    say "= the pods' names (the downward API gives FASTAGENTIC_INSTANCE_ID metadata.name)"
    step "kubectl top pods -n ${NS} (metrics-server; the HPA reads the same figures)"
    for ((i = 0; i < 60; i++)); do
        kubectl top pods -n "$NS" >/dev/null 2>&1 && break
        sleep 2
    done
    run kubectl top pods -n "$NS" || say "(no figures yet: metrics-server needs two scrapes)"
    run kubectl get hpa -n "$NS"

    if ((KEEP)); then
        step "left running (--keep)"
        say "cluster: eval \"\$(scripts/control-plane.sh env)\"; kubectl get fa,pods -n ${NS}"
        say "service: curl ${url}/health   (ClusterIPs and pod IPs are routed on this machine)"
        say "stop everything: ./scripts/demo.sh down"
    else
        printf '\ndemo: done.\n'
    fi
}

if [[ "${FASTAGENTIC_DEMO_NODE:-auto}" != kwok ]] && why_not="$(scripts/node.sh check)"; then
    demo_real
    exit 0
fi
say "no real node here (${why_not:-FASTAGENTIC_DEMO_NODE=kwok}): pods run on the simulated kwok node"
say "and the pod template runs as a local process instead"

# ---- 1. control plane ------------------------------------------------------------------------
step "the local Kubernetes control plane (scripts/control-plane.sh up)"
control_plane_ready() (
    eval "$(scripts/control-plane.sh env)"
    [[ -f "$KUBECONFIG" && "$(kubectl get --raw /readyz 2>/dev/null)" == ok ]]
)
if control_plane_ready; then
    if [[ -f "$STATE/started-control-plane" ]]; then
        say "already running, started by an earlier ./scripts/demo.sh --keep"
    else
        say "already running: the demo uses it and leaves it running"
    fi
else
    run scripts/control-plane.sh up
    touch "$STATE/started-control-plane"
fi
eval "$(scripts/control-plane.sh env)"
HELM="$FASTAGENTIC_HELM"
say "KUBECONFIG=${KUBECONFIG}"
say "helm: ${HELM}"
command -v kubectl >/dev/null 2>&1 || die "kubectl not found"
command -v python3 >/dev/null 2>&1 || die "python3 not found (reads the pod template)"
command -v curl >/dev/null 2>&1 || die "curl not found"

# ---- 2. build --------------------------------------------------------------------------------
step "building the operator and the runtime"
run cargo build --release -p fastagentic-operator -p agent-runtime
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
OPERATOR_BIN="$TARGET_DIR/release/fastagentic-operator"
RUNTIME_BIN="$TARGET_DIR/release/fastagentic"
[[ -x "$OPERATOR_BIN" && -x "$RUNTIME_BIN" ]] || die "the build did not produce $OPERATOR_BIN and $RUNTIME_BIN"
say "$OPERATOR_BIN"
say "$RUNTIME_BIN"

# ---- 3. chart and operator -------------------------------------------------------------------
step "installing the chart (replicaCount=0: the operator runs as a local process below)"
# helm installs a chart's CRD only on first install; applying it first keeps a rerun current
run kubectl apply --server-side --force-conflicts -f "$CHART/crds/"
run "$HELM" upgrade --install "$RELEASE" "$CHART" -n "$OPERATOR_NS" --create-namespace \
    --set replicaCount=0 --wait --timeout 2m
SA="$(kubectl -n "$OPERATOR_NS" get serviceaccount \
    -l "app.kubernetes.io/instance=${RELEASE}" -o jsonpath='{.items[0].metadata.name}')"
[[ -n "$SA" ]] || die "the chart created no ServiceAccount"

step "a kubeconfig with a token of the chart's ServiceAccount ${OPERATOR_NS}/${SA}"
token="$(kubectl -n "$OPERATOR_NS" create token "$SA" --duration=24h)"
server="$(kubectl config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.server}')"
kubectl config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' |
    base64 -d >"$STATE/ca.crt"
[[ -s "$STATE/ca.crt" ]] || die "no certificate authority in ${KUBECONFIG}"
OPERATOR_KUBECONFIG="$STATE/operator.kubeconfig"
rm -f "$OPERATOR_KUBECONFIG"
kubectl --kubeconfig "$OPERATOR_KUBECONFIG" config set-cluster demo \
    --server="$server" --certificate-authority="$STATE/ca.crt" --embed-certs=true >/dev/null
kubectl --kubeconfig "$OPERATOR_KUBECONFIG" config set-credentials "$SA" --token="$token" >/dev/null
kubectl --kubeconfig "$OPERATOR_KUBECONFIG" config set-context demo --cluster=demo \
    --user="$SA" --namespace="$OPERATOR_NS" >/dev/null
kubectl --kubeconfig "$OPERATOR_KUBECONFIG" config use-context demo >/dev/null
chmod 600 "$OPERATOR_KUBECONFIG"
say "$OPERATOR_KUBECONFIG (user system:serviceaccount:${OPERATOR_NS}:${SA})"
can_i() { kubectl --kubeconfig "$OPERATOR_KUBECONFIG" auth can-i "$@" 2>&1 || true; }
say "RBAC as the operator: patch fastagentics/status: $(can_i patch fastagentics.fastagentic.io --subresource=status -A);" \
    "create deployments: $(can_i create deployments.apps -n "$NS"); delete pods: $(can_i delete pods -n "$NS")"

step "starting the operator (logs: ${STATE}/operator.log)"
stop_process operator
say "\$ fastagentic-operator run   (env as in the chart's Deployment; /metrics on ${OP_METRICS}, /healthz on ${OP_HEALTH})"
KUBECONFIG="$OPERATOR_KUBECONFIG" \
    FASTAGENTIC_OPERATOR_NAMESPACE="" \
    FASTAGENTIC_OPERATOR_LEADER_ELECT=true \
    FASTAGENTIC_OPERATOR_LEASE_NAME="$RELEASE" \
    FASTAGENTIC_OPERATOR_LEASE_NAMESPACE="$OPERATOR_NS" \
    FASTAGENTIC_OPERATOR_LEADER_ELECT_IDENTITY="demo-$(hostname)" \
    FASTAGENTIC_OPERATOR_METRICS_BIND_ADDRESS="$OP_METRICS" \
    FASTAGENTIC_OPERATOR_HEALTH_BIND_ADDRESS="$OP_HEALTH" \
    FASTAGENTIC_OPERATOR_LOG_LEVEL=info \
    nohup "$OPERATOR_BIN" run >"$STATE/operator.log" 2>&1 &
echo $! >"$STATE/operator.pid"
for ((i = 0; i < WAIT_SECONDS * 2; i++)); do
    curl -fsS -o /dev/null "http://${OP_HEALTH}/readyz" 2>/dev/null && break
    pid_alive operator || die "the operator exited; see ${STATE}/operator.log"
    sleep 0.5
done
curl -fsS -o /dev/null "http://${OP_HEALTH}/readyz" || die "the operator's /readyz did not answer"
say "operator ready (pid $(cat "$STATE/operator.pid"))"

# ---- 4. the example --------------------------------------------------------------------------
step "applying ${EXAMPLE} in namespace ${NS}"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# the simulated node is tainted so that a real node's pods never land on it: pin this namespace's
# pods to it (the API server's PodNodeSelector and PodTolerationRestriction plugins)
kubectl annotate namespace "$NS" --overwrite >/dev/null \
    "scheduler.alpha.kubernetes.io/node-selector=type=kwok" \
    'scheduler.alpha.kubernetes.io/defaultTolerations=[{"key":"fastagentic.io/simulated","operator":"Exists","effect":"NoSchedule"}]'
run kubectl apply -n "$NS" -f "$EXAMPLE"

step "waiting for the Deployment ${NS}/${NAME}"
for ((i = 0; i < WAIT_SECONDS; i++)); do
    kubectl -n "$NS" get deployment "$NAME" >/dev/null 2>&1 && break
    sleep 1
done
kubectl -n "$NS" get deployment "$NAME" >/dev/null 2>&1 ||
    die "the operator did not create deployment/${NAME} within ${WAIT_SECONDS}s"
if [[ -n "$(kubectl get nodes -o name 2>/dev/null)" ]]; then
    say "pods run on the simulated (kwok) node: waiting for condition Ready on fa/${NAME}"
    if ! kubectl -n "$NS" wait --for=condition=Ready "fa/${NAME}" --timeout=90s >/dev/null; then
        say "fa/${NAME} is not Ready yet (its status below says why)"
    fi
else
    say "no node (kwok unavailable): the pods stay Pending; the objects are there all the same"
fi
run kubectl get fa,deploy,svc,hpa -n "$NS"

# ---- 5. status -------------------------------------------------------------------------------
step "the status of fa/${NAME}: conditions and connection budget"
run kubectl -n "$NS" get "fa/${NAME}" -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'
status_json="$(kubectl -n "$NS" get "fa/${NAME}" -o json)"
python3 - "$status_json" <<'PY'
import json, sys
st = json.loads(sys.argv[1]).get("status", {})
budget = {k: v for k, v in st.items() if k.lower().startswith("max")}
print("    observedGeneration: %s, replicas: %s, readyReplicas: %s"
      % (st.get("observedGeneration"), st.get("replicas"), st.get("readyReplicas")))
print("    connection budget (maxReplicas x workers x pool sizes): %s"
      % (json.dumps(budget) if budget else "not reported"))
PY
say "what the operator did, as Events on the resource:"
run kubectl -n "$NS" events --for "fastagentic/${NAME}" ||
    say "(kubectl events could not list them; kubectl describe fa/${NAME} shows them too)"

# ---- 6. the pod template as a process -------------------------------------------------------
step "starting the runtime exactly as the Deployment's pod template says"
pod="$(kubectl -n "$NS" get pods -l "app.kubernetes.io/instance=${NAME}" \
    -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)"
if [[ -n "$pod" ]]; then
    say "pod name for the downward API (metadata.name): ${pod} (a pod the simulated node runs)"
else
    hash="$(kubectl -n "$NS" get replicasets -l "app.kubernetes.io/instance=${NAME}" \
        -o jsonpath='{.items[0].metadata.labels.pod-template-hash}' 2>/dev/null || true)"
    suffix="$(head -c 256 /dev/urandom | tr -dc 'bcdfghjklmnpqrstvwxz2456789')"
    pod="${NAME}-${hash:-5d8f7c9b6}-${suffix:0:5}"
    say "pod name for the downward API (metadata.name): ${pod} (made up as <deployment>-<hash>-<random>)"
fi

local_redis=""
if [[ "$(kubectl -n "$NS" get deployment "$NAME" -o json)" == *'"REDIS_URL"'* ]]; then
    # the services script prints `export REDIS_URL=... DATABASE_URL=...`
    local_redis="$(eval "$(scripts/services.sh env)" && printf '%s' "$REDIS_URL")"
    if command -v redis-cli >/dev/null 2>&1 && redis-cli -u "$local_redis" ping >/dev/null 2>&1; then
        say "the template sets REDIS_URL: Redis from scripts/services.sh is already running"
    else
        say "the template sets REDIS_URL: starting Redis on loopback (scripts/services.sh up; it starts PostgreSQL too)"
        scripts/services.sh up
        touch "$STATE/started-services"
    fi
fi

kubectl -n "$NS" get deployment "$NAME" -o json >"$STATE/deployment.json"
# Resolves the container `agent` the way the kubelet would: env values, downward-API fields,
# Secret and ConfigMap keys, $(VAR) references in command and args. Prints one NUL-separated
# argv for `env -i`.
python3 - "$STATE/deployment.json" "$pod" "$NS" "$local_redis" "${FASTAGENTIC_DEMO_PORT:-}" \
    >"$STATE/runtime.argv" 2>"$STATE/runtime.resolve" <<'PY' || { cat "$STATE/runtime.resolve" >&2; die "could not resolve the pod template"; }
import base64, json, re, subprocess, sys

deploy_file, pod, ns, local_redis, port_override = sys.argv[1:6]
deploy = json.load(open(deploy_file))
spec = deploy["spec"]["template"]["spec"]
c = next(x for x in spec["containers"] if x["name"] == "agent")

def kubectl_json(*args):
    return json.loads(subprocess.check_output(["kubectl", "-n", ns, "get", *args, "-o", "json"]))

def note(msg):
    print("    " + msg, file=sys.stderr)

env = {}
def expand(s):  # $(VAR) with earlier variables, $$ escapes, unknown references left as they are
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), s)

for src in c.get("envFrom", []):
    prefix = src.get("prefix", "")
    if "configMapRef" in src:
        data = kubectl_json("configmap", src["configMapRef"]["name"]).get("data", {})
    else:
        data = {k: base64.b64decode(v).decode() for k, v in
                kubectl_json("secret", src["secretRef"]["name"]).get("data", {}).items()}
    for k, v in data.items():
        env[prefix + k] = v

fields = {"metadata.name": pod, "metadata.namespace": ns, "spec.nodeName": "kwok-node-0",
          "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
          "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
for e in c.get("env", []):
    name = e["name"]
    if "value" in e:
        env[name] = expand(e["value"])
    elif "valueFrom" not in e:
        env[name] = ""
    else:
        vf = e["valueFrom"]
        if "fieldRef" in vf:
            path = vf["fieldRef"]["fieldPath"]
            if path not in fields:
                sys.exit("unsupported fieldRef %s in %s" % (path, name))
            env[name] = fields[path]
            note("%s = %s   (downward API: %s)" % (name, env[name], path))
        elif "secretKeyRef" in vf:
            ref = vf["secretKeyRef"]
            env[name] = base64.b64decode(kubectl_json("secret", ref["name"])["data"][ref["key"]]).decode()
            note("%s = (from secret %s, key %s)" % (name, ref["name"], ref["key"]))
        elif "configMapKeyRef" in vf:
            ref = vf["configMapKeyRef"]
            env[name] = kubectl_json("configmap", ref["name"])["data"][ref["key"]]
        elif "resourceFieldRef" in vf:
            note("%s: resourceFieldRef is not resolved outside a pod; left unset" % name)
        else:
            sys.exit("unsupported valueFrom in %s" % name)

if env.get("FASTAGENTIC_HOST") == "0.0.0.0":
    env["FASTAGENTIC_HOST"] = "127.0.0.1"
    note("FASTAGENTIC_HOST = 127.0.0.1   (the template's 0.0.0.0 would listen on every interface"
         " of this machine; a pod has its own network)")
if "REDIS_URL" in env and local_redis:
    note("REDIS_URL = %s   (the template's %s names a Service that does not resolve here;"
         " this is scripts/services.sh's Redis)" % (local_redis, env["REDIS_URL"]))
    env["REDIS_URL"] = local_redis
if port_override:
    note("FASTAGENTIC_PORT = %s   (FASTAGENTIC_DEMO_PORT; the template says %s)"
         % (port_override, env.get("FASTAGENTIC_PORT")))
    env["FASTAGENTIC_PORT"] = port_override
env.setdefault("HOSTNAME", pod)

argv = [expand(a) for a in (c.get("command") or []) + (c.get("args") or [])]
if not argv:
    sys.exit("the container has no command (the image's entrypoint is not known here)")
for k in sorted(env):
    if k.startswith("FASTAGENTIC_") or k in ("REDIS_URL", "DATABASE_URL", "HOSTNAME"):
        shown = env[k] if k not in ("DATABASE_URL",) else "(set)"
        note("env %s=%s" % (k, shown))
note("command: %s" % " ".join(argv))
sys.stdout.write("\0".join(["%s=%s" % kv for kv in sorted(env.items())] + ["--"] + argv))
PY
cat "$STATE/runtime.resolve"

mapfile -d '' -t spec_argv <"$STATE/runtime.argv"
env_args=()
cmd_args=()
seen_sep=0
for a in "${spec_argv[@]}"; do
    if ((seen_sep)); then
        cmd_args+=("$a")
    elif [[ "$a" == "--" ]]; then
        seen_sep=1
    else
        env_args+=("$a")
    fi
done
((${#cmd_args[@]})) || die "no command in the pod template"
# `fastagentic` in the command resolves to the binary just built, as the image's PATH would
RUNTIME_PORT="$(printf '%s\n' "${env_args[@]}" | sed -n 's/^FASTAGENTIC_PORT=//p')"
RUNTIME_PORT="${RUNTIME_PORT:-8000}"
stop_process runtime
if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:${RUNTIME_PORT}/" 2>/dev/null; then
    die "port ${RUNTIME_PORT} is already in use; set FASTAGENTIC_DEMO_PORT to a free port"
fi
say "\$ ${cmd_args[*]}   (logs: ${STATE}/runtime.log)"
env -i PATH="$(dirname "$RUNTIME_BIN"):/usr/local/bin:/usr/bin:/bin" "${env_args[@]}" \
    nohup "${cmd_args[@]}" >"$STATE/runtime.log" 2>&1 &
echo $! >"$STATE/runtime.pid"
base="http://127.0.0.1:${RUNTIME_PORT}"
for ((i = 0; i < WAIT_SECONDS * 2; i++)); do
    curl -fsS -o /dev/null "$base/health" 2>/dev/null && break
    pid_alive runtime || die "the runtime exited; see ${STATE}/runtime.log"
    sleep 0.5
done

step "GET ${base}/health"
curl -fsS -D "$STATE/health.headers" -o "$STATE/health.json" "$base/health" ||
    die "/health did not answer"
python3 -m json.tool "$STATE/health.json" | sed 's/^/    /'
instance="$(tr -d '\r' <"$STATE/health.headers" | sed -n 's/^[Xx]-[Ff]ast[Aa]gentic-[Ii]nstance: *//p')"
say "X-FastAgentic-Instance: ${instance}"
[[ "$instance" == "$pod" ]] || die "the instance header '${instance}' is not the pod name '${pod}'"
say "= the pod name the downward API gave FASTAGENTIC_INSTANCE_ID"
step "GET ${base}/ready (the readiness probe's path)"
ready_code="$(curl -sS -o "$STATE/ready.json" -w '%{http_code}' "$base/ready" || true)"
say "HTTP ${ready_code}: $(cat "$STATE/ready.json" 2>/dev/null)"

if ((KEEP)); then
    step "left running (--keep)"
    say "runtime:  ${base}  (pid $(cat "$STATE/runtime.pid"), log ${STATE}/runtime.log)"
    say "operator: pid $(cat "$STATE/operator.pid"), log ${STATE}/operator.log"
    say "cluster:  eval \"\$(scripts/control-plane.sh env)\"; kubectl get fa,deploy,svc,hpa -n ${NS}"
    say "stop everything: ./scripts/demo.sh down"
else
    printf '\ndemo: done.\n'
fi
