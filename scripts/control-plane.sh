#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, for the control-plane test layer.
#
#   scripts/control-plane.sh build     build (or reuse) the pinned binaries
#   scripts/control-plane.sh up        build if needed, then start etcd, kube-apiserver,
#                                      kube-controller-manager, and kube-scheduler + kwok
#   scripts/control-plane.sh up --node the same, plus a real node (scripts/node.sh): kubelet,
#                                      containerd, kube-proxy, CoreDNS, metrics-server
#   scripts/control-plane.sh down [--keep]   (stops the real node first, if one runs)
#   scripts/control-plane.sh env       eval "$(scripts/control-plane.sh env)"
#   scripts/control-plane.sh status
#   scripts/control-plane.sh path NAME print the cached binary for NAME (e.g. helm)
#   scripts/control-plane.sh build NAME...  build only these (e.g. kubelet kube-proxy)
#
# Everything is built from the Go module proxy into
# ${FASTAGENTIC_CACHE_DIR:-$HOME/.cache/fastagentic}/bin/<name>-<version> and reused from there.
# State (certificates, etcd data, logs, pid files, kubeconfigs) lives in
# ${FASTAGENTIC_CP_DIR:-/tmp/fastagentic-cp}. Only loopback addresses are used.
set -euo pipefail

# ---- pinned versions (override with the environment variables of the same name) ----------
KUBE_VERSION="${FASTAGENTIC_KUBE_VERSION:-v1.36.3}"   # k8s.io/kubernetes
ETCD_VERSION="${FASTAGENTIC_ETCD_VERSION:-v3.6.13}"   # go.etcd.io/etcd/server/v3
HELM_VERSION="${FASTAGENTIC_HELM_VERSION:-v3.22.0}"   # helm.sh/helm/v3
KWOK_VERSION="${FASTAGENTIC_KWOK_VERSION:-v0.7.0}"    # sigs.k8s.io/kwok
# staging modules (k8s.io/api, ...) are published as v0.<minor>.<patch> for kubernetes v1.<minor>.<patch>
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"

# ---- locations and ports ---------------------------------------------------------------------
CACHE_DIR="${FASTAGENTIC_CACHE_DIR:-$HOME/.cache/fastagentic}"
BIN_DIR="$CACHE_DIR/bin"
BUILD_DIR="$CACHE_DIR/build"
CP_DIR="${FASTAGENTIC_CP_DIR:-/tmp/fastagentic-cp}"
ETCD_CLIENT_PORT="${FASTAGENTIC_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${FASTAGENTIC_ETCD_PEER_PORT:-12380}"
APISERVER_PORT="${FASTAGENTIC_APISERVER_PORT:-16443}"
CM_PORT="${FASTAGENTIC_CM_PORT:-20257}"
SCHED_PORT="${FASTAGENTIC_SCHEDULER_PORT:-20259}"
KWOK_PORT="${FASTAGENTIC_KWOK_PORT:-20247}"
SERVICE_CIDR="${FASTAGENTIC_SERVICE_CIDR:-10.96.0.0/16}"
SERVICE_IP="${FASTAGENTIC_SERVICE_IP:-10.96.0.1}"   # first address of SERVICE_CIDR
POD_CIDR="${FASTAGENTIC_KWOK_POD_CIDR:-10.245.0.1/24}"  # only simulated by kwok, never routed
# The real node's address (scripts/node.sh: the address of its bridge); with `up --node` the API
# server listens on it too and advertises it, so pods reach the `kubernetes` Service.
NODE_IP="${FASTAGENTIC_NODE_IP:-10.244.0.1}"
CLUSTER_CIDR="${FASTAGENTIC_CLUSTER_CIDR:-10.244.0.0/16}"
# kwok + kube-scheduler make pods Running on a simulated node; FASTAGENTIC_CP_KWOK=0 turns it off,
# FASTAGENTIC_CP_KWOK=required makes a missing kwok fatal.
KWOK_MODE="${FASTAGENTIC_CP_KWOK:-1}"
GO_BUILD_P="${FASTAGENTIC_GO_BUILD_P:-2}"
READY_TIMEOUT="${FASTAGENTIC_CP_TIMEOUT:-180}"
# FASTAGENTIC_CP_PROFILING=1 serves the API server's and the controller-manager's
# /debug/pprof (for FASTAGENTIC_BENCH_PROFILE in bench/operator-scale.sh); off by default.
PROFILING=false
[[ "${FASTAGENTIC_CP_PROFILING:-0}" == 1 ]] && PROFILING=true

COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# shellcheck source=scripts/lib/go-build.sh
source "$HERE/lib/go-build.sh"
# shellcheck source=scripts/lib/procs.sh
source "$HERE/lib/procs.sh"

log() { printf '[control-plane] %s\n' "$*" >&2; }
warn() { printf '[control-plane] WARNING: %s\n' "$*" >&2; }
die() { printf '[control-plane] ERROR: %s\n' "$*" >&2; exit 1; }

bin_path() { # name -> cached path
  case "$1" in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy) echo "$BIN_DIR/$1-$KUBE_VERSION" ;;
    etcd) echo "$BIN_DIR/etcd-$ETCD_VERSION" ;;
    helm) echo "$BIN_DIR/helm-$HELM_VERSION" ;;
    kwok) echo "$BIN_DIR/kwok-$KWOK_VERSION" ;;
    *) die "unknown binary '$1'" ;;
  esac
}


# ============================================================================================
# build
# ============================================================================================

build_kubernetes() { # names...
  local dir="$BUILD_DIR/kubernetes-$KUBE_VERSION" kmod m stub missing=() name minor
  minor="${KUBE_VERSION#v1.}"
  minor="${minor%%.*}"
  if [[ ! -f "$dir/.ready" ]]; then
    log "preparing a module that requires k8s.io/kubernetes $KUBE_VERSION (staging modules at $STAGING_VERSION) in $dir"
    new_module "$dir"
    kmod="$(go_mod_file "$dir" "k8s.io/kubernetes@$KUBE_VERSION")" ||
      die "kube-apiserver/kube-controller-manager: k8s.io/kubernetes@$KUBE_VERSION could not be downloaded"
    [[ -f "$kmod" ]] || die "kube-apiserver/kube-controller-manager: no go.mod for k8s.io/kubernetes@$KUBE_VERSION"
    local staging=()
    mapfile -t staging < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$kmod")
    ((${#staging[@]} > 0)) || die "no staging replace directives found in $kmod"
    local replaces=""
    for m in "${staging[@]}"; do
      if (cd "$dir" && go mod download "$m@$STAGING_VERSION") >/dev/null 2>&1; then
        replaces+=$'\t'"$m => $m $STAGING_VERSION"$'\n'
      else
        # Not served by the proxy (e.g. sample-cli-plugin); no server binary imports it,
        # but kubernetes' go.mod names it, so point it at an empty stand-in module.
        missing+=("$m")
        stub="stub/${m#k8s.io/}"
        mkdir -p "$dir/$stub"
        printf 'module %s\n\ngo 1.26\n' "$m" >"$dir/$stub/go.mod"
        replaces+=$'\t'"$m => ./$stub"$'\n'
      fi
    done
    printf '\nrequire k8s.io/kubernetes %s\n\nreplace (\n%s)\n' "$KUBE_VERSION" "$replaces" >>"$dir/go.mod"
    ((${#missing[@]} == 0)) || log "staging modules not served at $STAGING_VERSION, replaced by empty stand-ins: ${missing[*]}"
    touch "$dir/.ready"
  fi
  local vpkg ld=""
  for vpkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $vpkg.gitVersion=$KUBE_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor"
    ld+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
  done
  for name in "$@"; do
    go_build "$name" "$dir" "k8s.io/kubernetes/cmd/$name" "$ld" || return 1
  done
}

build_etcd() {
  local dir="$BUILD_DIR/etcd-$ETCD_VERSION"
  new_module "$dir"
  printf '\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >>"$dir/go.mod"
  go_build etcd "$dir" go.etcd.io/etcd/server/v3 ""
}

build_helm() {
  local dir="$BUILD_DIR/helm-$HELM_VERSION" major="${HELM_VERSION%%.*}" gomod cg kmaj=1 kmin=""
  new_module "$dir"
  printf '\nrequire helm.sh/helm/%s %s\n' "$major" "$HELM_VERSION" >>"$dir/go.mod"
  # helm's release build stamps the Kubernetes version of its client-go; do the same.
  gomod="$(go_mod_file "$dir" "helm.sh/helm/$major@$HELM_VERSION")" || true
  if [[ -n "$gomod" && -f "$gomod" ]]; then
    cg="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")"
    kmin="${cg#v0.}"
    kmin="${kmin%%.*}"
  fi
  local ld="-X helm.sh/helm/$major/internal/version.version=$HELM_VERSION -X helm.sh/helm/$major/internal/version.gitTreeState=clean"
  if [[ -n "$kmin" ]]; then
    ld+=" -X helm.sh/helm/$major/pkg/lint/rules.k8sVersionMajor=$kmaj -X helm.sh/helm/$major/pkg/lint/rules.k8sVersionMinor=$kmin"
    ld+=" -X helm.sh/helm/$major/pkg/chartutil.k8sVersionMajor=$kmaj -X helm.sh/helm/$major/pkg/chartutil.k8sVersionMinor=$kmin"
  fi
  go_build helm "$dir" "helm.sh/helm/$major/cmd/helm" "$ld"
}

build_kwok() {
  local dir="$BUILD_DIR/kwok-$KWOK_VERSION"
  new_module "$dir"
  printf '\nrequire sigs.k8s.io/kwok %s\n' "$KWOK_VERSION" >>"$dir/go.mod"
  go_build kwok "$dir" sigs.k8s.io/kwok/cmd/kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
}

# ensure NAME: build NAME unless its cached binary exists.
ensure() {
  local name="$1" out
  out="$(bin_path "$name")"
  if [[ -x "$out" ]]; then
    log "$name: cached $out ($(human_size "$out"))"
    return 0
  fi
  mkdir -p "$BIN_DIR" "$BUILD_DIR"
  go_env
  case "$name" in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy) build_kubernetes "$name" ;;
    etcd) build_etcd ;;
    helm) build_helm ;;
    kwok) build_kwok ;;
  esac
}

kwok_wanted() { [[ "$KWOK_MODE" != 0 && "$KWOK_MODE" != false && "$KWOK_MODE" != no ]]; }

cmd_build() {
  mkdir -p "$CACHE_DIR"
  # One build at a time per cache (two engineers running `up` at once share the result).
  exec 9>"$CACHE_DIR/build.lock"
  if ! flock -n 9; then
    log "another build holds $CACHE_DIR/build.lock; waiting"
    flock 9
  fi
  local name failed=()
  if (($# > 0)); then
    for name in "$@"; do
      bin_path "$name" >/dev/null
      ensure "$name" || failed+=("$name")
    done
    exec 9>&-
    ((${#failed[@]} == 0)) || die "could not obtain: ${failed[*]} (build logs under $BUILD_DIR)"
    return 0
  fi
  for name in etcd kube-apiserver kube-controller-manager helm; do
    ensure "$name" || failed+=("$name")
  done
  # a kubectl of the server's version (the machine's own kubectl may be older)
  ensure kubectl || warn "kubectl $KUBE_VERSION could not be built; the machine's kubectl will be used"
  if kwok_wanted; then
    for name in kube-scheduler kwok; do
      if ! ensure "$name"; then
        if [[ "$KWOK_MODE" == required ]]; then
          failed+=("$name")
        else
          warn "$name could not be had: pods will stay Pending (no simulated node). Set FASTAGENTIC_CP_KWOK=0 to skip it."
        fi
      fi
    done
  fi
  exec 9>&-
  ((${#failed[@]} == 0)) || die "could not obtain: ${failed[*]} (build logs under $BUILD_DIR)"
  log "binaries ready in $BIN_DIR"
}

# ============================================================================================
# certificates and kubeconfigs
# ============================================================================================

PKI="$CP_DIR/pki"

gen_client_cert() { # name CN [O [CA]]
  local name="$1" cn="$2" org="${3:-}" ca="${4:-ca}" subj
  [[ -f "$PKI/$name.crt" ]] && return 0
  subj="/CN=$cn"
  [[ -n "$org" ]] && subj="/O=$org$subj"
  log "certificate: $name (subject $subj)"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  printf 'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

gen_pki() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  if [[ ! -f "$PKI/ca.crt" ]]; then
    log "certificate: CA ($PKI/ca.crt)"
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -days 365 -sha256 \
      -subj "/CN=fastagentic-control-plane-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$PKI/ca.crt" 2>/dev/null
  fi
  if [[ ! -f "$PKI/apiserver.crt" ]]; then
    log "certificate: kube-apiserver serving cert for 127.0.0.1, localhost, $SERVICE_IP, $NODE_IP"
    openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/apiserver.key" -subj "/CN=kube-apiserver" \
      -out "$PKI/apiserver.csr" 2>/dev/null
    {
      printf 'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n'
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,IP:%s,IP:%s,DNS:kubernetes,DNS:kubernetes.default,' "$SERVICE_IP" "$NODE_IP"
      printf 'DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n'
    } >"$PKI/apiserver.ext"
    openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
      -days 365 -sha256 -extfile "$PKI/apiserver.ext" -out "$PKI/apiserver.crt" 2>/dev/null
    rm -f "$PKI/apiserver.csr" "$PKI/apiserver.ext"
  fi
  if [[ ! -f "$PKI/sa.key" ]]; then
    log "key: service-account signing key ($PKI/sa.key)"
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  if [[ ! -f "$PKI/front-proxy-ca.crt" ]]; then
    log "certificate: front-proxy CA (request-header authentication for aggregated APIs)"
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/front-proxy-ca.key" -days 365 -sha256 \
      -subj "/CN=fastagentic-front-proxy-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$PKI/front-proxy-ca.crt" 2>/dev/null
  fi
  gen_client_cert front-proxy-client front-proxy-client "" front-proxy-ca
  gen_client_cert admin fastagentic-admin system:masters
  gen_client_cert controller-manager system:kube-controller-manager
  gen_client_cert scheduler system:kube-scheduler
  gen_client_cert kwok fastagentic-kwok system:masters
  # the API server's client certificate towards kubelets (logs, exec, port-forward, metrics)
  gen_client_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
}

write_kubeconfig() { # file user cert-name
  local file="$1" user="$2" cert="$3"
  [[ -f "$file" ]] && return 0
  log "kubeconfig: $file (user $user)"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: fastagentic
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $user
  user:
    client-certificate: $PKI/$cert.crt
    client-key: $PKI/$cert.key
contexts:
- name: fastagentic
  context:
    cluster: fastagentic
    user: $user
    namespace: default
current-context: fastagentic
EOF
  chmod 600 "$file"
}

# ============================================================================================
# processes
# ============================================================================================

PROC_DIR="$CP_DIR"
proc_pattern() { echo "$BIN_DIR/$1-"; }

port_busy() { [[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]]; }

# start NAME args...: start a component in the background, logging to $CP_DIR/NAME.log.
# start NAME ARGS...: the cached binary of NAME in the background.
start() {
  local name="$1"
  shift
  start_process "$name" "$(bin_path "$name")" "$@"
}

check_port() { # name port
  if ! running "$1" && port_busy "$2"; then
    die "port $2 for $1 is already in use by another process; set the FASTAGENTIC_*_PORT variable to another port"
  fi
}

KUBECTL=""
# pick_kubectl: the kubectl built for KUBE_VERSION, else the machine's kubectl.
pick_kubectl() {
  if [[ -x "$(bin_path kubectl)" ]]; then
    KUBECTL="$(bin_path kubectl)"
  elif command -v kubectl >/dev/null 2>&1; then
    KUBECTL="$(command -v kubectl)"
  else
    return 1
  fi
}

kubectl_admin() { "$KUBECTL" --kubeconfig "$CP_DIR/admin.kubeconfig" "$@"; }

apiserver_ready() { [[ "$(kubectl_admin get --raw /readyz 2>/dev/null)" == ok ]]; }

link_binaries() {
  mkdir -p "$CP_DIR/bin"
  local name
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler kwok helm kubectl; do
    [[ -x "$(bin_path "$name")" ]] && ln -sfn "$(bin_path "$name")" "$CP_DIR/bin/$name"
  done
  return 0
}

kwok_node() {
  cat <<'EOF'
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-0
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
spec:
  # Only pods that ask for the simulated node land on it (the control-plane tests' namespaces
  # do, through PodNodeSelector and PodTolerationRestriction); a real node next to it gets the rest.
  taints:
  - key: fastagentic.io/simulated
    value: "true"
    effect: NoSchedule
status:
  allocatable:
    cpu: "32"
    ephemeral-storage: 1Ti
    memory: 256Gi
    pods: "110"
  capacity:
    cpu: "32"
    ephemeral-storage: 1Ti
    memory: 256Gi
    pods: "110"
EOF
}

cmd_up() {
  local node=0 arg
  for arg in "$@"; do
    case "$arg" in
      --node) node=1 ;;
      *) die "up: unknown argument '$arg'" ;;
    esac
  done
  command -v openssl >/dev/null 2>&1 || die "openssl is not installed (needed for certificates)"
  mkdir -p "$CP_DIR"
  if ((node)) && ! [[ -f "$CP_DIR/node-mode" ]] && running kube-apiserver; then
    die "the control plane runs without a node; stop it first ($0 down), then $0 up --node"
  fi
  local all_up=1 c
  for c in etcd kube-apiserver kube-controller-manager; do running "$c" || all_up=0; done
  if kwok_wanted && [[ -x "$(bin_path kwok)" ]]; then
    for c in kube-scheduler kwok; do running "$c" || all_up=0; done
  fi
  if ((all_up)) && [[ -f "$CP_DIR/admin.kubeconfig" ]] && pick_kubectl && apiserver_ready; then
    log "control plane already up (https://127.0.0.1:$APISERVER_PORT); $0 env prints KUBECONFIG"
    if ((node)); then "$HERE/node.sh" up; fi
    return 0
  fi

  cmd_build
  link_binaries
  pick_kubectl || die "no kubectl: $(bin_path kubectl) could not be built and none is installed"
  local with_kwok=0
  if kwok_wanted && [[ -x "$(bin_path kwok)" && -x "$(bin_path kube-scheduler)" ]]; then with_kwok=1; fi
  # A real node: its bridge and address exist before the API server advertises that address.
  local node_flags=()
  if ((node)); then
    "$HERE/node.sh" check >&2 || die "no real node here (the output above says why); $0 up without --node uses the simulated kwok node"
    "$HERE/node.sh" build
    link_binaries
    "$HERE/node.sh" net-up
    : >"$CP_DIR/node-mode"
    # shellcheck disable=SC2054 # the commas are inside flag values
    node_flags=(
      --bind-address=0.0.0.0 --advertise-address="$NODE_IP" --endpoint-reconciler-type=lease
      --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt"
      --kubelet-client-key="$PKI/apiserver-kubelet-client.key"
      --kubelet-certificate-authority="$PKI/ca.crt"
      --kubelet-preferred-address-types=InternalIP,Hostname
      --enable-aggregator-routing=true
    )
  else
    # No kube-proxy without a node: aggregated APIs (the operator's metrics API in its test) are
    # reached at their endpoint addresses, not through a ClusterIP nothing routes.
    node_flags=(--advertise-address=127.0.0.1 --bind-address=127.0.0.1 --endpoint-reconciler-type=none
      --enable-aggregator-routing=true)
  fi

  check_port etcd "$ETCD_CLIENT_PORT"
  check_port etcd "$ETCD_PEER_PORT"
  check_port kube-apiserver "$APISERVER_PORT"
  check_port kube-controller-manager "$CM_PORT"
  if ((with_kwok)); then
    check_port kube-scheduler "$SCHED_PORT"
    check_port kwok "$KWOK_PORT"
  fi

  gen_pki
  write_kubeconfig "$CP_DIR/admin.kubeconfig" fastagentic-admin admin
  write_kubeconfig "$CP_DIR/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  write_kubeconfig "$CP_DIR/scheduler.kubeconfig" system:kube-scheduler scheduler
  write_kubeconfig "$CP_DIR/kwok.kubeconfig" fastagentic-kwok kwok

  start etcd --name=fastagentic --data-dir="$CP_DIR/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="fastagentic=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --quota-backend-bytes=2147483648 --log-level=warn
  wait_for "etcd on 127.0.0.1:$ETCD_CLIENT_PORT" etcd curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

  start kube-apiserver \
    "${node_flags[@]}" --secure-port="$APISERVER_PORT" \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --cert-dir="$CP_DIR/apiserver-certs" \
    --client-ca-file="$PKI/ca.crt" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --allow-privileged=true \
    --enable-admission-plugins=PodNodeSelector,PodTolerationRestriction \
    --profiling="$PROFILING" --v=1
  wait_for "kube-apiserver /readyz on https://127.0.0.1:$APISERVER_PORT" kube-apiserver apiserver_ready

  start kube-controller-manager \
    --kubeconfig="$CP_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$CP_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$CP_DIR/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$CM_PORT" \
    --cert-dir="$CP_DIR/controller-manager-certs" \
    --controllers='*' --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --cluster-cidr="$CLUSTER_CIDR" \
    --cluster-name=fastagentic --profiling="$PROFILING" --v=1

  if ((with_kwok || node)); then
    start kube-scheduler \
      --kubeconfig="$CP_DIR/scheduler.kubeconfig" \
      --authentication-kubeconfig="$CP_DIR/scheduler.kubeconfig" \
      --authorization-kubeconfig="$CP_DIR/scheduler.kubeconfig" \
      --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" \
      --cert-dir="$CP_DIR/scheduler-certs" \
      --leader-elect=false --profiling=false --v=1
  fi
  if ((with_kwok)); then
    # an empty configuration file keeps kwok away from ~/.kwok
    printf 'apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions: {}\n' >"$CP_DIR/kwok.yaml"
    start kwok --config="$CP_DIR/kwok.yaml" --kubeconfig="$CP_DIR/kwok.kubeconfig" \
      --manage-all-nodes=false \
      --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
      --cidr="$POD_CIDR" --node-ip=127.0.0.1 \
      --node-lease-duration-seconds=40 \
      --server-address="127.0.0.1:$KWOK_PORT"
  elif kwok_wanted; then
    warn "kwok/kube-scheduler not available: no simulated node, pods will stay Pending"
  fi

  wait_for "the default ServiceAccount in namespace default" kube-controller-manager \
    kubectl_admin -n default get serviceaccount default
  if ((with_kwok)); then
    kwok_node | kubectl_admin apply -f - >/dev/null
    wait_for "simulated node kwok-node-0 to be Ready" kwok \
      kubectl_admin wait --for=condition=Ready node/kwok-node-0 --timeout=2s
  fi
  if ((node)); then "$HERE/node.sh" up; fi
  log "control plane up: https://127.0.0.1:$APISERVER_PORT, KUBECONFIG=$CP_DIR/admin.kubeconfig"
  log "use it with: eval \"\$($0 env)\""
}

cmd_down() {
  local keep=0 i
  for arg in "$@"; do
    case "$arg" in
      --keep) keep=1 ;;
      *) die "down: unknown argument '$arg'" ;;
    esac
  done
  # the real node first: it deletes itself through the API and needs it for that
  if [[ -f "$CP_DIR/node-mode" || -d "${FASTAGENTIC_NODE_DIR:-/tmp/fastagentic-node}" ]]; then
    "$HERE/node.sh" down || warn "the node's teardown reported errors (above)"
  fi
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop "${COMPONENTS[i]}"; done
  if ((keep)); then
    log "stopped; state kept in $CP_DIR"
  elif [[ -d "$CP_DIR" ]]; then
    rm -rf "$CP_DIR"
    log "stopped; removed $CP_DIR"
  else
    log "nothing to remove ($CP_DIR does not exist)"
  fi
}

cmd_env() {
  printf 'export KUBECONFIG=%q\n' "$CP_DIR/admin.kubeconfig"
  # shellcheck disable=SC2016 # $PATH is expanded by the shell that evals this
  printf 'export PATH=%q:"$PATH"\n' "$CP_DIR/bin"
  printf 'export FASTAGENTIC_HELM=%q\n' "$(bin_path helm)"
}

cmd_status() {
  local c pf any=0
  printf 'state dir: %s\n' "$CP_DIR"
  for c in "${COMPONENTS[@]}"; do
    pf="$(pid_file "$c")"
    if running "$c"; then
      printf '  %-24s running (pid %s)\n' "$c" "$(cat "$pf")"
      any=1
    elif [[ -f "$pf" ]]; then
      printf '  %-24s NOT running (stale pid file; see %s)\n' "$c" "$CP_DIR/$c.log"
    else
      printf '  %-24s stopped\n' "$c"
    fi
  done
  if ((any)) && [[ -f "$CP_DIR/admin.kubeconfig" ]] && pick_kubectl; then
    if apiserver_ready; then
      printf 'kube-apiserver https://127.0.0.1:%s /readyz: ok\n' "$APISERVER_PORT"
    else
      printf 'kube-apiserver https://127.0.0.1:%s /readyz: NOT ready\n' "$APISERVER_PORT"
    fi
  fi
  printf 'binaries (%s):\n' "$BIN_DIR"
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler kwok helm kubectl; do
    if [[ -x "$(bin_path "$c")" ]]; then
      printf '  %-24s %s (%s)\n' "$c" "$(bin_path "$c")" "$(human_size "$(bin_path "$c")")"
    else
      printf '  %-24s not built\n' "$c"
    fi
  done
}

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
}

main() {
  local sub="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$sub" in
    build) cmd_build "$@" ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    env) cmd_env ;;
    status) cmd_status ;;
    path)
      [[ $# -eq 1 ]] || die "usage: $0 path NAME"
      bin_path "$1"
      ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
